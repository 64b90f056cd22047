"""Links to the dashboard (its settings are read from airlock/settings.py, the one place they are defined)."""

from django.conf import settings


def dashboard_link(path: str) -> str:
    """``path`` under AIRLOCK_DASHBOARD_URL; the path alone when that is empty."""
    return str(settings.AIRLOCK_DASHBOARD_URL or "").rstrip("/") + path
