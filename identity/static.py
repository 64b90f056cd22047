"""Development-only static bearer tokens (``AIRLOCK_DEV_STATIC_TOKENS``); settings refuse them in production."""

import hashlib
import hmac

from identity.principal import AuthenticationError, Principal

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
