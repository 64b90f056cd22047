"""Which part of Airlock answers a request: the gateway, Django, the dashboard's sockets, or a Status.

``/livez`` and ``/readyz`` (airlock.health) are answered first, before Django's ALLOWED_HOSTS
check: the kubelet's probes carry the pod's IP as Host.
``/k8s/...`` is the gateway; ``/mcp/<connection>/`` the MCP endpoint (mcpfront) and
``/.well-known/oauth-protected-resource/mcp/...`` its OAuth protected-resource metadata; paths Django routes (the dashboard, the admin, the audit pages,
their login and static assets) are Django; the dashboard's live updates are a Channels socket.
Anything else gets a Kubernetes ``Status`` 404, as kube-apiserver answers an unknown path: an
agent that missed the connection prefix (``kubectl proxy`` without ``--append-server-path``
sends ``/api/v1/pods`` to the gateway's root) sees an error kubectl prints, and never Django's
debug page listing the URL patterns.
"""

import os
import posixpath

from django.conf import settings
from django.contrib.staticfiles import finders
from django.core.exceptions import SuspiciousFileOperation
from django.urls import Resolver404, get_resolver

from airlock import health as health_endpoints
from approvals.routing import DASHBOARD_SOCKET, websocket_application
from gateway.refusals import reject_websocket, send_status
from kube.status import GatewayError

NOT_FOUND = GatewayError(
    404,
    "the server could not find the requested resource (airlock: each connection's Kubernetes API is at "
    "/k8s/<connection>/ on this gateway; kubectl proxy needs --append-server-path)",
)


def _resolves(path: str) -> bool:
    try:
        get_resolver().resolve(path)
    except Resolver404:
        return False
    return True


def _static_file(relative: str) -> bool:
    """Whether the static files handler has a file there (it normalises the path the same way)."""
    try:
        found = finders.find(posixpath.normpath(relative).lstrip("/"))
    except SuspiciousFileOperation:
        return False
    return isinstance(found, str) and os.path.isfile(found)


def django_serves(path: str) -> bool:
    """A page Django routes, one it redirects to with a slash appended, or a static asset that exists."""
    static = "/" + settings.STATIC_URL.lstrip("/")
    if path.startswith(static):
        return _static_file(path[len(static):])
    return _resolves(path) or (settings.APPEND_SLASH and not path.endswith("/") and _resolves(path + "/"))


def router(gateway, django_http, prefix: str, health=None, mcp=None):
    """The ASGI application for HTTP and WebSocket requests (the lifespan is the caller's); ``health``
    answers ``/livez`` and ``/readyz`` (airlock.health.health_application); ``mcp`` (mcpfront.server.Endpoint,
    or None) answers ``/mcp/<connection>/`` and its protected-resource metadata."""
    if health is None:
        health = health_endpoints.health_application(None)

    async def application(scope, receive, send):
        path = scope["path"]
        if path in health_endpoints.PATHS and scope["type"] == "http":
            await health(scope, receive, send)
        elif path.startswith(prefix):
            await gateway(scope, receive, send)
        elif mcp is not None and mcp.routes(path):
            await mcp(scope, receive, send)
        elif scope["type"] == "http":
            if django_serves(path):
                await django_http(scope, receive, send)
            else:
                await send_status(send, NOT_FOUND)
        elif scope["type"] == "websocket":
            if path == DASHBOARD_SOCKET:
                await websocket_application(scope, receive, send)
            elif (await receive())["type"] == "websocket.connect":
                await reject_websocket(scope, send, NOT_FOUND)

    return application
