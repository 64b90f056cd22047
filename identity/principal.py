"""Who an agent is, once its bearer token was validated, and the refusal of a token."""

from __future__ import annotations

from dataclasses import dataclass


class AuthenticationError(Exception):
    """A token was refused.  ``message`` is safe to show the client; it never contains the token."""

    def __init__(self, message: str, reason: str = "invalid"):
        super().__init__(message)
        self.message = message
        self.reason = reason

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Principal:
    subject: str
    username: str
    groups: tuple[str, ...]
    issuer: str
    expires_at: float
    token_id: str
    # Set when a trusted proxy asserted this identity (Impersonate-User/-Group, identity.proxies):
    # the proxy's own authenticated Principal.  None: the token's holder is this principal.
    proxy: Principal | None = None
