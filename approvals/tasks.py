"""Celery tasks: webhook delivery with retries, and the sweeper run by beat.

Webhooks are addressed by their index in AIRLOCK_NOTIFY_WEBHOOKS so that no
URL (a credential for Slack) is ever in the broker, a task argument or a log
line; errors are reported by type.
"""

import logging

import httpx
from celery import shared_task
from django.conf import settings

from approvals import notify, sweeper
from approvals.models import Lease, Review

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 425, 429})


class WebhookFailed(Exception):
    """A delivery worth retrying (network error, 5xx, 429)."""


def _document(event: str, object_id: int) -> dict | None:
    if event.startswith("lease."):
        lease = Lease.objects.filter(pk=object_id).first()
        return notify.lease_document(lease) if lease else None
    review = Review.objects.filter(pk=object_id).first()
    return notify.review_document(review) if review else None


@shared_task(
    bind=True, autoretry_for=(WebhookFailed,), retry_backoff=True, retry_backoff_max=300, retry_jitter=True,
    max_retries=8, acks_late=True,
)
def deliver_webhook(self, index: int, event: str, object_id: int) -> int | None:
    """POST one notification to webhook ``index``; returns the HTTP status, or None if there is nothing to send."""
    hooks = notify.webhooks()
    if not 0 <= index < len(hooks):
        log.warning("webhook %d is no longer configured; %s for %d dropped", index, event, object_id)
        return None
    document = _document(event, object_id)
    if document is None:
        return None
    hook = hooks[index]
    try:
        response = httpx.post(hook["url"], json=notify.payload(hook["format"], event, document),
                              timeout=float(settings.AIRLOCK_NOTIFY_TIMEOUT_SECONDS))
    except httpx.HTTPError as exc:
        raise WebhookFailed(f"webhook {index}: {type(exc).__name__}") from None
    if response.status_code >= 500 or response.status_code in RETRY_STATUSES:
        raise WebhookFailed(f"webhook {index} answered {response.status_code}")
    if response.status_code >= 400:
        log.error("webhook %d refused %s for %d with %d; not retried", index, event, object_id, response.status_code)
    return response.status_code


@shared_task
def sweep() -> dict:
    """Beat, every AIRLOCK_APPROVALS_SWEEP_SECONDS: expire leases (their live sessions are cut) and stale reviews."""
    return sweeper.sweep()
