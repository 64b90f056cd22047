"""Per-process, per-connection caches for the hot path (rules, leases): no query per request.

A miss loads through :func:`runtime.db.run` (a bounded thread pool, off the
event loop); concurrent misses of one key share one load.  Model signals
invalidate every cache of a kind in this process (``invalidate_all``) and, once
committed, every other process through runtime.invalidation's announcement over
Redis; without it (Redis away) other processes see a change within ``max_age`` seconds.  A load that started
before an invalidation is returned to its caller but not kept, so a racing
load never resurrects stale data.

While the database is unavailable an entry is still used for
``AIRLOCK_CACHE_STALE_SECONDS`` beyond ``max_age`` (at once, without waiting,
once the database is known to be down); past that, or with nothing cached,
:class:`runtime.db.DatabaseUnavailable` propagates and the request gets a 503.
"""

import asyncio
import functools
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Hashable

from django.conf import settings

from runtime import db


def stale_seconds() -> float:
    return float(settings.AIRLOCK_CACHE_STALE_SECONDS)


class Flights:
    """At most one load per key and event loop; callers arriving meanwhile share it."""

    def __init__(self):
        self._tasks: dict[tuple, asyncio.Task] = {}

    def start(self, key: Hashable, load: Callable[[], Awaitable]) -> asyncio.Task:
        loop = asyncio.get_running_loop()
        slot = (loop, key)
        task = self._tasks.get(slot)
        if task is None:
            task = loop.create_task(load())
            self._tasks[slot] = task
            task.add_done_callback(functools.partial(self._done, slot))
        return task

    def _done(self, slot: tuple, task: asyncio.Task) -> None:
        if self._tasks.get(slot) is task:
            del self._tasks[slot]
        if not task.cancelled():
            task.exception()  # retrieved by the awaiting requests; do not warn if they all went away


async def refresh(flights: Flights, key: Hashable, load: Callable[[], Awaitable], *, stale: bool, value=None):
    """The (shared) result of ``load()``; ``value`` instead when the database is unavailable and ``stale`` allows it."""
    if stale and not db.available():
        return value  # without waiting; runtime.db's probe notices when the database is back
    try:
        return await asyncio.shield(flights.start(key, load))
    except db.DatabaseUnavailable:
        if stale:
            return value
        raise


class ConnectionCache:
    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._instances = weakref.WeakSet()
        cls._instances_lock = threading.Lock()

    def __init__(self, loader: Callable[[str], object], max_age: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self._loader = loader
        self._max_age = max_age
        self._clock = clock
        self._entries: dict[str, tuple[float, object]] = {}
        self._generation = 0
        self._lock = threading.Lock()
        self._flights = Flights()
        with self._instances_lock:
            self._instances.add(self)

    def default_max_age(self) -> float:
        raise NotImplementedError

    @property
    def max_age(self) -> float:
        return float(self._max_age if self._max_age is not None else self.default_max_age())

    async def get(self, connection: str):
        now = self._clock()
        with self._lock:
            entry = self._entries.get(connection)
            generation = self._generation
        if entry is not None and now - entry[0] <= self.max_age:
            return entry[1]
        stale = entry is not None and now - entry[0] <= self.max_age + stale_seconds()
        return await refresh(self._flights, (connection, generation),
                             functools.partial(self._load, connection, generation),
                             stale=stale, value=entry[1] if entry is not None else None)

    async def _load(self, connection: str, generation: int):
        started = self._clock()
        value = await db.run(self._loader, connection)
        with self._lock:
            if self._generation == generation:
                self._entries[connection] = (started, value)
        return value

    def invalidate(self, connection: str | None = None) -> None:
        """Forget cached values (of one connection, or all) and discard loads in flight."""
        with self._lock:
            self._generation += 1
            if connection is None:
                self._entries.clear()
            else:
                self._entries.pop(connection, None)

    @classmethod
    def invalidate_all(cls, connection: str | None = None) -> None:
        with cls._instances_lock:
            caches = list(cls._instances)
        for cache in caches:
            cache.invalidate(connection)
