"""Named points on a request's path where addons attach, in the spirit of mitmproxy's addon hooks.

The events, in the order a request meets them (each handler gets the request's
:class:`gateway.exchange.Exchange`; ``exchange.request`` is the request as far as the stages got):

``parsed(exchange)``
    The request arrived and was parsed, or refused by the parser (``exchange.request`` is then
    None).  Nothing has been answered yet.
``decided(exchange)``
    The connection's rules decided (``exchange.request.decision``); a refusal may follow.
``held(exchange, pending)``
    A reviewer must approve it first (``pending``: approvals.hold.PendingReview); only for a
    request that waits for, or is sent away to, a review.
``forwarded(exchange)``
    Admitted: it goes to the cluster (or is answered by the gateway's self reviews) once every
    handler has returned; a handler that raises GatewayError refuses it before a byte is sent.
``completed(exchange)``
    The agent has its answer, the stream ended, or the request was refused; always last, once.
    Handlers here must not raise.

An addon is any object with some of these as async methods; addons run in the order given, for
every event.  A missing method costs nothing per request: each event is bound once to its
handlers (a no-op when there are none).  The gateway's own addons (gateway.addons) are the
audit recording and the lease binding of live streams.
"""

EVENTS = ("parsed", "decided", "held", "forwarded", "completed")


async def _nothing(*args) -> None:
    return None


def _chain(handlers):
    if not handlers:
        return _nothing
    if len(handlers) == 1:
        return handlers[0]

    async def run(*args) -> None:
        for handler in handlers:
            await handler(*args)

    return run


class Hooks:
    """The addons, and for each event an awaitable that runs their handlers in order
    (``await hooks.parsed(exchange)``)."""

    def __init__(self, addons=()):
        self.addons = tuple(addons)
        for event in EVENTS:
            handlers = [getattr(addon, event) for addon in self.addons if callable(getattr(addon, event, None))]
            setattr(self, event, _chain(handlers))
