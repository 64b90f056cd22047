"""Reviews and leases as Prometheus metrics, read from the database when scraped.

The database is the truth for both (any gateway process may have opened a review, any reviewer
decided it), so these are read at scrape time rather than counted: ``airlock_reviews_pending``
and ``airlock_review_oldest_pending_age_seconds`` per connection (the alert "reviews waiting too
long" reads the latter), and ``airlock_leases_active`` per connection.  Every replica reports the
same values: aggregate them with ``max``, not ``sum``.

A scrape never waits on the database for long: the query runs on one worker thread of its own,
at most every ``refresh_seconds``, and a scrape waits ``wait_seconds`` for it; when the
database does not answer the last values are served (or none yet).
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time

from prometheus_client.core import GaugeMetricFamily

from runtime.metrics import connection_label

log = logging.getLogger(__name__)


def read_counts(now=None) -> dict:
    """{"pending": {connection: (count, oldest created_at)}, "leases": {connection: count}} from the database."""
    from django.db import close_old_connections
    from django.db.models import Count, Min
    from django.utils import timezone

    from approvals.models import Lease, LeaseState, Review, ReviewState

    close_old_connections()
    now = now or timezone.now()
    pending = {
        row["connection"]: (row["count"], row["oldest"])
        for row in Review.objects.filter(state=ReviewState.PENDING).values("connection")
        .annotate(count=Count("id"), oldest=Min("created_at")).order_by()
    }
    leases = {
        row["connection"]: row["count"]
        for row in Lease.objects.filter(state=LeaseState.GRANTED, starts_at__lte=now, expires_at__gt=now)
        .values("connection").annotate(count=Count("id")).order_by()
    }
    return {"pending": pending, "leases": leases}


class ReviewsAndLeases:
    """A prometheus-client collector (``collect()``) over :func:`read_counts`."""

    def __init__(self, read=read_counts, refresh_seconds: float = 15.0, wait_seconds: float = 2.0,
                 clock=time.monotonic):
        self.read = read
        self.refresh_seconds = refresh_seconds
        self.wait_seconds = wait_seconds
        self.clock = clock
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="airlock-metrics-db")
        self._lock = threading.Lock()
        self._future: concurrent.futures.Future | None = None
        self._values: dict | None = None
        self._read_at = float("-inf")

    def collect(self):
        from django.utils import timezone

        values = self._current()
        now = timezone.now()
        pending = GaugeMetricFamily("airlock_reviews_pending", "Reviews waiting for a decision.",
                                    labels=["connection"])
        oldest = GaugeMetricFamily("airlock_review_oldest_pending_age_seconds",
                                   "Age of the oldest review waiting for a decision.", labels=["connection"])
        leases = GaugeMetricFamily("airlock_leases_active", "Leases in force now.", labels=["connection"])
        if values is not None:
            for connection, (count, created) in sorted(values["pending"].items()):
                label = connection_label(connection)
                pending.add_metric([label], count)
                oldest.add_metric([label], max(0.0, (now - created).total_seconds()))
            for connection, count in sorted(values["leases"].items()):
                leases.add_metric([connection_label(connection)], count)
        return [pending, oldest, leases]

    def _current(self) -> dict | None:
        with self._lock:
            if self._future is None and self.clock() - self._read_at >= self.refresh_seconds:
                self._future = self._executor.submit(self.read)
            future = self._future
        if future is not None:
            try:
                values = future.result(timeout=self.wait_seconds)
            except concurrent.futures.TimeoutError:
                return self._values  # still running: the last values, until it answers
            except Exception as exc:
                log.warning("review and lease metrics not read (%s)", type(exc).__name__)
                values = None
            with self._lock:
                if self._future is future:
                    self._future = None
                    self._read_at = self.clock()
                    if values is not None:
                        self._values = values
        return self._values
