"""The audit admin can be read and filtered, never changed."""

import pytest
from django.urls import reverse

from audit.chain import make_anchor
from audit.models import Anchor, AuditEvent, Recording, Session
from audit.tests.factories import append, event

pytestmark = pytest.mark.django_db


@pytest.fixture
def trail():
    events = append(
        event(0, request_body=b'{"kind":"Pod"}', response_body=b"x" * 100),
        event(1, decision_effect="deny", verb="delete",
              recording={"kind": "exec", "pod": "web-0", "asciicast": "cast\n"}),
        max_body=50,
    )
    make_anchor("schedule")
    return events


@pytest.mark.parametrize("model", [AuditEvent, Session, Recording, Anchor])
def test_changelists_and_filters_render(admin_client, trail, model):
    url = reverse(f"admin:audit_{model._meta.model_name}_changelist")
    assert admin_client.get(url).status_code == 200
    filters = {
        AuditEvent: "?connection=prod&verb=delete&decision_effect=deny&user_username=agent-1",
        Session: "?connection=prod&user_username=agent-1",
        Recording: "?kind=exec&event__connection=prod",
        Anchor: "?reason=schedule",
    }[model]
    response = admin_client.get(url + filters)
    assert response.status_code == 200
    assert response.context["cl"].result_count == 1


def test_event_filter_narrows_the_list(admin_client, trail):
    response = admin_client.get(reverse("admin:audit_auditevent_changelist") + "?decision_effect=allow")
    assert [e.seq for e in response.context["cl"].result_list] == [1]


def test_event_page_is_read_only_and_shows_the_masked_body(admin_client, trail):
    url = reverse("admin:audit_auditevent_change", args=[trail[0].pk])
    response = admin_client.get(url)
    assert response.status_code == 200
    page = response.content.decode()
    assert "{&quot;kind&quot;:&quot;Pod&quot;}" in page
    assert "x" * 50 + "<br>… [truncated: 100 bytes in total]" in page
    assert 'name="_save"' not in page
    assert admin_client.post(url, {"verb": "get"}).status_code == 403
    assert AuditEvent.objects.get(pk=trail[0].pk).verb == "list"


@pytest.mark.parametrize("model", [AuditEvent, Session, Recording, Anchor])
def test_no_add_or_delete(admin_client, trail, model):
    name = model._meta.model_name
    obj = model.objects.first()
    assert admin_client.get(reverse(f"admin:audit_{name}_add")).status_code == 403
    assert admin_client.post(reverse(f"admin:audit_{name}_delete", args=[obj.pk]), {"post": "yes"}).status_code == 403
    changelist = reverse(f"admin:audit_{name}_changelist")
    admin_client.post(changelist, {"action": "delete_selected", "_selected_action": [obj.pk], "post": "yes"})
    assert model.objects.filter(pk=obj.pk).exists()
