"""The registry of trusted proxies: the model's checks, the connection registry that hands them to the
gateway (and forgets them when they change), the admin as editor and as view-only staff, and
``manage.py register_proxy``."""

import io

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.urls import reverse

from connections import registry
from connections.models import TrustedProxy
from identity.proxies import ProxyGrant

pytestmark = pytest.mark.django_db

IDP = "https://idp.test"


def proxy(connection, name="mcp", **fields):
    values = {"issuer": IDP, "subject": "mcp-server", "users": ["*@example.com"], "groups": ["team-*"]} | fields
    row = TrustedProxy(connection=connection, name=name, **values)
    row.full_clean()
    row.save()
    return row


@pytest.mark.parametrize("fields, field, words", [
    ({"subject": "", "group": ""}, "__all__", "subject, a group, or both"),
    ({"users": []}, "users", "at least one pattern"),
    ({"users": ["system:*"]}, "users", 'starting with "system:"'),
    ({"groups": ["System:Masters"]}, "groups", 'starting with "system:"'),
    ({"users": "*@example.com"}, "users", "JSON list"),
    ({"users": [7]}, "users", "JSON list"),
    ({"users": ["alice\nbob"]}, "users", "printable"),
    ({"users": [" alice"]}, "users", "surrounding spaces"),
    ({"users": ["u"] * 101}, "users", "At most 100"),
    ({"subject": "mcp\x00server"}, "subject", "control characters"),
    ({"issuer": ""}, "issuer", "blank"),
])
def test_a_registration_that_could_not_mean_what_it_says_is_refused(token_connection, fields, field, words):
    with pytest.raises(ValidationError) as caught:
        proxy(token_connection, **fields)
    assert words in " ".join(caught.value.message_dict[field])


def test_names_are_unique_per_connection_only(token_connection, cert_connection):
    proxy(token_connection)
    proxy(cert_connection)
    with pytest.raises(ValidationError):
        proxy(token_connection)


def test_the_gateway_gets_the_enabled_registrations_and_sees_every_change_at_once(token_connection, cert_connection):
    get = async_to_sync(registry.ConnectionRegistry(clock=lambda: 1000.0).get_upstream)  # never revalidates by time
    assert get("prod").trusted_proxies == ()
    row = proxy(token_connection)
    proxy(token_connection, "a-disabled", enabled=False)
    proxy(cert_connection, "elsewhere")
    assert get("prod").trusted_proxies == (
        ProxyGrant(name="mcp", issuer=IDP, subject="mcp-server", users=("*@example.com",), groups=("team-*",)),)
    row.users = ["*@corp.example"]
    row.save()
    assert get("prod").trusted_proxies[0].users == ("*@corp.example",)
    row.enabled = False
    row.save()
    assert get("prod").trusted_proxies == ()
    row.delete()
    assert get("prod").trusted_proxies == ()
    assert [g.name for g in get("dev").trusted_proxies] == ["elsewhere"]


def test_a_change_moves_the_connections_updated_at_so_other_processes_reload_it(token_connection):
    """Other processes hear no signal: they re-read a connection whose updated_at moved (connections.registry)."""
    before = type(token_connection).objects.get(pk=token_connection.pk).updated_at
    row = proxy(token_connection)
    after_save = type(token_connection).objects.get(pk=token_connection.pk).updated_at
    assert after_save > before
    row.delete()
    assert type(token_connection).objects.get(pk=token_connection.pk).updated_at > after_save


def test_an_editor_registers_a_proxy_in_the_admin(client, django_user_model, token_connection):
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.com", "pw"))
    response = client.post(reverse("admin:connections_trustedproxy_add"), {
        "connection": token_connection.pk, "name": "mcp", "description": "kubernetes-mcp-server", "enabled": "on",
        "issuer": IDP, "subject": "mcp-server", "group": "", "users": '["*@example.com"]', "groups": '["team-*"]',
    })
    assert response.status_code == 302, response.content.decode()[-1500:]
    assert TrustedProxy.objects.get().grant().users == ("*@example.com",)
    refused = client.post(reverse("admin:connections_trustedproxy_add"), {
        "connection": token_connection.pk, "name": "root", "issuer": IDP, "subject": "x",
        "users": '["*"]', "groups": '["system:masters"]',
    })
    assert refused.status_code == 200 and "never asserted through the gateway" in refused.content.decode()
    assert TrustedProxy.objects.count() == 1


def test_view_only_staff_read_registrations_and_change_nothing(client, django_user_model, token_connection):
    row = proxy(token_connection)
    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_trustedproxy"))
    client.force_login(viewer)
    listing = client.get(reverse("admin:connections_trustedproxy_changelist"))
    assert listing.status_code == 200 and "mcp-server" in listing.content.decode()
    page = client.get(reverse("admin:connections_trustedproxy_change", args=[row.pk]))
    html = page.content.decode()
    assert page.status_code == 200 and "*@example.com" in html
    assert 'name="users"' not in html and 'name="_save"' not in html
    posted = client.post(reverse("admin:connections_trustedproxy_change", args=[row.pk]), {
        "connection": token_connection.pk, "name": "mcp", "issuer": IDP, "subject": "mcp-server",
        "users": '["*"]', "groups": '["*"]'})
    assert posted.status_code == 403
    assert client.post(reverse("admin:connections_trustedproxy_delete", args=[row.pk]), {"post": "yes"}).status_code == 403
    assert TrustedProxy.objects.get().users == ["*@example.com"]


def run(*args):
    out = io.StringIO()
    call_command("register_proxy", *args, stdout=out)
    return out.getvalue()


def test_the_register_proxy_command(token_connection):
    said = run("--connection", "prod", "--name", "mcp", "--issuer", IDP, "--subject", "mcp-server",
               "--user", "*@example.com", "--group", "team-*", "--group", "ops")
    assert "Registered trusted proxy 'mcp' on connection 'prod'" in said
    assert TrustedProxy.objects.get().grant() == ProxyGrant(
        name="mcp", issuer=IDP, subject="mcp-server", users=("*@example.com",), groups=("team-*", "ops"))
    with pytest.raises(CommandError, match="already registered"):
        run("--connection", "prod", "--name", "mcp", "--issuer", IDP, "--subject", "x", "--user", "*")
    run("--connection", "prod", "--name", "mcp", "--update", "--member-of", "mcp-proxies", "--disable")
    row = TrustedProxy.objects.get()
    assert (row.subject, row.group, row.enabled, row.users) == ("mcp-server", "mcp-proxies", False, ["*@example.com"])
    assert "prod/mcp: tokens of 'https://idp.test' with subject 'mcp-server' and group 'mcp-proxies'" in run("--list")
    with pytest.raises(CommandError, match='starting with "system:"'):
        run("--connection", "prod", "--name", "root", "--issuer", IDP, "--subject", "x", "--user", "*",
            "--group", "system:masters")
    with pytest.raises(CommandError, match="does not exist"):
        run("--connection", "nope", "--name", "mcp", "--issuer", IDP, "--subject", "x", "--user", "*")
    assert "Removed" in run("--connection", "prod", "--name", "mcp", "--remove")
    assert not TrustedProxy.objects.exists()


def test_deleting_a_connection_deletes_its_registrations(token_connection):
    proxy(token_connection)
    token_connection.delete()
    assert not TrustedProxy.objects.exists()
    assert async_to_sync(registry.ConnectionRegistry().get_upstream)("prod") is None
