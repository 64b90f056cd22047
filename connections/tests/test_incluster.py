"""In-cluster connections (issue 15 item 2): the pod's service-account token and CA, never stored.

The end-to-end rotation through the gateway is tests/e2e_gateway/test_in_cluster.py.
"""

import io
import logging
import os

import pytest
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import connection as db_connection
from django.urls import reverse

from connections import incluster
from connections.models import Connection, CredentialKind
from connections.registry import ConnectionConfigurationError, Upstream
from gateway import upstream as gateway_upstream
from gateway import wsclient

FIRST = "pod-token-first-5b1e0c"
SECOND = "pod-token-other-77d3a9"  # as long as FIRST: a rewrite in place keeps the size


class Clock:
    now = 100.0

    def __call__(self):
        return self.now


def kubelet_write(directory, token: str, generation: int) -> str:
    """The kubelet's projected volume: a new timestamped directory, ..data swapped to it atomically."""
    data = directory / f"..gen{generation}"
    data.mkdir()
    (data / "token").write_text(token + "\n")
    (directory / "..data_tmp").symlink_to(data.name)
    os.rename(directory / "..data_tmp", directory / "..data")
    link = directory / "token"
    if not link.is_symlink():
        link.symlink_to("..data/token")
    return str(link)


@pytest.fixture
def volume(tmp_path):
    directory = tmp_path / "serviceaccount"
    directory.mkdir()
    return directory


@pytest.fixture
def pod(volume, pki, settings, monkeypatch):
    """Settings and environment of a pod with FIRST as its token."""
    settings.AIRLOCK_IN_CLUSTER_TOKEN_FILE = kubelet_write(volume, FIRST, 1)
    ca = volume / "ca.crt"
    ca.write_text(pki.ca_pem)
    settings.AIRLOCK_IN_CLUSTER_CA_FILE = str(ca)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    return volume


# -- TokenFile ------------------------------------------------------------------------------------


def counting_reads(monkeypatch):
    reads = []
    real_open = open

    def tracked(path, *args, **kwargs):
        reads.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(incluster, "open", tracked, raising=False)
    return reads


def test_a_rotation_is_seen_at_the_next_check_and_not_before(volume, monkeypatch):
    clock = Clock()
    path = kubelet_write(volume, FIRST, 1)
    tokens = incluster.TokenFile(path, check_seconds=5, clock=clock)
    reads = counting_reads(monkeypatch)
    assert tokens.token() == FIRST
    kubelet_write(volume, SECOND, 2)
    clock.now += 4.9
    assert tokens.token() == FIRST and reads == []  # within the check interval: memory only
    clock.now += 0.1
    assert tokens.token() == SECOND and len(reads) == 1
    for _ in range(11):  # unchanged file: a stat per check, no read ...
        clock.now += 5
        assert tokens.token() == SECOND
    assert len(reads) == 1
    clock.now += 5  # ... until what it holds is a minute old (MAX_TOKEN_AGE)
    assert tokens.token() == SECOND and len(reads) == 2


def test_the_token_is_read_again_every_minute_even_if_the_file_looks_unchanged(volume):
    clock = Clock()
    path = kubelet_write(volume, FIRST, 1)
    tokens = incluster.TokenFile(path, check_seconds=5, clock=clock)
    real = os.path.realpath(path)
    stat = os.stat(real)
    with open(real, "w") as handle:  # same inode, same size, mtime put back: the stat cannot tell
        handle.write(SECOND + "\n")
    os.utime(real, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    clock.now += 30
    assert tokens.token() == FIRST
    clock.now += 30
    assert tokens.token() == SECOND


def test_reread_after_a_401_reads_only_a_changed_file(volume, monkeypatch):
    clock = Clock()
    path = kubelet_write(volume, FIRST, 1)
    tokens = incluster.TokenFile(path, check_seconds=3600, clock=clock)
    reads = counting_reads(monkeypatch)
    assert tokens.reread() is False and reads == []
    kubelet_write(volume, SECOND, 2)
    assert tokens.reread() is True and tokens.token() == SECOND and len(reads) == 1
    assert tokens.reread() is False and len(reads) == 1


def test_a_missing_or_bad_file_keeps_the_token_held_and_never_logs_it(volume, caplog):
    clock = Clock()
    path = kubelet_write(volume, FIRST, 1)
    tokens = incluster.TokenFile(path, check_seconds=1, clock=clock)
    kubelet_write(volume, "two words", 2)
    clock.now += 1
    with caplog.at_level(logging.DEBUG):
        assert tokens.token() == FIRST
        os.unlink(volume / "token")
        clock.now += 1
        assert tokens.token() == FIRST
    assert "cannot use the service-account token file" in caplog.text
    assert FIRST not in caplog.text and "two words" not in caplog.text
    assert FIRST not in repr(tokens)


def test_without_a_token_file_there_is_no_upstream(tmp_path):
    with pytest.raises(incluster.InClusterUnavailable, match="cannot use the service-account token file"):
        incluster.TokenFile(str(tmp_path / "absent"))


def test_the_server_comes_from_the_pods_environment():
    assert incluster.server_url_from_environment(
        {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}) == "https://10.96.0.1:443"
    assert incluster.server_url_from_environment(
        {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"}) == "https://[fd00::1]:6443"
    with pytest.raises(incluster.InClusterUnavailable, match="not running in a pod"):
        incluster.server_url_from_environment({})
    with pytest.raises(incluster.InClusterUnavailable, match="valid https URL"):
        incluster.server_url_from_environment({"KUBERNETES_SERVICE_HOST": "a b", "KUBERNETES_SERVICE_PORT": "1"})


# -- the model and the registry's Upstream ------------------------------------------------------------


def in_cluster(**fields) -> Connection:
    connection = Connection(**{"name": "here", "in_cluster": True, **fields})
    connection.full_clean()
    connection.save()
    return connection


def test_an_in_cluster_connection_stores_no_credential(db, keys, pod):
    connection = in_cluster()
    assert connection.credential_kind == CredentialKind.IN_CLUSTER
    upstream = Upstream.from_connection(connection)
    assert upstream.server_url == "https://10.96.0.1:443"
    assert upstream.auth_headers() == {"Authorization": f"Bearer {FIRST}"}
    assert upstream.ca_bundle.startswith("-----BEGIN CERTIFICATE-----")
    assert FIRST not in repr(upstream)
    with db_connection.cursor() as cursor:
        cursor.execute("SELECT * FROM connections_connection")
        stored = repr(cursor.fetchall())
    assert FIRST not in stored and connection.token_ciphertext == ""
    named = Upstream.from_connection(in_cluster(name="named", server_url="https://kubernetes.default.svc"))
    assert named.server_url == "https://kubernetes.default.svc"


def test_the_upstream_follows_the_rotation(db, keys, pod, settings):
    settings.AIRLOCK_IN_CLUSTER_TOKEN_CHECK_SECONDS = 0
    upstream = Upstream.from_connection(in_cluster())
    kubelet_write(pod, SECOND, 2)
    assert upstream.auth_headers() == {"Authorization": f"Bearer {SECOND}"}
    assert upstream.reread_credential() is False


@pytest.mark.parametrize("fields, problem", [
    ({"bearer_token": "stored-token-1"}, "store no token"),
    ({"ca_bundle": "x"}, "cluster CA file"),
])
def test_an_in_cluster_connection_refuses_a_stored_credential_or_ca(db, keys, pki, fields, problem):
    if "ca_bundle" in fields:
        fields = {"ca_bundle": pki.ca_pem}
    with pytest.raises(ValidationError, match=problem):
        Connection(name="here", in_cluster=True, **fields).full_clean()


def test_other_kinds_still_need_a_server_url(db, keys):
    with pytest.raises(ValidationError, match="server URL is required"):
        Connection(name="prod", bearer_token="t0ken").full_clean()


def test_missing_pod_files_make_a_configuration_error_naming_the_file(db, keys, pod, settings, tmp_path):
    connection = in_cluster()
    settings.AIRLOCK_IN_CLUSTER_CA_FILE = str(tmp_path / "no-ca.crt")
    with pytest.raises(ConnectionConfigurationError, match="no-ca.crt"):
        Upstream.from_connection(connection)
    settings.AIRLOCK_IN_CLUSTER_CA_FILE = str(pod / "ca.crt")
    settings.AIRLOCK_IN_CLUSTER_TOKEN_FILE = str(tmp_path / "no-token")
    with pytest.raises(ConnectionConfigurationError, match="no-token"):
        Upstream.from_connection(connection)


# -- a 401 on a WebSocket upgrade (HTTP: tests/e2e_gateway/test_in_cluster.py) --------------------------


async def test_a_refused_upgrade_is_tried_once_more_with_a_rotated_token(monkeypatch, volume):
    path = kubelet_write(volume, FIRST, 1)

    class Rotating:
        server_url, connect_timeout, first_byte_timeout, idle_timeout = "https://k8s.example", 1, 1, 1
        token_file = incluster.TokenFile(path, check_seconds=3600)

        def auth_headers(self):
            return {"Authorization": f"Bearer {self.token_file.token()}"}

        def reread_credential(self):
            return self.token_file.reread()

        def ssl_context(self):
            return None

    tried = []

    async def connect(url, *, headers, **kwargs):
        tried.append(dict(headers)[b"authorization"])
        if len(tried) < 3 and dict(headers)[b"authorization"] == f"Bearer {FIRST}".encode():
            raise wsclient.UpstreamRejected(401, b"")
        return "relay"

    monkeypatch.setattr(wsclient, "connect", connect)
    upstream = Rotating()
    headers = [(b"authorization", f"Bearer {FIRST}".encode()), (b"x-other", b"1")]
    with pytest.raises(wsclient.UpstreamRejected):  # nothing rotated: the 401 stands, no second try
        await gateway_upstream.open_websocket(upstream, "/api", headers, [])
    assert tried == [f"Bearer {FIRST}".encode()]
    kubelet_write(volume, SECOND, 2)
    assert await gateway_upstream.open_websocket(upstream, "/api", headers, []) == "relay"
    assert tried[1:] == [f"Bearer {FIRST}".encode(), f"Bearer {SECOND}".encode()]


# -- add_connection --in-cluster and the admin -----------------------------------------------------------


def run(*args):
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=out)
    return out.getvalue()


def test_add_connection_in_cluster(db, keys, pod):
    output = run("add_connection", "--in-cluster", "here")
    assert "Created connection 'here'" in output and "service account" in output and FIRST not in output
    connection = Connection.objects.get(name="here")
    assert connection.credential_kind == CredentialKind.IN_CLUSTER and connection.server_url == ""
    with pytest.raises(CommandError, match="already exists"):
        run("add_connection", "--in-cluster", "here")
    run("add_connection", "--in-cluster", "here", "--update", "--server", "https://kubernetes.default.svc",
        "--idle-timeout", "12")
    connection.refresh_from_db()
    assert connection.server_url == "https://kubernetes.default.svc" and connection.idle_timeout == 12
    with pytest.raises(CommandError, match="--server is for --in-cluster"):
        run("add_connection", "--kubeconfig", "/dev/null", "--server", "https://x.example")


@pytest.fixture
def admin_client(client, django_user_model, db):
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.com", "pw"))
    return client


def admin_form(**overrides):
    data = {"name": "here", "server_url": "", "verify_tls": "on", "credential_kind": CredentialKind.IN_CLUSTER,
            "impersonation_mode": "off", "impersonation_user_prefix": "airlock:", "connect_timeout": 10,
            "first_byte_timeout": 65, "idle_timeout": 30, "enabled": "on"}
    data.update(overrides)
    return data


def test_the_admin_creates_and_switches_in_cluster_connections(admin_client, keys, pod):
    response = admin_client.post(reverse("admin:connections_connection_add"), admin_form())
    assert response.status_code == 302, response.content.decode()[-1500:]
    connection = Connection.objects.get(name="here")
    assert connection.credential_kind == CredentialKind.IN_CLUSTER
    page = admin_client.get(reverse("admin:connections_connection_change", args=[connection.pk])).content.decode()
    assert "In-cluster service account" in page and FIRST not in page
    refused = admin_client.post(reverse("admin:connections_connection_change", args=[connection.pk]),
                                admin_form(bearer_token="tok-1"))
    assert refused.status_code == 200 and "Choose the bearer token credential kind" in refused.content.decode()
    switched = admin_client.post(reverse("admin:connections_connection_change", args=[connection.pk]),
                                 admin_form(credential_kind=CredentialKind.TOKEN, bearer_token="tok-1",
                                            server_url="https://k8s.example"))
    assert switched.status_code == 302
    connection.refresh_from_db()
    assert connection.credential_kind == CredentialKind.TOKEN and not connection.in_cluster
    no_server = admin_client.post(reverse("admin:connections_connection_change", args=[connection.pk]),
                                  admin_form(credential_kind=CredentialKind.TOKEN, server_url=""))
    assert no_server.status_code == 200 and "A server URL is required" in no_server.content.decode()


def test_view_only_staff_see_the_kind(client, django_user_model, keys, pod):
    in_cluster()
    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename="view_connection"))
    client.force_login(viewer)
    page = client.get(reverse("admin:connections_connection_change",
                              args=[Connection.objects.get(name="here").pk])).content.decode()
    assert "In-cluster service account" in page and FIRST not in page
