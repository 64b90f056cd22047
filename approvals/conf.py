"""Approval and lease settings with their defaults (airlock/settings.py reads them from the environment)."""

from django.conf import settings

DEFAULTS = {
    # How long a held request waits for a decision before a 403 naming the review.
    "AIRLOCK_REVIEW_HOLD_SECONDS": 120.0,
    # How often a held request re-reads its review when no channel-layer message came.
    "AIRLOCK_REVIEW_POLL_SECONDS": 2.0,
    # A review nobody decided expires after this long.
    "AIRLOCK_REVIEW_PENDING_SECONDS": 3600,
    # An approved "once" review must be used by a retry within this long.
    "AIRLOCK_REVIEW_APPROVAL_SECONDS": 900,
    "AIRLOCK_REVIEW_DEFAULT_WINDOW_SECONDS": 900,
    "AIRLOCK_REVIEW_MAX_WINDOW_SECONDS": 8 * 3600,
    "AIRLOCK_LEASE_MAX_SECONDS": 8 * 3600,
    # Upper bound on how long another process may use a lease after it was revoked
    # when the channel-layer broadcast did not reach it.
    "AIRLOCK_LEASE_CACHE_SECONDS": 5.0,
    # Public base URL of the dashboard (links in messages and notifications); empty: links in what
    # an agent is told use the address it reached the gateway at, notifications use paths only.
    "AIRLOCK_DASHBOARD_URL": "",
    # [{"url": ..., "format": "slack" | "json"}]
    "AIRLOCK_NOTIFY_WEBHOOKS": [],
    "AIRLOCK_NOTIFY_TIMEOUT_SECONDS": 10.0,
    # A channel-layer (Redis) call gives up after this long; the database poll covers the loss.
    "AIRLOCK_CHANNEL_LAYER_TIMEOUT_SECONDS": 2.0,
}


def get(name: str):
    return getattr(settings, name, DEFAULTS[name])


def dashboard_link(path: str) -> str:
    base = str(get("AIRLOCK_DASHBOARD_URL") or "").rstrip("/")
    return base + path
