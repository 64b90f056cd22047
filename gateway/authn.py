"""Authentication stage: bearer token -> Principal, or a 401 Status.

OIDC JWTs are validated by :mod:`gateway.identity`.  A development-only
static token map can be switched on explicitly (AIRLOCK_DEV_STATIC_TOKENS);
settings refuse it in production.
"""

import hashlib
import hmac
import json
import logging

from gateway.identity import AuthenticationError, Principal
from kube.headers import bearer_token, impersonation_asked
from kube.status import GatewayError

log = logging.getLogger(__name__)

DEV_ISSUER = "airlock-dev-static-tokens"


class StaticTokenAuthenticator:
    """Tokens from ``token=username:group1|group2,...`` (development only)."""

    def __init__(self, spec: str):
        self._tokens: dict[bytes, Principal] = {}
        for entry in filter(None, (e.strip() for e in spec.split(","))):
            token, sep, identity = entry.partition("=")
            username, _, groups = identity.partition(":")
            if not sep or not token or not username:
                raise ValueError("AIRLOCK_DEV_STATIC_TOKENS entries look like token=username:group1|group2")
            digest = hashlib.sha256(token.encode()).digest()
            self._tokens[digest] = Principal(
                subject=username,
                username=username,
                groups=tuple(g for g in groups.split("|") if g),
                issuer=DEV_ISSUER,
                expires_at=float("inf"),
                token_id="static:" + digest.hex()[:16],
            )

    def __len__(self):
        return len(self._tokens)

    async def authenticate(self, token: str) -> Principal:
        digest = hashlib.sha256(token.encode()).digest()
        for known, principal in self._tokens.items():
            if hmac.compare_digest(known, digest):
                return principal
        raise AuthenticationError("token not recognised")


class AuthenticatorChain:
    """Tries each configured authenticator; a JWT goes to OIDC, others to the static map."""

    def __init__(self, static=None, oidc=None):
        self.static = static
        self.oidc = oidc

    async def authenticate(self, token: str) -> Principal:
        looks_like_jwt = token.count(".") == 2
        if self.oidc is not None and looks_like_jwt:
            return await self.oidc.authenticate(token)
        if self.static is not None:
            return await self.static.authenticate(token)
        if self.oidc is not None:
            raise AuthenticationError("malformed token")
        raise AuthenticationError("no authenticator is configured on this gateway")


def build_authenticator():
    from django.conf import settings

    from gateway import identity

    static = None
    if settings.AIRLOCK_DEV_STATIC_TOKENS:
        static = StaticTokenAuthenticator(settings.AIRLOCK_DEV_STATIC_TOKENS)
        log.warning("development static tokens are enabled (%d tokens)", len(static))
    return AuthenticatorChain(static=static, oidc=identity.authenticator_from_settings())


async def authenticate(request, authenticator) -> Principal:
    """Stage 2: every request must carry a valid bearer token."""
    token = bearer_token(request.headers)
    if token is None:
        raise GatewayError(401, "Unauthorized: a bearer token is required")
    try:
        principal = await authenticator.authenticate(token)
    except AuthenticationError as exc:
        raise GatewayError(401, f"Unauthorized: {exc}") from None
    request.principal = principal
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
