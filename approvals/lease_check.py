"""The gateway's lease check: is there an active lease for this principal, connection and rule?

Hot path without an ORM query: each process caches the granted, unexpired
leases of a connection (one query per connection per ``max_age``) and checks
``starts_at <= now < expires_at`` on every request, so expiry is exact.
Saving a Lease invalidates every cache of this process at once; other
processes drop theirs when the ``airlock.leases`` broadcast arrives
(approvals.live listener), and at the latest after ``max_age`` seconds.
While the database is unavailable, cached leases are used for up to
AIRLOCK_CACHE_STALE_SECONDS more (runtime.cache); expiry stays exact.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings

from runtime.cache import ConnectionCache


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


def invalidate_all(connection: str | None = None) -> None:
    LeaseCache.invalidate_all(connection)


class LeaseCache(ConnectionCache):
    """Active leases keyed by connection (see runtime.cache); expiry itself is checked at request time.

    One per application (airlock.app).  ``on_lookup`` runs before every lookup: the application
    passes its live-stream registry's ``ensure_listener`` (approvals.live), so the broadcasts that
    drop cached leases are heard once leases are in use.
    """

    def __init__(
        self,
        max_age: float | None = None,
        loader: Callable[[str], tuple[ActiveLease, ...]] = load_active_leases,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        on_lookup: Callable[[], object] | None = None,
    ):
        super().__init__(loader, max_age, monotonic)
        self._now = clock
        self._on_lookup = on_lookup

    def default_max_age(self) -> float:
        return float(settings.AIRLOCK_LEASE_CACHE_SECONDS)

    async def leases_for(self, connection: str) -> tuple[ActiveLease, ...]:
        if self._on_lookup is not None:
            self._on_lookup()
        return await self.get(connection)

    async def find(self, connection: str, principal, rule_name: str) -> ActiveLease | None:
        """The active lease that lasts longest among those covering this request, or None."""
        now = self._now()
        covering = [lease for lease in await self.leases_for(connection) if lease.covers(principal, rule_name, now)]
        return max(covering, key=lambda lease: lease.expires_at, default=None)
