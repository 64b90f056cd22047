"""The cluster's Secret values, learned per connection with the gateway's own credential.

One :class:`SecretValueStore` per connection version lists ``/api/v1/secrets`` (pages of 500)
and then watches from the list's resourceVersion, in a background task started on the
connection's first request.  It keeps, per Secret, only the values that qualify as needles
(:mod:`masking.values`), in memory: never written anywhere, never logged, never in an
exception or ``repr``.  Each change rebuilds the immutable :class:`SecretValues` off the event
loop; requests take the current one.

Resilience: a broken watch is resumed from the last resourceVersion seen, a 410 Gone (or an
ERROR event) relists, failures back off from 0.5 s to 30 s.  Memory is bounded by
``max_bytes`` of kept values (default 4 MiB).  Each byte of value costs about 65 bytes of
memory (its forms are ~3.4 bytes, the automata ~19 bytes per form byte; bench/analysis.md), so
the default bound is about 260 MiB, twice that for a moment while a new set is built.

Fail closed: a request is answered with a 503 Status, and nothing is forwarded, when the store
cannot say which values to mask:

* before the first list has completed (the request waits up to ``sync_timeout``, 10 s);
* when the credential may not list or watch Secrets (at once, naming the missing permission);
* when the cluster's values exceed ``max_bytes``;
* when neither the list nor the watch has worked for ``max_stale`` seconds (30 s).

While the watch reconnects inside that bound, the last values are used: a Secret created in
that window is masked once the gateway has seen it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time

import httpx
from django.conf import settings

from masking.values import EMPTY, SecretValues, secret_entries
from runtime.timeouts import wait_at_most

log = logging.getLogger(__name__)

PAGE = 500
# Names the gateway's own traffic in the cluster's audit log (and in kubesim's request log).
USER_AGENT = "airlock-gateway/secret-values"
WATCH_SECONDS = 290
BACKOFF_MIN, BACKOFF_MAX = 0.5, 30.0


class ValuesUnavailable(Exception):
    """The store cannot say which values to mask; ``str()`` is safe to show (no value)."""


class _Gone(Exception):
    """The watch's resourceVersion is too old: list again."""


class _Refused(Exception):
    """The cluster refused the gateway's credential (401/403); retrying will not help soon."""


class SecretValueStore:
    def __init__(self, upstream, client: httpx.AsyncClient, *, sync_timeout: float = 10.0, max_stale: float = 30.0,
                 max_bytes: int = 4 * 1024 * 1024, clock=time.monotonic):
        self._upstream = upstream
        self._client = client
        self._sync_timeout = sync_timeout
        self._max_stale = max_stale
        self._max_bytes = max_bytes
        self._clock = clock
        self._secrets: dict[str, tuple[str, str, list[bytes]]] = {}
        self._bytes = 0
        self._values: SecretValues | None = None
        self._synced = asyncio.Event()
        self._problem = ""
        self._over_bound = False
        self._down_since: float | None = None
        self._dirty = asyncio.Event()
        self._publishing = asyncio.Lock()  # one build at a time, so an older set never replaces a newer one
        self._tasks: list[asyncio.Task] = []

    def __repr__(self) -> str:
        return f"SecretValueStore({self._upstream.name!r}, {len(self._secrets)} secrets)"

    # -- for requests --------------------------------------------------------------------------

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._run()), asyncio.create_task(self._rebuild())]

    async def current(self) -> SecretValues:
        """The values to mask now; raises ValuesUnavailable (fail closed)."""
        self.start()
        if not self._fresh():
            self._raise_if_hopeless()
            try:
                await wait_at_most(self._wait_fresh(), self._sync_timeout)
            except TimeoutError:
                raise ValuesUnavailable(self._problem or "the cluster's Secrets have not been listed yet") from None
        return self._values

    def _fresh(self) -> bool:
        if self._values is None or self._over_bound:
            return False
        return self._down_since is None or self._clock() - self._down_since < self._max_stale

    def _raise_if_hopeless(self) -> None:
        """Waiting will not help: refused before the first list, or over the memory bound."""
        if self._problem and (self._over_bound or not self._synced.is_set()):
            raise ValuesUnavailable(self._problem)

    async def _wait_fresh(self):
        while not self._fresh():
            self._raise_if_hopeless()
            await asyncio.sleep(0.05)

    async def aclose(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- list and watch ------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = BACKOFF_MIN
        version = None
        while True:
            try:
                if version is None:
                    version = await self._list()
                    delay = BACKOFF_MIN
                version = await self._watch(version)
                continue
            except _Gone:
                version = None
                continue
            except _Refused as exc:
                self._problem = str(exc)
            except Exception as exc:  # a malformed answer must not end the task: retry, fail closed meanwhile
                log.warning("connection %s: Secret values not updated (%s); retrying", self._upstream.name,
                            type(exc).__name__)
                if not self._synced.is_set():
                    self._problem = "the cluster's Secrets could not be listed"
            self._mark_down()
            await asyncio.sleep(delay * (1 + random.random() / 4))
            delay = min(delay * 2, BACKOFF_MAX)

    def _mark_down(self) -> None:
        if self._down_since is None:
            self._down_since = self._clock()

    def _headers(self) -> dict[str, str]:
        return {**self._upstream.auth_headers(), "Accept": "application/json", "User-Agent": USER_AGENT}

    def _url(self, **params) -> httpx.URL:
        return httpx.URL(self._upstream.server_url + "/api/v1/secrets", params=params)

    async def _list(self) -> str:
        secrets: dict[str, tuple[str, str, list[bytes]]] = {}
        token = ""
        while True:
            params = {"limit": str(PAGE)}
            if token:
                params["continue"] = token
            response = await wait_at_most(self._client.get(self._url(**params), headers=self._headers()), 60)
            _check(response)
            page = await asyncio.to_thread(_parse_list, response.content)
            secrets.update(page["secrets"])
            token = page["continue"]
            if not token:
                break
        self._secrets = secrets
        self._bytes = sum(len(v) for _, _, values in secrets.values() for v in values)
        await self._publish()
        self._down_since = None
        self._synced.set()
        return page["resourceVersion"]

    async def _watch(self, version: str) -> str:
        url = self._url(watch="1", resourceVersion=version, allowWatchBookmarks="true",
                        timeoutSeconds=str(WATCH_SECONDS))
        async with self._client.stream("GET", url, headers=self._headers()) as response:
            _check(response)
            self._down_since = None
            buffer = b""
            async for chunk in _with_idle_limit(response.aiter_raw(), WATCH_SECONDS + 30):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        version = self._apply(json.loads(line)) or version
        self._mark_down()
        return version

    def _apply(self, event: dict) -> str | None:
        kind, obj = event.get("type"), event.get("object")
        if not isinstance(obj, dict):
            raise ValueError("watch event without an object")
        if kind == "ERROR":
            raise _Gone()
        metadata = obj.get("metadata") or {}
        version = metadata.get("resourceVersion")
        if kind == "BOOKMARK":
            return version
        key, entry = _entry(obj)
        old = self._secrets.pop(key, None)
        if old is not None:
            self._bytes -= sum(len(v) for v in old[2])
        if kind in ("ADDED", "MODIFIED"):
            self._secrets[key] = entry
            self._bytes += sum(len(v) for v in entry[2])
        elif kind != "DELETED":
            raise ValueError("unknown watch event type")
        self._dirty.set()
        return version

    # -- rebuilding ----------------------------------------------------------------------------

    async def _publish(self) -> None:
        async with self._publishing:
            self._over_bound = self._bytes > self._max_bytes
            if self._over_bound:
                self._problem = (f"the cluster's Secret values take more than the gateway's bound of "
                                 f"{self._max_bytes} bytes (AIRLOCK_SECRET_VALUES_MAX_BYTES)")
                return
            secrets = list(self._secrets.values())
            self._values = await asyncio.to_thread(SecretValues.build, secrets) if secrets else EMPTY
            self._problem = ""

    async def _rebuild(self) -> None:
        """Coalesces bursts of watch events into one rebuild at a time."""
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            await self._publish()


def _check(response: httpx.Response) -> None:
    if response.status_code == 410:
        raise _Gone()
    if response.status_code in (401, 403):
        raise _Refused(f"the connection's credential may not list and watch Secrets ({response.status_code}); "
                       "masking by value needs it")
    if response.status_code != 200:
        raise ValueError(f"listing Secrets answered {response.status_code}")


def _entry(obj: dict) -> tuple[str, tuple[str, str, list[bytes]]]:
    metadata = obj.get("metadata") or {}
    namespace, name = str(metadata.get("namespace", "")), str(metadata.get("name", ""))
    key = str(metadata.get("uid") or f"{namespace}/{name}")
    return key, (namespace, name, secret_entries(obj))


def _parse_list(body: bytes) -> dict:
    doc = json.loads(body)
    metadata = doc.get("metadata") or {}
    items = doc.get("items")
    if not isinstance(items, list):
        raise ValueError("the Secret list has no items")
    return {
        "secrets": dict(_entry(item) for item in items if isinstance(item, dict)),
        "continue": metadata.get("continue") or "",
        "resourceVersion": str(metadata.get("resourceVersion") or ""),
    }


async def _with_idle_limit(chunks, seconds: float):
    """The chunks of a watch; a watch silent for longer than its own timeout is dead."""
    iterator = aiter(chunks)
    while True:
        try:
            yield await wait_at_most(anext(iterator), seconds)
        except StopAsyncIteration:
            return


class SecretValueStores:
    """One store per connection version, created on first use; the GatewayApp owns it."""

    @classmethod
    def from_settings(cls, config=None) -> SecretValueStores | None:
        """As configured in ``config`` (default: Django's settings); None when masking by value is off."""
        config = config if config is not None else settings
        if config.AIRLOCK_SECRET_VALUE_MASKING == "off":
            return None
        return cls(sync_timeout=config.AIRLOCK_SECRET_VALUES_SYNC_SECONDS,
                   max_stale=config.AIRLOCK_SECRET_VALUES_MAX_STALE_SECONDS,
                   max_bytes=config.AIRLOCK_SECRET_VALUES_MAX_BYTES)

    def __init__(self, **options):
        self._options = options
        self._stores: dict[str, tuple[str, SecretValueStore]] = {}
        self._loop = None

    async def current(self, upstream, client: httpx.AsyncClient) -> SecretValues:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._stores, self._loop = {}, loop
        entry = self._stores.get(upstream.name)
        if entry is None or entry[0] != upstream.cache_key:
            if entry is not None:
                await entry[1].aclose()
            entry = (upstream.cache_key, SecretValueStore(upstream, client, **self._options))
            self._stores[upstream.name] = entry
        return await entry[1].current()

    async def aclose(self) -> None:
        stores, self._stores = self._stores, {}
        for _, store in stores.values():
            await store.aclose()
