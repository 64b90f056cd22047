"""Percentiles of latency samples (linear interpolation between closest ranks)."""

from __future__ import annotations

import math


def percentile(samples, pct: float) -> float:
    """The pct-th percentile of samples; NaN when there are none."""
    ordered = sorted(samples)
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * pct / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ms(seconds: float | None) -> float | None:
    """Seconds as milliseconds rounded for a report; None for no value."""
    if seconds is None or math.isnan(seconds):
        return None
    return round(seconds * 1000, 2)
