"""Every admin page, dashboard page, API endpoint, audit page and the audit export, as every role:
no credential in any response.

The data is made the way production makes it: real kubectl through the gateway
(a Secret read, a held Secret create, an exec), a review decided, a lease
granted, a connection edited in the admin.  Pages are found by walking the URL
configuration and admin.site's registry, so a page added later is walked too
(and a model registered without seed data fails the test).
"""

import base64
import binascii
import html
import json
import re
import ssl
import time
from itertools import chain
from urllib.parse import quote

import httpx
import pytest
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.utils import quote as admin_quote
from django.contrib.auth.models import Permission, User
from django.contrib.contenttypes.models import ContentType
from django.template import Context, Template
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token

from approvals import leases, reviews
from approvals.models import Lease, Review, ReviewerProfile
from approvals.tests.factories import reviewer, reviewers_group
from audit.chain import make_anchor
from audit.export import iter_lines, select_events
from audit.models import AuditEvent, Checkpoint, Session
from connections.models import Connection, CredentialKind, TrustedProxy
from connections.registry import Upstream
from connections.tests.pki import Pki
from policy.models import Rule
from tests.gateway_harness import AGENT_TOKEN, allow_everything_for, make_gateway_app

pytestmark = pytest.mark.django_db(transaction=True)

SHOP_DB_PASSWORD = "s3cr3t-db-password-4f9a"  # kubesim's seeded Secret shop/shop-db
HELD_SECRET = "held-secret-value-5e0c1f"
REPLACED_TOKEN = "replaced-cluster-token-9d2e7a41"
POD_TOKEN = "in-cluster-pod-token-3c8f5e17"  # the gateway pod's service-account token (an in-cluster connection)
API_TOKEN = "f3a9c0d1e2b4a5968778695a4b3c2d1e0f9a8b7c"


@pytest.fixture
def gateway_app():
    return make_gateway_app(hold={"timeout": 1.0, "poll_interval": 0.2})


def recorded(**filters):
    """The completion event matching ``filters``, once the recorder's writer thread has stored it."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        event = AuditEvent.objects.filter(stage="ResponseComplete", **filters).first()
        if event is not None:
            return event
        time.sleep(0.05)
    raise AssertionError(f"no audit event {filters} within 10s")


def encodings(secret: str) -> set[str]:
    """The secret as a page could carry it: raw, base64 (both alphabets), hex, URL-, HTML- and JSON-escaped."""
    raw = secret.encode()
    return {
        secret, base64.b64encode(raw).decode().rstrip("="), base64.urlsafe_b64encode(raw).decode().rstrip("="),
        raw.hex(), quote(secret, safe=""), html.escape(secret), json.dumps(secret)[1:-1],
    }


def pem_lines(pem: str) -> set[str]:
    """Each base64 line of a PEM body (any one of them on a page is a leak)."""
    return {line for line in pem.splitlines() if line and not line.startswith("-----")}


def in_cluster_connection(gateway, kubesim, pod):
    """An in-cluster connection whose token file holds POD_TOKEN, used through the gateway."""
    (pod / "token").write_text(POD_TOKEN)
    connection = Connection(name="in-cluster", in_cluster=True)
    connection.full_clean()
    connection.save()
    allow_everything_for(connection)
    with httpx.Client(verify=ssl.create_default_context(cafile=gateway.ca_file)) as client:
        answer = client.get(f"{gateway.server_url('in-cluster')}/api/v1/namespaces/shop/secrets/shop-db",
                            headers={"Authorization": f"Bearer {AGENT_TOKEN}"})
    assert answer.status_code == 200, answer.text
    used = [entry for entry in kubesim.requests() if entry["path"] == "/api/v1/namespaces/shop/secrets/shop-db"]
    assert used and used[-1]["user"] == "airlock-pod"


def seed(gateway, kubectl, kubesim, pod):
    """Audit events, a review, a lease, every admin model; returns the strings no page may contain."""
    token_connection = gateway.connection
    Rule.objects.create(connection=token_connection, order=5, name="review-secret-writes", effect="review",
                        groups=["agents"], verbs=["create"], api_groups=[""], resources=["secrets"],
                        namespaces=["*"], names=["*"])
    Rule.objects.create(connection=token_connection, order=30, name="lease-gated", effect="allow",
                        requires_lease=True, groups=["agents"], verbs=["delete"], api_groups=["*"],
                        resources=["pods"], namespaces=["*"], names=["*"])
    pki = Pki()
    cert_connection = Connection(name="cert-cluster", server_url="https://127.0.0.1:6443", ca_bundle=pki.ca_pem,
                                 client_certificate=pki.client.certificate, client_key=pki.client.key)
    cert_connection.full_clean()
    cert_connection.save()
    TrustedProxy.objects.create(connection=token_connection, name="mcp", issuer="https://idp.test",
                                subject="mcp-server", users=["*@example.com"], groups=["team-*"])
    in_cluster_connection(gateway, kubesim, pod)

    agent = gateway.kubeconfig()
    shown = kubectl("get", "secret", "shop-db", "-n", "shop", "-o", "yaml", kubeconfig=agent).stdout
    assert SHOP_DB_PASSWORD not in shown and base64.b64encode(SHOP_DB_PASSWORD.encode()).decode() not in shown
    held = kubectl("create", "secret", "generic", "held", "-n", "shop", f"--from-literal=password={HELD_SECRET}",
                   kubeconfig=agent, check=False)
    assert held.returncode != 0 and "pending" in held.stderr
    kubectl("exec", "-n", "payments", "debug-shell", "--", "echo", "hello", kubeconfig=agent)
    assert recorded(object_subresource="exec").recording is not None
    recorded(object_resource="secrets", verb="get")

    rita = reviewer("rita")
    review = reviews.decide(Review.objects.get(state="pending").pk, rita, approve=False, reason="not today")
    assert review.state == "denied"
    lease = leases.request_lease(connection=token_connection.name, group="agents", rules=["lease-gated"],
                                 duration="1h", reason="incident 42", requested_by="oncall")
    leases.decide(lease.pk, rita, grant=True, reason="go")
    ReviewerProfile.objects.create(user=rita, issuer="https://idp.test", subject="rita-sub", idp_groups=["sre"])
    Token.objects.create(user=rita, key=API_TOKEN)
    last = AuditEvent.objects.order_by("seq").last()
    Checkpoint.objects.create(through_seq=0, through_hash=last.prev_hash, events_pruned=0, archive_sha256="0" * 64,
                              created_at=timezone.now(), signature="unsigned")
    assert make_anchor("schedule") is not None

    forbidden = {
        "the cluster token": encodings(kubesim.admin_token),
        "the replacing token": encodings(REPLACED_TOKEN),
        "the pod's service-account token": encodings(POD_TOKEN),
        "the client key": pem_lines(pki.client.key) | {"PRIVATE KEY"},
        "an encryption key": set(settings.FIELD_ENCRYPTION_KEYS),
        "the shop-db Secret value": encodings(SHOP_DB_PASSWORD),
        "the held Secret value": encodings(HELD_SECRET),
        "an API token": {API_TOKEN},
    }
    return forbidden


def replace_token_in_the_admin(superuser_client, connection):
    """An edit through the admin: its history entry must not carry the new token either."""
    response = superuser_client.post(reverse("admin:connections_connection_change", args=[connection.pk]), {
        "name": connection.name, "server_url": connection.server_url, "ca_bundle": connection.ca_bundle,
        "verify_tls": "on", "credential_kind": CredentialKind.TOKEN, "bearer_token": REPLACED_TOKEN,
        "impersonation_mode": connection.impersonation_mode,
        "impersonation_user_prefix": connection.impersonation_user_prefix, "enabled": "on",
        "connect_timeout": 10, "first_byte_timeout": 65, "idle_timeout": 30,
    })
    assert response.status_code == 302, response.content.decode()[-2000:]
    upstream = Upstream.from_connection(Connection.objects.get(pk=connection.pk))
    assert upstream.auth_headers() == {"Authorization": f"Bearer {REPLACED_TOKEN}"}


def roles() -> dict[str, User | None]:
    def user(name, *, perms=(), **flags):
        account = User.objects.create_user(name, password=f"pw-{name}", **flags)
        account.user_permissions.set(perms)
        return account

    view_all = Permission.objects.filter(codename__startswith="view_")
    reviewing = User.objects.create_user("reviewer-role", password="pw")
    reviewing.groups.add(reviewers_group())
    return {
        "superuser": User.objects.create_superuser("root", password="pw-root"),
        "staff viewing connections": user("viewer", is_staff=True,
                                          perms=Permission.objects.filter(codename="view_connection")),
        "staff viewing everything": user("auditor-staff", is_staff=True, perms=view_all),
        "reviewer": reviewing,
        "auditor": user("auditor", perms=Permission.objects.filter(codename="view_auditevent")),
        "plain user": user("plain"),
        "anonymous": None,
    }


def converters(pattern) -> list[str]:
    """The parameter names of a path() or re_path() pattern."""
    return list(pattern.pattern.regex.groupindex)


def walk(resolver, namespace=""):
    """(qualified name, parameter names) of every named URL under ``resolver``."""
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            if entry.app_name == "admin":
                continue  # walked from admin.site below
            for name, params in walk(entry, inner):
                yield name, converters(entry) + params
        elif isinstance(entry, URLPattern) and entry.name:
            yield f"{namespace}{entry.name}", [p for p in converters(entry) if p not in entry.default_args]


def sample(model):
    rows = list(model._default_manager.order_by("pk"))
    assert rows, f"no {model.__name__} was seeded: every admin page must be walked"
    return rows if model is Connection else list(dict.fromkeys([rows[0], rows[-1]]))


def admin_urls() -> list[str]:
    urls = []
    for model, model_admin in admin.site._registry.items():
        objects = sample(model)
        for pattern in model_admin.get_urls():
            if not pattern.name:
                continue  # the bare <object_id>/ redirect to change/
            params = converters(pattern)
            if params in (["object_id"], ["id"]):  # UserAdmin's password page names it id
                urls += [reverse(f"admin:{pattern.name}", kwargs={params[0]: admin_quote(o.pk)}) for o in objects]
            else:
                assert not params, f"admin:{pattern.name} takes {params}: give the walk values for them"
                urls.append(reverse(f"admin:{pattern.name}"))
                urls.append(reverse(f"admin:{pattern.name}") + "?all=&o=1")
        for obj in objects:
            content_type = ContentType.objects.get_for_model(model)
            urls.append(reverse("admin:view_on_site", args=[content_type.pk, admin_quote(obj.pk)]))
    labels = {model._meta.app_label for model in admin.site._registry}
    for pattern in admin.site.get_urls():
        if isinstance(pattern, URLPattern) and pattern.name and pattern.name != "view_on_site":
            params = converters(pattern)
            if params == ["app_label"]:
                urls += [reverse(f"admin:{pattern.name}", kwargs={"app_label": label}) for label in sorted(labels)]
            else:
                assert not params, f"admin:{pattern.name} takes {params}: give the walk values for them"
                urls.append(reverse(f"admin:{pattern.name}"))
    return urls


def site_urls() -> list[str]:
    values = {
        "review_id": list(Review.objects.values_list("pk", flat=True)),
        "lease_id": list(Lease.objects.values_list("pk", flat=True)),
        "seq": list(AuditEvent.objects.values_list("seq", flat=True)),
        "session_id": list(Session.objects.values_list("session_id", flat=True)),
    }
    urls = []
    for name, params in walk(get_resolver()):
        assert len(params) <= 1 and all(p in values for p in params), f"{name} takes {params}: seed values for them"
        targets = [reverse(name, kwargs={params[0]: v}) for v in values[params[0]]] if params else [reverse(name)]
        urls += chain.from_iterable((url, url + "?state=all") for url in targets)
    return urls


def leaks(response, forbidden) -> list[str]:
    body = b"".join(response.streaming_content) if response.streaming else response.content
    text = body.decode("utf-8", "replace") + "\n" + "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    return [what for what, strings in forbidden.items() if any(s and s in text for s in strings)]


@pytest.fixture
def pod(tmp_path, settings, monkeypatch, kubesim):
    """The gateway runs 'in a pod' of kubesim's cluster (an in-cluster connection's files and environment)."""
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(kubesim.port))
    directory = tmp_path / "serviceaccount"
    directory.mkdir()
    settings.AIRLOCK_IN_CLUSTER_TOKEN_FILE = str(directory / "token")
    settings.AIRLOCK_IN_CLUSTER_CA_FILE = str(kubesim.ca_file)
    return directory


@pytest.mark.kubesim_args("--token", f"{POD_TOKEN}=airlock-pod:system:masters")
def test_no_page_shows_a_credential_to_any_role(gateway, kubectl, kubesim, pod):
    forbidden = seed(gateway, kubectl, kubesim, pod)
    accounts = roles()
    clients = {}
    for role, account in accounts.items():
        clients[role] = Client()
        if account is not None:
            clients[role].force_login(account)
    replace_token_in_the_admin(clients["superuser"], gateway.connection)
    forbidden["a stored ciphertext"] = {
        text for row in Connection.objects.all() for text in (row.token_ciphertext, row.client_key_ciphertext) if text
    }

    urls = admin_urls() + site_urls()
    found, statuses = [], {}
    for role, client in clients.items():
        for url in urls:
            response = client.get(url)
            statuses[role, url] = response.status_code
            found += [f"{role} GET {url} ({response.status_code}): {what}" for what in leaks(response, forbidden)]
    exported = b"".join(line for _, line in iter_lines(select_events(), include_casts=True)).decode()
    found += [f"the audit export: {what}" for what, strings in forbidden.items() if any(s in exported for s in strings)]
    assert not found, "\n".join(found)

    # The walk saw the pages that matter, with content.
    token_page = reverse("admin:connections_connection_change", args=[gateway.connection.pk])
    for role in ("superuser", "staff viewing connections", "staff viewing everything"):
        assert statuses[role, token_page] == 200, role
    viewed = clients["staff viewing connections"].get(token_page).content.decode()
    assert "set (hidden)" in viewed and "not set" in viewed and 'name="bearer_token"' not in viewed
    edited = clients["superuser"].get(token_page).content.decode()
    assert 'name="bearer_token"' in edited and "A token is stored" in edited
    history = clients["superuser"].get(reverse("admin:connections_connection_history",
                                               args=[gateway.connection.pk])).content.decode()
    assert "Changed" in history and "Bearer token" in history
    assert statuses["auditor", "/audit/"] == 200 and statuses["reviewer", "/approvals/"] == 200
    assert sum(1 for (role, url), code in statuses.items() if code == 200 and url.startswith("/audit/events/")) > 0
    assert statuses["staff viewing everything", reverse("admin:audit_auditevent_changelist")] == 200


def test_credential_attributes_cannot_be_read_back(db):
    """The read path is gone from the model itself: nothing that renders attributes can reach it."""
    connection = Connection(name="c", server_url="https://k8s.example", bearer_token=REPLACED_TOKEN)
    with pytest.raises(AttributeError):
        connection.bearer_token
    with pytest.raises(AttributeError):
        connection.client_key
    rendered = Template("{{ c.bearer_token }}|{{ c.decrypt_bearer_token }}|{{ c }}").render(Context({"c": connection}))
    assert REPLACED_TOKEN not in rendered
    assert connection.decrypt_bearer_token() == REPLACED_TOKEN


def test_debug_error_page_hides_submitted_credentials(client, django_user_model, db, settings, monkeypatch):
    """AIRLOCK_DEBUG's error page lists POST data, local variables and settings: credentials show as stars."""
    settings.DEBUG = True
    webhook = "https://hooks.example/services/T0/B0/webhook-secret-77c1"
    settings.AIRLOCK_NOTIFY_WEBHOOKS = [{"url": webhook, "format": "slack"}]
    settings.CELERY_BROKER_URL = "redis://:broker-password-3b8e@redis:6379/0"
    pki = Pki()
    connection = Connection(name="prod", server_url="https://k8s.example", bearer_token="old-token-1")
    connection.save()
    client.raise_request_exception = False
    client.force_login(django_user_model.objects.create_superuser("root", password="pw"))

    def fail(self, *args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(Connection, "save", fail)
    for data in (
        {"credential_kind": CredentialKind.TOKEN, "bearer_token": REPLACED_TOKEN},
        {"credential_kind": CredentialKind.CLIENT_CERTIFICATE, "client_certificate": pki.client.certificate,
         "client_key": pki.client.key},
    ):
        response = client.post(reverse("admin:connections_connection_change", args=[connection.pk]), {
            "name": "prod", "server_url": "https://k8s.example", "impersonation_mode": "off",
            "impersonation_user_prefix": "airlock:", "connect_timeout": 10, "first_byte_timeout": 65,
            "idle_timeout": 30, **data,
        })
        page = response.content.decode()
        assert response.status_code == 500 and "database went away" in page
        field = "bearer_token" if "bearer_token" in data else "client_key"
        assert re.search(rf'<td>{field}</td>\s*<td class="code"><pre>&#x27;\*{{20}}&#x27;', page)  # listed, as stars
        for secret in {REPLACED_TOKEN, "webhook-secret-77c1", "broker-password-3b8e"} | pem_lines(pki.client.key):
            assert secret not in page and binascii.hexlify(secret.encode()).decode() not in page
