"""gateway/tracing.py (issue 15 item 7): stage spans with the audit ID, nothing secret, nothing when off.

The addon is driven here the way gateway.hooks drives it (parsed, decided, held, forwarded,
completed, each with the request's exchange), around the real upstream pool and the stage
wrappers; the SDK's in-memory exporter collects what would go over OTLP.
"""

import dataclasses
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway import tracing
from gateway.pipeline import parse_request
from gateway.upstream import UpstreamPool
from identity.principal import Principal
from policy.evaluate import Decision

ROOT = Path(__file__).resolve().parents[2]
AGENT_TOKEN = "agent-token-never-in-a-span-1f4c"
CLUSTER_TOKEN = "cluster-token-never-in-a-span-8a2e"
QUERY_SECRET = "query-secret-never-in-a-span-5d7b"
BODY_SECRET = "body-secret-never-in-a-span-0c3a"
STAGES = {"parse", "authenticate", "authorize", "hold", "upstream", "mask", "record"}


def request_scope() -> dict:
    path = "/k8s/prod/api/v1/namespaces/shop/secrets"
    return {
        "type": "http", "method": "GET", "path": path, "raw_path": path.encode(),
        "query_string": f"labelSelector=token%3D{QUERY_SECRET}".encode(),
        "headers": [(b"authorization", f"Bearer {AGENT_TOKEN}".encode()), (b"host", b"gateway.example")],
        "client": ("10.0.0.7", 50000), "scheme": "https", "server": ("gateway.example", 443),
    }


class Authenticator:
    async def authenticate(self, token):
        assert token == AGENT_TOKEN
        return Principal(subject="s-1", username="agent-1", groups=("agents",), issuer="https://idp.example",
                         expires_at=0.0, token_id="jti-1")


class Recorder:
    max_body = 1024

    def __init__(self):
        self.calls = []

    def received(self, record):
        self.calls.append("received")

    async def begin(self, record):
        self.calls.append("begin")

    async def finish(self, record):
        self.calls.append("finish")


class Streamed(httpx.AsyncByteStream):
    """A body that arrives as the cluster sends it (not read in advance, as httpx does with content=)."""

    def __init__(self, *chunks: bytes):
        self.chunks = chunks

    async def __aiter__(self):
        for chunk in self.chunks:
            yield chunk


def cluster(request: httpx.Request) -> httpx.Response:
    assert request.headers["authorization"] == f"Bearer {CLUSTER_TOKEN}"
    return httpx.Response(200, stream=Streamed(b'{"kind": "SecretList", "items": [',
                                               json.dumps({"data": {"password": BODY_SECRET}}).encode(), b"]}"))


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    traced = tracing.Tracing(SimpleSpanProcessor(exporter))
    yield traced, exporter
    traced.shutdown()


async def one_request(traced: tracing.Tracing, *, held: bool):
    """One request through the hooks, the traced authenticator, recorder and upstream pool."""
    authenticator, recorder = traced.authenticator(Authenticator()), traced.recorder(Recorder())
    pool = UpstreamPool(httpx.MockTransport(cluster), wrap=traced.transport)
    upstream = SimpleNamespace(cache_key="prod:1", connect_timeout=5.0, server_url="https://k8s.example")
    exchange = SimpleNamespace(audit_id=uuid.uuid4(), received_at=datetime.now(UTC), request=None, code=0)

    exchange.request = parse_request(request_scope(), "/k8s/")
    await traced.parsed(exchange)
    recorder.received(exchange)  # gateway.addons.AuditRecording journals the arrival at ``parsed``
    principal = await authenticator.authenticate(AGENT_TOKEN)
    decision = Decision(effect="review" if held else "allow", rule_id=1, rule_name="secrets", reason="",
                        mask_secrets=True, requires_lease=False)
    exchange.request = dataclasses.replace(exchange.request, principal=principal, decision=decision)
    await traced.decided(exchange)
    if held:
        await traced.held(exchange, object())
    await recorder.begin(exchange)
    await traced.forwarded(exchange)
    client = pool.client(upstream)
    response = await client.send(client.build_request(
        "GET", upstream.server_url + exchange.request.target,
        headers={"Authorization": f"Bearer {CLUSTER_TOKEN}"}), stream=True)
    body = b"".join([chunk async for chunk in response.aiter_raw()])
    await response.aclose()
    assert BODY_SECRET.encode() in body
    exchange.code = 200
    await recorder.finish(exchange)
    await traced.completed(exchange)
    await pool.aclose()
    return exchange


async def test_a_request_has_a_span_per_stage_with_its_audit_id_and_nothing_secret(spans):
    traced, exporter = spans
    exchange = await one_request(traced, held=True)
    finished = exporter.get_finished_spans()
    names = [span.name for span in finished]
    assert set(names) == STAGES | {"airlock.request"}
    assert names.count("airlock.request") == 1 and names.count("record") == 3
    root = next(span for span in finished if span.name == "airlock.request")
    for span in finished:
        assert span.attributes["airlock.audit_id"] == str(exchange.audit_id), span.name
        assert span.context.trace_id == root.context.trace_id
        if span is not root:
            assert span.parent.span_id == root.context.span_id, span.name
            assert root.start_time <= span.start_time <= span.end_time <= root.end_time, span.name
    assert root.attributes["http.response.status_code"] == 200
    assert root.attributes["airlock.connection"] == "prod" and root.attributes["airlock.verb"] == "list"
    assert root.attributes["airlock.resource"] == "core/secrets" and root.attributes["airlock.decision"] == "review"
    by_name = {span.name: span for span in finished}
    assert by_name["upstream"].attributes["http.response.status_code"] == 200
    assert by_name["hold"].attributes["airlock.hold.outcome"] == "approved"

    everything = json.dumps([{"name": span.name, "attributes": dict(span.attributes),
                              "events": [dict(event.attributes or {}) for event in span.events],
                              "resource": dict(span.resource.attributes)} for span in finished])
    for secret in (AGENT_TOKEN, CLUSTER_TOKEN, QUERY_SECRET, BODY_SECRET, "labelSelector", "?", "Bearer"):
        assert secret not in everything, secret


async def test_without_a_hold_there_is_no_hold_span_and_a_refusal_is_an_error(spans):
    traced, exporter = spans
    await one_request(traced, held=False)
    assert "hold" not in {span.name for span in exporter.get_finished_spans()}
    exporter.clear()
    exchange = SimpleNamespace(audit_id=uuid.uuid4(), received_at=datetime.now(UTC), request=None, code=400)
    await traced.parsed(exchange)  # the parser refused it: no request
    await traced.completed(exchange)
    parse = next(span for span in exporter.get_finished_spans() if span.name == "parse")
    assert not parse.status.is_ok


def run_python(code: str, **environ) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "AIRLOCK_OTEL"))}
    env.update(DJANGO_SETTINGS_MODULE="airlock.settings", **environ)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)


OFF = """
import sys, django
django.setup()
from django.conf import settings
import airlock.app, gateway.upstream
from gateway import tracing
assert tracing.from_settings(settings) is None
airlock.app.make_application(sweeper=None)
# The mcp SDK (the MCP endpoint, mcpfront) imports OpenTelemetry's API, whose tracers record nothing until
# a provider is set; Airlock's tracing sets none globally, and its SDK and exporter stay unimported.
loaded = sorted(name for name in sys.modules if name.startswith(("opentelemetry.sdk", "opentelemetry.exporter")))
assert not loaded, loaded
if "opentelemetry.trace" in sys.modules:
    from opentelemetry import trace
    assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"
    assert not trace.get_tracer("check").start_span("s").is_recording()
print("off")
"""


def test_off_by_default_nothing_of_opentelemetry_is_imported():
    done = run_python(OFF)
    assert done.returncode == 0 and done.stdout.strip() == "off", done.stderr[-2000:]
    # OTEL_SDK_DISABLED wins over an endpoint.
    disabled = run_python(OFF, AIRLOCK_OTEL_ENDPOINT="http://127.0.0.1:9/v1/traces", OTEL_SDK_DISABLED="true")
    assert disabled.returncode == 0 and disabled.stdout.strip() == "off", disabled.stderr[-2000:]


def test_an_endpoint_turns_on_otlp_export(settings, monkeypatch):
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "airlock-eu-1")
    settings.AIRLOCK_OTEL_ENDPOINT = "http://127.0.0.1:9/v1/traces"
    traced = tracing.from_settings(settings)
    try:
        assert isinstance(traced, tracing.Tracing)
        assert traced.provider.resource.attributes["service.name"] == "airlock-eu-1"
        processor = traced.provider._active_span_processor._span_processors[0]
        assert type(processor._batch_processor._exporter).__name__ == "OTLPSpanExporter"
    finally:
        traced.shutdown()
