"""The canonical document's hashes, pinned: a change to event_document (or what it is given by
prepare) that would change the hash of any stored event fails here, not at verify time in production."""

import hashlib
import logging
import uuid
from types import SimpleNamespace

import pytest
import rfc8785

from audit.chain import canonical_json
from audit.document import event_document
from audit.events import prepare
from audit.tests.factories import event

SESSION = "0b7c1f4e-3f0e-4c43-9a38-5bbf1f0e2a11"
CASES = {
    "plain": {},
    "received": {"stage": "RequestReceived", "response_code": None, "latency_ms": None, "response_body": b""},
    "refused": {"response_code": 403, "response_reason": "Forbidden", "response_message": "no rule allows it",
                "decision_effect": "deny", "decision_rule_id": None, "decision_reason": "no rule",
                "object_name": "", "user_groups": [], "masking_counts": {"token": 2, "aws": 1}},
    "proxied": {"proxy_username": "proxy", "proxy_uid": "proxy-sub", "proxy_issuer": "https://proxy.test",
                "user_issuer": "", "object_api_group": "apps", "object_subresource": "scale", "dry_run": True,
                "parent_id": "7d1f3c8e-2f0b-4a43-9a38-5bbf1f0e2a11", "mcp_tool": "kubectl_get", "kubectl_session": "s1",
                "request_body": b"\xff\x00binary", "review_id": "r1", "lease_id": "l1", "latency_ms": 3.0},
    "clamped": {"bytes_in": -5, "user_agent": "ünï\u2028 \x01", "latency_ms": 1e13, "source_ips": []},
    "recorded": {"recording": {"kind": "exec", "namespace": "default", "pod": "p", "container": "c",
                               "command": ["sh", "-c", "ls"], "asciicast": "x\n", "width": 80, "height": 24,
                               "exit_code": 0, "duration_s": 2.5, "truncated": False, "ports": [],
                               "bytes_to_pod": 3, "bytes_from_pod": 4}},
}
# SHA-256 of RFC 8785 of each case's document, without and with a session (computed by the
# event_document of commit 3517915).
PINNED = {
    "plain": ("80eee231c41c1b9b2043b705a4c16a8200c625d6fc35b0c300a3ece0a86de160",
              "02764de5390edfeb664e8d9857d619089e482b35375e745e3533a6481e681196"),
    "received": ("985cb44b38c99ca80a929ff32104b93cd6f04521ce25b4afe5d710aa46586ffe",
                 "c386f9b44145cb5848118b9581dab7d439a6dc007a88c35f23fb90076b272212"),
    "refused": ("fc58e7740935a5c74d2451c0fc9823acb4ca95ccc30c2c4650a60c171d54434c",
                "13498f9d31ba9c7e1a8c3b14f35dbecf3bd195f0edb132964ffc82ebcff2cf50"),
    "proxied": ("e10d1b4fe620f97934570e5d9bfec57556d812d4e473e4780fb108acb469e9cc",
                "94e60c9c9377c7c6982012564367f0d22180b1647c3c9e7c26e689d5a81bf380"),
    "clamped": ("833868f8a47b83597da42ef76bcbbaa6fc18d5420e4eb366164a5c6ee5e26559",
                "25e499ecaeffd6a8a828da6788ce78dfb340261b82c609ea37cc60bb770c147e"),
    "recorded": ("41a18150af400e6aab1ef64d5f8be747a9a7862a20f2cd119c952f2413a5fef4",
                 "a943e4bc085b92c96d3f72977931a9caaa9b3a828ea663ab2215e81db14accd5"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_documents_hash_as_they_always_did(name, caplog):
    caplog.set_level(logging.ERROR, logger="audit.events")  # the clamped case warns
    prepared = prepare({**event(0), "audit_id": uuid.UUID(int=len(name)), **CASES[name]},
                       max_body=65536, max_recording=1 << 20)
    view = SimpleNamespace(**prepared.fields, seq=17)
    recording = SimpleNamespace(**prepared.recording) if prepared.recording else None
    for session, pinned in zip((None, SESSION), PINNED[name]):
        document = event_document(view, session, recording)
        assert hashlib.sha256(rfc8785.dumps(document)).hexdigest() == pinned
        assert hashlib.sha256(canonical_json(document)).hexdigest() == pinned
