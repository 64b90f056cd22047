"""Webhook notifications for new and decided reviews and for leases.

Payload builders are pure; delivery is a Celery task per webhook
(approvals.tasks.deliver_webhook) with retries, queued when the step commits.
The tasks are handed to the broker (Redis) by one background thread, so a
slow or unreachable broker never holds up the request or the approval that
caused them; beyond MAX_PENDING waiting notifications new ones are dropped
and logged.  Webhook URLs are credentials (a Slack incoming-webhook URL is
one): tasks carry only the webhook's index in the configured list, never the
URL, and nothing here logs them.
"""

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from celery import current_app
from django.conf import settings
from django.db import transaction

from approvals import conf

log = logging.getLogger(__name__)

FORMATS = ("slack", "json")
# Looked up by name in the Celery app, so notify stays below approvals.tasks (which reads its documents).
DELIVER_TASK = "approvals.tasks.deliver_webhook"


def webhooks() -> list[dict]:
    """The configured webhooks, each {"url": ..., "format": "slack" | "json"}; invalid entries are dropped."""
    hooks = settings.AIRLOCK_NOTIFY_WEBHOOKS or []
    valid = []
    for index, hook in enumerate(hooks):
        if isinstance(hook, dict) and isinstance(hook.get("url"), str) and hook.get("format", "json") in FORMATS:
            valid.append({"url": hook["url"], "format": hook.get("format", "json")})
        else:
            log.error("webhook %d in AIRLOCK_NOTIFY_WEBHOOKS is invalid and ignored", index)
    return valid


MAX_PENDING = 1000
_publisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="airlock-notify")
_pending = 0
_pending_lock = threading.Lock()


def _enqueue(event: str, object_id: int) -> None:
    count = len(webhooks())
    if count:
        transaction.on_commit(lambda: _submit(event, object_id, count))


def _submit(event: str, object_id: int, count: int) -> None:
    global _pending
    with _pending_lock:
        if _pending >= MAX_PENDING:
            log.error("notification %s for %d dropped: %d notifications wait for the broker", event, object_id,
                      _pending)
            return
        _pending += 1
    _publisher.submit(_publish, event, object_id, count)


def _publish(event: str, object_id: int, count: int) -> None:
    global _pending
    deliver_webhook = current_app.tasks[DELIVER_TASK]

    try:
        for index in range(count):
            try:
                deliver_webhook.delay(index, event, object_id)
            except Exception as exc:
                log.error("notification %s for %d could not be queued: %s", event, object_id, type(exc).__name__)
    finally:
        with _pending_lock:
            _pending -= 1


def review_requested(review_id: int) -> None:
    _enqueue("review.requested", review_id)


def review_decided(review_id: int) -> None:
    _enqueue("review.decided", review_id)


def lease_changed(lease_id: int) -> None:
    _enqueue("lease.changed", lease_id)


def review_document(review) -> dict:
    return {
        "id": review.pk,
        "state": review.state,
        "connection": review.connection,
        "rule": review.rule_name,
        "principal": review.principal_username,
        "request": review.description,
        "url": conf.dashboard_link(f"/approvals/reviews/{review.pk}/"),
        "min_approvals": review.min_approvals,
        "decided_by": review.decided_by,
        "reason": review.reason,
        "scope": review.scope,
        "created_at": review.created_at.isoformat(),
        "decided_at": review.decided_at.isoformat() if review.decided_at else None,
        "valid_until": review.valid_until.isoformat() if review.valid_until else None,
    }


def lease_document(lease) -> dict:
    return {
        "id": lease.pk,
        "state": lease.state,
        "connection": lease.connection,
        "holder": lease.holder,
        "rules": list(lease.rules),
        "duration_seconds": lease.duration_seconds,
        "reason": lease.reason,
        "requested_by": lease.requested_by,
        "granted_by": lease.granted_by,
        "expires_at": lease.expires_at.isoformat() if lease.expires_at else None,
        "url": conf.dashboard_link("/approvals/leases/"),
    }


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _summary(event: str, doc: dict) -> str:
    if event.startswith("lease."):
        text = f"Airlock lease {doc['id']} {doc['state']}: {doc['holder']} on {doc['connection']}"
        return text + (f" — {doc['reason']}" if doc["reason"] else "")
    if event == "review.requested":
        return (f"Airlock review {doc['id']} needs a decision: {doc['principal']} wants to "
                f"{doc['request']} on {doc['connection']} (rule {doc['rule']})")
    text = f"Airlock review {doc['id']} {doc['state']}: {doc['request']} on {doc['connection']}"
    if doc["decided_by"]:
        text += f" by {doc['decided_by']}"
    return text + (f" — {doc['reason']}" if doc["reason"] else "")


def payload(fmt: str, event: str, doc: dict) -> dict:
    """A Slack incoming-webhook message, or plain JSON {"event", "review"|"lease"}."""
    if fmt == "json":
        return {"event": event, ("lease" if event.startswith("lease.") else "review"): doc}
    text = _slack_escape(_summary(event, doc))
    link = f"<{doc['url']}|Open in Airlock>" if doc["url"].startswith(("http://", "https://")) else ""
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    if link:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": link}]})
    return {"text": text, "blocks": blocks}
