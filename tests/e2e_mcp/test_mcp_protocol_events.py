"""Every HTTP request to the MCP endpoint is an audit event, not only tool calls: raw HTTP (httpx) and
the SDK's own client against the real application, OIDC provider and kubesim.

A malformed body, a batch, an oversized body, a body that is not ``application/json``, another
agent's session id, ``tools/list`` and the session's DELETE each leave exactly one event naming who
(the agent), what (the JSON-RPC method, ``post``/``batch`` for what is no message, ``session/end``)
and the code the agent got, with the reason and the body masked and cut; an unauthenticated request
is recorded as the kubectl path records one (a 401 without a user).
"""

import json

import pytest
from asgiref.sync import sync_to_async

from tests.e2e_mcp.conftest import AGENT, OPERATOR, http_client, mcp_client

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "ghp_" + "Q1w2E3r4T5y6U7i8O9p0A1s2D3f4G5h6J7k8"  # a GitHub token shape: the detectors mask it
VERSION = "2025-06-18"
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": VERSION, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}
MALFORMED = f'{{"jsonrpc": "2.0", "token": "{SECRET}", not json'.encode()
ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


async def test_each_protocol_request_is_one_audit_event_with_who_what_and_the_code(airlock_mcp, idp):
    agent = idp.get_token(AGENT["client_id"], AGENT["client_secret"])
    operator = idp.get_token(OPERATOR["client_id"], OPERATOR["client_secret"])
    url = airlock_mcp.mcp_url
    async with http_client(airlock_mcp.ca_file, agent) as http:
        opened = await http.post(url, json=INITIALIZE, headers=ACCEPT)
        assert opened.status_code == 200, opened.text
        session = {**ACCEPT, "mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": VERSION}
        assert (await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                                headers=session)).status_code == 202
        listed = await http.post(url, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers=session)
        assert listed.status_code == 200 and "list_resources" in listed.text
        sent = [
            (MALFORMED, session, 400),
            (json.dumps([{"jsonrpc": "2.0", "id": 3, "method": "tools/list"}] * 2).encode(), session, 400),
            (b'{"pad": "' + b"x" * (2 * 1024 * 1024) + b'"}', session, 413),
            (json.dumps({"jsonrpc": "2.0", "id": 4, "method": "tools/list"}).encode(),
             {**session, "content-type": "text/plain"}, 400),
        ]
        for body, headers, code in sent:
            answer = await http.post(url, content=body, headers=headers)
            assert answer.status_code == code, (body[:40], answer.text)
        async with http_client(airlock_mcp.ca_file, operator) as other:
            stolen = await other.post(url, json={"jsonrpc": "2.0", "id": 5, "method": "tools/list"}, headers=session)
            assert stolen.status_code == 404 and "Session not found" in stolen.text
        assert (await http.delete(url, headers=session)).status_code == 200
    async with http_client(airlock_mcp.ca_file) as anonymous:
        assert (await anonymous.post(url, json=INITIALIZE, headers=ACCEPT)).status_code == 401
    async with mcp_client(airlock_mcp, agent, mode="legacy") as client:  # the SDK's own session: start to end
        assert (await client.list_tools()).tools
    airlock_mcp.stop()
    await sync_to_async(check_the_events)(opened.headers["mcp-session-id"])


def check_the_events(session: str):
    from audit.chain import verify_chain
    from audit.models import AuditEvent

    events = list(AuditEvent.objects.filter(stage="ResponseComplete", request_uri__startswith="/mcp/")
                  .order_by("request_received_timestamp"))
    raw, sdk = events[:10], events[10:]
    assert [(e.verb, e.response_code, e.user_username) for e in raw] == [
        ("initialize", 200, "mcp-agent"), ("notifications/initialized", 202, "mcp-agent"),
        ("tools/list", 200, "mcp-agent"), ("post", 400, "mcp-agent"), ("batch", 400, "mcp-agent"),
        ("post", 413, "mcp-agent"), ("tools/list", 400, "mcp-agent"), ("tools/list", 404, "mcp-operator"),
        ("session/end", 200, "mcp-agent"), ("post", 401, "")]
    assert all(e.connection == "kubesim" for e in raw)
    assert all(e.kubectl_session == f"mcp-{session}" for e in raw[:9])
    malformed, batch, large, plain, stolen, ended, anonymous = raw[3], raw[4], raw[5], raw[6], raw[7], raw[8], raw[9]
    assert malformed.response_message.startswith("Parse error") and malformed.response_reason == "BadRequest"
    kept = bytes(malformed.request_body).decode()
    assert SECRET not in kept and '"token": "**AIRLOCK-MASKED**", not json' in kept
    assert malformed.bytes_in == len(MALFORMED)
    assert batch.response_message.startswith("Validation error") and "input_value" not in batch.response_message
    assert large.response_reason == "RequestEntityTooLarge" and large.bytes_in > 2 * 1024 * 1024
    assert bytes(large.request_body) == b""  # refused unread (its Content-Length): only its size is kept
    assert plain.response_message == "Invalid Content-Type header"
    assert stolen.response_message == "Session not found" and stolen.user_username == "mcp-operator"
    assert ended.response_message == "MCP session ended by the agent"
    assert anonymous.response_reason == "Unauthorized" and anonymous.response_message.startswith("Unauthorized")
    assert anonymous.user_uid == "" and anonymous.user_issuer == ""
    assert sdk[0].verb == "initialize" and sdk[-1].verb == "session/end" and "tools/list" in {e.verb for e in sdk}
    assert len({e.kubectl_session for e in sdk}) == 1  # the SDK's own session, start to end
    assert AuditEvent.objects.filter(stage="ResponseComplete", verb="session/end").count() == 2
    assert verify_chain().ok
