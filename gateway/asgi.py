"""Builds the gateway ASGI app from Django settings (called once at start-up)."""

from django.conf import settings

from approvals.hold import Holder
from audit.recorder import Recorder
from connections.registry import get_upstream
from gateway.policy import PolicyCache
from gateway.app import GatewayApp
from gateway.secretvalues import SecretValueStores
from identity.chain import build_authenticator


def build_gateway() -> GatewayApp:
    return GatewayApp(
        prefix=settings.AIRLOCK_GATEWAY_PREFIX,
        connections=get_upstream,
        authenticator=build_authenticator(),
        policy=PolicyCache(),
        recorder=Recorder(),
        holder=Holder(),
        max_body=settings.AIRLOCK_MAX_REQUEST_BODY,
        secret_values=SecretValueStores.from_settings(),
    )
