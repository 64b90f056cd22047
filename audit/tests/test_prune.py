"""prune_audit: retention that archives, deletes only a verified prefix and leaves a signed checkpoint."""

import hashlib
import io
import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from audit.document import GENESIS_HASH
from audit.models import AuditEvent, Checkpoint, Recording, Session
from audit.tests.factories import append, event, tampering

pytestmark = pytest.mark.django_db


def at(days_ago: float, **fields) -> dict:
    received = timezone.now() - timedelta(days=days_ago)
    return event(0, request_received_timestamp=received, stage_timestamp=received, **fields)


def run(*args) -> str:
    out = io.StringIO()
    call_command("prune_audit", *args, stdout=out)
    return out.getvalue()


def verify(*args) -> str:
    out = io.StringIO()
    call_command("verify_audit", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def trail():
    """Three events a year old (the middle one an exec with a recording), then two recent ones."""
    return append(
        at(400),
        at(399, kubectl_session="old-run", recording={"kind": "exec", "pod": "web", "asciicast": "old\n"}),
        at(398),
        at(1, kubectl_session="new-run"),
        at(0.5, kubectl_session="new-run"),
    )


def test_prune_archives_deletes_the_prefix_and_verification_continues(trail, tmp_path):
    archive = tmp_path / "archive.jsonl"
    output = run("--days", "365", "--archive", str(archive))
    assert "pruned 3 events through #3" in output

    lines = [json.loads(line) for line in archive.read_text().splitlines()]
    assert [line["airlock"]["seq"] for line in lines] == [1, 2, 3]
    assert lines[0]["airlock"]["prevHash"] == GENESIS_HASH
    assert lines[1]["airlock"]["recordingCast"] == "old\n"
    checkpoint = Checkpoint.objects.get()
    assert checkpoint.through_seq == 3 and checkpoint.through_hash == trail[2].hash
    assert checkpoint.events_pruned == 3
    assert checkpoint.archive_sha256 == hashlib.sha256(archive.read_bytes()).hexdigest()

    assert list(AuditEvent.objects.values_list("seq", flat=True)) == [4, 5]
    assert not Recording.objects.exists()
    assert list(Session.objects.values_list("kubectl_session", flat=True)) == ["new-run"]
    assert "intact: 2 events #4..#5, starting from checkpoint through #3" in verify()
    assert "intact" in verify("--anchor", f"3:{trail[2].hash}", "--anchor", f"1:{trail[0].hash}")

    (later,) = append(at(0))
    assert later.seq == 6 and later.prev_hash == trail[4].hash
    assert "intact: 3 events #4..#6" in verify()


def test_pruning_everything_leaves_a_chain_that_continues_from_the_checkpoint(tmp_path):
    old = append(at(400), at(399))
    run("--days", "30", "--archive", str(tmp_path / "a.jsonl"))
    assert not AuditEvent.objects.exists() and not Session.objects.exists()
    assert "no events (starting from checkpoint through #2)" in verify()
    (new,) = append(at(0))
    assert (new.seq, new.prev_hash) == (3, old[1].hash)
    assert "intact: 1 event #3..#3, starting from checkpoint through #2" in verify()


def test_a_forged_checkpoint_is_detected(trail):
    Checkpoint.objects.create(
        through_seq=2, through_hash=trail[1].hash, events_pruned=2, archive_sha256="0" * 64,
        created_at=timezone.now(), signature="forged",
    )
    with pytest.raises(CommandError, match="checkpoint through #2 has an invalid signature"):
        verify()


def test_a_broken_chain_is_not_pruned(trail, tmp_path):
    with tampering("audit_auditevent") as cursor:
        cursor.execute("UPDATE audit_auditevent SET verb = 'delete' WHERE seq = 2")
    with pytest.raises(CommandError, match="does not verify.*#2"):
        run("--days", "365", "--archive", str(tmp_path / "a.jsonl"))
    assert AuditEvent.objects.count() == 5 and not Checkpoint.objects.exists()
    assert not (tmp_path / "a.jsonl").exists()


def test_archive_is_required_and_never_overwritten(trail, tmp_path):
    with pytest.raises(CommandError, match="--archive"):
        run("--days", "365")
    existing = tmp_path / "a.jsonl"
    existing.write_text("earlier archive\n")
    with pytest.raises(CommandError, match="cannot write the archive"):
        run("--days", "365", "--archive", str(existing))
    assert existing.read_text() == "earlier archive\n"
    assert AuditEvent.objects.count() == 5


def test_dry_run_and_nothing_to_prune(trail, tmp_path, settings):
    assert "would prune 3 events through #3" in run("--days", "365", "--dry-run")
    assert "no events older than 500 days" in run("--days", "500", "--archive", str(tmp_path / "a"))
    settings.AIRLOCK_AUDIT_RETENTION_DAYS = 0
    assert "retention is off" in run()
    settings.AIRLOCK_AUDIT_RETENTION_DAYS = 365
    assert "would prune 3" in run("--dry-run")
    assert AuditEvent.objects.count() == 5


def test_a_second_prune_moves_the_checkpoint_forward(trail, tmp_path):
    run("--days", "399", "--archive", str(tmp_path / "1.jsonl"))
    assert list(AuditEvent.objects.values_list("seq", flat=True)) == [3, 4, 5]
    run("--days", "365", "--archive", str(tmp_path / "2.jsonl"))
    assert list(Checkpoint.objects.values_list("through_seq", flat=True)) == [2, 3]
    assert "starting from checkpoint through #3" in verify()
