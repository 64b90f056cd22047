"""The request's fields on every log line written while it is handled, as a gateway addon.

:class:`RequestLogContext` (hook ``parsed``, gateway.hooks) points the request's own task's log
context (runtime.logcontext) at the request's :func:`fields`, read whenever a line is written:
``request_id``, the audit id (the audit trail's event has the same id, so a log line leads to the
event and back); ``connection`` once it was parsed; ``identity`` (the agent's username) once it
was authenticated and ``decision`` (the rules' effect) once its rules decided.  The JSON log
formatter (airlock.logs) writes them.  The context holds the exchange weakly: a task the request
started that outlives it (a listener started on first use) keeps no request alive, and its lines
carry no fields of a request that is over.
"""

from __future__ import annotations

import weakref
from functools import partial

from runtime import logcontext


def fields(exchange) -> dict:
    """What ``exchange`` (gateway.exchange.Exchange) says about its request so far."""
    request = exchange.request
    if request is None:
        return {"request_id": exchange.audit_id}
    principal, decision = request.principal, request.decision
    return {"request_id": exchange.audit_id, "connection": request.connection,
            "identity": principal.username if principal is not None else None,
            "decision": decision.effect if decision is not None else None}


def _fields_while_alive(exchange: weakref.ref) -> dict:
    alive = exchange()
    return fields(alive) if alive is not None else {}


class RequestLogContext:
    """The gateway addon that puts the request's fields on its log lines (hook: parsed)."""

    async def parsed(self, exchange):
        logcontext.follow(partial(_fields_while_alive, weakref.ref(exchange)))
