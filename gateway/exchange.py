"""The gateway's working record of one request while it is handled, and what ends its stream.

:class:`Exchange` is what the data path learns about a request as it goes (the parsed request,
the answer's code and size, the audit trail's masked copy of the response body, the recording of
a session), what every hook gets (gateway.hooks), and what the request's frozen audit
:class:`audit.events.Record` is built from (:meth:`Exchange.record`); :class:`Cut` ends a live stream early (its lease
ended, the gateway drains) and :class:`OpenStreams` is the set of streams a drain ends.  They live
apart from the ASGI glue (gateway.app) because the HTTP answer (gateway.responses) and the
WebSocket relay (gateway.relay) write to them too.
"""

import asyncio
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import masking
from audit.events import Record
from gateway.pipeline import GatewayRequest
from kube.status import GatewayError
from masking.queries import masked_target

# The stages a request is recorded at (audit.models.Stage).
RECEIVED, RESPONSE_COMPLETE = "RequestReceived", "ResponseComplete"

# What ends every open stream when the gateway shuts down (airlock.asgi, on SIGTERM).
DRAINING_REASON = "the gateway is shutting down"
DRAINING = GatewayError(503, f"airlock: {DRAINING_REASON}; the stream was ended, start it again")


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


class OpenStreams:
    """The long-lived streams open now (watches, streamed bodies, WebSocket relays), so a drain can end them."""

    def __init__(self):
        self._cuts: set[Cut] = set()
        self.draining = False

    @property
    def open_count(self) -> int:
        return len(self._cuts)

    @contextmanager
    def open(self, cut: Cut):
        """Track a stream while it runs; one opened while draining ends at once."""
        self._cuts.add(cut)
        if self.draining:
            cut.end(DRAINING, DRAINING_REASON)
        try:
            yield
        finally:
            self._cuts.discard(cut)

    async def drain(self, timeout: float) -> int:
        """End every open stream, then wait up to ``timeout`` s for them to close; how many were ended."""
        self.draining = True
        ended = list(self._cuts)
        for cut in ended:
            cut.end(DRAINING, DRAINING_REASON)
        deadline = time.monotonic() + timeout
        while self._cuts and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return len(ended)

    async def unless_drained(self, waiting):
        """``await waiting``, unless the gateway drains first: then it is cancelled and the drain's
        Status raised (a long-running request whose answer has not started holds no stream yet)."""
        cut = Cut()
        task = asyncio.ensure_future(waiting)
        with self.open(cut):
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


class ClientGone(Exception):
    """The agent disconnected before its request could be forwarded."""


@dataclass
class Exchange:
    """What the gateway learns about one request while it handles it (mutable: the stages' frozen
    results are in ``request``; the answer's course is written here as it happens)."""

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
    lease_handle: object = None  # its registration with the lease it runs under (gateway.addons.LeaseBinding)
    _cut: Cut | None = None
    _fields: tuple | None = None  # (request, uri detectors, their audit fields): see _request_fields

    @property
    def cut(self) -> Cut:
        """What ends its stream early (its lease ended, the gateway drains); made when first asked for."""
        if self._cut is None:
            self._cut = Cut()
        return self._cut

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

    def arrival(self) -> Record:
        """The request as it arrived, before it was understood (no query: nothing unmasked)."""
        values = self._scope_fields()
        values.update(audit_id=self.audit_id, stage=RECEIVED, received_at=self.received_at)
        return Record.build(values)

    def record(self, stage: str, **fields) -> Record:
        """The audit record of this request at ``stage``; ``fields`` add or override."""
        request = self.request
        values = self._scope_fields() if request is None else self._request_fields(request)
        values.update(audit_id=self.audit_id, stage=stage, received_at=self.received_at,
                      response_code=self.code or None, response_reason=self.reason,
                      response_message="; ".join(m for m in (self.message, self.record_note) if m),
                      request_body=self.request_body)
        if stage == RESPONSE_COMPLETE:
            values.update(
                latency_ms=(time.monotonic() - self.started) * 1000.0,
                bytes_in=self.bytes_in,
                bytes_out=self.bytes_out,
                response_body=bytes(self.response_body),
                recording=self.recording,
                masking_counts=self.masking_counts,
            )
        if fields:
            values.update(fields)
        return Record.build(values)

    def _request_fields(self, request: GatewayRequest) -> dict:
        """A copy of the request's audit fields, computed once per request and URI masking (the
        RequestReceived and ResponseComplete records of a forwarded request share them)."""
        cached = self._fields
        if cached is None or cached[0] is not request or cached[1] is not self.uri_detectors:
            cached = self._fields = (request, self.uri_detectors, _request_fields(request, self.uri_detectors))
        return dict(cached[2])

    def _scope_fields(self) -> dict:
        """For a request refused before it could be parsed: ``request_uri`` is the path as the gateway
        received it, connection prefix included, without the query: it was not understood, so it
        cannot be masked (exec commands, tokens)."""
        scope = self.scope
        raw = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "replace")
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope.get("headers", [])]
        client = scope.get("client") or ("", 0)
        websocket = scope.get("type") == "websocket"
        return {
            "verb": "get" if websocket else (scope.get("method") or "GET").lower(),
            "request_uri": raw.decode("latin-1"),
            "source_ips": (client[0],) if client[0] else (),
            "user_agent": _header(headers, "user-agent"),
            "transport": "websocket" if websocket else "http",
            "kubectl_session": _header(headers, "kubectl-session"),
        }


def _request_fields(request: GatewayRequest, uri_detectors) -> dict:
    """The audit fields a parsed request fills: what it asks for, who asks, what was decided."""
    info = request.info
    values = {
        "request_uri": masked_target(request, uri_detectors),
        "verb": info.verb,
        "object_resource": info.resource,
        "object_subresource": info.subresource,
        "object_namespace": info.namespace,
        "object_name": info.name,
        "object_api_group": info.api_group,
        "object_api_version": info.api_version,
        "source_ips": (request.client_addr,) if request.client_addr else (),
        "user_agent": _header(request.headers, "user-agent"),
        "connection": request.connection,
        "transport": request.transport,
        "kubectl_session": _header(request.headers, "kubectl-session"),
        "dry_run": request.dry_run.honoured,
    }
    principal = request.principal
    if principal is not None:
        values.update(user_username=principal.username, user_uid=principal.subject, user_groups=principal.groups,
                      user_issuer=principal.issuer)
        proxy = principal.proxy
        if proxy is not None:  # who acted through whom: the trusted proxy that asserted the user
            values.update(proxy_username=proxy.username, proxy_uid=proxy.subject, proxy_issuer=proxy.issuer)
    decision = request.decision
    if decision is not None:
        values.update(decision_effect=decision.effect, decision_rule_id=decision.rule_id,
                      decision_rule_name=decision.rule_name, decision_reason=decision.reason)
    if request.review is not None:
        values["review_id"] = str(request.review.review_id)
    if request.lease is not None:
        values["lease_id"] = str(request.lease.id)
    if request.caller is not None:
        values["parent_id"] = request.caller.parent_id  # the MCP tool call that caused it (mcpfront)
    return values


def _header(headers, name: str) -> str:
    for key, value in headers:
        if key == name:
            return value
    return ""
