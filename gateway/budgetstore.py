"""The counters agent budgets are spent from (gateway.budgets): shared in Redis, or per process in memory.

Both implement the same five calls, each about one key (gateway.budgets makes the keys):

* ``hit(key, window)``: take one from a moving window if it has room (:class:`Usage`: whether it
  had, and when the oldest entry leaves it, which is when the next one fits);
* ``peek(key, window)``: the same answer without taking one;
* ``acquire(key, limit, token, ttl)`` / ``renew(key, token, ttl)`` / ``release(key, token)``: a
  concurrency slot (``free(key, limit)``: whether one is free, taking none), held by ``token`` until released or until ``ttl`` seconds after its last
  renewal, so a process that dies cannot keep a slot for ever.

:class:`RedisCounters` counts windows with the ``limits`` library's moving-window strategy over its
asyncio Redis storage (redis-py, already the channel layer's client), and slots with one Lua
script over a sorted set scored by expiry.  Every call gives up after ``timeout`` seconds and
raises :class:`StoreUnavailable`; after a failure the store is not asked again for ``cooldown``
seconds (every call fails at once), so a partitioned Redis costs each request at most one
timeout.  The clients are made on first use or at :meth:`RedisCounters.start` (the gateway's
startup), not when the application is built: importing redis-py imports OpenTelemetry when it is
installed, and nothing of it may load while tracing is off until Redis is actually used.  :class:`MemoryCounters` is the same for one process (no Redis configured), with an
injectable clock.  Times are UNIX seconds of the gateway hosts' clocks.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from policy.budgets import Window
from runtime.timeouts import wait_at_most

log = logging.getLogger(__name__)
KEY_PREFIX = "airlock-budget"
COOLDOWN_SECONDS = 5.0

# KEYS[1]: the slots (a sorted set: token -> expiry); ARGV: now, limit, expiry, token, ttl in ms.
# Expired slots go first; a token already holding a slot renews it.  Answers {1, ""} when the slot
# is held, {0, earliest expiry} when every slot is taken.
_ACQUIRE = """
redis.call('zremrangebyscore', KEYS[1], '-inf', ARGV[1])
if redis.call('zscore', KEYS[1], ARGV[4]) or redis.call('zcard', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('zadd', KEYS[1], ARGV[3], ARGV[4])
  redis.call('pexpire', KEYS[1], ARGV[5])
  return {1, ''}
end
local first = redis.call('zrange', KEYS[1], 0, 0, 'WITHSCORES')
return {0, first[2]}
"""
_RENEW = """
if redis.call('zadd', KEYS[1], 'XX', 'CH', ARGV[1], ARGV[2]) then
  redis.call('pexpire', KEYS[1], ARGV[3])
end
return 1
"""


class StoreUnavailable(Exception):
    """The counters could not be read or written in time (Redis away, slow or refusing)."""


@dataclass(frozen=True)
class Usage:
    """``allowed``: there was room (and, for hit and acquire, one was taken); ``reset_at``: UNIX
    time at which the next one fits (a window's oldest entry leaves it; a slot's earliest expiry)."""

    allowed: bool
    reset_at: float


def _item(window: Window):
    from limits import RateLimitItemPerSecond  # see the module's docstring: loaded once Redis is used

    return RateLimitItemPerSecond(window.amount, window.seconds, namespace=KEY_PREFIX)


class RedisCounters:
    """Budget counters in Redis, shared by every gateway process that uses the same database."""

    def __init__(self, url: str, *, timeout: float = 0.5, cooldown: float = COOLDOWN_SECONDS,
                 clock: Callable[[], float] = time.time):
        self.url = url
        self.timeout = timeout
        self.cooldown = cooldown
        self.clock = clock
        self.storage = self.windows = self.redis = None
        self._down_until = 0.0

    def start(self) -> None:
        """Make the clients (they connect on their first command)."""
        if self.redis is not None:
            return
        from limits.aio.storage import RedisStorage  # see the module's docstring: loaded once Redis is used
        from limits.aio.strategies import MovingWindowRateLimiter
        from redis import asyncio as aioredis

        options = {"socket_timeout": self.timeout, "socket_connect_timeout": self.timeout}
        self.storage = RedisStorage("async+" + self.url, implementation="redispy", key_prefix=KEY_PREFIX, **options)
        self.windows = MovingWindowRateLimiter(self.storage)
        self.redis = aioredis.Redis.from_url(self.url, **options)
        self._acquire = self.redis.register_script(_ACQUIRE)
        self._renew = self.redis.register_script(_RENEW)

    async def _call(self, awaitable):
        self.start()
        if time.monotonic() < self._down_until:
            awaitable.close()
            raise StoreUnavailable("the budget store failed a moment ago")
        try:
            return await wait_at_most(awaitable, self.timeout)
        except Exception as exc:  # timeouts, connection errors, Redis errors: all mean "cannot count now"
            self._down_until = time.monotonic() + self.cooldown
            log.warning("budget store unavailable: %s (not asked again for %.0f s)", type(exc).__name__,
                        self.cooldown)
            raise StoreUnavailable(type(exc).__name__) from None

    async def hit(self, key: str, window: Window) -> Usage:
        self.start()
        return await self._call(self._hit(_item(window), key))

    async def _hit(self, item, key: str) -> Usage:
        if await self.windows.hit(item, key):
            return Usage(True, 0.0)
        stats = await self.windows.get_window_stats(item, key)
        return Usage(False, stats.reset_time)

    async def peek(self, key: str, window: Window) -> Usage:
        self.start()
        stats = await self._call(self.windows.get_window_stats(_item(window), key))
        return Usage(stats.remaining > 0, stats.reset_time)

    async def acquire(self, key: str, limit: int, token: str, ttl: float) -> Usage:
        self.start()
        now = self.clock()
        answer = await self._call(self._acquire(keys=[self._slots(key)],
                                                args=[now, limit, now + ttl, token, int(ttl * 1000)]))
        return Usage(bool(int(answer[0])), float(answer[1] or 0))

    async def free(self, key: str, limit: int) -> Usage:
        self.start()
        now = self.clock()
        held = await self._call(self.redis.zrangebyscore(self._slots(key), now, "+inf", start=0, num=limit,
                                                         withscores=True))
        return Usage(len(held) < limit, float(held[0][1]) if held else now)

    async def renew(self, key: str, token: str, ttl: float) -> None:
        self.start()
        await self._call(self._renew(keys=[self._slots(key)], args=[self.clock() + ttl, token, int(ttl * 1000)]))

    async def release(self, key: str, token: str) -> None:
        self.start()
        await self._call(self.redis.zrem(self._slots(key), token))

    @staticmethod
    def _slots(key: str) -> str:
        return f"{KEY_PREFIX}:slots:{key}"

    async def aclose(self) -> None:
        if self.redis is None:
            return
        for client in (self.redis, self.storage.bridge.get_connection()):
            try:
                await client.aclose()
            except Exception:  # closing what may never have connected: nothing to keep
                log.debug("budget store close failed", exc_info=True)


class MemoryCounters:
    """Budget counters of one process (no Redis configured, and the unit tests), same semantics."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self.clock = clock
        self._windows: dict[str, list[float]] = {}  # key -> entry times, oldest first
        self._slots: dict[str, dict[str, float]] = {}  # key -> token -> expiry

    def start(self) -> None:
        return None

    def _entries(self, key: str, window: Window) -> list[float]:
        entries = self._windows.setdefault(f"{key}/{window.amount}/{window.seconds}", [])
        del entries[:bisect.bisect_right(entries, self.clock() - window.seconds)]
        return entries

    async def hit(self, key: str, window: Window) -> Usage:
        entries = self._entries(key, window)
        if len(entries) < window.amount:
            entries.append(self.clock())
            return Usage(True, 0.0)
        return Usage(False, entries[-window.amount] + window.seconds)

    async def peek(self, key: str, window: Window) -> Usage:
        entries = self._entries(key, window)
        if len(entries) < window.amount:
            return Usage(True, (entries[0] if entries else self.clock()) + window.seconds)
        return Usage(False, entries[-window.amount] + window.seconds)

    async def acquire(self, key: str, limit: int, token: str, ttl: float) -> Usage:
        self.start()
        now = self.clock()
        slots = self._slots.setdefault(key, {})
        for held, expiry in list(slots.items()):
            if expiry <= now:
                del slots[held]
        if token in slots or len(slots) < limit:
            slots[token] = now + ttl
            return Usage(True, 0.0)
        return Usage(False, min(slots.values()))

    async def free(self, key: str, limit: int) -> Usage:
        now = self.clock()
        live = sorted(expiry for expiry in self._slots.get(key, {}).values() if expiry > now)
        return Usage(len(live) < limit, live[0] if live else now)

    async def renew(self, key: str, token: str, ttl: float) -> None:
        slots = self._slots.get(key, {})
        if token in slots:
            slots[token] = self.clock() + ttl

    async def release(self, key: str, token: str) -> None:
        self._slots.get(key, {}).pop(token, None)

    async def aclose(self) -> None:
        return None


def from_settings(config) -> RedisCounters | MemoryCounters:
    """Redis when AIRLOCK_BUDGET_REDIS_URL (default REDIS_URL) is set, else this process's memory."""
    url = getattr(config, "AIRLOCK_BUDGET_REDIS_URL", "")
    if not url:
        return MemoryCounters()
    return RedisCounters(url, timeout=float(getattr(config, "AIRLOCK_BUDGET_STORE_TIMEOUT_SECONDS", 0.5)))
