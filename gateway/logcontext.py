"""The request's fields on every log line written while it is handled, as a gateway addon.

:class:`RequestLogContext` (hooks ``parsed`` and ``decided``, gateway.hooks) binds, in the
request's own task (runtime.logcontext): ``request_id``, the audit id, once the request arrived
(the audit trail's event has the same id, so a log line leads to the event and back);
``connection`` once it was parsed; ``identity`` (the agent's username) and ``decision`` (the
rules' effect) once its rules decided.  The JSON log formatter (airlock.logs) writes them.
"""

from __future__ import annotations

from runtime import logcontext


def bind_exchange(exchange) -> None:
    """Bind what ``exchange`` (gateway.exchange.Exchange) says about its request so far."""
    request = exchange.request
    fields = {"request_id": exchange.audit_id}
    if request is not None:
        fields["connection"] = request.connection
        if request.principal is not None:
            fields["identity"] = request.principal.username
        if request.decision is not None:
            fields["decision"] = request.decision.effect
    logcontext.bind(**fields)


class RequestLogContext:
    """The gateway addon that puts the request's fields on its log lines (hooks: parsed, decided)."""

    async def parsed(self, exchange):
        bind_exchange(exchange)

    async def decided(self, exchange):
        bind_exchange(exchange)
