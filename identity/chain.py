"""The authenticator an Airlock process validates agents' bearer tokens with, from its settings.

The gateway's authenticate stage (gateway.authn) and the agent lease API (approvals.agent_api) both
use :func:`build_authenticator`, so a token is valid for one exactly when it is for the other.
"""

import logging

from identity.oidc import authenticator_from_settings
from identity.principal import AuthenticationError, Principal
from identity.static import StaticTokenAuthenticator

log = logging.getLogger(__name__)


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

    static = None
    if settings.AIRLOCK_DEV_STATIC_TOKENS:
        static = StaticTokenAuthenticator(settings.AIRLOCK_DEV_STATIC_TOKENS)
        log.warning("development static tokens are enabled (%d tokens)", len(static))
    return AuthenticatorChain(static=static, oidc=authenticator_from_settings())
