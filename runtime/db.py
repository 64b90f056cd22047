"""Database calls from the serving path: a bounded thread pool, bounded waits, fast failure.

Django's ORM is synchronous.  asgiref's thread-sensitive ``sync_to_async``
runs all such calls of a process on ONE thread: one query stuck on a
partitioned database stalls every request behind it, and a connection that
died there was never replaced.  :func:`run` instead

* runs the call on a pool of ``AIRLOCK_DB_POOL_SIZE`` threads, each with its
  own connection, discarded when it failed or is obsolete before every call
  and health-checked before reuse (``CONN_HEALTH_CHECKS``);
* waits at most ``AIRLOCK_DB_WAIT_SECONDS``; past that, or when the
  connection itself failed, it raises :class:`DatabaseUnavailable` (the call
  may still finish in its thread: a write's outcome is then unknown);
* after such a failure counts the database as down: calls fail at once
  instead of queueing behind stuck threads, while one background probe tries
  the database every ``PROBE_INTERVAL`` seconds; its first success (or any
  call's) counts it up again.  Outages are logged when they start, at most
  every ``LOG_INTERVAL`` seconds while they last (with a count), and when they
  end.

When a synchronous caller is blocked on the coroutine (``async_to_sync``),
the call runs on that caller's thread instead, as asgiref's thread-sensitive
mode does: that thread is idle and holds the transaction the call must see.
"""

import asyncio
import concurrent.futures
import functools
import logging
import os
import queue
import threading
import time

from asgiref.sync import AsyncToSync, SyncToAsync, sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection, connections

from runtime import workers
from runtime.timeouts import wait_at_most

log = logging.getLogger(__name__)

LOG_INTERVAL = 10.0
# While the database is counted down, how long a probe waits between attempts.
PROBE_INTERVAL = 0.5
DOWN_MESSAGE = "airlock: the gateway's database is unavailable; the request was not forwarded"


class DatabaseUnavailable(OperationalError):
    """The database did not answer within the wait bound, or the connection to it failed."""


class _Health:
    """Whether the database answers; while it does not, calls fail at once and a probe retries it."""

    def __init__(self):
        self._lock = threading.Lock()
        self.down_since: float | None = None
        self._prober: asyncio.Task | None = None
        self._failed = 0  # calls failed since the outage began
        self._unreported = 0  # ... since the last log line
        self._logged_at = 0.0

    @property
    def up(self) -> bool:
        return self.down_since is None

    def check(self) -> None:
        """Raise DatabaseUnavailable while the database is counted down."""
        if self.down_since is None:
            return
        with self._lock:
            if self.down_since is None:
                return
            self._count()
            self._probe_soon()
        raise DatabaseUnavailable("the database is unavailable")

    def failed(self, reason: str) -> None:
        with self._lock:
            if self.down_since is None:
                self.down_since = self._logged_at = time.monotonic()
                self._failed = 1
                self._unreported = 0
                log.error("database unavailable (%s): requests that need it get 503, caches answer for up to "
                          "%gs more", reason, settings.AIRLOCK_CACHE_STALE_SECONDS)
            else:
                self._count(reason)
            self._probe_soon()

    def succeeded(self) -> None:
        if self.down_since is None:
            return
        with self._lock:
            if self.down_since is not None:
                log.warning("database available again after %.1fs (%d calls failed)",
                            time.monotonic() - self.down_since, self._failed)
                self.down_since = None

    def _count(self, reason: str = "") -> None:
        self._failed += 1
        self._unreported += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_INTERVAL:
            log.error("database still unavailable after %.1fs%s (%d calls failed in the last %.0fs)",
                      now - self.down_since, f" ({reason})" if reason else "", self._unreported,
                      now - self._logged_at)
            self._logged_at = now
            self._unreported = 0

    def _probe_soon(self) -> None:
        """One probe per process (restarted on the caller's loop if the one it ran on went away)."""
        if self._prober is None or self._prober.done():
            self._prober = asyncio.get_running_loop().create_task(self._probe(), name="airlock-db-probe")

    async def _probe(self) -> None:
        loop = asyncio.get_running_loop()
        while self.down_since is not None:
            await asyncio.sleep(PROBE_INTERVAL)
            try:
                # No wait bound: nothing waits on the probe, and one stuck thread is enough.
                await asyncio.wrap_future(_the_pool().submit(functools.partial(_call, loop, _ping, ())))
            except Exception:
                continue
            self.succeeded()


class _Pool:
    """Threads that each keep one database connection, closed when the pool shuts down."""

    def __init__(self, size: int):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"airlock-db-{index}", daemon=True)
                         for index in range(size)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn, *args) -> concurrent.futures.Future:
        return workers.submit(self._jobs, fn, *args)

    def shutdown(self) -> None:
        """Each thread closes its connection and ends once it is done with the calls before."""
        for _ in self._threads:
            self._jobs.put(None)

    def _work(self) -> None:
        try:
            workers.work(self._jobs)
        finally:
            connections.close_all()


health = _Health()
_pool: _Pool | None = None
_pool_lock = threading.Lock()
_serving = threading.local()


def available() -> bool:
    """False from a failed call until the next successful one."""
    return health.up


def _the_pool() -> _Pool:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = _Pool(settings.AIRLOCK_DB_POOL_SIZE)
        return _pool


def shutdown() -> None:
    """End the pool's threads, closing their connections, once they finish what they started.

    The next call starts a new pool, knowing nothing about the database yet.
    """
    global _pool, health
    with _pool_lock:
        pool, _pool = _pool, None
        health = _Health()
    if pool is not None:
        pool.shutdown()


def serving_loop() -> asyncio.AbstractEventLoop | None:
    """The running event loop this worker thread works for (this pool, or asgiref's sync_to_async)."""
    loop = getattr(_serving, "loop", None)
    if loop is None and getattr(SyncToAsync.threadlocal, "main_event_loop_pid", None) == os.getpid():
        loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    return loop if loop is not None and loop.is_running() else None


def ping() -> None:
    """One round trip to the database on this thread's connection (for :func:`run`: readiness, the probe)."""
    connection.ensure_connection()
    if not connection.is_usable():
        connection.close()
        raise OperationalError("the database does not answer")


_ping = ping


class _Lost(Exception):
    """Raised in the worker: the call failed because the connection did (carries the cause's type name)."""


def _call(loop, fn, args):
    _serving.loop = loop
    try:
        close_old_connections()
        try:
            return fn(*args)
        except (OperationalError, InterfaceError) as exc:
            if connection.connection is None or not connection.is_usable():
                connection.close()
                raise _Lost(type(exc).__name__) from None
            raise
    finally:
        _serving.loop = None


async def run(fn, *args):
    """``fn(*args)`` on the pool; DatabaseUnavailable when the database cannot answer in time."""
    if getattr(AsyncToSync.executors, "current", None) is not None:
        return await sync_to_async(fn)(*args)
    state = health
    state.check()
    loop = asyncio.get_running_loop()
    timeout = settings.AIRLOCK_DB_WAIT_SECONDS
    call = functools.partial(_call, loop, fn, args)
    try:
        result = await wait_at_most(asyncio.wrap_future(_the_pool().submit(call)), timeout)
    except TimeoutError:
        state.failed(f"no answer within {timeout:g}s")
        raise DatabaseUnavailable(f"the database did not answer within {timeout:g}s") from None
    except _Lost as exc:
        state.failed(str(exc))
        raise DatabaseUnavailable(f"the database connection failed ({exc})") from None
    state.succeeded()
    return result
