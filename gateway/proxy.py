"""ASGI glue for ``/k8s/<connection>/...``: thin, streaming, fail closed.

The stages themselves live in :mod:`gateway.pipeline`, :mod:`gateway.authn`
and :mod:`gateway.authz`; this module only moves bytes between the agent,
those stages and the cluster.  It is a plain ASGI application (not a Django
view) so request bodies are bounded while they arrive and responses stream
with the server's back-pressure.
"""

import asyncio
import json
import logging
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
from django.db import DatabaseError

from audit import events as audit_events
from audit.recorder import AuditUnavailable

import masking
from gateway import selfreviews
from gateway.authn import authenticate, refuse_impersonation
from gateway.authz import authorize, find_lease, lease_refusal, review_details
from gateway.pipeline import GatewayRequest, classify_dry_run, parse_body, parse_request
from gateway.secretvalues import ValuesUnavailable
from gateway.streams import StreamTap, StreamViolation
from gateway.upgrades import CHANNEL_PROTOCOLS, relayed_protocols
from gateway.upstream import UpstreamPool, open_websocket
from gateway.wsclient import UpstreamRejected, UpstreamTimeout
from kube import channels
from kube import headers as hdr
from kube.media import declared_content_type
from kube.requestinfo import RequestInfoError, is_long_running, parse_query, query_bool
from kube.status import SERVER_ANSWER, GatewayError
from masking import tokens
from masking.queries import masked_target
from policy.messages import describe_request
from policy.vocabulary import ALLOW, REVIEW
from runtime import db

log = logging.getLogger(__name__)

STATUS_HEADERS = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
SPDY_REFUSED = (
    "airlock: this gateway relays exec, attach, cp and port-forward over WebSockets only; "
    "SPDY is not supported. Use kubectl >= 1.31 (or unset KUBECTL_REMOTE_COMMAND_WEBSOCKETS="
    "false / KUBECTL_PORT_FORWARD_WEBSOCKETS=false)"
)
# Responses up to this size with a Content-Length are sent in one message.
SMALL_RESPONSE = 256 * 1024


class Cut:
    """Ends a live stream early: when the lease it runs under ends (approvals.live calls it with the
    reason) or when the gateway drains (:meth:`end` with the Status to end it with)."""

    def __init__(self):
        self.event = asyncio.Event()
        self.reason = ""
        self._error: GatewayError | None = None

    def __call__(self, reason: str):
        reason = reason or "the lease ended"
        self.end(GatewayError(403, f"airlock: {reason}; the session was ended"), reason)

    def end(self, error: GatewayError, reason: str = ""):
        if not self.event.is_set():
            self._error, self.reason = error, reason or error.message
            self.event.set()

    def error(self) -> GatewayError:
        return self._error


# What ends every open stream when the gateway shuts down (airlock.asgi, on SIGTERM).
DRAINING_REASON = "the gateway is shutting down"
DRAINING = GatewayError(503, f"airlock: {DRAINING_REASON}; the stream was ended, start it again")


def bind_to_lease(live, request, cut: Cut):
    """Register a long-lived stream admitted under a lease with ``live`` (approvals.live.LiveStreams),
    so expiry or revocation cuts it."""
    lease = getattr(request, "lease", None)
    if lease is None:
        return None
    return live.register(request.principal, request.connection, lease.id, cut, expires_at=lease.expires_at)


def unbind(live, handle):
    if handle is not None:
        live.unregister(handle)


class ClientGone(Exception):
    """The agent disconnected before its request could be forwarded."""


@dataclass
class Exchange:
    """What the record stage learns about one request while it is handled."""

    scope: dict
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started: float = field(default_factory=time.monotonic)
    audit_id: uuid.UUID = field(default_factory=uuid.uuid4)
    request: GatewayRequest | None = None
    request_body: bytes = b""
    code: int = 0
    reason: str = ""
    message: str = ""
    bytes_in: int = 0
    bytes_out: int = 0
    response_started: bool = False
    response_body: bytearray = field(default_factory=bytearray)
    body_cap: int = 0
    # The audit trail's copy of a response the agent gets unmasked is masked by this (None: the
    # agent's copy already is); a failure stops the copy, with ``record_note`` saying so.
    record_masker: object = None
    record_stopped: bool = False
    record_note: str = ""
    record_values: object = None  # the Secret values the audit trail is masked for, whatever the agent sees
    recording: dict | None = None
    masking_counts: dict = field(default_factory=dict)
    # Detectors the request URI is masked with; None keeps only its path (not known, or invalid).
    uri_detectors: masking.Detectors | None = None
    offered: list = field(default_factory=list)  # WebSocket subprotocols the relay understands
    accepted: str | None = None  # WebSocket subprotocol accepted while the request was held

    def refused(self, error: GatewayError):
        self.code, self.reason, self.message = error.code, error.reason, error.message

    def capture(self, chunk: bytes, sent: int | None = None):
        """Record ``chunk`` (as the audit trail keeps it, through ``record_masker`` if any); ``sent``:
        the bytes the agent got, when they differ.  The record masker runs only while there is room."""
        self.bytes_out += len(chunk) if sent is None else sent
        if self.record_masker is not None and self._room() > 0:
            chunk = self._record_masked(self.record_masker.feed, chunk)
        self._keep(chunk)

    def end_capture(self):
        """The body is complete: keep what the record masker still holds."""
        if self.record_masker is not None and self._room() > 0:
            self._keep(self._record_masked(lambda _: self.record_masker.close(), b""))
        self.stop_capture()

    def stop_capture(self, note: str = ""):
        self.record_stopped, self.record_note = True, self.record_note or note

    def _record_masked(self, step, chunk: bytes) -> bytes:
        try:
            return step(chunk)
        except masking.MaskingError:
            self.stop_capture("airlock: the recorded copy of the response could not be masked; it ends here")
            return b""

    def _room(self) -> int:
        return 0 if self.record_stopped else self.body_cap - len(self.response_body)

    def _keep(self, chunk: bytes):
        room = self._room()
        if room > 0:
            self.response_body += chunk[:room]

    def event(self, stage: str) -> dict:
        message = "; ".join(m for m in (self.message, self.record_note) if m)
        fields = {"response_code": self.code or None, "response_reason": self.reason,
                  "response_message": message}
        if stage == "ResponseComplete":
            fields.update(
                latency_ms=(time.monotonic() - self.started) * 1000.0,
                bytes_in=self.bytes_in,
                bytes_out=self.bytes_out,
                response_body=bytes(self.response_body),
            )
            if self.recording is not None:
                fields["recording"] = self.recording
            if self.masking_counts:
                fields["masking_counts"] = self.masking_counts
        if self.request_body:
            fields["request_body"] = self.request_body
        if self.request is not None:
            fields["request_uri"] = masked_target(self.request, self.uri_detectors)
            if self.request.review is not None:
                fields["review_id"] = str(self.request.review.review_id)
            if self.request.lease is not None:
                fields["lease_id"] = str(self.request.lease.id)
            return audit_events.from_request(self.request, stage=stage, received_at=self.received_at, **fields)
        return audit_events.from_scope(self.scope, audit_id=self.audit_id, stage=stage,
                                       received_at=self.received_at, **fields)


class GatewayApp:
    def __init__(self, *, prefix: str, connections, authenticator, policy, recorder, max_body: int,
                 transport=None, pool=None, holder=None, leases=None, live=None, detectors=None, secret_values=None):
        """``leases`` finds the lease a rule requires (None: such rules refuse); ``live`` registers the
        streams admitted under one, so its end cuts them (required with ``leases``)."""
        if leases is not None and live is None:
            raise ValueError("a gateway that admits requests under leases needs the live-stream registry")
        self.prefix = prefix
        self.secret_values = secret_values  # gateway.secretvalues.SecretValueStores, or None: no masking by value
        self.detectors = detectors if detectors is not None else masking.Detectors.default()
        self._configured_detectors: dict[str, masking.Detectors] = {}
        self.connections = connections
        self.authenticator = authenticator
        self.policy = policy
        self.recorder = recorder
        self.holder = holder
        self.leases = leases
        self.live = live
        self.max_body = max_body
        self.pool = pool if pool is not None else UpstreamPool(transport)
        self._streams: set[Cut] = set()  # open watches, streamed bodies and WebSocket relays
        self._draining = False

    async def start(self):
        """ASGI lifespan startup: the recorder replays dead processes' audit journals."""
        await self.recorder.start()

    async def aclose(self):
        if self.secret_values is not None:
            await self.secret_values.aclose()
        await self.pool.aclose()
        await self.recorder.aclose()

    @property
    def draining(self) -> bool:
        return self._draining

    @contextmanager
    def open_stream(self, cut: Cut):
        """Track a long-lived stream so :meth:`drain` can end it; one opened while draining ends at once."""
        self._streams.add(cut)
        if self._draining:
            cut.end(DRAINING, DRAINING_REASON)
        try:
            yield
        finally:
            self._streams.discard(cut)

    async def drain(self, timeout: float) -> int:
        """End every open stream cleanly (a watch with an ERROR event and its final chunk, exec and attach
        with a Status on the error channel), then wait up to ``timeout`` s for them to close.

        Returns how many streams were ended.  Ordinary requests are left to finish: the server
        waits for those itself once it stops accepting connections.
        """
        self._draining = True
        ended = list(self._streams)
        for cut in ended:
            cut.end(DRAINING, DRAINING_REASON)
        deadline = time.monotonic() + timeout
        while self._streams and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return len(ended)

    async def unless_drained(self, waiting):
        """``await waiting``, unless the gateway drains first: then it is cancelled and the drain's
        Status raised (a long-running request whose answer has not started holds no stream yet)."""
        cut = Cut()
        task = asyncio.ensure_future(waiting)
        with self.open_stream(cut):
            stop = asyncio.ensure_future(cut.event.wait())
            try:
                await asyncio.wait([task, stop], return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()
                if not task.done():
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
        if task.cancelled():
            raise cut.error()
        return task.result()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            await self.http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self.websocket(scope, receive, send)

    async def admit(self, exchange: Exchange, on_pending=None, receive=None):
        """parse -> authenticate -> connection -> (upgrade) -> (body) -> authorize; raises GatewayError.

        An HTTP request body is read, transcoded and guarded before authorize,
        so a held write is reviewed, previewed and approved with its body.
        """
        request = exchange.request = exchange.request or parse_request(exchange.scope, self.prefix)
        request.audit_id = exchange.audit_id
        exchange.uri_detectors = self.detectors
        # Before the connection lookup: refusing an unauthenticated caller needs no database
        # and tells it nothing about which connections exist.
        await authenticate(request, self.authenticator)
        refuse_impersonation(request)
        try:
            upstream = await self.connections(request.connection)
        except db.DatabaseUnavailable:
            raise GatewayError(503, db.DOWN_MESSAGE) from None  # runtime.db logs outages
        except Exception:
            log.exception("connection %s cannot be loaded", request.connection)
            raise GatewayError(503, f'connection "{request.connection}" is misconfigured on the gateway') from None
        if upstream is None:
            raise GatewayError(404, f'connection "{request.connection}" not found')
        exchange.uri_detectors = self.uri_detectors(upstream, None)
        refusal = self.upgrade_refusal(exchange)
        if refusal is not None:
            # Policy first, transport second (kubectl's SPDY fallback after a refused
            # WebSocket sees the same decision), and never a hold for what will not be relayed.
            try:
                await authorize(request, self.policy, None)
            except GatewayError as exc:
                raise await self.fallback_refusal(request, exc) from None
            exchange.uri_detectors = self.uri_detectors(upstream, request.decision)
            raise refusal
        if receive is not None:
            request.body = parse_body(request, await self.read_body(exchange.scope, receive))
            exchange.bytes_in = len(request.body)
            exchange.request_body = self.guard_write(request, request.body)
        classify_dry_run(request)
        await self.authorize(request, self.record_hold(exchange, on_pending))
        exchange.uri_detectors = self.uri_detectors(upstream, request.decision)
        await self.learn_values(exchange, upstream)
        return upstream

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
        request.secret_values = values if request.mask_secrets else None
        if values:
            if exchange.uri_detectors is not None:
                exchange.uri_detectors = exchange.uri_detectors.with_values(values)
            exchange.request_body = masking.mask_values_in_record(exchange.request_body, values)

    async def fallback_refusal(self, request, refused: GatewayError) -> GatewayError:
        """A review-gated upgrade the gateway does not relay (kubectl's SPDY retry after its WebSocket
        was held or refused) answers with what its WebSocket attempt was told: the review's state and URL."""
        if self.holder is None or request.decision is None or request.decision.effect != REVIEW:
            return refused
        try:
            outcome = await self.holder.recent_stream_review(request)
        except DatabaseError:  # only a better message was at stake: the refusal stands as it is
            return refused
        if outcome is None:
            return refused
        return GatewayError(403, outcome.message(outcome.description or describe_request(request.info)),
                            details=review_details(outcome.review_id))

    @staticmethod
    def upgrade_refusal(exchange: Exchange) -> GatewayError | None:
        """The refusal of an upgrade the gateway does not relay (SPDY, or a WebSocket other than
        exec/attach/port-forward); for one it relays, the subprotocols it may offer the cluster."""
        request = exchange.request
        if request.transport == "spdy":
            return GatewayError(400, SPDY_REFUSED)
        if request.transport == "websocket":
            try:
                exchange.offered = relayed_protocols(request.info, exchange.scope.get("subprotocols") or ())
            except GatewayError as exc:
                return exc
        return None

    async def authorize(self, request, on_pending):
        await authorize(request, self.policy, self.holder, on_pending=on_pending, leases=self.leases)
        review = request.review
        if tokens.is_token_request(request.info):
            # Masked in every copy the gateway keeps; the agent's copy gets it back only when released.
            request.release_token = review.release_token if review is not None else not request.decision.mask_secrets
            request.mask_secrets = True
        elif review is not None and getattr(review, "unmask", False):
            request.mask_secrets = False  # every approver granted unmasking; recorded with the review
        else:
            request.mask_secrets = request.decision.mask_secrets

    def detectors_for(self, upstream, decision) -> "masking.Detectors":
        """The rule's detector configuration, else the connection's, else the gateway default."""
        key = getattr(decision, "detectors", "") or upstream.detectors
        if not key:
            return self.detectors
        detectors = self._configured_detectors.get(key)
        if detectors is None:
            try:
                detectors = masking.Detectors.from_config(json.loads(key))
            except (ValueError, masking.DetectorConfigError):
                raise GatewayError(503, "airlock: the masking configuration is invalid") from None
            self._configured_detectors[key] = detectors
        return detectors

    def uri_detectors(self, upstream, decision) -> "masking.Detectors | None":
        """What the request URI is recorded with; None (its path only) while the configuration is invalid."""
        try:
            return self.detectors_for(upstream, decision)
        except GatewayError:
            return None

    def record_arrival(self, exchange: Exchange):
        """Journal the request before anything is sent or forwarded, so that a crash leaves it in the
        audit trail (closed as "gateway crashed" on recovery), or refuse it (fail closed)."""
        try:
            self.recorder.received(exchange.event("RequestReceived"))
        except AuditUnavailable as exc:
            raise GatewayError(503, f"airlock: {exc}") from None

    async def record_before_forwarding(self, exchange: Exchange):
        """Anything that can change the cluster is durably recorded first, anything else journaled, or refused."""
        if not audit_events.needs_durable_record(exchange.request):
            self.record_arrival(exchange)
            return
        try:
            await self.recorder.begin(exchange.event("RequestReceived"))
        except AuditUnavailable as exc:
            raise GatewayError(503, f"airlock: {exc}") from None

    def record_hold(self, exchange: Exchange, on_pending):
        """``on_pending`` that first commits the held request's RequestReceived (with its review id),
        so a hold is in the audit trail while it waits; it answers what ``on_pending`` answers.

        Secret values are not known yet (learn_values runs once the hold ends), so this event keeps
        the path only and no body; the completion records both, masked.
        """

        async def pending(review):
            event = exchange.event("RequestReceived")
            event.update(review_id=str(review.id), request_uri=exchange.request.upstream_path, request_body=b"")
            try:
                await self.recorder.begin(event)
            except AuditUnavailable as exc:
                raise GatewayError(503, f"airlock: {exc}") from None
            if on_pending is not None:
                return await on_pending(review)
            return None

        return pending

    async def record(self, exchange: Exchange):
        try:
            await self.recorder.finish(exchange.event("ResponseComplete"))
        except Exception:
            log.exception("audit event %s could not be queued", exchange.audit_id)

    # -- HTTP ---------------------------------------------------------------

    async def http(self, scope, receive, send):
        exchange = Exchange(scope, body_cap=self.recorder.max_body)
        try:
            self.record_arrival(exchange)
            upstream = await self.admit(exchange, receive=receive)
            await self.record_before_forwarding(exchange)
            if selfreviews.review_kind(exchange.request.info):
                await self.answer_self_review(exchange, upstream, send)
            else:
                await self.forward(exchange, upstream, exchange.request.body, receive, send)
        except GatewayError as exc:
            exchange.refused(exc)
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
            await self.record(exchange)

    def guard_write(self, request: GatewayRequest, body: bytes) -> bytes:
        """Refuse writes that would store the mask placeholder; return the body as it may be recorded."""
        if not body:
            return b""
        content_type = declared_content_type(request.headers, None)
        try:
            masking.check_write(request.info, content_type, body)
            return masking.mask_request_body_for_record(request.info, content_type, body)
        except masking.WriteRefused as exc:
            raise GatewayError(exc.code, str(exc), reason=exc.reason) from None
        except masking.MaskingError as exc:
            raise GatewayError(400, f"airlock: the request body cannot be inspected: {exc}") from None

    # -- self reviews (kubectl auth whoami / can-i), answered here: gateway.selfreviews ----------

    async def answer_self_review(self, exchange: Exchange, upstream, send):
        """Answer whoami / can-i / can-i --list for the agent; recorded like any answer."""
        request = exchange.request
        kind = selfreviews.review_kind(request.info)
        review = selfreviews.read(request.body, request.info, kind)
        if kind == selfreviews.IDENTITY:
            cluster_username = upstream.impersonation_user_prefix + request.principal.username \
                if upstream.impersonates else ""
            status = selfreviews.identity(request.principal, connection=request.connection,
                                          cluster_username=cluster_username)
        elif kind == selfreviews.ACCESS:
            status = await self.access_review(request, upstream, selfreviews.access_question(review))
        else:
            status = await self.rules_review(request, upstream, selfreviews.rules_namespace(review))
        body = json.dumps(selfreviews.answer(request.info, kind, review, status), separators=(",", ":")).encode()
        # It echoes what the agent asked; the trail keeps no Secret value the request body would not keep.
        body = masking.mask_values_in_record(body, exchange.record_values)
        exchange.code = 201
        exchange.response_started = True
        await send({"type": "http.response.start", "status": 201, "headers": STATUS_HEADERS})
        exchange.capture(body)
        await send({"type": "http.response.body", "body": body})

    async def access_review(self, request, upstream, info) -> dict:
        rules = await self.connection_rules(request.connection)
        decision = selfreviews.access_decision(rules, request.principal, info)
        refusal = ""
        if decision.effect == ALLOW and decision.requires_lease:
            if await self.lease_held(request, decision.rule_name) is None:
                refusal = lease_refusal(request.connection, request.principal, decision, info)
        verdict = selfreviews.access_verdict(decision, info, request.connection, refusal)
        if verdict.ask_cluster:
            answer = await self.ask_cluster(upstream, request, selfreviews.ACCESS,
                                            selfreviews.cluster_access_question(info))
            verdict = selfreviews.with_cluster_access(verdict, *answer, request.connection)
        return verdict.status()

    async def rules_review(self, request, upstream, namespace: str) -> dict:
        rules = await self.connection_rules(request.connection)
        leased = set()
        for rule in rules:
            if rule.effect == ALLOW and rule.requires_lease and rule.applies_to(request.principal):
                if await self.lease_held(request, rule.name) is not None:
                    leased.add(rule.name)
        ours = selfreviews.airlock_rules(rules, request.principal, namespace, request.connection, leased)
        answer = await self.ask_cluster(upstream, request, selfreviews.RULES,
                                        selfreviews.cluster_rules_question(namespace))
        return selfreviews.with_cluster_rules(ours, *answer, request.connection)

    async def connection_rules(self, connection: str):
        try:
            return await self.policy.rules_for(connection)
        except db.DatabaseUnavailable:
            raise GatewayError(503, db.DOWN_MESSAGE) from None

    async def lease_held(self, request, rule_name: str):
        try:
            return await find_lease(request.connection, request.principal, rule_name, self.leases)
        except DatabaseError:
            raise GatewayError(503, "airlock: leases are unavailable right now (database error)") from None

    async def ask_cluster(self, upstream, request, kind: str, question: bytes) -> tuple[dict | None, str]:
        """Create the review ``question`` on the cluster as the connection's identity: its status, or why not."""
        headers = [("content-type", "application/json"), ("accept", "application/json"),
                   ("accept-encoding", "identity"), *cluster_headers(upstream, request.principal)]
        try:
            async with asyncio.timeout(upstream.first_byte_timeout):
                response = await self.pool.client(upstream).post(
                    upstream.server_url + selfreviews.CLUSTER_PATHS[kind], content=question, headers=hdr.encode(headers))
        except TimeoutError:
            return None, f"no answer within {upstream.first_byte_timeout:g} s"
        except httpx.HTTPError as exc:
            log.warning("upstream %s unreachable for a %s: %s", request.connection, kind, type(exc).__name__)
            return None, "it is unreachable"
        return selfreviews.cluster_status(kind, response.status_code, response.content)

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

    async def forward(self, exchange: Exchange, upstream, body: bytes, receive, send):
        """Send the request upstream and relay the answer, within the connection's timeouts.

        kube-apiserver's long-running requests (watch, logs, exec, proxy...) may take any time to
        start and be silent for any time; every other answer must start within the first-byte
        timeout and never stall longer than the idle timeout (504 while nothing was sent).
        """
        request = exchange.request
        client = self.pool.client(upstream)
        headers = hdr.upstream_request_headers(request.headers)
        headers.extend(cluster_headers(upstream, request.principal))
        long_running = is_long_running(request.info)
        try:
            up_request = client.build_request(
                request.method, upstream.server_url + request.target, headers=hdr.encode(headers), content=body
            )
            if long_running:  # no time limit, but the gateway's shutdown ends the wait
                response = await self.unless_drained(client.send(up_request, stream=True))
            else:
                async with asyncio.timeout(upstream.first_byte_timeout):
                    response = await client.send(up_request, stream=True)
        except TimeoutError:
            raise GatewayError(504, f'connection "{request.connection}": the cluster did not answer within '
                                    f"{upstream.first_byte_timeout:g} s") from None
        except httpx.ConnectTimeout:
            raise GatewayError(504, f'connection "{request.connection}": timed out connecting to the cluster') from None
        except httpx.PoolTimeout:
            raise GatewayError(503, f'connection "{request.connection}": too many concurrent requests') from None
        except httpx.HTTPError as exc:
            log.warning("upstream %s unreachable: %s", request.connection, type(exc).__name__)
            raise GatewayError(502, f'connection "{request.connection}": the cluster is unreachable') from None
        exchange.code = response.status_code
        idle = None if long_running else upstream.idle_timeout
        try:
            encoding = response.headers.get("content-encoding", "identity").lower()
            if encoding not in ("identity", ""):
                raise GatewayError(502, f"upstream answered with Content-Encoding {encoding}, refused")
            try:
                masker = masking.response_masker(
                    request.info, response.status_code, response.headers.get("content-type"),
                    mask_secrets=request.mask_secrets,
                    detectors=self.detectors_for(upstream, request.decision),
                    values=request.secret_values,
                )
            except masking.MaskingError as exc:
                raise GatewayError(502, str(exc)) from None
            exchange.record_masker = self.record_masker(exchange, upstream, response)
            start = {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": hdr.response_headers(response.headers.raw),
            }
            length = response.headers.get("content-length")
            if request.release_token or (length is not None and length.isdigit() and int(length) <= SMALL_RESPONSE):
                raw = await read_whole(response, idle, limit=SMALL_RESPONSE if request.release_token else None)
                content = raw
                if masker is not None:
                    content = masked_whole(masker, raw)
                    exchange.masking_counts = masker.report.counts
                shown = self.released(exchange, content, raw) if request.release_token else content
                exchange.response_started = True
                await send(start)
                exchange.capture(content, sent=len(shown))
                exchange.end_capture()
                await send({"type": "http.response.body", "body": shown})
            else:
                stream = ResponseStream(response, masker, start, watch=request.info.verb == "watch", idle=idle,
                                        connection=request.connection)
                handle = bind_to_lease(self.live, request, stream.cut)
                try:
                    with self.open_stream(stream.cut):
                        await stream.relay(receive, send, exchange)
                finally:
                    unbind(self.live, handle)
                    if masker is not None:
                        exchange.masking_counts = masker.report.counts
        except (httpx.HTTPError, UpstreamStalled) as exc:
            if not exchange.response_started:
                raise broken_answer(exc, request.connection) from None
            exchange.message = "the cluster broke the response stream"
            log.warning("upstream %s broke the response stream", request.connection)
        finally:
            await response.aclose()

    def record_masker(self, exchange: Exchange, upstream, response):
        """When a rule or review unmasked the agent's copy, the masker of the audit trail's copy
        (fed what the agent gets): masked as with ``maskSecrets: true``, whatever the agent saw."""
        request = exchange.request
        if request.mask_secrets:
            return None
        try:
            return masking.response_masker(
                request.info, response.status_code, response.headers.get("content-type"), mask_secrets=True,
                detectors=self.detectors_for(upstream, request.decision), values=exchange.record_values)
        except masking.MaskingError:
            exchange.stop_capture("airlock: the response cannot be masked for the record; not recorded")
            return None

    @staticmethod
    def released(exchange: Exchange, masked: bytes, raw: bytes) -> bytes:
        """The agent's copy of a TokenRequest response whose token was released; the audit trail keeps
        ``masked`` and a completion message naming who released it."""
        shown = tokens.release(masked, raw)
        if shown is None:
            return masked
        request = exchange.request
        if request.review is not None:
            who = f"review {request.review.review_id} (approved by {request.review.reviewer or 'the reviewers'})"
        else:
            who = f'rule "{request.decision.rule_name}" (maskSecrets: false)'
        exchange.message = f"airlock: the ServiceAccount token was released to the agent by {who}; masked here"
        return shown

    # -- WebSocket ----------------------------------------------------------

    async def websocket(self, scope, receive, send):
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        exchange = Exchange(scope, body_cap=self.recorder.max_body)
        try:
            await self.open_relay(exchange, receive, send)
        finally:
            await self.record(exchange)

    async def admit_stream(self, exchange: Exchange, send):
        """admit() for a WebSocket: how a held exec, attach or port-forward learns that it waits.

        The note goes only where the client reads errors (client-go logs frames on
        channels it did not ask for as "Unknown stream" and drops them; the Python
        client puts them in its output or fails its port-forward):

        * exec/attach held open whose client asked for stderr (and no tty, which merges
          it): the WebSocket is accepted at once and the note written on stderr;
        * any other exec/attach: accepted, and answered at once with a Status on the
          error channel (kubectl prints it and exits; run it again once approved);
        * port-forward: its channels carry only port data and port errors, so a held one
          waits before the handshake without a note, and one answered at once is
          refused with the Status.

        Returns the upstream and the subprotocol already accepted (None when the
        client is still waiting for the handshake).
        """
        accepted = None

        async def on_pending(pending):
            nonlocal accepted
            protocol = channel_protocol(exchange.offered)
            request = exchange.request
            if protocol is None or request.info.subresource == "portforward":
                return pending.wait
            await send({"type": "websocket.accept", "subprotocol": protocol})
            accepted = protocol
            if not (pending.wait and wants_stderr(request)):
                return False
            note = (f"airlock: waiting for a reviewer to approve review {pending.id} "
                    f"(rule {pending.rule_name}): {pending.url}; the session starts once it is approved\r\n")
            await send(channel_frame(protocol, channels.STDERR, note.encode()))
            return True

        exchange.request = parse_request(exchange.scope, self.prefix)
        try:
            upstream = await self.admit(exchange, on_pending=on_pending)
        except GatewayError:
            exchange.accepted = accepted
            raise
        return upstream, accepted

    async def open_relay(self, exchange: Exchange, receive, send):
        scope = exchange.scope
        accepted = None
        try:
            self.record_arrival(exchange)
            upstream, accepted = await self.admit_stream(exchange, send)
            request = exchange.request
            detectors = self.detectors_for(upstream, request.decision)
            headers = hdr.upstream_request_headers(request.headers, websocket=True)
            headers.extend(cluster_headers(upstream, request.principal))
            await self.record_before_forwarding(exchange)
            try:
                upstream_ws = await open_websocket(upstream, request.target, hdr.encode(headers),
                                                   [accepted] if accepted else exchange.offered)
            except UpstreamRejected as exc:
                raise upstream_refusal(exc, request, detectors, exchange.record_values) from None
            except UpstreamTimeout as exc:
                raise GatewayError(504, f'connection "{request.connection}": ' + (
                    "timed out connecting to the cluster" if exc.phase == "connect"
                    else f"the cluster did not answer within {exc.seconds:g} s")) from None
            except (OSError, ValueError) as exc:
                log.warning("upstream %s websocket failed: %s", request.connection, type(exc).__name__)
                raise GatewayError(502, f'connection "{request.connection}": the cluster is unreachable') from None
        except GatewayError as exc:
            exchange.refused(exc)
            accepted = accepted or exchange.accepted
            if accepted:
                await send(channel_frame(accepted, channels.ERROR, exc.body()))
                await send({"type": "websocket.close", "code": 1000})
            else:
                await reject_websocket(scope, send, exc)
            return
        exchange.code = 101
        request = exchange.request
        tap = StreamTap.for_request(request, upstream_ws.subprotocol, detectors, exchange.record_values)
        cut = Cut()
        handle = bind_to_lease(self.live, request, cut)
        try:
            if not accepted:
                await send({"type": "websocket.accept", "subprotocol": upstream_ws.subprotocol})
            with self.open_stream(cut):
                ended = await relay(upstream_ws, receive, send, tap, cut)
            if ended is not None:
                exchange.reason, exchange.message = ended.reason, ended.message
        finally:
            unbind(self.live, handle)
            await upstream_ws.close()
            exchange.bytes_in, exchange.bytes_out = tap.bytes_in, tap.bytes_out
            exchange.recording = tap.recording(time.monotonic() - exchange.started)
            exchange.masking_counts = tap.report
            if cut.event.is_set():
                exchange.message = cut.reason


def wants_stderr(request) -> bool:
    """The exec or attach client reads a stderr stream: ``stderr`` true and no ``tty`` (which merges it),
    decoded as kube-apiserver decodes PodExecOptions and PodAttachOptions."""
    try:
        params = parse_query(request.query)
    except RequestInfoError:
        return False
    return query_bool(params, "stderr") and not query_bool(params, "tty")


def channel_protocol(offered: list[str]) -> str | None:
    """The channel protocol to accept before the cluster is reached (the client's preference)."""
    return next((p for p in offered if p in CHANNEL_PROTOCOLS), None)


def channel_frame(protocol: str, channel: int, payload: bytes) -> dict:
    return ws_message(channels.framing(protocol).encode(channel, payload))


def ws_message(frame: bytes | str) -> dict:
    if isinstance(frame, bytes):
        return {"type": "websocket.send", "bytes": frame}
    return {"type": "websocket.send", "text": frame}


def cluster_headers(upstream, principal) -> list[tuple[str, str]]:
    """The gateway's own credentials, and the agent's identity in impersonation mode."""
    headers = list(upstream.auth_headers().items())
    if upstream.impersonates:
        headers.append(("Impersonate-User", upstream.impersonation_user_prefix + principal.username))
        headers.extend(("Impersonate-Group", group) for group in principal.groups)
    return headers


def upstream_refusal(exc: UpstreamRejected, request, detectors, values=None) -> GatewayError:
    """The cluster's refusal of an upgrade as the agent may see it.

    Only a ``Status`` message is passed on, after the body went through a response masker with
    Secret masking on and the connection's Secret ``values`` whatever the request's masking: the
    message is also the audit trail's, which stays masked; what cannot be masked gets a generic message.
    """
    code = exc.status if 400 <= exc.status < 600 else 502
    default = f"the cluster refused the stream ({exc.status})"
    try:
        masker = masking.response_masker(request.info, exc.status, exc.content_type,
                                         mask_secrets=True, detectors=detectors, values=values)
        body = masker.feed(exc.body) + masker.close() if masker is not None else exc.body
        status = json.loads(body or b"null")
    except (masking.MaskingError, ValueError):
        return GatewayError(code, default)
    message = status.get("message") if isinstance(status, dict) and status.get("kind") == "Status" else None
    return GatewayError(code, message if isinstance(message, str) and message else default)


class UpstreamBroke(Exception):
    """The cluster's half of a relay ended without a close frame (reset, dead connection)."""

    error = GatewayError(502, "airlock: the connection to the cluster broke; the session was ended")


# How long a port-forward agent gets to read the gateway's last message and close the tunnel itself.
TUNNEL_LINGER = 1.0


async def closed_by_client(receive, timeout: float) -> bool:
    """Whether the agent closes the WebSocket within ``timeout`` s (what it sends meanwhile is dropped)."""
    try:
        async with asyncio.timeout(timeout):
            while (await receive())["type"] != "websocket.disconnect":
                pass
    except TimeoutError:
        return False
    return True


def close_code(error: GatewayError, status_sent: bool) -> int:
    """The agent's close code when the gateway ends a relay: 1000 once the Status went on the error
    channel; else what the end means: 1001 going away (drain), 1011 the cluster failed, 1008 policy."""
    if status_sent:
        return 1000
    return {503: 1001, 502: 1011, 504: 1011}.get(error.code, 1008)


async def relay(upstream_ws, receive, send, tap, cut) -> GatewayError | None:
    """Pump frames both ways until either side closes; the cluster's close code is passed on.

    Every frame passes through ``tap`` (masking of what the cluster sends,
    recording) before it is relayed; output the masker holds back is released
    after an idle pause and before the close.  A frame the agent may not send,
    a broken cluster connection, or the stream being cut (its lease ended, the
    gateway drains) ends the stream with a Status on the error channel (exec,
    attach, the kubelet's port-forward channels) and a close; that error is
    returned, None when a side closed.
    """

    async def client_to_upstream():
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is None:
                data = message.get("text", "")
            await upstream_ws.send(tap.from_client(data))

    async def to_client(frames):
        for frame in frames:
            await send(ws_message(frame))

    async def upstream_to_client() -> bool:
        frames = aiter(upstream_ws)
        while True:
            try:
                if tap.holding:
                    data = await asyncio.wait_for(anext(frames), tap.IDLE_FLUSH)
                else:
                    data = await anext(frames)
            except TimeoutError:
                await to_client(tap.flush())
                continue
            except StopAsyncIteration:
                break
            except OSError:
                raise UpstreamBroke from None
            await to_client(tap.from_cluster(data))
        if upstream_ws.close_code == 1006:  # no close frame: the connection broke
            raise UpstreamBroke
        await to_client(tap.flush())
        await send({"type": "websocket.close", "code": upstream_ws.close_code or 1000})
        return True

    tasks = [asyncio.create_task(client_to_upstream()), asyncio.create_task(upstream_to_client()),
             asyncio.create_task(cut.event.wait())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    ended = None
    if isinstance(results[0], StreamViolation):
        ended = results[0].error
    elif isinstance(results[1], UpstreamBroke):
        ended = UpstreamBroke.error
    elif tasks[2] in done:
        ended = cut.error()
    if ended is not None and results[1] is not True:
        frames = tap.end(ended)
        await to_client(frames)
        # kubectl port-forward prints an error stream's message only if it closes the tunnel itself.
        if not (frames and tap.tunnel is not None and await closed_by_client(receive, TUNNEL_LINGER)):
            # Without a Status on an error channel, the close frame carries the message (<= 123 bytes).
            reason = "" if frames else ended.message.encode()[:120].decode("utf-8", "ignore")
            await send({"type": "websocket.close", "code": close_code(ended, bool(frames)), "reason": reason})
    for result in results:
        if isinstance(result, Exception) and not isinstance(result, (StreamViolation, UpstreamBroke)):
            log.warning("stream relay ended with %s", type(result).__name__)
    return ended


def masked_whole(masker, content: bytes) -> bytes:
    try:
        return masker.feed(content) + masker.close()
    except masking.MaskingError as exc:
        raise GatewayError(502, str(exc)) from None


class MaskingAbort(Exception):
    """The response started but cannot be completed (masking failed, or its lease ended):
    the connection is dropped, never completed."""


class UpstreamStalled(Exception):
    """No byte of the cluster's answer came for the idle timeout."""

    def __init__(self, seconds: float):
        super().__init__(f"no data for {seconds:g} s")
        self.seconds = seconds


def broken_answer(exc: Exception, connection: str) -> GatewayError:
    """The Status for an answer the cluster stopped sending (stalled) or broke off."""
    if isinstance(exc, UpstreamStalled):
        return GatewayError(504, f'connection "{connection}": the cluster stopped answering for {exc.seconds:g} s')
    return GatewayError(502, f'connection "{connection}": the connection to the cluster broke')


async def within(chunks, idle: float | None):
    """The items of an async iterator; UpstreamStalled when the next takes longer than ``idle`` s."""
    if idle is None:
        async for chunk in chunks:
            yield chunk
        return
    iterator = aiter(chunks)
    while True:
        try:
            async with asyncio.timeout(idle):
                chunk = await anext(iterator)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise UpstreamStalled(idle) from None
        yield chunk


async def read_whole(response, idle: float | None, limit: int | None = None) -> bytes:
    """The whole body (Content-Encoding is identity by now, so the bytes are the raw bytes);
    a 502 Status when it is longer than ``limit``."""
    chunks, size = [], 0
    async for chunk in within(response.aiter_bytes(), idle):
        size += len(chunk)
        if limit is not None and size > limit:
            raise GatewayError(502, f"airlock: the cluster's answer exceeds {limit} bytes; refused")
        chunks.append(chunk)
    return b"".join(chunks)


class ResponseStream:
    """Relays a streamed body (watch, logs -f, large lists) through the masker.

    Watches start at once and end with an ERROR event (a ``Status``) and a proper end of the
    body if masking fails, the cluster connection breaks or the stream is cut (lease, drain);
    other bodies start with their first masked bytes, so a failure before that is still a
    502/504 Status and a failure after it aborts the connection.  A text masker's held bytes
    are released after an idle pause (``logs -f``).  ``idle`` bounds the silence between two
    chunks from the cluster (None: long-running, no bound).
    """

    IDLE_FLUSH = 0.25

    def __init__(self, response, masker, start: dict, *, watch: bool, idle: float | None = None, connection=""):
        self.response = response
        self.masker = masker
        self.start = start
        self.watch = watch
        self.idle = idle
        self.connection = connection
        self.cut = Cut()

    async def relay(self, receive, send, exchange):
        chunks = asyncio.Queue(maxsize=1)
        tasks = [
            asyncio.create_task(self._read(chunks)),
            asyncio.create_task(self._write(chunks, send, exchange)),
            asyncio.create_task(_disconnected(receive)),
            asyncio.create_task(self.cut.event.wait()),
        ]
        try:
            done, _ = await asyncio.wait(tasks[1:], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        writer = tasks[1]
        if writer in done and writer.exception() is not None:
            raise writer.exception()
        if tasks[3] in done and writer not in done:
            await self._end_cut(send, exchange)

    async def _end_cut(self, send, exchange):
        """A watch gets an ERROR event with the cut's Status; any other stream is aborted, not completed."""
        exchange.message = self.cut.reason
        if not self.watch:
            raise MaskingAbort(self.cut.reason)
        await self._end_watch(self.cut.error(), send, exchange)

    async def _end_watch(self, error: GatewayError, send, exchange):
        """The watch's last event is an ERROR carrying ``error``; then the body ends properly."""
        await self._begin(send, exchange)
        event = json.dumps({"type": "ERROR", "object": json.loads(error.body())}).encode() + b"\n"
        await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def _read(self, chunks):
        """Reads ahead at most one chunk (back-pressure); hands a failure to the writer.

        Only the wait for the cluster counts towards ``idle``, not the wait for a slow agent."""
        try:
            async for chunk in within(self.response.aiter_raw(), self.idle):
                await chunks.put(chunk)
        except Exception as exc:
            await chunks.put(exc)
            return
        await chunks.put(None)

    async def _write(self, chunks, send, exchange):
        if self.watch or self.masker is None:
            await self._begin(send, exchange)
        flush = getattr(self.masker, "flush", None)
        while True:
            try:
                if flush is not None and exchange.response_started:
                    chunk = await asyncio.wait_for(chunks.get(), self.IDLE_FLUSH)
                else:
                    chunk = await chunks.get()
            except TimeoutError:
                await self._emit(flush(), send, exchange)
                continue
            if chunk is None:
                break
            if isinstance(chunk, Exception):
                await self._broken(chunk, send, exchange)
                return
            try:
                out = self.masker.feed(chunk) if self.masker is not None else chunk
            except masking.MaskingError as exc:
                await self._fail(exc, send, exchange)
                return
            await self._emit(out, send, exchange)
        try:
            rest = self.masker.close() if self.masker is not None else b""
        except masking.MaskingError as exc:
            await self._fail(exc, send, exchange)
            return
        await self._emit(rest, send, exchange)
        exchange.end_capture()
        await self._begin(send, exchange)
        await send({"type": "http.response.body", "body": b""})

    async def _broken(self, exc: Exception, send, exchange):
        """The cluster broke the answer off, or stalled: a watch ends with an ERROR event; for any
        other answer the failure goes on to forward() (a Status, or an aborted connection)."""
        if not self.watch or not isinstance(exc, (httpx.HTTPError, UpstreamStalled)):
            raise exc
        log.warning("upstream %s broke a watch: %s", self.connection, type(exc).__name__)
        error = broken_answer(exc, self.connection)
        exchange.message = error.message
        await self._end_watch(error, send, exchange)

    async def _begin(self, send, exchange):
        if not exchange.response_started:
            exchange.response_started = True
            await send(self.start)

    async def _emit(self, out: bytes, send, exchange):
        if out:
            await self._begin(send, exchange)
            exchange.capture(out)
            await send({"type": "http.response.body", "body": out, "more_body": True})

    async def _fail(self, exc, send, exchange):
        error = GatewayError(502, str(exc))
        exchange.refused(error)
        if not exchange.response_started:
            raise error
        if self.watch:
            await self._end_watch(error, send, exchange)
            return
        raise MaskingAbort(exc)


async def _disconnected(receive):
    while (await receive())["type"] != "http.disconnect":
        pass


async def send_status(send, error: GatewayError):
    await send({"type": "http.response.start", "status": error.code, "headers": error.headers()})
    await send({"type": "http.response.body", "body": error.body()})


async def reject_websocket(scope, send, error: GatewayError):
    """Refuse an upgrade with a Status body where the server allows it (uvicorn), else close (403)."""
    if "websocket.http.response" in (scope.get("extensions") or {}):
        body = error.body()
        # With a length, not chunked: the Python client (websocket-client) reads a refusal's body only then.
        headers = [*error.headers(), (b"content-length", str(len(body)).encode())]
        await send({"type": "websocket.http.response.start", "status": error.code, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": error.message[:120]})

