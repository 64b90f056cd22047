"""The request a log line is written for: its audit id, identity, connection and decision.

One context variable, set where the gateway handles a request and read by the JSON log formatter
(airlock.logs), so every line logged while a request is handled carries them.  asyncio copies the
context into tasks a request starts, so lines they log carry them too; nothing else does.

The gateway's log-context addon (gateway.logcontext) sets it once per request with :func:`follow`:
a function that reads the request's fields when a line is written, so the fields learnt later
(the identity, the decision) need no further call and a request that logs nothing costs one
``ContextVar.set``.  :func:`bind` adds fixed values.
"""

from __future__ import annotations

from contextvars import ContextVar

FIELDS = ("request_id", "identity", "connection", "decision")

_current: ContextVar = ContextVar("airlock_request", default=None)  # a dict, or a function answering one


def bind(**fields) -> None:
    """Add ``fields`` (of FIELDS; None leaves one out) to the current request's context."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise TypeError(f"unknown log context fields: {', '.join(sorted(unknown))}")
    _current.set({**current(), **_clean(fields)})


def follow(source) -> None:
    """The current request's fields are ``source()``'s (a dict of FIELDS; None or empty values left
    out) whenever a line is written, until the next ``follow`` or ``clear``."""
    _current.set(source)


def clear() -> None:
    _current.set(None)


def current() -> dict:
    """The current request's fields (empty outside a request)."""
    value = _current.get()
    if value is None:
        return {}
    return _clean(value()) if callable(value) else value


def _clean(fields: dict) -> dict:
    return {name: str(value) for name, value in fields.items() if value is not None and value != ""}
