"""Review and lease expiry inside the gateway process, for deployments without Celery beat.

Celery beat runs approvals.tasks.sweep every AIRLOCK_APPROVALS_SWEEP_SECONDS.  Without beat
(the single-box demo, a development server) a pending review is only found stale when someone
retries its request or decides it, so the dashboard's queue keeps every forgotten review.  With
AIRLOCK_APPROVALS_SWEEP_IN_GATEWAY on (the default outside production) each gateway process
runs the same sweep on that interval from its ASGI lifespan (airlock/app.py).  The sweep is
idempotent (each row is re-read under a lock), so several processes, or beat as well, do no harm.

It runs in a worker thread of its own rather than on the gateway's database pool: a long sweep
must not count as the database failing to answer requests (runtime.db's health).
"""

from __future__ import annotations

import asyncio
import logging

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection

from approvals import leases, reviews

log = logging.getLogger(__name__)


def sweep() -> dict:
    """Expire leases (their live sessions are cut) and stale reviews; what beat's task runs too."""
    return {"leases_expired": leases.expire_due(), "reviews_expired": reviews.expire_stale()}


def _sweep_and_close() -> dict:
    try:
        return sweep()
    finally:
        connection.close()  # this thread is asgiref's, not a request's: nothing else closes it


class Sweeper:
    """Runs :func:`sweep` every ``interval`` seconds until stopped; a failed sweep is logged, not raised."""

    def __init__(self, interval: float):
        self.interval = max(0.05, float(interval))
        self.task: asyncio.Task | None = None
        self.runs = 0

    @classmethod
    def from_settings(cls, config=None) -> Sweeper | None:
        """As configured in ``config`` (default: Django's settings); None where Celery beat sweeps."""
        config = config if config is not None else settings
        if not config.AIRLOCK_APPROVALS_SWEEP_IN_GATEWAY:
            return None
        return cls(config.AIRLOCK_APPROVALS_SWEEP_SECONDS)

    def start(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run(), name="airlock-approvals-sweeper")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None

    async def _run(self) -> None:
        while True:
            try:
                done = await sync_to_async(_sweep_and_close, thread_sensitive=False)()
            except Exception as exc:  # the database is away, say: the next round tries again
                log.warning("approvals sweep failed: %s", type(exc).__name__)
            else:
                self.runs += 1
                if done["reviews_expired"] or done["leases_expired"]:
                    log.info("approvals sweep: %d review(s) and %d lease(s) expired", done["reviews_expired"],
                             len(done["leases_expired"]))
            await asyncio.sleep(self.interval)
