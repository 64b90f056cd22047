"""MCP tool calls in the audit trail: ``parent_id`` and ``mcp_tool`` are stored, hashed only when set, and
the replay page shows each tool call with the requests it caused beneath it."""

import uuid

import pytest

from audit.chain import verify_chain
from audit.document import event_document
from audit.events import prepare
from audit.models import AuditEvent
from audit.tests.factories import append, event


def test_only_linked_events_carry_the_keys_so_other_events_hash_as_before():
    plain = prepare(event(0), max_body=1024, max_recording=1024)
    airlock = event_document(AuditEvent(**plain.fields, seq=1), None)["airlock"]
    assert "parentId" not in airlock and "mcpTool" not in airlock
    parent = str(uuid.uuid4())
    child = prepare(event(0, parent_id=parent), max_body=1024, max_recording=1024)
    assert event_document(AuditEvent(**child.fields, seq=1), None)["airlock"]["parentId"] == parent
    call = prepare(event(0, mcp_tool="delete_resource"), max_body=1024, max_recording=1024)
    assert event_document(AuditEvent(**call.fields, seq=1), None)["airlock"]["mcpTool"] == "delete_resource"


@pytest.mark.django_db
def test_tool_calls_are_stored_linked_and_the_chain_verifies():
    call_id = uuid.uuid4()
    append(event(0, audit_id=call_id, verb="tools/call", mcp_tool="list_resources", kubectl_session="mcp-s1"),
           event(1, parent_id=str(call_id), kubectl_session="mcp-s1"))
    rows = list(AuditEvent.objects.order_by("seq"))
    assert [(r.mcp_tool, r.parent_id) for r in rows] == [("list_resources", None), ("", str(call_id))]
    assert rows[0].session_id == rows[1].session_id
    assert verify_chain().ok


@pytest.mark.django_db
def test_the_replay_page_nests_a_tool_calls_requests_beneath_it(client):
    from django.contrib.auth.models import Permission, User
    from django.urls import reverse

    from audit.models import Session

    user = User.objects.create_user("auditor")
    user.user_permissions.add(Permission.objects.get(codename="view_auditevent", content_type__app_label="audit"))
    client.force_login(user)
    call_id = uuid.uuid4()
    # As the recorder writes them: the requests complete before the tool call does.
    append(event(0, verb="get", object_resource="pods", object_name="before"),
           event(1, parent_id=str(call_id), verb="delete", object_resource="deployments", object_name="web"),
           event(2, audit_id=call_id, verb="tools/call", mcp_tool="delete_resource",
                 request_uri="/mcp/prod/tools/delete_resource"),
           event(3, verb="get", object_resource="pods", object_name="after"))
    page = client.get(reverse("audit:session", args=[Session.objects.get().session_id])).content.decode()
    call = page.index('id="event-3"')
    assert page.index('id="event-1"') < call < page.index('class="children"') < page.index('id="event-2"') < page.index(
        'id="event-4"')
    assert "MCP tool delete_resource" in page and "from MCP tool call" in page
