"""Celery tasks of the audit trail: the scheduled anchor and the replay of dead gateways' journals (beat)."""

from celery import shared_task

from audit import chain, journal
from audit.models import AnchorReason


@shared_task
def anchor() -> int | None:
    """Sign the chain head into the anchor file and the database; returns its seq (None: nothing new)."""
    made = chain.make_anchor(AnchorReason.SCHEDULE)
    return made.seq if made is not None else None


@shared_task
def recover_journals() -> int:
    """Replay the journals of dead gateway processes in AIRLOCK_AUDIT_JOURNAL_DIR; returns the segments replayed.

    Useful where the worker shares that directory with the gateways (one host, a shared volume);
    each gateway also replays it when it starts.
    """
    return journal.recover_configured().segments
