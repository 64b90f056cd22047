"""The audit journal: what a killed gateway process leaves behind is replayed once, completely.

A dead process is a real one: a forked child writes its journal and SIGKILLs itself, so its
lock is released by the kernel exactly as after a crash or an OOM kill.
"""

import asyncio
import io
import os
import shutil
import signal
import subprocess
import sys
import threading
import uuid
import zlib
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connections

from audit import chain, journal
from audit.events import prepare
from audit.models import AuditEvent
from audit.recorder import AuditUnavailable, Recorder
from audit.tasks import recover_journals
from audit.tests.factories import GAP, append, event

pytestmark = pytest.mark.django_db(transaction=True)

LIMITS = {"max_body": 65536, "max_recording": 1 << 20}
ROOT = Path(__file__).resolve().parents[2]


def prepared(e: dict):
    return prepare(e, **LIMITS)


def recover(directory):
    return journal.recover(directory, session_gap=GAP, batch_size=3, **LIMITS)


def killed(directory, script, segment_bytes=1 << 20):
    """Run ``script(journal)`` in a child process that then dies by SIGKILL; returns its segments."""
    pid = os.fork()
    if pid == 0:
        try:
            script(journal.Journal(directory, segment_bytes=segment_bytes))
        except BaseException:
            os._exit(1)
        os.kill(os.getpid(), signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    return sorted(directory.glob("*.journal"))


def completions():
    """audit id -> (response code, reason) of every ResponseComplete row; fails on a duplicate."""
    rows = list(AuditEvent.objects.filter(stage="ResponseComplete").values_list("audit_id", "response_code",
                                                                                 "response_reason"))
    by_id = {str(a): (code, reason) for a, code, reason in rows}
    assert len(by_id) == len(rows), "a request has two completion events"
    return by_id


def test_replay_appends_completions_and_closes_crashed_requests_once(tmp_path):
    read_done = event(0)
    read_open = event(1, stage="RequestReceived", response_code=None, response_body=None)
    write_open = event(2, stage="RequestReceived", verb="delete", response_code=None, response_body=None)
    write_done = event(3, stage="RequestReceived", verb="create", response_code=None, response_body=None)
    write_done_complete = dict(write_done, stage="ResponseComplete", response_code=201)
    # What the live process had committed before it died: both writes' RequestReceived, one completion.
    append(write_open, write_done, write_done_complete)

    def work(j):
        j.received(read_done["audit_id"], dict(read_done, stage="RequestReceived"))
        j.received(read_open["audit_id"], read_open)
        j.received(write_open["audit_id"], prepared(write_open))
        j.received(write_done["audit_id"], prepared(write_done))
        j.completed(prepared(read_done))
        j.completed(prepared(write_done_complete))

    segments = killed(tmp_path, work)
    assert len(segments) == 1
    kept = tmp_path / "copy"
    shutil.copy(segments[0], kept)

    result = recover(tmp_path)
    assert (result.segments, result.completions, result.crashed) == (1, 2, 2)
    assert not list(tmp_path.glob("*.journal"))
    done = completions()
    assert done == {
        str(read_done["audit_id"]): (200, ""),
        str(read_open["audit_id"]): (None, journal.CRASHED_REASON),
        str(write_open["audit_id"]): (None, journal.CRASHED_REASON),
        str(write_done["audit_id"]): (201, ""),
    }
    crashed = AuditEvent.objects.get(audit_id=read_open["audit_id"])
    assert crashed.user_username == "agent-1" and crashed.request_uri == read_open["request_uri"]
    assert "gateway process ended" in crashed.response_message
    # The live process's write and its crashed completion share the session.
    write_rows = AuditEvent.objects.filter(audit_id=write_open["audit_id"]).values_list("stage", "session_id")
    assert len({session for _, session in write_rows}) == 1 and len(write_rows) == 2
    events = AuditEvent.objects.count()

    # Dying again after committing, before removing the segment: replaying it adds nothing.
    shutil.copy(kept, segments[0])
    again = recover(tmp_path)
    assert again.segments == 1 and again.appended == 0
    assert AuditEvent.objects.count() == events
    assert completions() == done
    assert chain.verify_chain().ok


def test_a_running_process_journal_is_left_alone(tmp_path):
    live = journal.Journal(tmp_path, segment_bytes=1 << 20)
    request = event(0, stage="RequestReceived")
    live.received(request["audit_id"], request)
    result = recover(tmp_path)
    assert result.skipped_live == 1 and result.segments == 0
    assert AuditEvent.objects.count() == 0
    assert journal.in_flight(tmp_path) == {str(request["audit_id"])}
    live.completed(prepared(dict(request, stage="ResponseComplete")))
    assert journal.in_flight(tmp_path) == set()
    live.close()


def test_a_torn_last_record_counts_as_never_written(tmp_path):
    request = event(0)

    def work(j):
        j.received(request["audit_id"], dict(request, stage="RequestReceived"))
        j.completed(prepared(request))

    [segment] = killed(tmp_path, work)
    with open(segment, "r+b") as torn:
        torn.truncate(segment.stat().st_size - 7)  # the kill landed inside the completion's write
    result = recover(tmp_path)
    assert (result.completions, result.crashed) == (0, 1)
    assert completions() == {str(request["audit_id"]): (None, journal.CRASHED_REASON)}


def test_rotation_keeps_only_what_a_recovery_needs(tmp_path):
    in_flight, uncommitted, committed = event(0), event(1), event(2)

    def work(j):
        for e in (in_flight, uncommitted, committed):
            j.received(e["audit_id"], dict(e, stage="RequestReceived"))
        j.completed(prepared(uncommitted))
        j.completed(prepared(committed))
        j.committed([prepared(committed)])
        assert j.needs_rotation
        old = j.path
        j.retire(j.rotate())
        assert not old.exists() and j.path != old

    [segment] = killed(tmp_path, work, segment_bytes=100)
    records = list(journal.decode(segment.read_bytes()))
    assert [(r["k"], str(r["e"]["audit_id"])) for r in records] == [
        ("R", str(in_flight["audit_id"])), ("C", str(uncommitted["audit_id"]))]
    recover(tmp_path)
    assert completions() == {
        str(in_flight["audit_id"]): (None, journal.CRASHED_REASON),
        str(uncommitted["audit_id"]): (200, ""),
    }


def test_a_rotation_cut_short_by_the_crash_is_replayed_as_one_process(tmp_path):
    """Both segments are left: the older one's open request completed in the newer one."""
    request = event(0)
    older = tmp_path / "older"

    def work(j):
        j.received(request["audit_id"], dict(request, stage="RequestReceived"))
        shutil.copy(j.path, older)
        j.retire(j.rotate())
        j.completed(prepared(request))

    [newer] = killed(tmp_path, work, segment_bytes=0)
    older.rename(newer.with_name(newer.name.replace(".000002.", ".000001.")))
    result = recover(tmp_path)
    assert (result.segments, result.completions, result.crashed) == (2, 1, 0)
    assert completions() == {str(request["audit_id"]): (200, "")}


async def db(fn):
    def run():
        try:
            return fn()
        finally:
            connections.close_all()

    return await asyncio.to_thread(run)


async def test_the_recorder_journals_before_it_queues_and_removes_the_journal_when_done(tmp_path):
    recorder = Recorder(journal_dir=tmp_path, batch_size=1)
    gate = threading.Event()
    write = recorder._write
    recorder._write = lambda batch: (gate.wait(30), write(batch))
    read = event(0)
    recorder.received(dict(read, stage="RequestReceived"))
    await recorder.finish(read)
    [segment] = tmp_path.glob("*.journal")
    kinds = [(r["k"], str(r["e"]["audit_id"])) for r in journal.decode(segment.read_bytes())]
    assert kinds == [("R", str(read["audit_id"])), ("C", str(read["audit_id"]))]
    assert await db(AuditEvent.objects.count) == 0  # only the journal has it so far
    gate.set()
    await recorder.aclose()
    assert await db(AuditEvent.objects.count) == 1
    assert not list(tmp_path.glob("*.journal"))
    with pytest.raises(AuditUnavailable, match="shutting down"):
        recorder.received(event(1, stage="RequestReceived"))


async def test_begin_is_recorded_once_per_audit_id(caplog):
    recorder = Recorder()
    held = event(0, stage="RequestReceived", verb="delete", response_code=None, review_id="7")
    await recorder.begin(held)
    await recorder.begin(dict(held, review_id=None))  # the same request, forwarded once approved
    await recorder.finish(dict(held, stage="ResponseComplete", response_code=200))
    await recorder.aclose()
    rows = await db(lambda: list(AuditEvent.objects.order_by("seq").values_list("stage", "review_id")))
    assert rows == [("RequestReceived", "7"), ("ResponseComplete", "7")]
    assert "already recorded" not in caplog.text


async def test_start_replays_dead_processes_journals(tmp_path):
    request = event(0, stage="RequestReceived", audit_id=uuid.uuid4())
    killed(tmp_path, lambda j: j.received(request["audit_id"], request))
    recorder = Recorder(journal_dir=tmp_path)
    await recorder.start()
    assert await db(completions) == {str(request["audit_id"]): (None, journal.CRASHED_REASON)}
    [own] = tmp_path.glob("*.journal")  # the recorder's own, held until it shuts down
    assert own == recorder.journal.path
    await recorder.aclose()
    assert not list(tmp_path.glob("*.journal"))


async def test_the_recorder_fsyncs_and_rotates_its_journal_while_it_writes(tmp_path):
    recorder = Recorder(journal_dir=tmp_path, batch_size=5, sync_interval=0.01, segment_bytes=4096)
    events = [event(i) for i in range(60)]
    first = None
    for e in events:
        recorder.received(dict(e, stage="RequestReceived"))
        await recorder.finish(e)
        first = first or recorder.journal.path
        await asyncio.sleep(0.002)
    await recorder.flush()
    for _ in range(1000):  # the maintenance task runs every 10 ms
        # Until the segment a rotation replaced is retired (after the new one's fsync, on a thread), both
        # are on disk: wait for that too, or a slow fsync on a busy machine finds two.
        if (recorder.journal.path != first and not recorder.journal.dirty
                and len(list(tmp_path.glob("*.journal"))) == 1):
            break
        await asyncio.sleep(0.01)
    assert recorder.journal.path != first and not first.exists()  # rotated, the old segment removed
    assert not recorder.journal.dirty  # fsynced
    assert len(list(tmp_path.glob("*.journal"))) == 1
    await recorder.aclose()
    assert await db(lambda: AuditEvent.objects.count()) == 60
    assert not list(tmp_path.glob("*.journal"))


SHUTDOWN = """
import asyncio, sys, threading, django
django.setup()
from audit.recorder import Recorder
from audit.tests.factories import event

async def main():
    recorder = Recorder(journal_dir=sys.argv[1])
    recorder._write = lambda batch: threading.Event().wait()  # the database took the bytes and never answered
    for n in range(3):
        recorder.received(event(n, stage="RequestReceived", audit_id=sys.argv[2 + n]))
        await recorder.finish(event(n, audit_id=sys.argv[2 + n]))
    recorder.received(event(9, stage="RequestReceived", audit_id=sys.argv[5]))  # still being answered
    await recorder.aclose()  # AIRLOCK_DRAIN_SECONDS

asyncio.run(main())
"""


def test_a_shutdown_with_a_database_that_does_not_answer_ends_within_its_bound_and_loses_nothing(tmp_path):
    """The gateway process ends (lifespan shutdown, then interpreter exit) although the audit writer is
    stuck on the database; the next start writes what the journal kept."""
    ids = [str(uuid.uuid4()) for _ in range(4)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "AIRLOCK_"))}
    env.update(DJANGO_SETTINGS_MODULE="airlock.settings", AIRLOCK_DRAIN_SECONDS="0.5",
               AIRLOCK_VAR_DIR=str(tmp_path / "var"))
    ended = subprocess.run([sys.executable, "-c", SHUTDOWN, str(tmp_path / "journal"), *ids], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60)  # a hang fails here
    assert ended.returncode == 0, ended.stderr
    assert "3 events not committed within 0.5s" in ended.stderr
    assert len(list((tmp_path / "journal").glob("*.journal"))) == 1  # kept
    result = recover(tmp_path / "journal")
    assert (result.completions, result.crashed) == (3, 1)
    assert completions() == {**{i: (200, "") for i in ids[:3]}, ids[3]: (None, journal.CRASHED_REASON)}
    assert chain.verify_chain().ok


def test_recover_audit_replays_a_dead_pods_journal_and_the_beat_task_the_configured_one(tmp_path, settings):
    pod, configured = tmp_path / "pod-volume", tmp_path / "configured"
    first, second = event(0, stage="RequestReceived"), event(1, stage="RequestReceived")
    killed(pod, lambda j: j.received(first["audit_id"], first))
    killed(configured, lambda j: j.received(second["audit_id"], second))
    out = io.StringIO()
    call_command("recover_audit", "--journal-dir", str(pod), stdout=out)
    assert "replayed: 1; their completions: 0, requests closed as crashed: 1" in out.getvalue()
    settings.AIRLOCK_AUDIT_JOURNAL_DIR = configured
    assert recover_journals() == 1
    assert completions() == {str(first["audit_id"]): (None, journal.CRASHED_REASON),
                             str(second["audit_id"]): (None, journal.CRASHED_REASON)}


async def test_an_unwritable_journal_refuses_requests_but_keeps_their_completions(tmp_path, caplog):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    recorder = Recorder(journal_dir=blocked)
    refused = event(0, response_code=503)
    with pytest.raises(AuditUnavailable, match="journal is unavailable"):
        recorder.received(dict(refused, stage="RequestReceived"))
    await recorder.finish(refused)  # the 503's completion: held in memory, still written
    with pytest.raises(AuditUnavailable, match="not forwarded"):
        await recorder.begin(event(1, stage="RequestReceived", verb="delete"))
    await recorder.aclose()
    assert await db(completions) == {str(refused["audit_id"]): (503, "")}
    assert "cannot be written" in caplog.text


def test_records_are_the_msgpack_of_older_versions_and_older_records_still_decode():
    """The journal's bytes are what msgpack.packb(default=str, datetime=True) wrote before (older
    journals replay, and a writer of either version reads either), a raw event with an integer
    beyond 64 bits is still journaled, and a record that is not msgpack ends the segment."""
    import msgpack

    raw = dict(event(0), response_code=2**70)
    for kind, body in ((journal.COMPLETED, prepared(event(1))), (journal.RECEIVED, raw)):
        record = journal.encode(kind, body)
        payload = ({"k": kind, "p": True, "e": body.fields, "r": body.recording}
                   if kind == journal.COMPLETED else {"k": kind, "p": False, "e": body})
        old = msgpack.packb(payload, default=str, datetime=True)
        assert record == journal.HEADER.pack(len(old), zlib.crc32(old)) + old
        [decoded] = journal.decode(record)
        assert decoded == msgpack.unpackb(old, timestamp=3, strict_map_key=False)
    broken = journal.frame(b"\x81\x92\x01\x02\x03")  # a map keyed by a list
    assert list(journal.decode(journal.encode(journal.RECEIVED, raw) + broken)) == [
        msgpack.unpackb(journal.encode(journal.RECEIVED, raw)[journal.HEADER.size:], timestamp=3,
                        strict_map_key=False)]
