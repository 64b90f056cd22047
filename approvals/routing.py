"""WebSocket routes outside /k8s/: the reviewer dashboard's live updates."""

from channels.auth import AuthMiddlewareStack
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path

from approvals.consumers import DashboardConsumer
from channels.routing import URLRouter

DASHBOARD_SOCKET = "/ws/approvals/"
websocket_urlpatterns = [path(DASHBOARD_SOCKET.lstrip("/"), DashboardConsumer.as_asgi())]
_dashboard = AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))


async def websocket_application(scope, receive, send):
    """Session-authenticated, same-origin dashboard sockets; any other path is refused (403)."""
    if scope["path"] == DASHBOARD_SOCKET:
        await _dashboard(scope, receive, send)
    else:
        await send({"type": "websocket.close", "code": 1008})
