"""Per-process, per-connection caches for the hot path (rules, leases): no query per request.

A miss loads off the event loop.  Model signals invalidate every cache of a
kind in this process (``invalidate_all``); other processes see a change
within ``max_age`` seconds.  A load that started before an invalidation is
returned to its caller but not kept, so a racing load never resurrects stale
data.
"""

import threading
import time
import weakref
from collections.abc import Callable

from asgiref.sync import sync_to_async


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
        with self._instances_lock:
            self._instances.add(self)

    def default_max_age(self) -> float:
        raise NotImplementedError

    @property
    def max_age(self) -> float:
        return float(self._max_age if self._max_age is not None else self.default_max_age())

    async def get(self, connection: str):
        started = self._clock()
        with self._lock:
            entry = self._entries.get(connection)
            generation = self._generation
        if entry is not None and started - entry[0] <= self.max_age:
            return entry[1]
        value = await sync_to_async(self._loader)(connection)
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
