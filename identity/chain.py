"""The authenticator an Airlock process validates agents' bearer tokens with, from its settings.

The application (airlock.app) builds one with :func:`build_authenticator` and hands the same object to
the gateway's authenticate stage (gateway.authn) and to the agent lease API (approvals.agent_api), so a
token is valid for one exactly when it is for the other.
"""

import logging

from identity.oidc import authenticator_from_settings
from identity.principal import AuthenticationError, Principal
from identity.static import StaticTokenAuthenticator
from runtime import metrics

log = logging.getLogger(__name__)


class AuthenticatorChain:
    """Tries each configured authenticator; a JWT goes to OIDC, others to the static map."""

    def __init__(self, static=None, oidc=None):
        self.static = static
        self.oidc = oidc

    async def authenticate(self, token: str) -> Principal:
        """The token's Principal, or AuthenticationError (counted by its reason: airlock_authentication_failures)."""
        try:
            return await self._authenticate(token)
        except AuthenticationError as exc:
            metrics.authentication_failed(exc.reason)
            raise

    async def _authenticate(self, token: str) -> Principal:
        looks_like_jwt = token.count(".") == 2
        if self.oidc is not None and looks_like_jwt:
            return await self.oidc.authenticate(token)
        if self.static is not None:
            return await self.static.authenticate(token)
        if self.oidc is not None:
            raise AuthenticationError("malformed token", "malformed")
        raise AuthenticationError("no authenticator is configured on this gateway", "no_authenticator")


def build_authenticator(config=None):
    """The chain configured in ``config`` (default: Django's settings)."""
    if config is None:
        from django.conf import settings as config

    static = None
    if config.AIRLOCK_DEV_STATIC_TOKENS:
        static = StaticTokenAuthenticator(config.AIRLOCK_DEV_STATIC_TOKENS)
        log.warning("development static tokens are enabled (%d tokens)", len(static))
    return AuthenticatorChain(static=static, oidc=authenticator_from_settings(config))
