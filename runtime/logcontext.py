"""The request a log line is written for: its audit id, identity, connection and decision.

One context variable, set where the gateway handles a request (:func:`bind`, from the gateway's
log-context addon, gateway.logcontext) and read by the JSON log formatter (airlock.logs), so
every line logged while a request is handled carries them.  asyncio copies the context into
tasks a request starts, so lines they log carry them too; nothing else does.
"""

from __future__ import annotations

from contextvars import ContextVar

FIELDS = ("request_id", "identity", "connection", "decision")

_current: ContextVar[dict | None] = ContextVar("airlock_request", default=None)


def bind(**fields) -> None:
    """Add ``fields`` (of FIELDS; None leaves one out) to the current request's context."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise TypeError(f"unknown log context fields: {', '.join(sorted(unknown))}")
    current = dict(_current.get() or {})
    current.update({name: str(value) for name, value in fields.items() if value is not None and value != ""})
    _current.set(current)


def clear() -> None:
    _current.set(None)


def current() -> dict:
    """The current request's fields (empty outside a request)."""
    return _current.get() or {}
