"""The replay pages: auditors only, filters, one timeline row per request, bodies and casts as text."""

import json
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from audit import views
from audit.models import AuditEvent, Session
from audit.tests.factories import T0, append, event

pytestmark = pytest.mark.django_db

CAST = '{"version": 2, "width": 80, "height": 24}\n[0.1, "o", "hello from the pod\\r\\n"]\n'


@pytest.fixture
def auditor(client):
    user = User.objects.create_user("auditor", password="not-used-here")
    user.user_permissions.add(Permission.objects.get(codename="view_auditevent", content_type__app_label="audit"))
    client.force_login(user)
    return client


@pytest.fixture
def trail():
    """Two sessions on prod (agent-1, agent-2) and one on staging, with a write, a denial and streams."""
    write = uuid.uuid4()
    orphan = uuid.uuid4()
    return append(
        event(0, response_body=b'{"kind":"PodList","items":[]}', masking_counts={"secret": 2, "token": 0}),
        event(1, audit_id=write, stage="RequestReceived", verb="create", object_resource="configmaps",
              request_body=b'{"kind":"ConfigMap"}'),
        event(1.2, audit_id=write, verb="create", object_resource="configmaps", object_name="<b>cm</b>",
              request_body=b'{"kind":"ConfigMap"}', response_code=201, review_id="17", lease_id="4"),
        event(2, verb="delete", object_resource="secrets", object_name="db", decision_effect="deny",
              decision_rule_name="default-deny", response_code=403, response_message="denied by policy"),
        event(3, verb="create", object_resource="pods", object_subresource="exec", object_name="web-0",
              response_code=101, recording={"kind": "exec", "pod": "web-0", "namespace": "default",
                                            "command": ["sh"], "asciicast": CAST, "exit_code": 0}),
        event(4, verb="create", object_resource="pods", object_subresource="portforward", object_name="db-0",
              response_code=101, recording={"kind": "portforward", "pod": "db-0", "namespace": "default",
                                            "ports": [5432], "bytes_to_pod": 300, "bytes_from_pod": 4000,
                                            "duration_s": 2.5}),
        event(5, audit_id=orphan, stage="RequestReceived", verb="patch", object_resource="deployments"),
        event(10, user_username="agent-2", user_uid="agent-2-sub", verb="get"),
        event(3600, connection="staging", verb="watch", object_resource="configmaps"),
    )


def session_of(username, connection="prod"):
    return Session.objects.get(user_username=username, connection=connection)


def test_anonymous_people_are_sent_to_sign_in(client, trail):
    for url in (reverse("audit:sessions"), reverse("audit:session", args=[session_of("agent-1").session_id]),
                reverse("audit:request-body", args=[2]), reverse("audit:recording-cast", args=[5])):
        response = client.get(url)
        assert response.status_code == 302 and "/login/" in response["Location"], url


def test_signed_in_without_the_permission_is_refused(client, trail):
    client.force_login(User.objects.create_user("reviewer"))
    assert client.get(reverse("audit:sessions")).status_code == 403
    assert client.get(reverse("audit:recording-cast", args=[5])).status_code == 403


def test_superusers_and_auditors_read_the_list(admin_client, auditor, trail):
    for reader in (admin_client, auditor):
        response = reader.get(reverse("audit:sessions"))
        assert response.status_code == 200
        assert "wasm-unsafe-eval" in response["Content-Security-Policy"]
        assert response["Cache-Control"] == "no-store, private"
        assert len(response.context["sessions"]) == 3


def listed(client, **query):
    response = client.get(reverse("audit:sessions"), query)
    assert response.status_code == 200, response.context["form"].errors
    return [(s.user_username, s.connection) for s in response.context["sessions"]]


def test_filters(auditor, trail):
    assert listed(auditor, user="agent-2") == [("agent-2", "prod")]
    assert listed(auditor, user="agent-1-sub") == [("agent-1", "staging"), ("agent-1", "prod")]
    assert listed(auditor, connection="staging") == [("agent-1", "staging")]
    assert listed(auditor, verb="delete") == [("agent-1", "prod")]
    assert listed(auditor, resource="pods/portforward") == [("agent-1", "prod")]
    assert listed(auditor, resource="configmaps") == [("agent-1", "staging"), ("agent-1", "prod")]
    assert listed(auditor, decision="deny") == [("agent-1", "prod")]
    assert listed(auditor, verb="delete", decision="allow") == []
    later = (T0 + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M")
    assert listed(auditor, since=later) == [("agent-1", "staging")]
    assert listed(auditor, until=(T0 + timedelta(seconds=5)).isoformat()) == [("agent-1", "prod")]


def test_session_summary_counts_requests_not_stages(auditor, trail):
    response = auditor.get(reverse("audit:sessions"), {"user": "agent-1", "connection": "prod"})
    (session,) = response.context["sessions"]
    assert session.requests == 6 and session.denied == 1 and session.event_count == 7


@pytest.mark.parametrize("query", [{"since": "yesterday"}, {"decision": "maybe"}, {"user": "agent\x00"},
                                   {"since": "10000-01-01T00:00"},
                                   {"since": "2026-03-02T00:00", "until": "2026-03-01T00:00"}])
def test_bad_filters_are_a_400_with_the_reason(auditor, trail, query):
    response = auditor.get(reverse("audit:sessions"), query)
    assert response.status_code == 400
    assert response.context["sessions"] == []
    assert 'role="alert"' in response.content.decode()


def test_pagination_keeps_the_filters(auditor, monkeypatch):
    monkeypatch.setattr(views, "SESSIONS_PER_PAGE", 2)
    append(*(event(i, kubectl_session=f"run-{i}") for i in range(5)))
    first = auditor.get(reverse("audit:sessions"), {"connection": "prod"})
    assert [s.kubectl_session for s in first.context["sessions"]] == ["run-4", "run-3"]
    assert "connection=prod&amp;page=2" in first.content.decode()
    last = auditor.get(reverse("audit:sessions"), {"connection": "prod", "page": 3})
    assert [s.kubectl_session for s in last.context["sessions"]] == ["run-0"]


def test_session_timeline_has_one_row_per_request(auditor, trail):
    session = session_of("agent-1")
    response = auditor.get(reverse("audit:session", args=[session.session_id]))
    assert response.status_code == 200
    rows = response.context["events"]
    assert [(e.verb, e.stage) for e in rows] == [
        ("list", "ResponseComplete"), ("create", "ResponseComplete"), ("delete", "ResponseComplete"),
        ("create", "ResponseComplete"), ("create", "ResponseComplete"), ("patch", "RequestReceived"),
    ]
    write, orphan = rows[1], rows[-1]
    assert write.recorded_first_at is not None and not write.incomplete
    assert orphan.incomplete and orphan.recorded_first_at == orphan.stage_timestamp
    assert rows[0].masked == [("secret", 2)]
    page = response.content.decode()
    assert f'<a href="{reverse("approvals:detail", args=[17])}">review 17</a>' in page
    assert "lease 4" in page and "masked secret ×2" in page
    assert "&lt;b&gt;cm&lt;/b&gt;" in page and "<b>cm</b>" not in page
    assert "no completion was recorded" in page
    assert "default-deny" in page and "denied by policy" in page and "12.5 ms" in page
    assert f'data-cast-url="{reverse("audit:recording-cast", args=[rows[3].seq])}"' in page
    assert "port-forward to pod default/db-0, ports 5432" in page
    assert "300 bytes to the pod, 4000 bytes from the pod" in page and "2.500 s" in page
    assert "vendor/asciinema-player-3.18.0/asciinema-player.min.js" in page


def test_timeline_pages(auditor, trail, monkeypatch):
    monkeypatch.setattr(views, "REQUESTS_PER_PAGE", 4)
    url = reverse("audit:session", args=[session_of("agent-1").session_id])
    assert len(auditor.get(url).context["events"]) == 4
    assert [e.verb for e in auditor.get(url, {"page": 2}).context["events"]] == ["create", "patch"]


def test_unknown_session_is_404(auditor):
    assert auditor.get(reverse("audit:session", args=[uuid.uuid4()])).status_code == 404


def test_bodies_are_served_as_text(auditor, trail):
    listed_event = AuditEvent.objects.get(seq=1)
    response = auditor.get(reverse("audit:response-body", args=[listed_event.seq]))
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert "sandbox" in response["Content-Security-Policy"]
    assert json.loads(response.content) == {"kind": "PodList", "items": []}
    assert response.content.decode().startswith('{\n  "kind"')
    assert auditor.get(reverse("audit:request-body", args=[99])).status_code == 404


def test_a_truncated_body_says_so():
    assert views.body_text(b'{"kind": "Po', 40) == '{"kind": "Po\n… [truncated: 40 bytes in total, 12 stored]'
    assert views.body_text(b"\xff<p>", 4) == "\ufffd<p>"


def test_cast_is_served_for_exec_only(auditor, trail):
    exec_event = AuditEvent.objects.get(object_subresource="exec")
    response = auditor.get(reverse("audit:recording-cast", args=[exec_event.seq]))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-asciicast; charset=utf-8"
    assert response.content.decode() == CAST
    forward = AuditEvent.objects.get(object_subresource="portforward")
    assert auditor.get(reverse("audit:recording-cast", args=[forward.seq])).status_code == 404
    assert auditor.get(reverse("audit:recording-cast", args=[1])).status_code == 404


def test_vendored_player_is_served_by_the_app():
    from django.contrib.staticfiles import finders

    for name in ("asciinema-player.min.js", "asciinema-player.css", "LICENSE"):
        assert finders.find(f"vendor/asciinema-player-3.18.0/{name}"), name
    assert finders.find("audit/replay.js") and finders.find("airlock/airlock.css")
