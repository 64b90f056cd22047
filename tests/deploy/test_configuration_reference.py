"""docs/configuration.md lists every variable the code reads, with its default and production rule.

The names and defaults come from the source (tests/deploy/settings_reader.py, with ``ast``); the
production column is checked by running airlock/settings.py with ``AIRLOCK_ENV=production``.
"""

from __future__ import annotations

import os
import re
import runpy
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from tests.deploy.settings_reader import SETTINGS, UNKNOWN, read_by_code, settings_reads

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"
ROW = re.compile(r"^\| `(?P<name>[A-Z][A-Z0-9_]*)` \| (?P<default>[^|]*?) \| (?P<production>[^|]*?) \| (?P<what>.*) \|$")
PRODUCTION_RULES = {"required", "refused", "set it", "-"}
# A value each required setting can take in production (not a development default).
VALID = {
    "AIRLOCK_SECRET_KEY": "a-real-secret-key-for-this-test-only-0123456789",
    "AIRLOCK_FIELD_ENCRYPTION_KEYS": "3q2-7wtTtVqDnmvU8c9u3vXxqzDYxq1eU8hQJf3TN1M=",
    "AIRLOCK_AUDIT_KEYS": "kMh1vZ0XyVqkCq8o1yH8m0bH7cXz3hQ8JtqF0m2yNQs=",
    "DATABASE_URL": "postgres://airlock@127.0.0.1:5432/airlock",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "AIRLOCK_AUDIT_ANCHOR_FILE": "/var/lib/airlock-anchors/anchors.jsonl",
    "AIRLOCK_AUDIT_JOURNAL_DIR": "/var/lib/airlock-journal",
}
# What "turned on" looks like for a setting production refuses.
TURNED_ON = {"AIRLOCK_DEBUG": "1", "AIRLOCK_DEV_STATIC_TOKENS": "t=alice:dev"}


def documented() -> dict[str, dict]:
    rows = {}
    for line in DOC.read_text().splitlines():
        if match := ROW.match(line):
            name = match["name"]
            assert name not in rows, f"{name} is documented twice"
            rows[name] = match.groupdict()
    return rows


def dev_only_names() -> set[str]:
    import ast

    tree = ast.parse(SETTINGS.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "DEV_ONLY_DEFAULTS":
            return {key.value for key in node.value.keys}
    raise AssertionError("DEV_ONLY_DEFAULTS not found")


def test_every_variable_the_code_reads_is_documented_and_nothing_else():
    code = set(read_by_code())
    doc = set(documented())
    assert len(code) > 50  # the reader found the settings (not an empty parse)
    assert sorted(code - doc) == [], "read by the code, missing from docs/configuration.md"
    assert sorted(doc - code) == [], "documented, but nothing reads it"


def test_documented_defaults_are_the_code_defaults():
    rows = documented()
    # postgres_options reads two timeouts through a loop: the reader does not miss such reads.
    reads = settings_reads()
    assert reads["AIRLOCK_DB_STATEMENT_TIMEOUT_SECONDS"].default == "30"
    assert reads["AIRLOCK_DB_LOCK_TIMEOUT_SECONDS"].default == "10"
    assert reads["AIRLOCK_MAX_REQUEST_BODY"].default == str(3 * 1024 * 1024 + 64 * 1024)
    dev_only = dev_only_names()
    for name, read in read_by_code().items():
        cell = rows[name]["default"]
        if name in dev_only:
            assert cell == "development-only", name
        elif read.default is UNKNOWN:
            # Computed (from AIRLOCK_ENV, AIRLOCK_VAR_DIR, REDIS_URL): a description, not a bare value.
            assert cell not in {"", "unset", "empty"} and not re.fullmatch(r"`[^`]*`", cell), name
        elif read.default is None:
            assert cell == "unset", name
        elif read.default == "" or (read.reader == "env_bool" and read.default is False):
            assert cell == ("off" if read.default is False else "empty"), name
        else:
            assert cell == f"`{read.default}`", f"{name}: the code's default is {read.default!r}, the page says {cell}"


def test_production_column_uses_the_known_words():
    for name, row in documented().items():
        assert row["production"] in PRODUCTION_RULES, name
        assert row["what"].strip(), name


def load_settings(monkeypatch, environ: dict[str, str]) -> dict:
    """Run airlock/settings.py as a fresh module with exactly these Airlock variables."""
    known = read_by_code()
    for name in list(os.environ):
        if name in known or name.startswith(("AIRLOCK_", "CELERY_")):
            monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(SETTINGS))


def production(**overrides) -> dict[str, str]:
    environ = {"AIRLOCK_ENV": "production", **VALID, **overrides}
    return {name: value for name, value in environ.items() if value is not None}


def test_the_documented_required_settings_are_exactly_what_production_refuses_to_start_without(monkeypatch):
    required = {name for name, row in documented().items() if row["production"] == "required"}
    assert required == set(VALID), "every required setting needs a valid value here"
    # All required set, nothing else: production starts, so nothing undocumented is required.
    loaded = load_settings(monkeypatch, production())
    assert loaded["PRODUCTION"] is True
    for name in sorted(required):
        with pytest.raises(ImproperlyConfigured, match=name):
            load_settings(monkeypatch, production(**{name: None}))


def test_the_documented_refused_settings_stop_production(monkeypatch):
    refused = {name for name, row in documented().items() if row["production"] == "refused"}
    assert refused == set(TURNED_ON)
    for name in sorted(refused):
        with pytest.raises(ImproperlyConfigured, match=name):
            load_settings(monkeypatch, production(**{name: TURNED_ON[name]}))
        load_settings(monkeypatch, production(**{name: ""}))  # empty is off: production starts


def test_secret_settings_are_marked_secret():
    rows = documented()
    for name in ("AIRLOCK_SECRET_KEY", "AIRLOCK_FIELD_ENCRYPTION_KEYS", "AIRLOCK_AUDIT_KEYS", "DATABASE_URL",
                 "AIRLOCK_NOTIFY_WEBHOOKS", "AIRLOCK_DASHBOARD_OIDC_CLIENT_SECRET", "AIRLOCK_DEV_STATIC_TOKENS"):
        assert "*secret*" in rows[name]["what"], name
