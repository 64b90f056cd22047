"""The headers that carry a connection's credential to its cluster (sans-IO, no models).

A connection owns its credential: the gateway (forwarding, WebSocket relays, self reviews it asks
the cluster about) and the approvals dry-run preview add these last, after their own header
hygiene, so nothing an agent sends can stand in for them.
"""


def cluster_headers(upstream, principal) -> list[tuple[str, str]]:
    """The gateway's own credentials (``upstream``: a connections.registry.Upstream), and in
    impersonation mode the agent's identity (``principal``: its username and groups)."""
    headers = list(upstream.auth_headers().items())
    if upstream.impersonates:
        headers.append(("Impersonate-User", upstream.impersonation_user_prefix + principal.username))
        headers.extend(("Impersonate-Group", group) for group in principal.groups)
    return headers
