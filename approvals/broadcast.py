"""Channel-layer groups: held requests, the dashboard and live sessions hear about changes.

The database is always the source of truth; a lost message only delays a
waiter until its next poll.  So sending never fails the caller: errors are
logged (by type, never with the message) and swallowed.
"""

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

log = logging.getLogger(__name__)

DASHBOARD_GROUP = "airlock.approvals"
LEASES_GROUP = "airlock.leases"


def review_group(review_id: int) -> str:
    return f"airlock.review.{int(review_id)}"


async def asend(group: str, message: dict) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        await layer.group_send(group, message)
    except Exception as exc:
        log.warning("channel-layer send to %s failed: %s", group, type(exc).__name__)


def send(group: str, message: dict) -> None:
    """Send from synchronous code (views, Celery tasks, management commands)."""
    async_to_sync(asend)(group, message)


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
