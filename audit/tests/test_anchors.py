"""Anchors are made without anyone asking: by Celery beat and at gateway shutdown, across restarts."""

import asyncio
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command
from django.db import connection

from airlock.celery import app as celery_app
from audit import keys, tasks
from audit.models import Anchor, AuditEvent
from audit.recorder import Recorder
from audit.tests.factories import append, event

ROOT = Path(__file__).resolve().parents[2]
K1, K2 = keys.generate(), keys.generate()


@pytest.fixture
def anchor_file(tmp_path, settings):
    path = tmp_path / "anchors.jsonl"
    settings.AIRLOCK_AUDIT_ANCHOR_FILE = str(path)
    return path


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def verify() -> str:
    out = io.StringIO()
    call_command("verify_audit", stdout=out)
    return out.getvalue()


def test_beat_runs_the_anchor_task_on_a_schedule():
    entry = django_settings.CELERY_BEAT_SCHEDULE["audit-anchor"]
    assert entry["task"] == "audit.tasks.anchor"
    assert entry["schedule"] == django_settings.AIRLOCK_AUDIT_ANCHOR_SECONDS > 0
    celery_app.loader.import_default_modules()
    assert "audit.tasks.anchor" in celery_app.tasks


@pytest.mark.django_db
def test_the_anchor_task_signs_the_head_into_the_file_and_the_database(anchor_file):
    append(event(0), event(1))
    assert tasks.anchor.apply().get() == 2
    assert tasks.anchor.apply().get() is None  # nothing new since
    (line,) = lines(anchor_file)
    assert (line["seq"], line["hash"], line["reason"]) == (2, AuditEvent.objects.get(seq=2).hash, "schedule")
    assert Anchor.objects.get().seq == 2


@pytest.mark.django_db(transaction=True)
def test_shutdown_anchors_what_the_gateway_wrote(anchor_file):
    async def run():
        recorder = Recorder()
        for i in range(3):
            await recorder.finish(event(i))
        await recorder.aclose()

    asyncio.run(run())
    assert [(line["seq"], line["reason"]) for line in lines(anchor_file)] == [(3, "shutdown")]
    assert "newest anchor outside the database: #3" in verify()

    append(event(10))  # another process; this one, idle, has nothing of its own to anchor
    asyncio.run(Recorder().aclose())
    assert len(lines(anchor_file)) == 1


@pytest.mark.django_db(transaction=True)
def test_a_failed_shutdown_anchor_does_not_stop_the_shutdown(settings, tmp_path, caplog):
    settings.AIRLOCK_AUDIT_ANCHOR_FILE = str(tmp_path / "missing-directory" / "anchors.jsonl")

    async def run():
        recorder = Recorder()
        await recorder.finish(event(0))
        await recorder.aclose()

    asyncio.run(run())
    assert AuditEvent.objects.count() == 1 and not Anchor.objects.exists()
    assert "not anchored at shutdown (FileNotFoundError)" in caplog.text


CHILD = """
import asyncio, sys
import django
django.setup()
from audit.recorder import Recorder
from audit.tests.factories import event

async def main():
    recorder = Recorder()
    for i in range(int(sys.argv[1])):
        await recorder.finish(event(100 + i))
    await recorder.aclose()

asyncio.run(main())
"""


def gateway_process(count: int, *, audit_keys: list[str], anchor_file: Path, var_dir: Path) -> None:
    """Another gateway process on the same database: writes ``count`` events, then shuts down."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRLOCK_", "DATABASE_URL", "REDIS_URL"))}
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        env["AIRLOCK_SQLITE_PATH"] = db["NAME"]
    else:
        password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
        env["DATABASE_URL"] = f"postgres://{db['USER']}{password}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"
    env.update(
        DJANGO_SETTINGS_MODULE="airlock.settings", AIRLOCK_VAR_DIR=str(var_dir),
        AIRLOCK_AUDIT_KEYS=",".join(audit_keys), AIRLOCK_AUDIT_ANCHOR_FILE=str(anchor_file),
    )
    result = subprocess.run([sys.executable, "-c", CHILD, str(count)], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.django_db(transaction=True)
def test_an_untouched_chain_verifies_across_restarts_and_a_key_rotation(settings, anchor_file, tmp_path):
    async def gateway(first: int, count: int):
        recorder = Recorder()
        for i in range(count):
            await recorder.finish(event(first + i))
        await recorder.aclose()

    settings.AIRLOCK_AUDIT_KEYS = [K1]
    asyncio.run(gateway(0, 3))
    gateway_process(2, audit_keys=[K2, K1], anchor_file=anchor_file, var_dir=tmp_path)
    settings.AIRLOCK_AUDIT_KEYS = [K2, K1]
    asyncio.run(gateway(200, 1))

    assert [(line["seq"], line["reason"]) for line in lines(anchor_file)] == [
        (3, "shutdown"), (5, "shutdown"), (6, "shutdown")
    ]
    old, new = keys.Keyring([K1]).active.key_id, keys.Keyring([K2]).active.key_id
    assert list(AuditEvent.objects.order_by("seq").values_list("key_id", flat=True)) == [old] * 3 + [new] * 3
    output = verify()
    assert "audit chain intact: 6 events #1..#6" in output
    assert "newest anchor outside the database: #6" in output

    settings.AIRLOCK_AUDIT_KEYS = [K1]  # a verifier that lacks the newer key says so
    with pytest.raises(CommandError, match=f"unknown key: .*'{new}'"):
        verify()
