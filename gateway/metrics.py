"""Request metrics as a gateway addon (gateway.hooks): every request counted once, its time split.

:class:`RequestMetrics` has the hook methods ``held``, ``forwarded`` and ``completed``; the
application attaches it with the gateway's other addons.  What it records (the metric objects
are runtime.metrics'):

* ``airlock_requests_total{connection, verb, resource, decision, code}`` once per request, when
  it completes (``code`` is the status class, ``2xx`` .. ``5xx``);
* ``airlock_gateway_overhead_seconds``: arrival to forwarding, time held for review excluded;
* ``airlock_upstream_duration_seconds``: forwarding to the answer complete, and
  ``airlock_request_duration_seconds`` arrival to the answer complete, for requests that are not
  long-lived streams (watches, exec, attach, port-forward, logs, proxy: they last as long as the
  agent wants);
* ``airlock_reviews_held`` and ``airlock_review_hold_seconds``: requests waiting for a reviewer;
* ``airlock_streams_open{kind}``: long-lived streams being forwarded now;
* ``airlock_masking_replacements_total{detector}``: what the request's answer had masked.

Labels never carry a path, an object name, a namespace or an identity: the connection only once
it was found (its rules decided), resource and verb bounded (runtime.metrics.Bounded).
"""

from __future__ import annotations

import time

from kube.requestinfo import is_long_running
from kube.vocabulary import LONG_RUNNING_VERBS
from runtime import metrics

# The per-request metrics' children, found by their label values (runtime.metrics.Children).
_REQUESTS = metrics.Children.counting(metrics.REQUESTS)
_REQUEST_SECONDS = metrics.Children.observing(metrics.REQUEST_SECONDS)
_OVERHEAD_SECONDS = metrics.Children.observing(metrics.OVERHEAD_SECONDS)
_UPSTREAM_SECONDS = metrics.Children.observing(metrics.UPSTREAM_SECONDS)
_MASKED = metrics.Children.counting(metrics.MASKED)

VERBS = frozenset({"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection", "proxy",
                   "post", "put", "head", "options"})


class _State:
    __slots__ = ("held_at", "held_for", "forwarded_at", "stream")

    def __init__(self):
        self.held_at = None
        self.held_for = 0.0
        self.forwarded_at = None
        self.stream = None


class RequestMetrics:
    """The gateway addon that records request metrics (hooks: held, forwarded, completed)."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._states: dict = {}  # audit id -> _State, from the first hook to completed

    async def held(self, exchange, pending):
        state = self._state(exchange)
        if state.held_at is None:
            state.held_at = self.clock()
            metrics.HELD.labels(connection(exchange.request)).inc()

    async def forwarded(self, exchange):
        state = self._state(exchange)
        now = self.clock()
        self._end_hold(exchange, state, now)
        state.forwarded_at = now
        request = exchange.request
        _OVERHEAD_SECONDS(connection(request), verb(request))(max(0.0, now - exchange.started - state.held_for))
        state.stream = stream_kind(request)
        if state.stream is not None:
            metrics.STREAMS_OPEN.labels(state.stream).inc()

    async def completed(self, exchange):
        state = self._states.pop(exchange.audit_id, None) or _State()
        now = self.clock()
        request = exchange.request
        self._end_hold(exchange, state, now)
        if state.stream is not None:
            metrics.STREAMS_OPEN.labels(state.stream).dec()
        conn, verb_ = connection(request), verb(request)
        decision = decision_label(request)
        _REQUESTS(conn, verb_, resource(request), decision, code_class(exchange.code))(1)
        if state.stream is None and (request is None or not is_long_running(request.info)):
            _REQUEST_SECONDS(conn, verb_, decision)(max(0.0, now - exchange.started))
            if state.forwarded_at is not None:
                _UPSTREAM_SECONDS(conn, verb_)(max(0.0, now - state.forwarded_at))
        for detector, count in (getattr(exchange, "masking_counts", None) or {}).items():
            if count:
                _MASKED(metrics.detector_label(detector))(count)

    def _state(self, exchange) -> _State:
        state = self._states.get(exchange.audit_id)
        if state is None:
            state = self._states[exchange.audit_id] = _State()
        return state

    def _end_hold(self, exchange, state: _State, now: float) -> None:
        if state.held_at is not None:
            state.held_for = now - state.held_at
            state.held_at = None
            conn = connection(exchange.request)
            metrics.HELD.labels(conn).dec()
            metrics.HOLD_SECONDS.labels(conn).observe(state.held_for)


def connection(request) -> str:
    """The connection's name once the connection was found (its rules decided), else empty: an
    unknown name in a path is the agent's text, not a label."""
    if request is None or request.decision is None:
        return ""
    return metrics.connection_label(request.connection)


def verb(request) -> str:
    if request is None:
        return ""
    return request.info.verb if request.info.verb in VERBS else metrics.OTHER


def resource(request) -> str:
    """``pods``, ``pods/exec``; empty for non-resource paths and refused requests."""
    if request is None or request.decision is None or not request.info.resource:
        return ""
    info = request.info
    return metrics.resource_label(info.resource + ("/" + info.subresource if info.subresource else ""))


def decision_label(request) -> str:
    if request is None or request.decision is None:
        return "none"
    effect = str(request.decision.effect)
    return effect if effect in ("allow", "deny", "review", "lease") else metrics.OTHER


_CODE_CLASSES = {code: f"{code // 100}xx" for code in range(100, 600)}


def code_class(code: int) -> str:
    return _CODE_CLASSES.get(code, "none")


def stream_kind(request) -> str | None:
    """watch, proxy, exec, attach, portforward or log: a request kube-apiserver treats as long-running."""
    if request is None or not is_long_running(request.info):
        return None
    info = request.info
    return info.verb if info.verb in LONG_RUNNING_VERBS else (info.subresource or None)
