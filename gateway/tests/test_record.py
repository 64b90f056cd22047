"""The one audit record the gateway builds per request and stage (gateway.exchange -> audit.events.Record)."""

import uuid
from datetime import UTC, datetime

from audit.document import event_document
from audit.events import Record, prepare
from audit.models import AuditEvent
from gateway.exchange import RECEIVED, RESPONSE_COMPLETE, Exchange
from gateway.pipeline import parse_request
from policy.evaluate import Decision
from identity.principal import Principal
from masking import Detectors

RECEIVED_AT = datetime(2026, 3, 1, tzinfo=UTC)
PRINCIPAL = Principal(subject="sub-1", username="agent-1", groups=("agents",), issuer="https://idp.example.test",
                      expires_at=0.0, token_id="jti")
DECISION = Decision(effect="allow", rule_id=3, rule_name="scale", reason="allowed by scale", mask_secrets=True,
                    requires_lease=False)


def scope(path: str, *, method="GET", query=b"", headers=(), kind="http"):
    return {
        "type": kind,
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "headers": [(k.encode(), v.encode()) for k, v in headers],
        "client": ("10.0.0.7", 50000),
    }


def scale_exchange() -> Exchange:
    """kubectl scale, authenticated and allowed, its body read: as the gateway has it before forwarding."""
    exchange = Exchange(
        scope("/k8s/prod/apis/apps/v1/namespaces/team-a/deployments/web/scale", method="PATCH",
              query=b"fieldManager=kubectl",
              headers=[("User-Agent", "kubectl/v1.37.1"), ("Kubectl-Session", "5f0c"), ("Authorization", "Bearer t0k")]),
        received_at=RECEIVED_AT,
    )
    request = parse_request(exchange.scope, "/k8s/", str(exchange.audit_id))
    exchange.request = request.evolve(principal=PRINCIPAL, decision=DECISION)
    exchange.request_body = b"{}"
    exchange.uri_detectors = Detectors.default()
    return exchange


# The event dict audit.events.from_request made of that request before the gateway built Records.
def event_before(audit_id) -> dict:
    return {
        "audit_id": audit_id,
        "stage": "RequestReceived",
        "request_received_timestamp": RECEIVED_AT,
        "verb": "patch",
        "object_resource": "deployments",
        "object_subresource": "scale",
        "object_namespace": "team-a",
        "object_name": "web",
        "object_api_group": "apps",
        "object_api_version": "v1",
        "request_uri": "/apis/apps/v1/namespaces/team-a/deployments/web/scale?fieldManager=kubectl",
        "source_ips": ["10.0.0.7"],
        "user_agent": "kubectl/v1.37.1",
        "connection": "prod",
        "transport": "http",
        "kubectl_session": "5f0c",
        "dry_run": False,
        "user_username": "agent-1",
        "user_uid": "sub-1",
        "user_groups": ["agents"],
        "user_issuer": "https://idp.example.test",
        "decision_effect": "allow",
        "decision_rule_id": 3,
        "decision_rule_name": "scale",
        "decision_reason": "allowed by scale",
        "response_code": None,
        "response_reason": "",
        "response_message": "",
        "request_body": b"{}",
    }


def document(prepared) -> dict:
    return event_document(AuditEvent(**prepared.fields, seq=1), None)


def test_a_record_fills_the_kubernetes_fields_of_a_parsed_request():
    exchange = scale_exchange()
    record = exchange.record(RECEIVED)
    assert isinstance(record, Record)
    assert (record.audit_id, record.stage, record.received_at) == (exchange.audit_id, "RequestReceived", RECEIVED_AT)
    assert (record.verb, record.object_resource, record.object_subresource) == ("patch", "deployments", "scale")
    assert record.request_uri == "/apis/apps/v1/namespaces/team-a/deployments/web/scale?fieldManager=kubectl"
    assert (record.user_username, record.user_groups, record.decision_rule_id) == ("agent-1", ("agents",), 3)
    assert (record.source_ips, record.user_agent, record.kubectl_session) == (("10.0.0.7",), "kubectl/v1.37.1", "5f0c")
    assert "t0k" not in repr(record) and "t0k" not in repr(record.prepared(max_body=100, max_recording=100))


def test_a_record_stores_and_hashes_as_the_event_dict_it_replaces():
    exchange = scale_exchange()
    now = datetime(2026, 3, 1, 0, 0, 1, tzinfo=UTC)
    new = exchange.record(RECEIVED).prepared(max_body=100, max_recording=100, now=now)
    old = prepare(event_before(exchange.audit_id), max_body=100, max_recording=100, now=now)
    assert new.fields == old.fields and new.recording == old.recording
    assert document(new) == document(old)


def test_a_completion_record_stores_as_the_event_dict_it_replaces():
    exchange = scale_exchange()
    exchange.code, exchange.bytes_in, exchange.bytes_out = 200, 2, 5
    exchange.response_body += b'{"a":1}'
    exchange.masking_counts = {"secret": 1}
    record = exchange.record(RESPONSE_COMPLETE)
    before = dict(event_before(exchange.audit_id), stage="ResponseComplete", response_code=200, bytes_in=2,
                  bytes_out=5, response_body=b'{"a":1}', latency_ms=record.latency_ms, masking_counts={"secret": 1})
    now = datetime(2026, 3, 1, 0, 0, 1, tzinfo=UTC)
    new, old = (prepare(e, max_body=100, max_recording=100, now=now) for e in (record.event(), before))
    assert new.fields == old.fields and document(new) == document(old)


def test_a_request_that_could_not_be_parsed_is_recorded_from_what_arrived():
    exchange = Exchange(scope("/k8s/prod/api/v1/../secrets", query=b"command=echo&command=t0ken-v4lue",
                              headers=[("User-Agent", "evil")]))
    exchange.code = 400
    record = exchange.record(RESPONSE_COMPLETE)
    assert record.request_uri == "/k8s/prod/api/v1/../secrets"
    assert (record.verb, record.transport, record.user_agent, record.response_code) == ("get", "http", "evil", 400)
    ws = Exchange(scope("/k8s/x", kind="websocket")).record(RESPONSE_COMPLETE)
    assert ws.transport == "websocket"
    record.prepared(max_body=1, max_recording=1)
    assert uuid.UUID(str(record.audit_id))
