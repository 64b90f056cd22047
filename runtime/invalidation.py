"""Cross-process cache invalidation: one Redis pub/sub channel tells every process what changed.

Each serving process keeps its own caches (compiled rules: policy.cache; connections:
connections.registry; leases: approvals.lease_check).  A model signal drops them at once in the
process that saved the row; this module carries the news to every other process (the other
workers of the pod, the other pods) the moment the transaction commits:

* the signal handlers call :func:`announce` from ``transaction.on_commit``: a small JSON message
  (``{"kind": "rules" | "connections" | "leases", "connection": name or null, "id": pk or
  null}``) published on ``airlock.invalidate.<Redis database>`` (pub/sub channels are shared by
  every database of a Redis server; the number keeps deployments, and test runs, apart);
* every serving process runs one :class:`Listener` (airlock.app builds it with the invalidators of
  each kind and starts it with the lifespan), subscribed to that channel; each message calls the
  invalidator of its kind, exactly as the signal does in the process that made the change.

Redis is never on a request's path and never a reason to serve stale data for longer than
before: the caches keep their ``max_age`` (a few seconds) as the bound when no message arrives.
A publish gives up after ``AIRLOCK_CHANNEL_LAYER_TIMEOUT_SECONDS``; from a serving process it runs
on the event loop beside the request that saved the row, from a management command or a Celery
task it runs in place (and after a failure further publishes of that process are skipped for
:data:`SKIP_SECONDS`, so a bulk import with Redis away does not wait once per row).  The listener
pings Redis every :data:`PING_SECONDS` while idle and reconnects when an answer is late; each time
it has (re)subscribed it drops every cache of the process, since whatever was announced while it
was away is lost.  A message it cannot read drops every cache too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

from django.conf import settings

from runtime import db
from runtime.failurelog import FailureLog
from runtime.timeouts import wait_at_most

log = logging.getLogger(__name__)

KINDS = ("rules", "connections", "leases")
PING_SECONDS = 15.0
RECONNECT_SECONDS = 1.0
SKIP_SECONDS = 10.0
LOG_INTERVAL = 10.0
# Announcements waiting on the event loop beyond which new ones are dropped (Redis is away).
MAX_PENDING = 1000


def channel_name(url: str) -> str:
    """``airlock.invalidate.<database>`` for the Redis URL (no database in it: 0)."""
    path = urlsplit(url).path.strip("/")
    return f"airlock.invalidate.{int(path) if path.isdigit() else 0}"


def encode(kind: str, connection: str | None = None, connection_id: int | None = None) -> bytes:
    if kind not in KINDS:
        raise ValueError(f"unknown cache kind {kind!r}")
    return json.dumps({"kind": kind, "connection": connection, "id": connection_id}).encode()


def decode(data) -> dict | None:
    """The message's kind, connection and id, or None when it is not one of ours (drop everything)."""
    try:
        message = json.loads(data)
    except (TypeError, ValueError):
        return None
    if not isinstance(message, dict) or message.get("kind") not in KINDS:
        return None
    connection, connection_id = message.get("connection"), message.get("id")
    if connection is not None and not isinstance(connection, str):
        return None
    if connection_id is not None and (not isinstance(connection_id, int) or isinstance(connection_id, bool)):
        return None
    return {"kind": message["kind"], "connection": connection, "id": connection_id}


failures = FailureLog(log, "cache invalidation", LOG_INTERVAL)


def _timeout() -> float:
    return float(settings.AIRLOCK_CHANNEL_LAYER_TIMEOUT_SECONDS)


class _Publisher:
    """This process's publishing side: a synchronous client for code without a serving loop, and one
    asynchronous client per serving loop."""

    def __init__(self):
        self._lock = threading.Lock()
        self._sync = None
        self._sync_url = None
        self._skip_until = 0.0
        self._async: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # loop -> (url, client)
        self._pending: set[tuple[str, bytes]] = set()
        self._flushing: set[asyncio.Task] = set()

    def announce(self, url: str, message: bytes) -> None:
        loop = db.serving_loop()
        if loop is None:
            self._publish_now(url, message)
            return
        try:
            loop.call_soon_threadsafe(self._queue, url, message)
        except RuntimeError as exc:  # the loop closed meanwhile
            failures.failed("publish", exc)

    def _publish_now(self, url: str, message: bytes) -> None:
        import redis

        with self._lock:
            if time.monotonic() < self._skip_until:
                failures.failed("publish", ConnectionError("Redis failed a moment ago; skipped"))
                return
            if self._sync is None or self._sync_url != url:
                timeout = _timeout()
                self._sync = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
                self._sync_url = url
            client = self._sync
        try:
            client.publish(channel_name(url), message)
        except Exception as exc:
            with self._lock:
                self._skip_until = time.monotonic() + SKIP_SECONDS
            failures.failed("publish", exc)

    def _queue(self, url: str, message: bytes) -> None:
        """On the serving loop: identical announcements waiting together are published once."""
        if (url, message) in self._pending:
            return
        if len(self._pending) >= MAX_PENDING:
            failures.failed("publish", OverflowError(f"{MAX_PENDING} announcements pending"))
            return
        self._pending.add((url, message))
        task = asyncio.get_running_loop().create_task(self._publish_async(url, message))
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _publish_async(self, url: str, message: bytes) -> None:
        import redis.asyncio

        loop = asyncio.get_running_loop()
        try:
            self._pending.discard((url, message))
            known = self._async.get(loop)
            if known is None or known[0] != url:
                timeout = _timeout()
                known = (url, redis.asyncio.Redis.from_url(url, socket_timeout=timeout,
                                                           socket_connect_timeout=timeout))
                self._async[loop] = known
            await wait_at_most(known[1].publish(channel_name(url), message), _timeout())
        except Exception as exc:
            failures.failed("publish", exc)


_publisher = _Publisher()


def redis_url() -> str:
    return getattr(settings, "REDIS_URL", None) or ""


def announce(kind: str, connection: str | None = None, connection_id: int | None = None) -> None:
    """Tell every other process to drop its cached ``kind`` (of ``connection``, or all).

    Call it once the change is committed (``transaction.on_commit``); never raises, never waits on
    the event loop.  Without REDIS_URL there is nobody to tell: the caches' max_age is the bound.
    """
    url = redis_url()
    if url:
        _publisher.announce(url, encode(kind, connection, connection_id))


def announce_on_commit(kind: str, connection: str | None = None, connection_id: int | None = None,
                       using: str | None = None) -> None:
    from django.db import transaction

    transaction.on_commit(lambda: announce(kind, connection, connection_id), using=using)


Invalidator = Callable[[str | None, int | None], None]


class Listener:
    """This process's subscriber: calls ``invalidators[kind](connection, id)`` for every announcement.

    ``invalidators`` maps each of :data:`KINDS` to a function that drops this process's caches of
    that kind (``connection`` None: all of them).  :meth:`start` and :meth:`stop` run with the ASGI
    lifespan; :attr:`subscribed` is set while the subscription stands.  Without a URL it does nothing.
    """

    def __init__(self, url: str, invalidators: Mapping[str, Invalidator], *, ping_seconds: float = PING_SECONDS,
                 reconnect_seconds: float = RECONNECT_SECONDS):
        self.url = url
        self.channel = channel_name(url) if url else ""
        self.invalidators = dict(invalidators)
        self.ping_seconds = ping_seconds
        self.reconnect_seconds = reconnect_seconds
        self.subscribed = asyncio.Event()
        self.received = 0
        self._task: asyncio.Task | None = None

    @classmethod
    def from_settings(cls, invalidators: Mapping[str, Invalidator], config=None) -> "Listener":
        config = config if config is not None else settings
        return cls(getattr(config, "REDIS_URL", None) or "", invalidators)

    def start(self) -> asyncio.Task | None:
        if not self.url or (self._task is not None and not self._task.done()):
            return self._task
        self.subscribed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="airlock-cache-invalidation")
        return self._task

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def invalidate_everything(self) -> None:
        for kind in KINDS:
            self._call(kind, None, None)

    def handle(self, data) -> None:
        """One message from the channel."""
        self.received += 1
        message = decode(data)
        if message is None:
            self.invalidate_everything()
        else:
            self._call(message["kind"], message["connection"], message["id"])

    def _call(self, kind: str, connection: str | None, connection_id: int | None) -> None:
        invalidator = self.invalidators.get(kind)
        if invalidator is None:
            return
        try:
            invalidator(connection, connection_id)
        except Exception as exc:  # one cache's failure must not stop the others' invalidation
            log.error("invalidating the %s cache failed: %s", kind, type(exc).__name__, exc_info=True)

    async def _subscribe(self, pubsub) -> None:
        """Subscribe and wait for Redis to confirm it: from then on every announcement reaches us."""
        await pubsub.subscribe(self.channel)
        while True:
            message = await pubsub.get_message(timeout=self.ping_seconds)
            if message is not None and message.get("type") == "subscribe":
                return
            if message is not None and message.get("type") == "message":
                self.handle(message.get("data"))

    async def _run(self) -> None:
        import redis.asyncio

        loop = asyncio.get_running_loop()
        while True:
            client = pubsub = None
            try:
                client = redis.asyncio.Redis.from_url(
                    self.url, socket_connect_timeout=_timeout(), socket_timeout=self.ping_seconds * 2,
                    socket_keepalive=True)
                pubsub = client.pubsub()
                await wait_at_most(self._subscribe(pubsub), _timeout())
                # Whatever was cached before the subscription stood may have changed unannounced.
                self.invalidate_everything()
                self.subscribed.set()
                heard = loop.time()
                pinged = False
                while True:
                    message = await pubsub.get_message(timeout=self.ping_seconds)
                    if message is not None:
                        heard, pinged = loop.time(), False
                        if message.get("type") == "message":
                            self.handle(message.get("data"))
                        continue
                    if pinged and loop.time() - heard > 2 * self.ping_seconds:
                        raise ConnectionError("Redis did not answer a ping")
                    await wait_at_most(pubsub.ping(), _timeout())
                    pinged = True
            except Exception as exc:
                _raise_if_cancelling()
                self.subscribed.clear()
                failures.failed("listener", exc)
                await asyncio.sleep(self.reconnect_seconds)
            finally:
                self.subscribed.clear()
                for closing in (pubsub, client):
                    if closing is not None:
                        try:
                            await wait_at_most(closing.aclose(), 1.0)
                        except BaseException:  # noqa: BLE001 - closing a broken connection; cancellation re-raised below
                            _raise_if_cancelling()


def _raise_if_cancelling() -> None:
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
