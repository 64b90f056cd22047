"""Event dicts from the gateway: checked, sanitised and capped before they reach the writer."""

import uuid
from datetime import UTC, datetime

import pytest

from audit import chain
from audit.chain import verify_chain
from audit.document import event_document
from audit.events import TEXT_LIMIT, cap_body, cap_cast, clean_text, needs_durable_record, prepare
from audit.models import AuditEvent
from audit.tests.factories import append, event
from kube.requestinfo import parse


def prepared(**fields):
    return prepare(event(0, **fields), max_body=16, max_recording=1024)


def test_clean_text_makes_any_string_storable():
    assert clean_text("a\x00b") == "a\ufffdb"
    assert clean_text("x\ud800y") == "x?y"
    assert clean_text(None) == ""
    capped = clean_text("z" * 100, 40)
    assert len(capped) == 40 and capped.endswith("…[60 more characters]")
    with pytest.raises(ValueError, match="expected a string"):
        clean_text(b"bytes")


def test_bodies_are_capped_on_a_character_boundary():
    assert cap_body(None, 10) == (b"", 0)
    assert cap_body("héllo", 10) == ("héllo".encode(), 6)
    assert cap_body(b"\xff" * 20, 10) == (b"\xff" * 10, 20)
    data = ("a" * 9 + "€").encode()  # the euro sign's three bytes straddle the cap
    assert cap_body(data, 10) == (b"a" * 9, 12)
    with pytest.raises(ValueError, match="bytes"):
        cap_body(12, 10)


def test_prepare_caps_bodies_and_records_original_size():
    fields = prepared(request_body=b"r" * 40, response_body=b"short").fields
    assert (fields["request_body"], fields["request_body_size"]) == (b"r" * 16, 40)
    assert (fields["response_body"], fields["response_body_size"]) == (b"short", 5)


def test_cast_over_the_cap_is_cut_at_a_line():
    cast = '{"version": 2}\n' + '[0.1, "o", "xxxxxxxxxx"]\n' * 10
    cut, truncated = cap_cast(cast, 60)
    assert truncated and cut.endswith("\n") and len(cut.encode()) <= 60
    assert cap_cast(cast, 10_000) == (cast, False)
    recording = prepared(recording={"kind": "exec", "asciicast": cast}).recording
    assert not recording["truncated"]
    small = prepare(event(0, recording={"kind": "exec", "asciicast": cast}), max_body=16, max_recording=60)
    assert small.recording["truncated"]


@pytest.mark.parametrize(
    ("fields", "clamped", "stored"),
    [
        ({"audit_id": "nope"}, "audit_id", {}),
        ({"stage": "Later"}, "stage", {"stage": "ResponseComplete"}),
        ({"transport": "carrier-pigeon"}, "transport", {"transport": "http"}),
        ({"request_received_timestamp": datetime(2026, 1, 1)}, "request_received_timestamp",
         {"request_received_timestamp": datetime(2026, 1, 1, tzinfo=UTC)}),
        ({"bytes_in": 2**53}, "bytes_in", {"bytes_in": 2**53 - 1}),
        ({"bytes_out": True}, "bytes_out", {"bytes_out": 0}),
        ({"bytes_out": -5}, "bytes_out", {"bytes_out": 0}),
        ({"response_code": 700}, "response_code", {"response_code": 599}),
        ({"response_code": "s3cr3t-value"}, "response_code", {"response_code": None}),
        ({"latency_ms": -1}, "latency_ms", {"latency_ms": 0.0}),
        ({"latency_ms": float("nan")}, "latency_ms", {"latency_ms": None}),
        ({"latency_ms": 10**400}, "latency_ms", {"latency_ms": 1e12}),
        ({"decision_rule_id": 2**64}, "decision_rule_id", {"decision_rule_id": 2**53 - 1}),
        ({"masking_counts": {"secret": -2}}, "masking_counts", {"masking_counts": {"secret": 0}}),
        ({"masking_counts": ["s3cr3t-value"]}, "masking_counts", {"masking_counts": {}}),
        ({"user_groups": "s3cr3t-value"}, "user_groups", {"user_groups": []}),
        ({"user_agent": b"s3cr3t-value"}, "user_agent", {"user_agent": ""}),
        ({"response_body": 12}, "response_body", {"response_body": b"", "response_body_size": 0}),
        ({"token": "s3cr3t-value"}, "unknown field token", {}),
        ({"recording": "s3cr3t-value"}, "recording", {}),
    ],
)
def test_out_of_range_and_malformed_values_are_clamped_and_named(fields, clamped, stored):
    """Never refused: the field is named in ``clamped``, its value neither kept nor reported."""
    result = prepared(**fields)
    assert clamped in result.fields["clamped"]
    for name, value in stored.items():
        assert result.fields[name] == value
    assert "s3cr3t-value" not in repr(result)


@pytest.mark.parametrize(
    ("recording", "clamped", "stored"),
    [
        ({"kind": "telnet"}, "recording.kind", {"kind": "telnet"}),
        ({"kind": "exec", "password": "s3cr3t-value"}, "recording.unknown field password", {}),
        ({"kind": "exec", "exit_code": 2**40}, "recording.exit_code", {"exit_code": 2**31 - 1}),
        ({"kind": "exec", "exit_code": -(2**60)}, "recording.exit_code", {"exit_code": -(2**31)}),
        ({"kind": "exec", "width": 10**9, "height": -3}, "recording.width", {"width": 10000, "height": 0}),
        ({"kind": "exec", "duration_s": float("inf")}, "recording.duration_s", {"duration_s": 0.0}),
        ({"kind": "portforward", "ports": [80, 70000, "x"]}, "recording.ports", {"ports": [80, 65535, 0]}),
        ({"kind": "portforward", "bytes_to_pod": 2**70}, "recording.bytes_to_pod", {"bytes_to_pod": 2**53 - 1}),
        ({"kind": "exec", "command": ["sh", 3]}, "recording.command", {"command": ["sh"]}),
    ],
)
def test_recording_values_are_clamped_and_named(recording, clamped, stored):
    result = prepared(recording=recording)
    assert clamped in result.fields["clamped"]
    for name, value in stored.items():
        assert result.recording[name] == value
    assert "s3cr3t-value" not in repr(result)


def test_an_event_without_identity_fields_is_still_recorded():
    result = prepare({"audit_id": uuid.uuid4()}, max_body=1, max_recording=1)
    assert result.fields["clamped"] == ["request_received_timestamp"]
    assert "event" in prepare("not a dict", max_body=1, max_recording=1).fields["clamped"]


def test_a_well_formed_event_clamps_nothing_and_hashes_as_before():
    result = prepared()
    assert result.fields["clamped"] == []
    assert "clamped" not in event_document(AuditEvent(**result.fields, seq=1), None)["airlock"]


@pytest.mark.django_db
def test_clamped_values_are_stored_hashed_and_verify():
    (row,) = append(event(0, response_code=9999, latency_ms=float("nan"),
                          recording={"kind": "exec", "exit_code": 2**40, "width": 10**9, "asciicast": "x\n"}))
    stored = AuditEvent.objects.get(pk=row.pk)
    assert stored.clamped == ["latency_ms", "recording.exit_code", "recording.width", "response_code"]
    assert stored.recording.exit_code == 2**31 - 1
    assert chain.document_of(stored)["airlock"]["clamped"] == stored.clamped
    assert verify_chain().ok


@pytest.mark.django_db
def test_hostile_strings_are_stored_and_verify():
    (row,) = append(event(0, user_agent="curl\x00/8", user_username="agent\ud800", object_name="x" * 20000,
                          masking_counts={"a\x00": 1}))
    stored = AuditEvent.objects.get(pk=row.pk)
    assert stored.user_agent == "curl\ufffd/8"
    assert stored.user_username == "agent?"
    assert len(stored.object_name) == 16 * 1024
    assert verify_chain().ok


@pytest.mark.django_db
def test_json_columns_store_exactly_their_values():
    """user_groups, source_ips, masking_counts and clamped hold what was appended (quotes, escapes,
    control characters, non-ASCII, large counts), so the document rebuilt from them verifies."""
    groups = ['quo"te', "back\\slash", "tab\tnew\nline\x01", "é€𝄞", "\u2028", ""]
    counts = {"k\"ey": 2**53 - 1, "ü": 0}
    (row,) = append(event(0, user_groups=groups, source_ips=["::1", "10.0.0.1"], masking_counts=counts,
                          response_code="x"))
    stored = AuditEvent.objects.get(pk=row.pk)
    assert (stored.user_groups, stored.source_ips, stored.masking_counts, stored.clamped) == (
        groups, ["::1", "10.0.0.1"], counts, ["response_code"])
    assert verify_chain().ok


@pytest.mark.parametrize(
    ("method", "path", "query", "kind", "durable"),
    [
        ("GET", "/k8s/prod/api/v1/pods", b"", "http", False),
        ("GET", "/k8s/prod/api/v1/namespaces/a/pods", b"watch=1", "http", False),
        ("HEAD", "/k8s/prod/version", b"", "http", False),
        ("POST", "/k8s/prod/api/v1/namespaces/a/pods", b"", "http", True),
        ("PUT", "/k8s/prod/api/v1/namespaces/a/pods/p", b"", "http", True),
        ("PATCH", "/k8s/prod/apis/apps/v1/namespaces/a/deployments/d/scale", b"", "http", True),
        ("DELETE", "/k8s/prod/api/v1/namespaces/a/pods", b"", "http", True),
        ("GET", "/k8s/prod/api/v1/namespaces/a/pods/p/exec", b"command=ls", "websocket", True),
        ("GET", "/k8s/prod/api/v1/namespaces/a/pods/p/attach", b"", "websocket", True),
        ("GET", "/k8s/prod/api/v1/namespaces/a/pods/p/portforward", b"ports=80", "websocket", True),
        ("GET", "/k8s/prod/api/v1/namespaces/a/pods/p/log", b"", "http", False),
        ("GET", "/k8s/prod/api/v1/namespaces/a/services/s/proxy/x", b"", "http", False),
        ("POST", "/k8s/prod/api/v1/namespaces/a/services/s/proxy/x", b"", "http", True),
        ("POST", "/k8s/prod/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", b"", "http", True),
        ("POST", "/k8s/prod/some/non-resource", b"", "http", True),
    ],
)
def test_which_requests_are_recorded_before_forwarding(method, path, query, kind, durable):
    method = "GET" if kind == "websocket" else method
    info = parse(method, path.removeprefix("/k8s/prod"), query.decode())
    assert needs_durable_record(info, method) is durable


def test_text_passed_through_unchanged_is_exactly_what_the_cleaning_would_make():
    """prepare() keeps a plain ASCII string as it is: at, under and over each field's limit, with
    control characters, NUL, non-ASCII, lone surrogates and str subclasses it stores what
    clean_text's full path makes, always as a plain str."""

    class Text(str):
        pass

    samples = ["", "get", "\t\x01\x7f", "a\x00", "é", "x\ud800", Text("sub"), "v" * 64, "v" * 65,
               "n" * TEXT_LIMIT, "n" * (TEXT_LIMIT + 1)]
    for sample in samples:
        fields = prepare(event(0, verb=sample, user_agent=sample), max_body=16, max_recording=16).fields
        full = sample.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
        for name, limit in (("verb", 64), ("user_agent", TEXT_LIMIT)):
            marker = f"…[{len(full) - limit} more characters]"
            expected = full if len(full) <= limit else full[: limit - len(marker)] + marker
            assert fields[name] == expected and type(fields[name]) is str, (name, sample)
            assert clean_text(sample, limit) == expected and type(clean_text(sample, limit)) is str


def test_string_lists_passed_through_are_what_the_cleaning_would_make():
    class Text(str):
        pass

    for groups in (("a", "b"), ["x" * 1024], ["x" * 1025], ["a\x00"], [Text("s")], ["é"], ["a", 1], ["g"] * 257):
        stored = prepare(event(0, user_groups=groups), max_body=16, max_recording=16).fields["user_groups"]
        assert stored == [clean_text(g, 1024) for g in groups[:256] if isinstance(g, str)]
        assert type(stored) is list and all(type(g) is str for g in stored)
