"""kr8s's everyday calls against kubesim, directly and through the gateway (the ``route`` fixture).
kr8s asks for ``/version`` when it starts, so a gateway that refused it would stop kr8s at once."""

from __future__ import annotations

import asyncio

import kr8s
import kr8s.asyncio
import pytest
from kr8s.asyncio.objects import ConfigMap, Deployment, Pod, Secret

pytestmark = pytest.mark.django_db(transaction=True)  # the gateway variant of ``route``


@pytest.fixture
async def api(route):
    client = await kr8s.asyncio.api(kubeconfig=str(route), namespace="shop")
    yield client
    await client._session.aclose()


async def test_version_list_get_and_logs(api):
    assert (await api.version())["major"] == "1"
    pods = sorted([pod.name async for pod in api.get("pods", namespace="shop", label_selector={"app": "web"})])
    assert len(pods) == 2 and all(name.startswith("web-") for name in pods)
    web = await Deployment.get("web", namespace="shop", api=api)
    assert web.spec.replicas == 2 and web.status.readyReplicas == 2
    pod = await Pod.get(pods[0], namespace="shop", api=api)
    assert [line async for line in pod.logs()]


async def test_create_patch_watch_and_delete(api):
    start = (await ConfigMap.get("web-config", namespace="shop", api=api)).metadata.resourceVersion
    config_map = await ConfigMap({"metadata": {"name": "parity", "namespace": "shop", "labels": {"flow": "kr8s"}},
                                  "data": {"a": "1"}}, api=api)
    await config_map.create()
    assert config_map.metadata.uid
    await config_map.patch({"data": {"b": "2"}})
    assert dict(config_map.data) == {"a": "1", "b": "2"}
    events = []

    async def watch():
        async for kind, obj in api.watch("configmaps", namespace="shop", label_selector={"flow": "kr8s"},
                                         since=start):
            events.append((kind, obj.name, dict(obj.data)))
            if kind == "DELETED":
                return

    watching = asyncio.create_task(watch())
    await asyncio.sleep(0.3)
    await config_map.delete()
    await asyncio.wait_for(watching, 15)
    assert events == [("ADDED", "parity", {"a": "1"}), ("MODIFIED", "parity", {"a": "1", "b": "2"}),
                      ("DELETED", "parity", {"a": "1", "b": "2"})]
    assert not await config_map.exists()
    with pytest.raises(kr8s.NotFoundError):
        await ConfigMap.get("parity", namespace="shop", api=api)


async def test_secret_keys_are_read_and_values_are_masked_through_the_gateway(api, route, kubesim):
    direct = await kr8s.asyncio.api(kubeconfig=str(kubesim.kubeconfig), namespace="shop")
    real = dict((await Secret.get("api-keys", namespace="shop", api=direct)).raw["data"])
    seen = dict((await Secret.get("api-keys", namespace="shop", api=api)).raw["data"])
    assert set(seen) == set(real) == {"STRIPE_KEY", "JWT_SIGNING_KEY"}
    if route == kubesim.kubeconfig:
        assert seen == real
    else:
        assert all(seen[key] != real[key] for key in real)
