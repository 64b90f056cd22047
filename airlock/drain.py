"""The gateway's drain in front of the server's SIGTERM and SIGINT (airlock.asgi installs it once started)."""

import asyncio
import logging
import signal
import threading

from django.conf import settings

log = logging.getLogger(__name__)
DRAIN_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_draining: set[asyncio.Task] = set()


def drain_on_signals(app) -> None:
    """make_application's ``on_started``: SIGTERM and SIGINT first drain this application's gateway."""
    drain_before_exit(app.gateway, settings.AIRLOCK_DRAIN_SECONDS)


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
