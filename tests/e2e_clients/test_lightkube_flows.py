"""lightkube's everyday calls against kubesim, directly and through the gateway (the ``route``
fixture): the same answers both ways, except that Secret values are masked by the gateway."""

from __future__ import annotations

import threading

import pytest
from lightkube import ApiError, Client, KubeConfig
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import ConfigMap, Pod, Secret
from lightkube.types import PatchType

pytestmark = pytest.mark.django_db(transaction=True)  # the gateway variant of ``route``


@pytest.fixture
def lightkube(route):
    client = Client(config=KubeConfig.from_file(str(route)), namespace="shop")
    yield client
    client.close()


def server_version(client: Client) -> dict:
    """lightkube has no call for /version; its own HTTP client (the kubeconfig's TLS and token) asks."""
    response = client._client._client.get("/version")
    response.raise_for_status()
    return response.json()


def test_version_list_get_and_logs(lightkube):
    assert server_version(lightkube)["major"] == "1"
    pods = sorted(pod.metadata.name for pod in lightkube.list(Pod, labels={"app": "web"}))
    assert len(pods) == 2 and all(name.startswith("web-") for name in pods)
    web = lightkube.get(Deployment, "web")
    assert web.spec.replicas == 2 and web.status.readyReplicas == 2
    assert lightkube.log(pods[0]) is not None
    assert list(lightkube.log(pods[0]))


def test_create_patch_watch_and_delete(lightkube):
    start = lightkube.get(ConfigMap, "web-config").metadata.resourceVersion
    created = lightkube.create(ConfigMap(metadata=ObjectMeta(name="parity", labels={"flow": "lightkube"}),
                                         data={"a": "1"}))
    assert created.metadata.uid and created.data == {"a": "1"}
    patched = lightkube.patch(ConfigMap, "parity", {"data": {"b": "2"}}, patch_type=PatchType.MERGE)
    assert patched.data == {"a": "1", "b": "2"}
    events = []

    def delete_soon():
        lightkube.delete(ConfigMap, "parity")

    timer = threading.Timer(0.3, delete_soon)
    timer.start()
    try:
        for kind, obj in lightkube.watch(ConfigMap, labels={"flow": "lightkube"}, resource_version=start):
            events.append((kind, obj.metadata.name, dict(obj.data)))
            if kind == "DELETED":
                break
    finally:
        timer.join()
    assert events == [("ADDED", "parity", {"a": "1"}), ("MODIFIED", "parity", {"a": "1", "b": "2"}),
                      ("DELETED", "parity", {"a": "1", "b": "2"})]
    with pytest.raises(ApiError) as missing:
        lightkube.get(ConfigMap, "parity")
    assert missing.value.status.code == 404 and missing.value.status.reason == "NotFound"


def test_secret_keys_are_read_and_values_are_masked_through_the_gateway(lightkube, route, kubesim):
    direct = Client(config=KubeConfig.from_file(str(kubesim.kubeconfig)), namespace="shop")
    try:
        real = direct.get(Secret, "api-keys").data
    finally:
        direct.close()
    seen = lightkube.get(Secret, "api-keys").data
    assert set(seen) == set(real) == {"STRIPE_KEY", "JWT_SIGNING_KEY"}
    if route == kubesim.kubeconfig:
        assert seen == real
    else:
        assert all(seen[key] != real[key] for key in real)
