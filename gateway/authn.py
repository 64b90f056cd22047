"""Authentication stage: bearer token -> Principal, or a 401 Status.

The authenticator (:func:`identity.chain.build_authenticator`) validates OIDC JWTs
(:mod:`identity.oidc`) and, when switched on explicitly, development-only static tokens
(:mod:`identity.static`, AIRLOCK_DEV_STATIC_TOKENS); settings refuse those in production.
Then, once the connection is known, whom the request acts as (:func:`act_as`: the token's holder,
or the end user a trusted proxy asserts, :mod:`identity.proxies`).
"""

from identity.principal import AuthenticationError, Principal
from identity.proxies import ImpersonationRefused, act_for
from kube.headers import bearer_token
from kube.status import GatewayError
from runtime import metrics


async def authenticate(request, authenticator) -> Principal:
    """Stage 2: every request must carry a valid bearer token; the Principal it stands for."""
    token = bearer_token(request.headers)
    if token is None:
        metrics.authentication_failed("missing")
        raise GatewayError(401, "Unauthorized: a bearer token is required")
    try:
        principal = await authenticator.authenticate(token)
    except AuthenticationError as exc:
        raise GatewayError(401, f"Unauthorized: {exc}") from None
    return principal


def act_as(request, upstream) -> Principal:
    """Stage 2b, once the connection is known: whom the request acts as.

    Without ``Impersonate-*`` headers, the token's holder.  With them, the end user a trusted proxy
    registered on this connection asserts (identity.proxies: the end user's rules apply, the proxy's
    grant nothing); from anyone else a 403, never stripped and run as the agent (as the gateway once
    did: ``kubectl --as=bob`` ran as the agent and ``auth can-i --as=bob`` answered for the wrong
    identity).  Malformed assertions are a 400, as kube-apiserver answers them.
    """
    try:
        return act_for(request.principal, request.headers, upstream.trusted_proxies, request.connection)
    except ImpersonationRefused as exc:
        raise GatewayError(exc.code, exc.message, warn=True) from None
