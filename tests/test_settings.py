"""Settings come from the environment; dev-only defaults are refused in production."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROD = {
    "AIRLOCK_ENV": "production",
    "AIRLOCK_SECRET_KEY": "a-real-secret-key-for-this-test-only-0123456789",
    "AIRLOCK_FIELD_ENCRYPTION_KEYS": "3q2-7wtTtVqDnmvU8c9u3vXxqzDYxq1eU8hQJf3TN1M=",
    "DATABASE_URL": "postgres://airlock@127.0.0.1:5432/airlock",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "AIRLOCK_ALLOWED_HOSTS": "gateway.example.com",
    "AIRLOCK_AUDIT_KEYS": "kMh1vZ0XyVqkCq8o1yH8m0bH7cXz3hQ8JtqF0m2yNQs=",
    "AIRLOCK_AUDIT_ANCHOR_FILE": "/var/lib/airlock-anchors/anchors.jsonl",
    "AIRLOCK_AUDIT_JOURNAL_DIR": "/var/lib/airlock-journal",
}


def run_python(code, env_overrides, drop=()):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRLOCK_", "DATABASE_URL", "REDIS_URL"))}
    env.update(env_overrides)
    for name in drop:
        env.pop(name, None)
    env["DJANGO_SETTINGS_MODULE"] = "airlock.settings"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


SETUP = "import django; django.setup(); from django.conf import settings; print(settings.DATABASES['default']['ENGINE'])"


def test_production_with_everything_set_starts():
    result = run_python(SETUP, PROD)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "postgresql" in result.stdout


@pytest.mark.parametrize(
    "missing", ["AIRLOCK_SECRET_KEY", "AIRLOCK_FIELD_ENCRYPTION_KEYS", "DATABASE_URL", "REDIS_URL",
                "AIRLOCK_AUDIT_KEYS", "AIRLOCK_AUDIT_ANCHOR_FILE", "AIRLOCK_AUDIT_JOURNAL_DIR"]
)
def test_production_refuses_missing_setting(missing):
    result = run_python(SETUP, PROD, drop=[missing])
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and missing in result.stderr


def test_production_refuses_dev_defaults_and_dev_tokens():
    from airlock.settings import DEV_ONLY_DEFAULTS

    result = run_python(SETUP, {**PROD, "AIRLOCK_SECRET_KEY": DEV_ONLY_DEFAULTS["AIRLOCK_SECRET_KEY"]})
    assert result.returncode != 0 and "development default" in result.stderr
    result = run_python(SETUP, {**PROD, "AIRLOCK_AUDIT_KEYS": DEV_ONLY_DEFAULTS["AIRLOCK_AUDIT_KEYS"]})
    assert result.returncode != 0 and "AIRLOCK_AUDIT_KEYS contains a development default" in result.stderr
    result = run_python(SETUP, {**PROD, "AIRLOCK_DEV_STATIC_TOKENS": "t=alice:dev"})
    assert result.returncode != 0 and "AIRLOCK_DEV_STATIC_TOKENS" in result.stderr
    result = run_python(SETUP, {**PROD, "AIRLOCK_DEBUG": "1"})
    assert result.returncode != 0 and "AIRLOCK_DEBUG" in result.stderr


def test_sqlite_default_smoke(tmp_path):
    """No DATABASE_URL / REDIS_URL: SQLite and the in-memory channel layer, migrations apply."""
    env = {"AIRLOCK_VAR_DIR": str(tmp_path)}
    code = (
        "import django; django.setup();"
        "from django.conf import settings; from django.core.management import call_command;"
        "call_command('migrate', verbosity=0); call_command('check');"
        "print(settings.DATABASES['default']['ENGINE'], settings.CHANNEL_LAYERS['default']['BACKEND'])"
    )
    result = run_python(code, env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "sqlite3" in result.stdout and "InMemoryChannelLayer" in result.stdout
    assert (tmp_path / "airlock.sqlite3").stat().st_size > 0


def test_a_malformed_audit_key_stops_the_process_at_start(tmp_path):
    result = run_python(SETUP, {"AIRLOCK_VAR_DIR": str(tmp_path), "AIRLOCK_AUDIT_KEYS": "c2hvcnQtc2VjcmV0"})
    assert result.returncode != 0
    assert "AIRLOCK_AUDIT_KEYS entry 1 has 12 bytes" in result.stderr
    assert "c2hvcnQtc2VjcmV0" not in result.stderr


DATABASE_OPTIONS = (
    "import django, json; django.setup(); from django.conf import settings; "
    "d = settings.DATABASES['default']; print(json.dumps([d['OPTIONS'], d['CONN_HEALTH_CHECKS']]))"
)


def test_postgres_connections_time_out_and_notice_a_vanished_server():
    """A partitioned database must cost seconds, not the kernel's minutes (issue 12)."""
    result = run_python(DATABASE_OPTIONS, PROD)
    assert result.returncode == 0, result.stderr[-2000:]
    options, health_checks = json.loads(result.stdout)
    assert health_checks is True
    assert options == {
        "connect_timeout": 3, "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 3,
        "keepalives_count": 3, "tcp_user_timeout": 10000,
        "options": "-c statement_timeout=30000 -c lock_timeout=10000",
    }
    overrides = {"DATABASE_URL": PROD["DATABASE_URL"] + "?connect_timeout=7&sslmode=require",
                 "AIRLOCK_DB_STATEMENT_TIMEOUT_SECONDS": "0", "AIRLOCK_DB_TCP_USER_TIMEOUT_SECONDS": "20"}
    options, _ = json.loads(run_python(DATABASE_OPTIONS, {**PROD, **overrides}).stdout)
    assert (options["connect_timeout"], options["sslmode"]) == (7, "require")  # the URL's own options win
    assert (options["tcp_user_timeout"], options["options"]) == (20000, "-c lock_timeout=10000")
