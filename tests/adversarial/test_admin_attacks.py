"""A staff user who may only view, probing the admin and the APIs for credentials one request at a time.

The page walk of tests/test_credential_exposure.py proves no page *shows* a credential; these
attempts use the admin as an oracle instead (changelist filters, search, ordering, autocomplete)
or step outside the view-only role (posting forms, the browsable API).
"""

import re

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission, User
from django.db import models
from django.test import Client
from rest_framework.authtoken.models import Token

from approvals.tests.factories import reviewer
from connections.models import Connection

pytestmark = pytest.mark.django_db

CLUSTER_TOKEN = "cluster-token-4a1f9e7c2b"
API_KEY = "f3a9c0d1e2b4a5968778695a4b3c2d1e0f9a8b7c"


@pytest.fixture
def seeded():
    """A connection with a stored token, and a reviewer with an API key (their power to approve)."""
    connection = Connection(name="prod", server_url="https://k8s.example")
    connection.bearer_token = CLUSTER_TOKEN
    connection.full_clean()
    connection.save()
    rita = reviewer("rita")
    Token.objects.create(user=rita, key=API_KEY)
    return connection


def view_only_staff(*codenames) -> Client:
    user = User.objects.create_user("peeker", password="pw-peeker", is_staff=True)
    perms = Permission.objects.filter(codename__in=codenames) if codenames else Permission.objects.filter(
        codename__startswith="view_")
    user.user_permissions.set(perms)
    client = Client()
    client.force_login(user)
    return client


def answers(client, url, probes) -> set:
    """What each probe looked like to the attacker: the status and the changelist's result count."""
    seen = set()
    for probe in probes:
        response = client.get(url + probe)
        count = re.search(r'<p class="paginator">\s*(\d+)', response.content.decode())
        seen.add((response.status_code, count.group(1) if count else None))
    return seen


def test_api_keys_cannot_be_read_through_user_changelist_filters(seeded):
    """``?auth_token__key__startswith=f`` filters users by their API key: one answer per guess is an oracle."""
    peeker = view_only_staff("view_user")
    for lookup in ("auth_token__key__startswith", "auth_token__key__regex", "auth_token__pk__gte",
                   "auth_token__key__contains"):
        probes = [f"?{lookup}={c}" for c in "0123456789abcdef"]
        seen = answers(peeker, "/admin/auth/user/", probes)
        assert len(seen) == 1, f"{lookup} tells one guess from another: {seen}"
        assert next(iter(seen))[0] == 400


def test_ciphertexts_cannot_be_read_through_connection_changelist_filters(seeded):
    peeker = view_only_staff("view_connection")
    stored = Connection.objects.get().token_ciphertext
    for lookup in ("token_ciphertext__startswith", "token_ciphertext__regex", "token_ciphertext__gt",
                   "client_key_ciphertext__isnull", "token_ciphertext__contains"):
        probes = [f"?{lookup}={stored[:12]}", f"?{lookup}=zzzz", f"?{lookup}=^g"]
        seen = answers(peeker, "/admin/connections/connection/", probes)
        assert len(seen) == 1 and next(iter(seen))[0] == 400, (lookup, seen)


def undeclared_lookups(model, model_admin):
    """A lookup on each concrete field the admin offers no filter for, and across each reverse one-to-one
    relation to its target's primary key (how ``auth_token__key`` reaches the token table)."""
    offered = {f if isinstance(f, str) else f[0] for f in model_admin.list_filter if not isinstance(f, type)}
    for field in model._meta.get_fields():
        if field.name in offered:
            continue
        if isinstance(field, models.OneToOneRel):
            yield f"{field.name}__{field.related_model._meta.pk.name}__startswith=a"
        elif getattr(field, "concrete", False) and not field.is_relation:
            yield f"{field.name}__isnull=0"


OFFERED = (
    "/admin/auth/user/?is_staff__exact=1&groups__id__exact=1", "/admin/connections/connection/?enabled__exact=1",
    "/admin/approvals/review/?state__exact=pending", "/admin/audit/auditevent/?request_received_timestamp__year=2026",
    "/admin/audit/recording/?event__connection=prod&kind__exact=exec", "/admin/policy/rule/?effect__exact=deny",
)


def test_no_admin_changelist_filters_by_a_field_it_does_not_offer(seeded):
    """Every registered model admin (Django's included): a URL lookup must be one of its own filters."""
    peeker = view_only_staff()
    refused = []
    for model, model_admin in admin.site._registry.items():
        url = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        for lookup in undeclared_lookups(model, model_admin):
            status = peeker.get(f"{url}?{lookup}").status_code
            assert status == 400, f"{url}?{lookup} answered {status}"
            refused.append(lookup)
    assert "auth_token__key__startswith=a" in refused and len(refused) > 40
    for url in OFFERED:
        assert peeker.get(url).status_code == 200, f"{url}: an offered filter stopped working"


def test_search_and_ordering_are_no_oracle_either(seeded):
    peeker = view_only_staff("view_connection", "view_user")
    stored = Connection.objects.get().token_ciphertext
    searches = answers(peeker, "/admin/connections/connection/",
                       [f"?q={CLUSTER_TOKEN[:8]}", f"?q={stored[:16]}", "?q=zzzzzzzz"])
    assert len(searches) == 1
    orders = {peeker.get(f"/admin/connections/connection/?o={o}").status_code for o in ("1", "-2", "99", "3.1")}
    assert orders <= {200, 302}
    users = answers(peeker, "/admin/auth/user/", [f"?q={API_KEY[:6]}", "?q=000000"])
    assert len(users) == 1


def test_autocomplete_and_lookups_endpoints(seeded):
    peeker = view_only_staff()
    for query in ("app_label=connections&model_name=connection&field_name=bearer_token&term=c",
                  "app_label=auth&model_name=user&field_name=groups&term=" + API_KEY[:4],
                  "app_label=authtoken&model_name=token&field_name=user&term=r"):
        response = peeker.get(f"/admin/autocomplete/?{query}")
        assert API_KEY not in response.content.decode() and CLUSTER_TOKEN not in response.content.decode()


def test_view_only_staff_cannot_write_a_credential(seeded):
    """Replacing the cluster token would redirect the gateway: a view-only user must not manage it."""
    peeker = view_only_staff("view_connection")
    connection = Connection.objects.get()
    response = peeker.post(f"/admin/connections/connection/{connection.pk}/change/", {
        "name": "prod", "server_url": "https://attacker.example", "credential_kind": "token",
        "bearer_token": "attacker-token", "impersonation_mode": "off", "impersonation_user_prefix": "airlock:",
        "enabled": "on"})
    assert response.status_code == 403
    connection.refresh_from_db()
    assert connection.server_url == "https://k8s.example" and connection.decrypt_bearer_token() == CLUSTER_TOKEN
    assert peeker.post("/admin/connections/connection/add/", {"name": "evil"}).status_code == 403
    assert peeker.post(f"/admin/connections/connection/{connection.pk}/delete/", {"post": "yes"}).status_code == 403


def test_browsable_api_as_a_view_only_reviewer(seeded):
    watcher = User.objects.create_user("vic", password="pw")
    watcher.user_permissions.add(Permission.objects.get(codename="view_review"))
    client = Client()
    client.force_login(watcher)
    for url in ("/approvals/api/reviews/?format=api&state=all", "/approvals/api/leases/?format=api",
                "/approvals/api/reviews/?format=json", "/approvals/api/"):
        response = client.get(url)
        text = response.content.decode()
        assert API_KEY not in text and CLUSTER_TOKEN not in text
    assert client.post("/approvals/api/leases/", {"connection": "prod", "group": "agents", "duration": "1h",
                                                  "reason": "x"}).status_code == 403


def test_the_audit_trail_is_not_readable_without_the_auditor_permission(seeded):
    """Staff who may view connections and rules try the replay pages, bodies and casts directly."""
    from audit.tests.factories import append, event

    (row,) = append(event(0, request_body=b'{"kind":"Secret"}',
                          recording={"kind": "exec", "pod": "web-0", "asciicast": "cast\n"}))
    peeker = view_only_staff("view_connection", "view_rule")
    for url in ("/audit/", f"/audit/sessions/{row.session.session_id}/", f"/audit/events/{row.seq}/request-body/",
                f"/audit/events/{row.seq}/response-body/", f"/audit/events/{row.seq}/recording.cast",
                "/admin/audit/auditevent/", f"/admin/audit/auditevent/{row.pk}/change/", "/admin/audit/recording/"):
        response = peeker.get(url)
        assert response.status_code == 403, (url, response.status_code)
        assert b"Secret" not in response.content and b"cast" not in response.content
