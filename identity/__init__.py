"""Who an agent is: its bearer token validated into a Principal.

OIDC JWTs validated locally (``oidc``, the trusted issuers in ``oidc_config``), development-only
static tokens (``static``), the authenticator built from settings (``chain``) that the gateway's
authenticate stage and the agent lease API share, the end user a trusted proxy asserts with
``Impersonate-User``/``-Group`` (``proxies``), and the kubectl exec credential plugin agents run
(``credential_plugin``, a standalone script).  No Django models; it leans on no other first-party package.
"""
