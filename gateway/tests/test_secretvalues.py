"""The per-connection store of Secret values: list, watch, relist, fail closed, never show a value."""

import asyncio
import base64
import json
import logging

import httpx
import pytest

from gateway.secretvalues import SecretValueStore, SecretValueStores, ValuesUnavailable

pytestmark = pytest.mark.asyncio

VALUE, LATER = "Listed-v4lue-9Qz", "Watched-v4lue-3Kp"


class Upstream:
    name = "prod"
    server_url = "https://cluster.test"
    cache_key = "prod:1"

    def auth_headers(self):
        return {"Authorization": "Bearer cluster-credential"}


def secret(name, value, rv="1", namespace="shop"):
    return {"metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "resourceVersion": rv},
            "data": {"password": base64.b64encode(value.encode()).decode()}}


class Cluster:
    """A fake API server: pages of Secrets, then watch streams fed from a queue."""

    def __init__(self, secrets, status=200):
        self.secrets = secrets
        self.status = status
        self.events: asyncio.Queue = asyncio.Queue()
        self.requests = []

    async def handler(self, request: httpx.Request):
        self.requests.append(request)
        assert request.headers["authorization"] == "Bearer cluster-credential"
        if self.status != 200:
            return httpx.Response(self.status, json={"kind": "Status", "code": self.status})
        params = request.url.params
        if params.get("watch") == "1":
            return httpx.Response(200, content=self._stream())
        start = int(params.get("continue") or 0)
        page = self.secrets[start : start + 1]
        more = str(start + 1) if start + 1 < len(self.secrets) else ""
        return httpx.Response(200, json={"kind": "SecretList", "metadata": {"resourceVersion": "10", "continue": more},
                                         "items": page})

    async def _stream(self):
        while True:
            event = await self.events.get()
            if event is None:
                return
            yield json.dumps(event).encode() + b"\n"


def store_for(cluster, **options):
    client = httpx.AsyncClient(transport=httpx.MockTransport(cluster.handler))
    return SecretValueStore(Upstream(), client, **options)


def masked(values, text):
    from masking import Detectors

    return Detectors.none().with_values(values).mask_text(text, {})


async def eventually(predicate):
    for _ in range(200):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def test_lists_every_page_then_follows_the_watch():
    cluster = Cluster([secret("a", VALUE), secret("b", "Second-v4lue-1Ab")])
    store = store_for(cluster)
    try:
        values = await store.current()
        assert masked(values, f"{VALUE} Second-v4lue-1Ab") == "**AIRLOCK-MASKED** **AIRLOCK-MASKED**"
        assert [r.url.params.get("continue") for r in cluster.requests[:2]] == [None, "1"]
        await cluster.events.put({"type": "ADDED", "object": secret("c", LATER, rv="11")})
        await eventually(lambda: LATER not in masked(store._values, LATER))
        await cluster.events.put({"type": "DELETED", "object": secret("a", VALUE, rv="12")})
        await eventually(lambda: VALUE in masked(store._values, VALUE))
        await cluster.events.put({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "13"}}})
        await cluster.events.put(None)  # the server ends the watch: resumed from the last version
        await eventually(lambda: [r.url.params.get("resourceVersion") for r in cluster.requests][-1:] == ["13"])
        assert VALUE not in repr(store) and LATER not in repr(store)
    finally:
        await store.aclose()


async def test_an_expired_watch_lists_again():
    cluster = Cluster([secret("a", VALUE)])
    store = store_for(cluster)
    try:
        await store.current()
        cluster.secrets = [secret("a", VALUE), secret("d", LATER)]
        await cluster.events.put({"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}})
        await eventually(lambda: LATER not in masked(store._values, LATER))
        lists = [r for r in cluster.requests if r.url.params.get("watch") is None and "continue" not in r.url.params]
        assert len(lists) == 2
    finally:
        await store.aclose()


@pytest.mark.parametrize("status", [401, 403])
async def test_a_credential_that_may_not_list_secrets_is_refused_at_once(status):
    store = store_for(Cluster([], status=status), sync_timeout=30)
    try:
        with pytest.raises(ValuesUnavailable, match=f"may not list and watch Secrets \\({status}\\)"):
            await asyncio.wait_for(store.current(), 5)
    finally:
        await store.aclose()


async def test_not_listed_in_time_is_refused():
    async def hang(request):
        await asyncio.sleep(3600)

    store = SecretValueStore(Upstream(), httpx.AsyncClient(transport=httpx.MockTransport(hang)), sync_timeout=0.2)
    try:
        with pytest.raises(ValuesUnavailable, match="not been listed yet"):
            await store.current()
    finally:
        await store.aclose()


async def test_over_the_memory_bound_is_refused():
    store = store_for(Cluster([secret("a", VALUE), secret("b", LATER)]), max_bytes=20)
    try:
        with pytest.raises(ValuesUnavailable, match="more than the gateway's bound of 20 bytes"):
            await store.current()
    finally:
        await store.aclose()


async def test_stale_values_are_refused(caplog):
    now = [0.0]
    cluster = Cluster([secret("a", VALUE)])
    store = store_for(cluster, clock=lambda: now[0], max_stale=30, sync_timeout=0.2)
    try:
        await store.current()
        cluster.status = 500
        await cluster.events.put(None)  # the watch ends and cannot be resumed
        await eventually(lambda: store._down_since is not None)
        now[0] = 29
        await store.current()
        now[0] = 31
        with caplog.at_level(logging.DEBUG):
            with pytest.raises(ValuesUnavailable):
                await store.current()
        assert VALUE not in caplog.text
    finally:
        await store.aclose()


async def test_one_store_per_connection_version():
    cluster = Cluster([secret("a", VALUE)])
    client = httpx.AsyncClient(transport=httpx.MockTransport(cluster.handler))
    stores = SecretValueStores()
    try:
        first = await stores.current(Upstream(), client)
        again = await stores.current(Upstream(), client)
        assert first is again
        edited = Upstream()
        edited.cache_key = "prod:2"
        await stores.current(edited, client)
        assert len([r for r in cluster.requests if r.url.params.get("watch") is None]) == 2
    finally:
        await stores.aclose()
