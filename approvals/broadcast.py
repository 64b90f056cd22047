"""Channel-layer groups: held requests, the dashboard and live sessions hear about changes.

The database is always the source of truth; a lost message only delays a
waiter until its next poll.  So sending never fails or holds up the caller:
every send gives up after AIRLOCK_CHANNEL_LAYER_TIMEOUT_SECONDS, errors are
logged (by type, never with the message, at most once per LOG_INTERVAL), and
a send from a worker thread of an event loop (the gateway's database pool, a
Django view) is handed to that loop without waiting for it.
"""

import asyncio
import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction

from runtime import db
from runtime.failurelog import FailureLog
from runtime.timeouts import wait_at_most

log = logging.getLogger(__name__)

DASHBOARD_GROUP = "airlock.approvals"
LEASES_GROUP = "airlock.leases"
# Sends in flight per process beyond which new ones are dropped (Redis is away and they all wait).
MAX_PENDING = 1000
LOG_INTERVAL = 10.0


def review_group(review_id: int) -> str:
    return f"airlock.review.{int(review_id)}"


def timeout() -> float:
    return float(settings.AIRLOCK_CHANNEL_LAYER_TIMEOUT_SECONDS)


failures = FailureLog(log, "channel-layer", LOG_INTERVAL)
_pending: set[asyncio.Task] = set()


async def asend(group: str, message: dict) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        await wait_at_most(layer.group_send(group, message), timeout())
    except Exception as exc:
        failures.failed(f"send to {group}", exc)


def send(group: str, message: dict) -> None:
    """Send from synchronous code without waiting for the channel layer where an event loop can do it.

    Elsewhere (Celery tasks, management commands) the send runs here, bounded by the timeout.
    """
    loop = db.serving_loop()
    if loop is None:
        async_to_sync(asend)(group, message)
        return
    try:
        loop.call_soon_threadsafe(_spawn, group, message)
    except RuntimeError as exc:  # the loop closed meanwhile
        failures.failed(f"send to {group}", exc)


def _spawn(group: str, message: dict) -> None:
    if len(_pending) >= MAX_PENDING:
        failures.failed(f"send to {group}", OverflowError(f"{MAX_PENDING} sends pending"))
        return
    task = asyncio.get_running_loop().create_task(asend(group, message))
    _pending.add(task)
    task.add_done_callback(_pending.discard)


def send_on_commit(group: str, message: dict) -> None:
    transaction.on_commit(lambda: send(group, message))


def review_changed(review_id: int, state: str) -> None:
    """Wake the requests held on this review and refresh every open dashboard."""
    send_on_commit(review_group(review_id), {"type": "review.changed", "review": review_id, "state": state})
    send_on_commit(DASHBOARD_GROUP, {"type": "review.changed", "review": review_id, "state": state})


def lease_changed(lease_id: int, connection: str, state: str, reason: str = "") -> None:
    """Gateways drop cached leases and, for ended ones, cut the live sessions bound to them."""
    message = {"type": "lease.changed", "lease": lease_id, "connection": connection, "state": state, "reason": reason}
    send_on_commit(LEASES_GROUP, message)
    send_on_commit(DASHBOARD_GROUP, {"type": "lease.changed", "lease": lease_id, "state": state})
