"""OpenTelemetry traces of the gateway's stages (issue 15 item 7): optional, off by default.

:func:`from_settings` answers None unless settings.AIRLOCK_OTEL_ENDPOINT names an OTLP/HTTP traces
endpoint (and OTEL_SDK_DISABLED is not true): then OpenTelemetry's SDK and exporter are not imported,
no tracer provider is set and nothing is added to the request path (the ``mcp`` SDK of the MCP
endpoint imports the OpenTelemetry API, whose tracers record nothing without a provider).  When on, a :class:`Tracing` is

* an **addon** for the request's hooks (gateway.hooks: ``parsed``, ``decided``, ``held``,
  ``forwarded``, ``completed``), which opens one ``airlock.request`` span per request and, from
  the moments the hooks mark, its ``parse`` (arrival to parsed), ``authorize`` (authenticated, or
  parsed, to the rules' decision: the connection lookup and the body read included) and ``hold``
  (waiting for a reviewer) spans;
* wrappers for the collaborators whose work is a stage of its own: :meth:`Tracing.authenticator`
  (``authenticate``), :meth:`Tracing.recorder` (``record``: the audit trail's journal and commits),
  and :meth:`Tracing.transport` for the upstream pool (gateway.upstream.UpstreamPool ``wrap=``):
  ``upstream`` from sending the request until the cluster's answer starts, then ``mask`` while
  the body is relayed to the agent through the response masker.

Every span of a request carries its audit ID (``airlock.audit_id``).  Attributes are chosen, never
copied from the request: the connection, method, Kubernetes verb, resource and namespace, the
rule's effect, the status code, the agent's username.  No header, URL, path, query string, body,
token or Secret value is ever an attribute.

Spans go to the configured endpoint through the SDK's batch processor (a background thread; a slow
collector drops spans, it never holds a request).  The exporter's other settings and the
resource are the standard OTEL_* variables (docs/configuration.md).
"""

from __future__ import annotations

import contextvars
import os
import time
from dataclasses import dataclass, field

import httpx

SERVICE_NAME = "airlock"

# The request being traced in this task (set by the ``parsed`` hook; its spans are children of it).
_current: contextvars.ContextVar["_Trace | None"] = contextvars.ContextVar("airlock_trace", default=None)


def from_settings(config) -> "Tracing | None":
    """The tracing addon for these settings, or None (off: nothing is imported)."""
    endpoint = getattr(config, "AIRLOCK_OTEL_ENDPOINT", None)
    if not endpoint or os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    return Tracing.exporting_to(endpoint)


@dataclass
class _Trace:
    """One request's spans so far."""

    root: object
    context: object
    audit_id: str
    mark: int  # the end of the last stage seen (ns since the epoch)
    held_at: int | None = None
    authenticated_at: int | None = None
    done: bool = False
    attributes: dict = field(default_factory=dict)


def _now() -> int:
    return time.time_ns()


def _request_attributes(request) -> dict:
    """What a span may say about the request: classification only, never its text."""
    if request is None:
        return {}
    info = request.info
    attributes = {
        "airlock.connection": request.connection,
        "http.request.method": request.method,
        "airlock.transport": request.transport,
        "airlock.verb": info.verb,
    }
    if info.is_resource_request:
        attributes["airlock.resource"] = "/".join(p for p in (info.api_group or "core", info.resource,
                                                                info.subresource) if p)
        if info.namespace:
            attributes["airlock.namespace"] = info.namespace
    principal = getattr(request, "principal", None)
    if principal is not None:
        attributes["enduser.id"] = principal.username
    decision = getattr(request, "decision", None)
    if decision is not None:
        attributes["airlock.decision"] = decision.effect
    return attributes


class Tracing:
    """The addon and the stage wrappers, over one TracerProvider of its own (no global provider)."""

    def __init__(self, processor):
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

        resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
        if resource.attributes.get("service.name", "").startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
        self.provider = TracerProvider(resource=resource)
        self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer("airlock.gateway")
        self._kind = SpanKind
        self._error = Status(StatusCode.ERROR)
        self._in_context = set_span_in_context

    @classmethod
    def exporting_to(cls, endpoint: str) -> "Tracing":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        return cls(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))

    def shutdown(self) -> None:
        """Export what is queued and stop (the application's shutdown)."""
        self.provider.shutdown()

    # -- spans ------------------------------------------------------------------------------

    def _child(self, trace: _Trace, name: str, start: int, end: int | None = None, *, kind=None, **attributes):
        span = self.tracer.start_span(name, context=trace.context, start_time=start,
                                      kind=kind if kind is not None else self._kind.INTERNAL,
                                      attributes={"airlock.audit_id": trace.audit_id, **attributes})
        if end is not None:
            span.end(end_time=end)
        return span

    # -- the hooks (gateway.hooks) ----------------------------------------------------------------

    async def parsed(self, exchange) -> None:
        now = _now()
        received = getattr(exchange, "received_at", None)
        start = int(received.timestamp() * 1e9) if received is not None else now
        audit_id = str(exchange.audit_id)
        root = self.tracer.start_span("airlock.request", kind=self._kind.SERVER, start_time=start,
                                      attributes={"airlock.audit_id": audit_id})
        trace = _Trace(root=root, context=self._in_context(root), audit_id=audit_id, mark=now)
        _current.set(trace)
        span = self._child(trace, "parse", start, **_request_attributes(exchange.request))
        if exchange.request is None:  # the parser refused it
            span.set_status(self._error)
        span.end(end_time=now)

    async def decided(self, exchange) -> None:
        trace = _current.get()
        if trace is None or trace.done:
            return
        now = _now()
        start = trace.authenticated_at or trace.mark
        self._child(trace, "authorize", start, now, **_request_attributes(exchange.request))
        trace.mark = now

    async def held(self, exchange, pending) -> None:
        trace = _current.get()
        if trace is not None and not trace.done and trace.held_at is None:
            trace.held_at = _now()

    async def forwarded(self, exchange) -> None:
        trace = _current.get()
        if trace is None or trace.done:
            return
        now = _now()
        self._end_hold(trace, now, "approved")
        trace.mark = now

    async def completed(self, exchange) -> None:
        trace = _current.get()
        if trace is None or trace.done:
            return
        now = _now()
        self._end_hold(trace, now, "refused")
        trace.done = True
        root = trace.root
        root.set_attributes(_request_attributes(exchange.request))
        if exchange.code:
            root.set_attribute("http.response.status_code", exchange.code)
            if exchange.code >= 500:
                root.set_status(self._error)
        root.end(end_time=now)

    def _end_hold(self, trace: _Trace, now: int, outcome: str) -> None:
        if trace.held_at is not None:
            self._child(trace, "hold", trace.held_at, now, **{"airlock.hold.outcome": outcome})
            trace.held_at = None

    # -- stage wrappers ---------------------------------------------------------------------------

    def authenticator(self, inner) -> "_TracedAuthenticator":
        """``inner`` (identity.chain) with an ``authenticate`` span per call."""
        return _TracedAuthenticator(inner, self)

    def recorder(self, inner) -> "_TracedRecorder":
        """``inner`` (audit.recorder.Recorder) with a ``record`` span per journal write and commit."""
        return _TracedRecorder(inner, self)

    def transport(self, inner):
        """``inner`` (an httpx transport of the upstream pool) with ``upstream`` and ``mask`` spans."""
        tracing = self

        class TracedTransport(httpx.AsyncBaseTransport):
            async def handle_async_request(self, request):
                trace = _current.get()
                if trace is None or trace.done:
                    return await inner.handle_async_request(request)
                span = tracing._child(trace, "upstream", _now(), kind=tracing._kind.CLIENT,
                                      **{"http.request.method": request.method, "server.address": request.url.host})
                try:
                    response = await inner.handle_async_request(request)
                except BaseException as exc:
                    span.set_status(tracing._error)
                    span.set_attribute("error.type", type(exc).__name__)
                    span.end()
                    raise
                span.set_attribute("http.response.status_code", response.status_code)
                span.end()
                response.stream = _MaskedBody(response.stream, tracing, trace)
                return response

            async def aclose(self):
                await inner.aclose()

        return TracedTransport()


class _MaskedBody(httpx.AsyncByteStream):
    """The response body as it is relayed to the agent (read, masked, sent): the ``mask`` span."""

    def __init__(self, stream, tracing: Tracing, trace: _Trace):
        self._stream = stream
        self._tracing = tracing
        self._trace = trace
        self._span = None

    async def __aiter__(self):
        self._span = self._tracing._child(self._trace, "mask", _now())
        async for chunk in self._stream:
            yield chunk

    async def aclose(self):
        try:
            await self._stream.aclose()
        finally:
            if self._span is not None:
                self._span.end()
                self._span = None


class _TracedAuthenticator:
    def __init__(self, inner, tracing: Tracing):
        self._inner = inner
        self._tracing = tracing

    def __getattr__(self, name):
        return getattr(self._inner, name)

    async def authenticate(self, token: str):
        trace = _current.get()
        if trace is None or trace.done:
            return await self._inner.authenticate(token)
        span = self._tracing._child(trace, "authenticate", _now())
        try:
            principal = await self._inner.authenticate(token)
        except BaseException as exc:
            span.set_status(self._tracing._error)
            span.set_attribute("error.type", type(exc).__name__)
            raise
        finally:
            trace.authenticated_at = _now()
            span.end(end_time=trace.authenticated_at)
        return principal


class _TracedRecorder:
    def __init__(self, inner, tracing: Tracing):
        self._inner = inner
        self._tracing = tracing

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def _span(self, what: str):
        trace = _current.get()
        if trace is None or trace.done:
            return None
        return self._tracing._child(trace, "record", _now(), **{"airlock.record": what})

    def received(self, record):
        span = self._span("journal")
        try:
            return self._inner.received(record)
        finally:
            if span is not None:
                span.end()

    async def begin(self, record):
        span = self._span("commit")
        try:
            return await self._inner.begin(record)
        finally:
            if span is not None:
                span.end()

    async def finish(self, record):
        span = self._span("completion")
        try:
            return await self._inner.finish(record)
        finally:
            if span is not None:
                span.end()
