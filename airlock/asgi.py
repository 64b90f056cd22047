"""ASGI entry point, server-agnostic (uvicorn in production, daphne works too).

``/k8s/...`` goes to the gateway's own ASGI app (streaming proxy); Django's pages (admin,
dashboard, API) to Django, the dashboard's WebSockets to Channels, and any other path gets a
Kubernetes ``Status`` 404 (airlock.routing).
"""

import asyncio
import logging
import os
import signal
import threading

import django
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "airlock.settings")
django.setup()
# The dashboard's own assets (htmx, asciinema-player) are vendored into
# static/ and served by the app itself: no CDN, no separate web server.
django_http = ASGIStaticFilesHandler(get_asgi_application())

from django.conf import settings  # noqa: E402

from airlock.routing import router  # noqa: E402
from approvals.sweeper import Sweeper  # noqa: E402
from gateway.asgi import build_gateway  # noqa: E402

log = logging.getLogger(__name__)
gateway = build_gateway()
sweeper = Sweeper.from_settings()  # None where Celery beat expires reviews and leases
routed = router(gateway, django_http, settings.AIRLOCK_GATEWAY_PREFIX)
DRAIN_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_draining: set[asyncio.Task] = set()


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
    else:
        await routed(scope, receive, send)


async def lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await gateway.start()
            drain_before_exit(gateway, settings.AIRLOCK_DRAIN_SECONDS)
            if sweeper is not None:
                sweeper.start()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if sweeper is not None:
                await sweeper.stop()
            await gateway.aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return


def drain_before_exit(app, grace: float) -> None:
    """Put the gateway's drain in front of the server's SIGTERM and SIGINT handlers.

    On SIGTERM uvicorn stops accepting, waits for every open connection and only then runs
    the lifespan shutdown: an open watch or exec would hold it for the whole grace period and
    then be cut mid-stream.  Here the gateway first ends its streams cleanly (an ERROR event,
    a Status on the error channel) and hands the signal to the server's own handler once they
    have closed, at most ``grace`` seconds later.  A second signal goes straight through (the
    server's forced exit).  Only the main thread handles signals: a server run in another
    thread (tests) keeps its own behaviour.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for number in DRAIN_SIGNALS:
        previous = signal.getsignal(number)

        def on_signal(received, frame, previous=previous):
            if app.draining:
                _pass_on(previous, received, frame)
                return
            loop.call_soon_threadsafe(_start_drain, app, grace, previous, received)

        signal.signal(number, on_signal)


def _start_drain(app, grace: float, previous, received: int) -> None:
    task = asyncio.get_running_loop().create_task(_drain(app, grace, previous, received))
    _draining.add(task)
    task.add_done_callback(_draining.discard)


async def _drain(app, grace: float, previous, received: int) -> None:
    try:
        ended = await app.drain(grace)
        log.info("shutting down: %d open stream(s) ended", ended)
    finally:
        _pass_on(previous, received, None)


def _pass_on(previous, received: int, frame) -> None:
    if callable(previous):
        previous(received, frame)
    elif previous == signal.SIG_DFL:
        signal.signal(received, signal.SIG_DFL)
        signal.raise_signal(received)
