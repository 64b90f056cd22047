"""Celery tasks of the audit trail: the scheduled anchor (beat, AIRLOCK_AUDIT_ANCHOR_SECONDS)."""

from celery import shared_task

from audit import chain
from audit.models import AnchorReason


@shared_task
def anchor() -> int | None:
    """Sign the chain head into the anchor file and the database; returns its seq (None: nothing new)."""
    made = chain.make_anchor(AnchorReason.SCHEDULE)
    return made.seq if made is not None else None
