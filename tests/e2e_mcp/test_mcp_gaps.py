"""What the MCP front door records and refuses beyond the happy path, with the ``mcp`` SDK's own client
against the real application, OIDC provider and kubesim:

- a budget (deletes quota 2/hour) turns the third ``delete_resource`` into a tool error carrying the
  429 Status's words (which budget, when it resets), and the throttled request sits in the audit trail
  under its tool call;
- tool calls the SDK refuses before any tool runs (wrong types, a missing field, extra fields, a huge
  string, an unknown tool, a tool name with odd unicode) are audit events with the reason, arguments
  masked; the session's start is recorded with its agent.
"""

import json
import re

import pytest
from asgiref.sync import sync_to_async

from tests.e2e_mcp.conftest import AGENT, mcp_client
from tests.e2e_mcp.test_mcp_endpoint import text

pytestmark = pytest.mark.django_db(transaction=True)
RESET = re.compile(r"resets at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(in (1 hour|59 min [0-9]+ s)\)")


@pytest.fixture
def capped_deletes(cluster_connection, mcp_rules):
    from policy.models import Rule

    Rule.objects.create(order=1, name="capped-deletes", effect="allow", verbs=["delete"], resources=["configmaps"],
                        connection=cluster_connection, groups=["mcp-agents"], api_groups=[""], namespaces=["shop"],
                        names=["*"], budget={"quota": "2/hour"})


async def test_the_third_delete_over_a_quota_of_two_is_a_tool_error_with_the_429_words(
        capped_deletes, airlock_mcp, idp, kubectl):
    for n in (1, 2, 3):
        kubectl("create", "configmap", f"capped-{n}", "-n", "shop", "--from-literal=n=1")
    token = idp.get_token(AGENT["client_id"], AGENT["client_secret"])
    async with mcp_client(airlock_mcp, token, mode="legacy") as client:
        answers = [await client.call_tool("delete_resource", {"resource": "configmaps", "name": f"capped-{n}",
                                                               "namespace": "shop"}) for n in (1, 2, 3)]
    assert [a.is_error for a in answers] == [False, False, True], [text(a) for a in answers]
    refused = text(answers[2])
    assert "delete configmaps capped-3 failed with 429: airlock: too many requests" in refused
    assert ('too many requests: rule "capped-deletes" (connection kubesim) allows each agent 2 per 1 hour (quota)'
            in refused) and 'delete configmaps "capped-3" in namespace "shop" was not forwarded' in refused
    assert RESET.search(refused), refused
    assert "capped-3" in kubectl("get", "configmaps", "-n", "shop", "-o", "name").stdout
    airlock_mcp.stop()
    await sync_to_async(check_the_throttle)(refused)


def check_the_throttle(refused: str):
    from audit.models import AuditEvent

    throttled = AuditEvent.objects.get(stage="ResponseComplete", verb="delete", object_name="capped-3")
    assert throttled.response_code == 429 and throttled.response_reason == "TooManyRequests"
    assert throttled.decision_rule_name == "capped-deletes"
    assert throttled.response_message in refused  # the tool error carries the Status message's very words
    call = AuditEvent.objects.get(stage="ResponseComplete", audit_id=throttled.parent_id)
    assert (call.mcp_tool, call.response_code, call.response_reason) == ("delete_resource", 429, "TooManyRequests")
    assert json.loads(call.request_body)["name"] == "capped-3" and call.session_id == throttled.session_id
    [start] = AuditEvent.objects.filter(stage="ResponseComplete", verb="initialize")
    assert start.user_username == "mcp-agent" and start.session_id == call.session_id


ODD_NAME = "delete_resource\u202e\u200b\U0001f4a3\u0000"
SECRET = "ghp_" + "Z9y8X7w6V5u4T3s2R1q0P9o8N7m6L5k4J3i2"  # a GitHub token shape: the detectors mask it


async def test_tool_calls_the_sdk_refuses_are_audit_events_with_the_reason_and_masked_arguments(
        airlock_mcp, idp):
    token = idp.get_token(AGENT["client_id"], AGENT["client_secret"])
    attempts = [
        ("list_resources", {"resource": ["pods"], "namespace": SECRET}),  # a wrong type
        ("get_resource", {"resource": "secrets", "namespace": "shop"}),  # a required field missing
        ("review_status", {"review_id": "9" * 300_000 + "x"}),  # a huge string for a number
        ("no_such_tool", {"token": SECRET}),
        (ODD_NAME, {"resource": "pods", "name": "x"}),
    ]
    async with mcp_client(airlock_mcp, token, mode="legacy") as client:
        results = [await client.call_tool(name, arguments) for name, arguments in attempts]
        extra = await client.call_tool("list_events", {"namespace": "shop", "limit": 1, "sudo": True, "x": SECRET})
    async with mcp_client(airlock_mcp, token) as modern:  # the sessionless protocol version: recorded alike
        results.append(await modern.call_tool("no_such_tool", {"token": SECRET}))
    assert all(r.is_error for r in results), [text(r) for r in results]
    assert not extra.is_error, text(extra)  # extra fields are ignored by the schema: the call runs (and is recorded)
    airlock_mcp.stop()
    await sync_to_async(check_the_refusals)()


def check_the_refusals():
    from audit.chain import verify_chain
    from audit.models import AuditEvent

    calls = list(AuditEvent.objects.filter(stage="ResponseComplete", verb="tools/call").order_by("seq"))
    assert [(c.mcp_tool[:15], c.response_code) for c in calls] == [
        ("list_resources", 422), ("get_resource", 422), ("review_status", 422), ("no_such_tool", 404),
        ("delete_resource", 404), ("list_events", 200), ("no_such_tool", 404)]
    for event in calls:
        kept = bytes(event.request_body).decode()
        assert SECRET not in kept and SECRET not in event.response_message and "input_value" not in event.response_message
        assert event.user_username == "mcp-agent" and event.kubectl_session.startswith("mcp-") == (event != calls[6])
    assert "resource" in calls[0].response_message and "name" in calls[1].response_message
    assert calls[3].response_message == "unknown tool: no_such_tool"
    assert calls[4].mcp_tool == "delete_resource\\u202e\\u200b\\U0001f4a3\\x00" and calls[4].mcp_tool.isascii()
    kept = json.loads(calls[5].request_body)  # what the agent sent, the fields the tool ignored too, masked
    assert kept["(sent, not in the tool's schema: ignored)"] == {"sudo": True, "x": "**AIRLOCK-MASKED**"}
    assert kept["namespace"] == "shop"
    assert AuditEvent.objects.filter(stage="ResponseComplete", verb="initialize").count() == 1
    assert len({e.session_id for e in calls[:6]}) == 1
    assert (calls[6].mcp_tool, calls[6].response_code, calls[6].kubectl_session) == ("no_such_tool", 404, "")
    assert verify_chain().ok
