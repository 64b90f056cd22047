"""export_audit: JSON Lines a receiver can re-verify, to a file, stdout or an HTTP endpoint."""

import base64
import hashlib
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import rfc8785
from django.core.management import CommandError, call_command

from audit.document import GENESIS_HASH, chain_hash, strip_export_fields
from audit.export import ExportError, HttpSink
from audit.chain import make_anchor
from audit.tests.factories import T0, append, event, tampering

pytestmark = pytest.mark.django_db

CAST = '{"version": 2, "width": 80, "height": 24}\n[0.5, "o", "hi\\r\\n"]\n'


def export(*args) -> tuple[list[dict], str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("export_audit", *args, stdout=out, stderr=err)
    return [json.loads(line) for line in out.getvalue().splitlines()], err.getvalue()


def check_chain(lines: list[dict], prev: str = GENESIS_HASH) -> None:
    """Verify exported lines the way a SIEM would: RFC 8785 and SHA-256, and chain_hash agrees."""
    for line in lines:
        document, prev_hash, digest = strip_export_fields(line)
        assert prev_hash == prev
        assert hashlib.sha256(bytes.fromhex(prev_hash) + rfc8785.dumps(document)).hexdigest() == digest
        assert chain_hash(prev_hash, document) == digest
        prev = digest


@pytest.fixture
def trail():
    return append(
        event(0, request_body=None),
        event(60, verb="create", object_resource="deployments", object_api_group="apps",
              object_api_version="v1", object_name="web", request_body=b'{"kind":"Deployment"}',
              response_code=201, response_body=b"\x00\x01protobuf\xff", masking_counts={"secret": 2}),
        event(120, verb="get", object_subresource="exec", object_name="web-0", transport="websocket",
              response_code=101, response_body=None,
              recording={"kind": "exec", "pod": "web-0", "namespace": "default", "asciicast": CAST}),
        event(180, decision_effect="deny", decision_reason="no rule allows", response_code=403,
              response_reason="Forbidden", response_message="denied by airlock", response_body=None),
    )


def test_jsonl_round_trip_to_a_file(trail, tmp_path):
    target = tmp_path / "audit.jsonl"
    _, summary = export("-o", str(target))
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert "exported 4 events (#1..#4)" in summary
    assert [line["airlock"]["seq"] for line in lines] == [1, 2, 3, 4]
    assert [line["airlock"]["hash"] for line in lines] == [e.hash for e in trail]
    check_chain(lines)

    first, created, exec_, denied = lines
    assert first["kind"] == "Event" and first["apiVersion"] == "audit.k8s.io/v1"
    assert first["level"] == "RequestResponse"
    assert first["user"] == {
        "username": "agent-1", "uid": "agent-1-sub", "groups": ["agents", "dev"],
        "extra": {"issuer": ["https://idp.example.test"]},
    }
    assert first["objectRef"] == {"resource": "pods", "namespace": "default", "apiVersion": "v1"}
    assert first["responseStatus"] == {"metadata": {}, "code": 200}
    assert first["requestReceivedTimestamp"] == "2026-03-01T12:00:00.123456Z"
    assert first["annotations"] == {
        "authorization.k8s.io/decision": "allow",
        "authorization.k8s.io/reason": 'rule "read-only" allows',
    }
    assert first["airlock"]["decision"] == {
        "effect": "allow", "ruleId": 7, "ruleName": "read-only", "reason": 'rule "read-only" allows'
    }
    assert first["airlock"]["connection"] == "prod"
    assert first["airlock"]["sessionId"] and first["airlock"]["requestBody"] is None

    assert created["objectRef"]["apiGroup"] == "apps"
    assert created["airlock"]["requestBody"] == {
        "size": 21, "truncated": False, "encoding": "utf-8", "data": '{"kind":"Deployment"}'
    }
    body = created["airlock"]["responseBody"]
    assert body["encoding"] == "base64"
    assert base64.b64decode(body["data"]) == b"\x00\x01protobuf\xff"
    assert created["airlock"]["maskingCounts"] == {"secret": 2}

    assert exec_["airlock"]["transport"] == "websocket"
    assert exec_["airlock"]["recording"]["pod"] == "web-0"
    assert "recordingCast" not in exec_["airlock"]
    assert exec_["level"] == "Metadata"

    assert denied["annotations"]["authorization.k8s.io/decision"] == "forbid"
    assert denied["responseStatus"] == {
        "metadata": {}, "code": 403, "status": "Failure", "reason": "Forbidden", "message": "denied by airlock"
    }


def test_stdout_with_recordings_and_filters(trail):
    lines, summary = export("--recordings", "--since", "2026-03-01T12:01:00Z", "--until", "2026-03-01T12:03:00")
    assert [line["airlock"]["seq"] for line in lines] == [2, 3]
    assert lines[1]["airlock"]["recordingCast"] == CAST
    check_chain(lines, prev=trail[0].hash)
    assert "exported 2 events (#2..#3)" in summary
    lines, _ = export("--after-seq", "3")
    assert [line["airlock"]["seq"] for line in lines] == [4]
    lines, summary = export("--since", "2026-03-02")
    assert lines == [] and "exported 0 events" in summary


def test_bad_time_is_a_usage_error():
    with pytest.raises(CommandError, match="ISO 8601"):
        export("--since", "yesterday")


class Collector(BaseHTTPRequestHandler):
    """A SIEM stand-in on loopback that records what it receives."""

    received: list = []
    status = 200

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.headers.get("Authorization"), self.headers.get("Content-Type"), body))
        self.send_response(type(self).status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def collector():
    Collector.received, Collector.status = [], 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_http_export_in_batches(trail, collector, monkeypatch):
    monkeypatch.setenv("SIEM_TOKEN", "siem-secret-token")
    url = f"http://127.0.0.1:{collector.server_address[1]}/ingest"
    _, summary = export("--http", url, "--batch-size", "3", "--token-env", "SIEM_TOKEN")
    assert "exported 4 events (#1..#4)" in summary
    assert [(auth, ctype) for auth, ctype, _ in Collector.received] == [
        ("Bearer siem-secret-token", "application/x-ndjson")
    ] * 2
    lines = [json.loads(line) for _, _, body in Collector.received for line in body.splitlines()]
    assert len(lines) == 4
    check_chain(lines)


def test_http_refusal_is_reported_without_the_token(trail, collector, monkeypatch):
    monkeypatch.setenv("AIRLOCK_AUDIT_EXPORT_TOKEN", "siem-secret-token")
    Collector.status = 401
    with pytest.raises(CommandError) as exc:
        export("--http", f"http://127.0.0.1:{collector.server_address[1]}/", "--batch-size", "2")
    assert "HTTP 401" in str(exc.value) and "delivered 0 events" in str(exc.value)
    assert "siem-secret-token" not in str(exc.value)


@pytest.mark.parametrize("url", ["http://siem.example.com/ingest", "https://user:pw@siem.example.com/", "ftp://x/"])
def test_unsafe_export_urls_are_refused(url):
    with pytest.raises(CommandError, match="URL"):
        export("--http", url)


def test_sink_retries_transient_failures_then_gives_up():
    answers = iter([503, 429, 200, 500, 500, 500])
    seen, sleeps = [], []

    def handler(request):
        seen.append(request.content)
        return httpx.Response(next(answers))

    sink = HttpSink("https://siem.example.com/", retries=2, backoff=0.5, sleep=sleeps.append,
                    transport=httpx.MockTransport(handler))
    sink.send([b'{"a":1}\n', b'{"b":2}\n'])
    assert seen == [b'{"a":1}\n{"b":2}\n'] * 3
    assert sleeps == [0.5, 1.0]
    with pytest.raises(ExportError, match="failed 3 times .last: HTTP 500"):
        sink.send([b"{}\n"])


def test_sink_retries_connection_errors():
    calls = []

    def handler(request):
        calls.append(1)
        if len(calls) == 1:
            raise httpx.ConnectError("refused")
        return httpx.Response(204)

    sink = HttpSink("https://siem.example.com/", sleep=lambda s: None, transport=httpx.MockTransport(handler))
    sink.send([b"{}\n"])
    assert len(calls) == 2


def test_time_filters_use_utc_for_naive_times(trail):
    lines, _ = export("--until", T0.replace(tzinfo=None).isoformat())
    assert lines == []


def test_anchors_export_to_a_sink_outside_the_database_and_catch_truncation(trail, tmp_path):
    make_anchor("schedule")
    target = tmp_path / "anchors.jsonl"
    _, summary = export("--anchors", "-o", str(target))
    assert "exported 1 anchors (#4..#4)" in summary
    (line,) = [json.loads(text) for text in target.read_text().splitlines()]
    assert (line["kind"], line["seq"], line["hash"]) == ("airlock.audit/anchor", 4, trail[3].hash)
    with tampering("audit_auditevent", "audit_anchor") as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE seq = 4")
        cursor.execute("DELETE FROM audit_anchor")
    call_command("verify_audit", stdout=io.StringIO())  # the database alone no longer shows it
    with pytest.raises(CommandError, match=f"truncated: the chain ends at #3 but the anchor of .*{target.name} line 1"):
        call_command("verify_audit", "--anchors", str(target), stdout=io.StringIO())
    with pytest.raises(CommandError, match="--anchors takes --after-seq"):
        export("--anchors", "--recordings")
