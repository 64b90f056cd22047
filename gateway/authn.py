"""Authentication stage: bearer token -> Principal, or a 401 Status.

The authenticator (:func:`identity.chain.build_authenticator`) validates OIDC JWTs
(:mod:`identity.oidc`) and, when switched on explicitly, development-only static tokens
(:mod:`identity.static`, AIRLOCK_DEV_STATIC_TOKENS); settings refuse those in production.
"""

import json

from identity.principal import AuthenticationError, Principal
from kube.headers import bearer_token, impersonation_asked
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


def refuse_impersonation(request) -> None:
    """Stage 2b: an agent acts as itself; asking for another identity is a 403, never silently ignored.

    Stripping the headers and going on (as the gateway once did) ran ``kubectl --as=bob`` as the
    agent and let ``auth can-i --as=bob`` answer for the wrong identity.
    """
    asked = impersonation_asked(request.headers)
    if asked:
        raise GatewayError(
            403,
            f"airlock: impersonation is not allowed through this gateway (the request carries {', '.join(asked)}); "
            f"requests run as the agent's own identity {json.dumps(request.principal.username)}: "
            "drop --as, --as-group and --as-uid",
            warn=True,
        )
