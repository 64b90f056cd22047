"""The gateway's lease check: is there an active lease for this principal, connection and rule?

Hot path without an ORM query: each process caches the granted, unexpired
leases of a connection (one query per connection per ``max_age``) and checks
``starts_at <= now < expires_at`` on every request, so expiry is exact.
Saving a Lease invalidates every cache of this process at once; other
processes drop theirs when the ``airlock.leases`` broadcast arrives
(approvals.live listener), and at the latest after ``max_age`` seconds.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from asgiref.sync import sync_to_async

from approvals import conf


@dataclass(frozen=True)
class ActiveLease:
    id: int
    subject: str
    group: str
    issuer: str
    rules: frozenset[str]
    starts_at: float  # epoch seconds
    expires_at: float

    def covers(self, principal, rule_name: str, now: float) -> bool:
        if not self.starts_at <= now < self.expires_at:
            return False
        if self.rules and rule_name not in self.rules:
            return False
        if self.issuer and self.issuer != principal.issuer:
            return False
        if self.subject:
            return self.subject in (principal.subject, principal.username)
        return self.group in principal.groups


def load_active_leases(connection: str) -> tuple[ActiveLease, ...]:
    from django.utils import timezone

    from approvals.models import Lease, LeaseState

    rows = Lease.objects.filter(connection=connection, state=LeaseState.GRANTED, expires_at__gt=timezone.now())
    return tuple(
        ActiveLease(
            id=row.pk, subject=row.subject, group=row.group, issuer=row.issuer, rules=frozenset(row.rules),
            starts_at=row.starts_at.timestamp(), expires_at=row.expires_at.timestamp(),
        )
        for row in rows
    )


_caches: weakref.WeakSet[LeaseCache] = weakref.WeakSet()
_caches_lock = threading.Lock()


def invalidate_all(connection: str | None = None) -> None:
    with _caches_lock:
        caches = list(_caches)
    for cache in caches:
        cache.invalidate(connection)


class LeaseCache:
    def __init__(
        self,
        max_age: float | None = None,
        loader: Callable[[str], tuple[ActiveLease, ...]] = load_active_leases,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self._max_age = max_age
        self._loader = loader
        self._clock = clock
        self._monotonic = monotonic
        self._entries: dict[str, tuple[float, tuple[ActiveLease, ...]]] = {}
        self._generation = 0
        self._lock = threading.Lock()
        with _caches_lock:
            _caches.add(self)

    @property
    def max_age(self) -> float:
        return float(self._max_age if self._max_age is not None else conf.get("AIRLOCK_LEASE_CACHE_SECONDS"))

    async def leases_for(self, connection: str) -> tuple[ActiveLease, ...]:
        started = self._monotonic()
        with self._lock:
            entry = self._entries.get(connection)
            generation = self._generation
        if entry is not None and started - entry[0] <= self.max_age:
            return entry[1]
        leases = await sync_to_async(self._loader)(connection)
        with self._lock:
            if self._generation == generation:
                self._entries[connection] = (started, leases)
        return leases

    async def find(self, connection: str, principal, rule_name: str) -> ActiveLease | None:
        """The active lease that lasts longest among those covering this request, or None."""
        now = self._clock()
        covering = [lease for lease in await self.leases_for(connection) if lease.covers(principal, rule_name, now)]
        return max(covering, key=lambda lease: lease.expires_at, default=None)

    def invalidate(self, connection: str | None = None) -> None:
        with self._lock:
            self._generation += 1
            if connection is None:
                self._entries.clear()
            else:
                self._entries.pop(connection, None)


default_cache = LeaseCache()
