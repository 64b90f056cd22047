"""A dry run is recorded as one: a flag on the event, ``airlock.dryRun`` in its hashed document."""

import pytest

from audit.chain import verify_chain
from audit.document import event_document
from audit.events import prepare
from audit.models import AuditEvent
from audit.tests.factories import append, event


def test_only_a_dry_run_adds_the_key_so_other_events_hash_as_before():
    plain = prepare(event(0), max_body=1024, max_recording=1024)
    assert plain.fields["dry_run"] is False
    assert "dryRun" not in event_document(AuditEvent(**plain.fields, seq=1), None)["airlock"]
    dry = prepare(event(0, dry_run=True), max_body=1024, max_recording=1024)
    assert event_document(AuditEvent(**dry.fields, seq=1), None)["airlock"]["dryRun"] is True


def test_a_flag_that_is_not_a_bool_is_clamped_to_false():
    result = prepare(event(0, dry_run="yes"), max_body=1024, max_recording=1024)
    assert result.fields["dry_run"] is False and "dry_run" in result.fields["clamped"]


@pytest.mark.django_db
def test_dry_runs_are_stored_and_the_chain_verifies():
    append(event(0), event(1, dry_run=True))
    assert list(AuditEvent.objects.order_by("seq").values_list("dry_run", flat=True)) == [False, True]
    assert verify_chain().ok


@pytest.mark.django_db
def test_the_replay_pages_label_dry_runs(client):
    from django.contrib.auth.models import Permission, User
    from django.urls import reverse

    from audit.models import Session

    user = User.objects.create_user("auditor")
    user.user_permissions.add(Permission.objects.get(codename="view_auditevent", content_type__app_label="audit"))
    client.force_login(user)
    append(event(0, verb="patch", object_resource="deployments", object_name="web", dry_run=True),
           event(1, verb="patch", object_resource="deployments", object_name="web"))
    listing = client.get(reverse("audit:sessions")).content.decode()
    assert '<span class="tag dry-run">1 dry run</span>' in listing
    session = Session.objects.get()
    page = client.get(reverse("audit:session", args=[session.session_id])).content.decode()
    assert page.count("dry run · nothing changed") == 1
