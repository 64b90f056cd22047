"""ASGI entry point, server-agnostic (uvicorn in production, daphne works too).

``/k8s/...`` goes to the gateway's own ASGI app (streaming proxy); everything
else is Django (admin, dashboard, API) or Channels (dashboard WebSockets).
"""

import os

import django
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "airlock.settings")
django.setup()
# The dashboard's own assets (htmx, asciinema-player) are vendored into
# static/ and served by the app itself: no CDN, no separate web server.
django_http = ASGIStaticFilesHandler(get_asgi_application())

from django.conf import settings  # noqa: E402

from approvals.routing import websocket_application  # noqa: E402
from gateway.asgi import build_gateway  # noqa: E402

gateway = build_gateway()
PREFIX = settings.AIRLOCK_GATEWAY_PREFIX


async def application(scope, receive, send):
    kind = scope["type"]
    if kind == "lifespan":
        await lifespan(receive, send)
    elif scope["path"].startswith(PREFIX):
        await gateway(scope, receive, send)
    elif kind == "http":
        await django_http(scope, receive, send)
    elif kind == "websocket":
        await websocket_application(scope, receive, send)


async def lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await gateway.start()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await gateway.aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return
