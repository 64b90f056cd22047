"""Every step of a review or lease is appended here and offered to the audit trail.

The hook for the audit app is the ``approval_event`` signal: once the step is
committed it is sent with ``event`` = a plain dict::

    {"object": "review" | "lease", "id": 42, "event_id": 7, "kind": "approved",
     "actor": "alice", "reason": "...", "at": datetime (aware, UTC),
     "connection": "prod", "principal": "agent-1", "details": {...}}

Receivers must not raise (errors are logged by type and ignored: the step
itself is already recorded in ReviewEvent / LeaseEvent).
"""

import logging

import django.dispatch
from django.db import transaction

from approvals.models import LeaseEvent, ReviewEvent

log = logging.getLogger(__name__)

approval_event = django.dispatch.Signal()


def _emit(payload: dict) -> None:
    for receiver, result in approval_event.send_robust(sender="approvals", event=payload):
        if isinstance(result, Exception):
            log.error("approval_event receiver %s failed: %s", getattr(receiver, "__qualname__", receiver),
                      type(result).__name__)


def review_event(review, kind: str, *, actor: str = "", reason: str = "", details: dict | None = None) -> ReviewEvent:
    event = ReviewEvent.objects.create(review=review, kind=kind, actor=actor, reason=reason, details=details or {})
    payload = {
        "object": "review", "id": review.pk, "event_id": event.pk, "kind": kind, "actor": actor, "reason": reason,
        "at": event.at, "connection": review.connection, "principal": review.principal_username,
        "details": {"rule": review.rule_name, "request": review.description, "audit_id": review.audit_id,
                    **(details or {})},
    }
    transaction.on_commit(lambda: _emit(payload))
    return event


def lease_event(lease, kind: str, *, actor: str = "", reason: str = "", details: dict | None = None) -> LeaseEvent:
    event = LeaseEvent.objects.create(lease=lease, kind=kind, actor=actor, reason=reason, details=details or {})
    payload = {
        "object": "lease", "id": lease.pk, "event_id": event.pk, "kind": kind, "actor": actor, "reason": reason,
        "at": event.at, "connection": lease.connection, "principal": lease.holder,
        "details": {"rules": list(lease.rules), "expires_at": lease.expires_at.isoformat() if lease.expires_at else None,
                    **(details or {})},
    }
    transaction.on_commit(lambda: _emit(payload))
    return event
