"""The gateway's ASGI application for ``/k8s/<connection>/...``: the stage order, and nothing else.

It is a plain ASGI application (not a Django view) so request bodies are bounded while they
arrive and responses stream with the server's back-pressure.  The stages it runs in order are
elsewhere: parse (gateway.pipeline), authenticate (gateway.authn), authorize and hold
(gateway.authz, approvals.hold), the agent's budget (gateway.budgets), forward and relay the answer (gateway.responses over HTTP,
gateway.relay over WebSocket, gateway.selfreview_answers for the reviews it answers itself);
the per-request record they fill is gateway.exchange's.  Fail closed: anything that goes wrong
is a Kubernetes ``Status`` (gateway.refusals), and every request is recorded.
"""

import logging

import masking
from gateway import relay, selfreviews
from gateway.addons import AuditRecording, LeaseBinding
from gateway.authn import act_as, authenticate
from gateway.authz import Authorized, decide, fallback_refusal, permit
from gateway.detectors import DetectorChoice
from gateway.exchange import ClientGone, Exchange, OpenStreams
from gateway.hooks import Hooks
from gateway.pipeline import classify_dry_run, guard_write, parse_body, parse_request
from gateway.refusals import send_status
from gateway.responses import HttpForwarder, MaskingAbort
from gateway.secretvalues import ValuesUnavailable
from gateway.selfreview_answers import SelfReviews
from gateway.upgrades import upgrade_refusal
from gateway.upstream import UpstreamPool
from kube.status import SERVER_ANSWER, GatewayError
from runtime import db

log = logging.getLogger(__name__)


class GatewayApp:
    """The gateway for every connection: ``prefix`` is where connections start (``/k8s/``);
    ``connections(name)`` finds a connection's upstream; the collaborators are the stages';
    ``addons`` attach to the request's hooks (gateway.hooks) after the gateway's own."""

    def __init__(self, *, prefix: str, connections, authenticator, policy, recorder, max_body: int,
                 transport=None, pool=None, holder=None, leases=None, live=None, detectors=None, secret_values=None,
                 addons=(), budgets=None):
        """``leases`` finds the lease a rule requires (None: such rules refuse); ``live`` registers the
        streams admitted under one, so its end cuts them (required with ``leases``); ``budgets``
        (gateway.budgets.Budgets) spends the agents' budgets (None: no budgets, no loop detection)."""
        if leases is not None and live is None:
            raise ValueError("a gateway that admits requests under leases needs the live-stream registry")
        self.prefix = prefix
        self.secret_values = secret_values  # gateway.secretvalues.SecretValueStores, or None: no masking by value
        self.detectors = DetectorChoice(detectors)
        self.connections = connections
        self.authenticator = authenticator
        self.policy = policy
        self.recorder = recorder
        self.holder = holder
        self.leases = leases
        self.max_body = max_body
        self.budgets = budgets
        # Recording first: nothing is forwarded, or bound to a lease, before it is recorded.
        bindings = [LeaseBinding(live)] if live is not None else []
        spending = [budgets] if budgets is not None else []  # completed: a slot released, a loop counted
        self.hooks = Hooks([AuditRecording(recorder), *bindings, *spending, *addons])
        self.streams = OpenStreams()  # open watches, streamed bodies and WebSocket relays
        self.forwarder = HttpForwarder(None, self.detectors, self.streams)
        self.self_reviews = SelfReviews(policy, None, leases)
        self.pool = pool if pool is not None else UpstreamPool(transport)

    @property
    def pool(self) -> UpstreamPool:
        """The pooled HTTP clients, one per connection (bench.gateway_asgi swaps it for another client)."""
        return self._pool

    @pool.setter
    def pool(self, pool: UpstreamPool):
        self._pool = self.forwarder.pool = self.self_reviews.pool = pool

    async def start(self):
        """ASGI lifespan startup: the recorder replays dead processes' audit journals; the budgets' counters."""
        await self.recorder.start()
        if self.budgets is not None:
            self.budgets.start()

    async def aclose(self):
        if self.budgets is not None:
            await self.budgets.aclose()
        if self.secret_values is not None:
            await self.secret_values.aclose()
        await self.pool.aclose()
        await self.recorder.aclose()

    @property
    def draining(self) -> bool:
        return self.streams.draining

    async def drain(self, timeout: float) -> int:
        """End every open stream cleanly (a watch with an ERROR event and its final chunk, exec and attach
        with a Status on the error channel), then wait up to ``timeout`` s for them to close.

        Returns how many streams were ended.  Ordinary requests are left to finish: the server
        waits for those itself once it stops accepting connections.
        """
        return await self.streams.drain(timeout)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            await self.http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self.websocket(scope, receive, send)

    async def parse(self, exchange: Exchange):
        """parse, then the ``parsed`` hook whether or not the request was understood (the arrival is
        journaled there: when that fails, its 503 is the answer, even to a request the parser refused)."""
        try:
            exchange.request = parse_request(exchange.scope, self.prefix, str(exchange.audit_id))
        finally:
            await self.hooks.parsed(exchange)

    async def admit(self, exchange: Exchange, on_pending=None, receive=None):
        """authenticate -> connection -> (upgrade) -> (body) -> authorize for the parsed request; raises
        GatewayError.  Each stage's result is folded into ``exchange.request`` as it comes, so a
        refusal is recorded with what was learnt before it.

        An HTTP request body is read, transcoded and guarded before authorize,
        so a held write is reviewed, previewed and approved with its body.
        """
        request = exchange.request
        exchange.uri_detectors = self.detectors.default
        # Before the connection lookup: refusing an unauthenticated caller needs no database
        # and tells it nothing about which connections exist.
        request = exchange.request = request.evolve(principal=await authenticate(request, self.authenticator))
        try:
            upstream = await self.connections(request.connection)
        except db.DatabaseUnavailable:
            raise GatewayError(503, db.DOWN_MESSAGE) from None  # runtime.db logs outages
        except Exception:
            log.exception("connection %s cannot be loaded", request.connection)
            raise GatewayError(503, f'connection "{request.connection}" is misconfigured on the gateway') from None
        if upstream is None:
            raise GatewayError(404, f'connection "{request.connection}" not found')
        # Impersonate-* headers: a trusted proxy's end user on this connection, or a 403.
        request = exchange.request = request.evolve(principal=act_as(request, upstream))
        exchange.uri_detectors = self.detectors.for_uri(upstream, None)
        refusal, exchange.offered = upgrade_refusal(request, exchange.scope.get("subprotocols"))
        if refusal is not None:
            # Policy first, transport second (kubectl's SPDY fallback after a refused
            # WebSocket sees the same decision), and never a hold for what will not be relayed.
            authorized = await self.authorize(exchange, None)
            if authorized.refusal is not None:
                raise await fallback_refusal(self.holder, exchange.request, authorized.refusal)
            exchange.uri_detectors = self.detectors.for_uri(upstream, exchange.request.decision)
            raise refusal
        if receive is not None:
            body = parse_body(request, await self.read_body(exchange.scope, receive))
            request = exchange.request = request.evolve(body=body.content, headers=body.headers)
            exchange.bytes_in = len(body.content)
            exchange.request_body = guard_write(request, body.content)
        exchange.request = request.evolve(dry_run=classify_dry_run(request))
        caller = request.caller
        if caller is not None and caller.at_once:
            on_pending = _answer_at_once  # the in-process caller tells the agent itself (mcpfront)
        authorized = await self.authorize(exchange, self.holder, self.on_pending(exchange, on_pending))
        authorized.admitted()
        exchange.uri_detectors = self.detectors.for_uri(upstream, exchange.request.decision)
        await self.learn_values(exchange, upstream)
        if self.budgets is not None:  # last before forwarding: what is refused or held spends nothing
            await self.budgets.spend(exchange.request, exchange.audit_id)
        return upstream

    async def authorize(self, exchange: Exchange, holder, on_pending=None) -> Authorized:
        """decide, then permit (the lease, the hold): folded into ``exchange.request`` as far as it got."""
        request = exchange.request
        request = exchange.request = request.evolve(decision=await decide(request, self.policy))
        await self.hooks.decided(exchange)
        if self.budgets is not None:  # loop detection; a review rule's budget before a reviewer is asked
            await self.budgets.before_permit(exchange.request, holder=holder is not None)
        authorized = await permit(request, holder, on_pending=on_pending, leases=self.leases)
        exchange.request = authorized.request
        return authorized

    def on_pending(self, exchange: Exchange, then=None):
        """What the holder calls once the request waits for a reviewer: the ``held`` hook, then
        ``then`` (the WebSocket's note to the agent), whose answer it passes on."""

        async def pending(review):
            await self.hooks.held(exchange, review)
            return await then(review) if then is not None else None

        return pending

    async def learn_values(self, exchange: Exchange, upstream):
        """The Secret values this request's responses are masked for; what the audit trail
        keeps is masked for them too, also when the agent's copy is not (masking off).
        Unknown values: 503, nothing forwarded."""
        request = exchange.request
        if self.secret_values is None:
            return
        try:
            values = await self.secret_values.current(upstream, self.pool.client(upstream))
        except ValuesUnavailable as exc:
            raise GatewayError(503, f'airlock: connection "{request.connection}": {exc}; refused rather than risk '
                                    "showing Secret values") from None
        exchange.record_values = values
        exchange.request = request.evolve(secret_values=values if request.mask_secrets else None)
        if values:
            if exchange.uri_detectors is not None:
                exchange.uri_detectors = exchange.uri_detectors.with_values(values)
            exchange.request_body = masking.mask_values_in_record(exchange.request_body, values)

    async def read_body(self, scope, receive) -> bytes:
        for name, value in scope.get("headers", []):
            if name.lower() == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise GatewayError(400, "invalid Content-Length") from None
                if declared > self.max_body:
                    raise GatewayError(413, f"request body exceeds {self.max_body} bytes")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise GatewayError(413, f"request body exceeds {self.max_body} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    # -- HTTP -----------------------------------------------------------------------------

    async def http(self, scope, receive, send):
        exchange = Exchange(scope, body_cap=self.recorder.max_body)
        try:
            await self.parse(exchange)
            upstream = await self.admit(exchange, receive=receive)
            await self.hooks.forwarded(exchange)
            if selfreviews.review_kind(exchange.request.info):
                await self.self_reviews.answer(exchange, upstream, send)
            else:
                await self.forwarder.forward(exchange, upstream, exchange.request.body, receive, send)
        except GatewayError as exc:
            exchange.refused(exc)
            if self.budgets is not None:  # counted for loop detection before the agent can try again
                await self.budgets.refused(exchange)
            if not exchange.response_started:
                await send_status(send, exc)
        except ClientGone:
            exchange.message = "the client went away before the request body arrived"
        except MaskingAbort as exc:
            log.warning("response to %s aborted mid-stream: %s", exchange.audit_id, exc)
        except Exception:
            # A bug, not a refusal: the agent still gets a Status (or, mid-response, a cut
            # connection), and the completion event records the code the agent saw.
            log.exception("request %s failed inside the gateway", exchange.audit_id)
            error = GatewayError(500, "airlock: internal error; the request was not completed")
            if not exchange.response_started:
                exchange.refused(error)
                await send_status(send, error)
            else:
                exchange.message = error.message
        finally:
            answered = scope.get("extensions", {}).get(SERVER_ANSWER)
            if answered is not None:  # the server cut the request off: its answer, not ours, reached the client
                exchange.code, exchange.reason, exchange.message = answered
            await self.hooks.completed(exchange)

    # -- WebSocket ------------------------------------------------------------------------

    async def websocket(self, scope, receive, send):
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        exchange = Exchange(scope, body_cap=self.recorder.max_body)
        handshake = relay.Handshake(exchange, send)
        try:
            try:
                await self.parse(exchange)
                upstream = await self.admit(exchange, on_pending=handshake.on_pending)
                detectors = self.detectors.for_request(upstream, exchange.request.decision)
                await self.hooks.forwarded(exchange)
                upstream_ws = await relay.connect(exchange, upstream, detectors, handshake.accepted)
            except GatewayError as exc:
                exchange.refused(exc)
                if self.budgets is not None:
                    await self.budgets.refused(exchange)
                await handshake.refuse(exc)
                return
            await relay.run(exchange, upstream_ws, detectors, handshake.accepted, self.streams, receive, send)
        finally:
            await self.hooks.completed(exchange)


async def _answer_at_once(review) -> bool:
    """on_pending for an in-process caller that asked for answers at once: the hold returns pending."""
    return False
