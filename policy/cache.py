"""The per-process cache of each connection's compiled rules, and its loader.

A Rule or Connection saved anywhere drops it in every process: here by the model signals, elsewhere by
the announcement runtime.invalidation carries; ``max_age`` bounds staleness when that does not arrive.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings
from django.db import transaction

from policy.compile import CompiledRule, in_order
from policy.models import Rule
from runtime import invalidation
from runtime.cache import ConnectionCache

DEFAULT_MAX_AGE = 5.0


def load_compiled_rules(connection_name: str) -> tuple[CompiledRule, ...]:
    """Load and compile a connection's rules from the database (blocking), in evaluation order."""
    rows = Rule.objects.filter(connection__name=connection_name)
    return in_order(row.compile(connection_name) for row in rows)


def invalidate_all(connection_name: str | None = None) -> None:
    """Invalidate every PolicyCache of this process (called by model signals, policy.apps)."""
    PolicyCache.invalidate_all(connection_name)


def invalidate_on_change(sender, using=None, **kwargs) -> None:
    """post_save/post_delete receiver for Rule and Connection (connected in policy.apps); every other
    process hears of it once the transaction commits (runtime.invalidation)."""
    invalidate_all()
    # Loads racing with the still-open transaction must not be kept.
    transaction.on_commit(invalidate_all, using=using)
    invalidation.announce_on_commit("rules", using=using)


class PolicyCache(ConnectionCache):
    """Compiled rules keyed by connection name (see runtime.cache for the staleness bound)."""

    def __init__(self, max_age: float | None = None,
                 loader: Callable[[str], tuple[CompiledRule, ...]] = load_compiled_rules,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(loader, max_age, clock)

    def default_max_age(self) -> float:
        return float(getattr(settings, "AIRLOCK_POLICY_CACHE_SECONDS", DEFAULT_MAX_AGE))

    async def rules_for(self, connection_name: str) -> tuple[CompiledRule, ...]:
        return await self.get(connection_name)
