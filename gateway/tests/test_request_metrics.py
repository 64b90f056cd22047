"""The request-metrics and log-context addons, driven through their hook methods.

The hook API (gateway.hooks: parsed, decided, held, forwarded, completed, each given the request's
gateway.exchange.Exchange) is on the wt-datapath branch, not on main yet: these tests use stand-ins
of the same shape (``audit_id``, ``started``, ``request``, ``code``, ``masking_counts``; the request's
``connection``, ``info``, ``principal``, ``decision``)."""

import asyncio
import gc
import io
import json
import logging
import uuid
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY

from airlock.logs import JsonFormatter
from gateway.logcontext import RequestLogContext
from gateway.metrics import RequestMetrics
from kube.requestinfo import parse
from runtime import logcontext


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@dataclass
class Exchange:
    started: float
    request: object = None
    audit_id: uuid.UUID = field(default_factory=uuid.uuid4)
    code: int = 0
    masking_counts: dict = field(default_factory=dict)


def request(path="/api/v1/namespaces/shop/pods/web-1", method="GET", query="", effect="allow", connection="prod"):
    return SimpleNamespace(
        connection=connection, info=parse(method, path, query),
        principal=SimpleNamespace(username="agent-1", groups=("agents",)),
        decision=SimpleNamespace(effect=effect) if effect else None)


def sample(name, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def clock():
    return Clock()


async def test_a_request_is_counted_once_with_overhead_and_upstream_time_apart(clock):
    addon = RequestMetrics(clock=clock)
    labels = {"connection": "prod", "verb": "get", "resource": "pods", "decision": "allow", "code": "2xx"}
    before = sample("airlock_requests_total", **labels)
    overhead = sample("airlock_gateway_overhead_seconds_sum", connection="prod", verb="get")
    upstream = sample("airlock_upstream_duration_seconds_sum", connection="prod", verb="get")
    total = sample("airlock_request_duration_seconds_sum", connection="prod", verb="get", decision="allow")

    exchange = Exchange(started=clock.now, request=request())
    clock.now += 0.25
    await addon.forwarded(exchange)
    clock.now += 2.0
    exchange.code = 200
    exchange.masking_counts = {"jwt": 2, "aws-access-key": 1}
    masked = sample("airlock_masking_replacements_total", detector="jwt")
    await addon.completed(exchange)

    assert sample("airlock_requests_total", **labels) == before + 1
    assert sample("airlock_gateway_overhead_seconds_sum", connection="prod", verb="get") == pytest.approx(overhead + 0.25)
    assert sample("airlock_upstream_duration_seconds_sum", connection="prod", verb="get") == pytest.approx(upstream + 2.0)
    assert sample("airlock_request_duration_seconds_sum", connection="prod", verb="get",
                  decision="allow") == pytest.approx(total + 2.25)
    assert sample("airlock_masking_replacements_total", detector="jwt") == masked + 2
    assert addon._states == {}


async def test_time_held_for_review_is_not_gateway_overhead(clock):
    addon = RequestMetrics(clock=clock)
    exchange = Exchange(started=clock.now, request=request(method="DELETE", effect="review", connection="held-c"))
    held = sample("airlock_reviews_held", connection="held-c")
    clock.now += 0.1
    await addon.held(exchange, SimpleNamespace(id=7))
    assert sample("airlock_reviews_held", connection="held-c") == held + 1
    clock.now += 30.0
    await addon.forwarded(exchange)
    assert sample("airlock_reviews_held", connection="held-c") == held
    assert sample("airlock_review_hold_seconds_sum", connection="held-c") == pytest.approx(30.0)
    assert sample("airlock_gateway_overhead_seconds_sum", connection="held-c", verb="delete") == pytest.approx(0.1)
    exchange.code = 200
    await addon.completed(exchange)
    assert sample("airlock_requests_total", connection="held-c", verb="delete", resource="pods",
                  decision="review", code="2xx") == 1


async def test_a_hold_that_ends_in_a_refusal_leaves_the_held_gauge(clock):
    addon = RequestMetrics(clock=clock)
    exchange = Exchange(started=clock.now, request=request(method="DELETE", effect="review", connection="refused-c"))
    await addon.held(exchange, SimpleNamespace(id=8))
    clock.now += 5
    exchange.code = 403
    await addon.completed(exchange)
    assert sample("airlock_reviews_held", connection="refused-c") == 0
    assert sample("airlock_review_hold_seconds_count", connection="refused-c") == 1
    assert sample("airlock_requests_total", connection="refused-c", verb="delete", resource="pods",
                  decision="review", code="4xx") == 1


async def test_streams_are_open_while_forwarded_and_not_timed(clock):
    addon = RequestMetrics(clock=clock)
    watch = Exchange(started=clock.now, request=request("/api/v1/pods", query="watch=true", connection="s-c"))
    shell = Exchange(started=clock.now, request=request("/api/v1/namespaces/shop/pods/web-1/exec", method="POST",
                                                        query="command=sh", connection="s-c"))
    opened = {kind: sample("airlock_streams_open", kind=kind) for kind in ("watch", "exec")}
    await addon.forwarded(watch)
    await addon.forwarded(shell)
    assert {kind: sample("airlock_streams_open", kind=kind) for kind in opened} == {k: v + 1 for k, v in opened.items()}
    clock.now += 600
    await addon.completed(watch)
    await addon.completed(shell)
    assert {kind: sample("airlock_streams_open", kind=kind) for kind in opened} == opened
    assert sample("airlock_request_duration_seconds_count", connection="s-c", verb="watch", decision="allow") == 0
    assert sample("airlock_requests_total", connection="s-c", verb="create", resource="pods/exec",
                  decision="allow", code="none") == 1


async def test_labels_of_refused_requests_carry_nothing_the_agent_made_up(clock):
    addon = RequestMetrics(clock=clock)
    unknown = request("/api/v1/namespaces/x/secretstuff/token-abc", connection="no-such-connection-e2f1", effect=None)
    exchange = Exchange(started=clock.now, request=unknown, code=404)
    await addon.completed(exchange)
    unparsed = Exchange(started=clock.now, request=None, code=400)
    await addon.completed(unparsed)
    for family in REGISTRY.collect():
        for s in family.samples:
            for value in s.labels.values():
                assert "no-such-connection" not in value and "secretstuff" not in value and "token-abc" not in value
    assert sample("airlock_requests_total", connection="", verb="get", resource="", decision="none", code="4xx") >= 1
    assert sample("airlock_requests_total", connection="", verb="", resource="", decision="none", code="4xx") >= 1


async def test_log_lines_while_a_request_is_handled_carry_its_audit_id_identity_connection_and_decision():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("gateway.test")
    logger.addHandler(handler)
    addon = RequestLogContext()
    exchange = Exchange(started=0.0, request=request(effect=None))
    try:
        logcontext.clear()
        await addon.parsed(exchange)
        logger.warning("after parse")
        exchange.request = request(effect="deny")  # the rules decided: no further hook needed
        logger.warning("after decision")
    finally:
        logger.removeHandler(handler)
        logcontext.clear()
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["request_id"] == str(exchange.audit_id) and first["connection"] == "prod"
    assert "decision" not in first
    assert {k: second[k] for k in ("request_id", "identity", "connection", "decision")} == {
        "request_id": str(exchange.audit_id), "identity": "agent-1", "connection": "prod", "decision": "deny"}


async def test_many_requests_are_counted_and_bucketed_as_prometheus_client_would(clock):
    from prometheus_client import CollectorRegistry, Histogram

    from runtime import metrics

    reference = Histogram("reference_seconds", "r", buckets=metrics.LATENCY_BUCKETS, registry=CollectorRegistry())
    addon = RequestMetrics(clock=clock)
    labels = {"connection": "many-c", "verb": "get", "decision": "allow"}
    durations = [0.0003 * n for n in range(40)] + [0.0005, 0.001, 0.0025, 7.0, 100.0]
    for duration in durations:
        exchange = Exchange(started=clock.now, request=request(connection="many-c"), code=200)
        await addon.forwarded(exchange)
        clock.now += duration
        await addon.completed(exchange)
        reference.observe(clock.now - exchange.started)
    assert sample("airlock_requests_total", resource="pods", code="2xx", **labels) == len(durations)
    expected = {s.labels["le"]: s.value for s in reference.collect()[0].samples if s.name.endswith("_bucket")}
    assert {le: sample("airlock_request_duration_seconds_bucket", le=le, **labels) for le in expected} == expected
    assert sample("airlock_request_duration_seconds_count", **labels) == len(durations)


async def test_the_log_context_follows_the_request_into_its_tasks_and_takes_fixed_fields_too():
    exchange = Exchange(started=0.0, request=request(effect=None))
    try:
        logcontext.clear()
        assert logcontext.current() == {}
        await RequestLogContext().parsed(exchange)
        exchange.request = request(effect="allow", connection="other")

        async def in_a_task():
            return logcontext.current()

        seen = await asyncio.create_task(in_a_task())
        assert seen == {"request_id": str(exchange.audit_id), "identity": "agent-1", "connection": "other",
                        "decision": "allow"}
        logcontext.bind(decision="deny", identity=None)
        assert logcontext.current() == {**seen, "decision": "deny"}
        with pytest.raises(TypeError):
            logcontext.bind(path="/secret")
        await RequestLogContext().parsed(exchange)
        del exchange  # the request is over: a task it started keeps neither it nor its fields
        gc.collect()
        assert logcontext.current() == {}
    finally:
        logcontext.clear()
    assert logcontext.current() == {}
