"""Issue 15 item 2: an in-cluster connection follows the kubelet's rotation of the pod's token.

kubesim plays the cluster; the pod's service-account directory is laid out as the kubelet lays out a
projected volume (``token`` -> ``..data/token``, ``..data`` -> a timestamped directory swapped
atomically on rotation), holding real service-account tokens from kubesim's TokenRequest API, each
bound to a Secret so that deleting the Secret revokes it (kube-apiserver's bound tokens).  kubesim's
request log shows which token reached it (as a fingerprint) and what it answered.
"""

import os
import ssl
from pathlib import Path

import httpx
import pytest

from connections.models import Connection, CredentialKind
from connections.registry import ConnectionRegistry
from kubesim.auth import credential_fingerprint
from kubesim.requestlog import header
from tests.gateway_harness import AGENT_TOKEN, allow_everything_for, make_gateway_app, serving

pytestmark = pytest.mark.django_db(transaction=True)

PODS = "/api/v1/namespaces/default/pods"


class ProjectedToken:
    """A service-account volume as the kubelet writes it, for one token at a time."""

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir()
        self.generation = 0
        self.path = directory / "token"

    def write(self, token: str) -> None:
        self.generation += 1
        data = self.directory / f"..2026_01_01_00_00_{self.generation:02d}.000000000"
        data.mkdir()
        (data / "token").write_text(token)
        staging = self.directory / "..data_tmp"
        staging.symlink_to(data.name)
        os.rename(staging, self.directory / "..data")  # the kubelet's atomic swap
        if not self.path.is_symlink():
            self.path.symlink_to("..data/token")


class Cluster:
    """kubesim's API as its admin: Secrets and service-account tokens bound to them."""

    def __init__(self, kubesim):
        self.kubesim = kubesim
        self.client = httpx.Client(base_url=kubesim.url, verify=ssl.create_default_context(cafile=kubesim.ca_file),
                                   headers={"Authorization": f"Bearer {kubesim.admin_token}"})

    def bound_token(self, secret: str) -> str:
        created = self.client.post("/api/v1/namespaces/default/secrets", json={
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret}, "data": {}})
        assert created.status_code == 201, created.text
        uid = created.json()["metadata"]["uid"]
        issued = self.client.post("/api/v1/namespaces/default/serviceaccounts/default/token", json={
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600, "boundObjectRef": {"kind": "Secret", "apiVersion": "v1",
                                                                   "name": secret, "uid": uid}}})
        assert issued.status_code == 201, issued.text
        return issued.json()["status"]["token"]

    def revoke(self, secret: str) -> None:
        assert self.client.delete(f"/api/v1/namespaces/default/secrets/{secret}").status_code == 200


def sent(kubesim, since: int = 0) -> list[tuple[str, int]]:
    """(credential fingerprint, status) of the pod lists kubesim served, after the first ``since``."""
    return [(" ".join(header(entry, "Authorization")), entry["status"])
            for entry in kubesim.requests()[since:] if entry["path"] == PODS]


def bearer(token: str) -> str:
    return f"Bearer {credential_fingerprint(token)}"


@pytest.fixture
def pod(tmp_path, kubesim, settings, monkeypatch):
    """The gateway 'runs in a pod' of kubesim's cluster: service-account files and KUBERNETES_SERVICE_*."""
    volume = ProjectedToken(tmp_path / "serviceaccount")
    settings.AIRLOCK_IN_CLUSTER_TOKEN_FILE = str(volume.path)
    settings.AIRLOCK_IN_CLUSTER_CA_FILE = str(kubesim.ca_file)
    settings.AIRLOCK_SECRET_VALUE_MASKING = "off"  # the pod's account is a viewer: it may not list Secrets
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(kubesim.port))
    ConnectionRegistry.clear_all()
    yield volume
    ConnectionRegistry.clear_all()


@pytest.fixture
def in_cluster(pod):
    connection = Connection(name="here", in_cluster=True)
    connection.full_clean()
    connection.save()
    assert connection.credential_kind == CredentialKind.IN_CLUSTER
    allow_everything_for(connection)
    return connection


def list_pods(client) -> httpx.Response:
    return client.get(f"/k8s/here{PODS}")


@pytest.fixture
def agent(in_cluster, tmp_path):
    def open_gateway():
        return serving(make_gateway_app(), in_cluster, tmp_path / "gateway")

    return open_gateway


def agent_client(gateway) -> httpx.Client:
    return httpx.Client(base_url=gateway.url, verify=ssl.create_default_context(cafile=gateway.ca_file),
                        headers={"Authorization": f"Bearer {AGENT_TOKEN}"})


def test_requests_keep_working_across_a_rotation_and_the_old_token_is_not_used_after_it(
        kubesim, pod, agent, settings):
    settings.AIRLOCK_IN_CLUSTER_TOKEN_CHECK_SECONDS = 0  # every request looks at the file (a stat)
    cluster = Cluster(kubesim)
    first, second = cluster.bound_token("pod-token-1"), cluster.bound_token("pod-token-2")
    pod.write(first)
    with agent() as gateway, agent_client(gateway) as client:
        for _ in range(2):
            assert list_pods(client).status_code == 200
        assert sent(kubesim) == [(bearer(first), 200)] * 2
        before = len(kubesim.requests())

        pod.write(second)  # the kubelet rotates the token ...
        cluster.revoke("pod-token-1")  # ... and the old one stops working
        for _ in range(3):
            answer = list_pods(client)
            assert answer.status_code == 200, answer.text
            assert answer.json()["kind"] == "PodList"
    assert sent(kubesim, before) == [(bearer(second), 200)] * 3


def test_a_401_makes_the_gateway_read_the_rotated_token_at_once_and_send_the_request_again(
        kubesim, pod, agent, settings):
    settings.AIRLOCK_IN_CLUSTER_TOKEN_CHECK_SECONDS = 3600  # the file is not looked at on its own
    cluster = Cluster(kubesim)
    first, second = cluster.bound_token("pod-token-1"), cluster.bound_token("pod-token-2")
    pod.write(first)
    with agent() as gateway, agent_client(gateway) as client:
        assert list_pods(client).status_code == 200
        before = len(kubesim.requests())
        pod.write(second)
        cluster.revoke("pod-token-1")
        answer = list_pods(client)
        assert answer.status_code == 200, answer.text
        assert sent(kubesim, before) == [(bearer(first), 401), (bearer(second), 200)]
        # From then on the new token only; a 401 with an unchanged file is the agent's answer, not a loop.
        assert list_pods(client).status_code == 200
        cluster.revoke("pod-token-2")
        refused = list_pods(client)
        assert refused.status_code == 401
    assert sent(kubesim, before)[2:] == [(bearer(second), 200), (bearer(second), 401)]


def test_without_the_pods_files_the_connection_is_a_503_naming_no_secret(kubesim, pod, agent):
    with agent() as gateway, agent_client(gateway) as client:
        answer = list_pods(client)  # no token was ever written
    assert answer.status_code == 503 and "misconfigured" in answer.json()["message"]
    assert sent(kubesim) == []
