"""The audit writer process (AIRLOCK_AUDIT_WRITER=process): serving processes and the writer may each
die at any moment; nothing journaled is lost or stored twice, and a write is never forwarded without
its event committed.

Every process here is a real one: the writer is ``manage.py audit_writer`` on the test database, and
a serving process that dies is a child that SIGKILLs itself.
"""

import asyncio
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection, connections
from prometheus_client import REGISTRY

from audit import chain, journal
from audit.models import Anchor, AuditEvent
from audit.recorder import AuditUnavailable, Recorder
from audit.tests.factories import event

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def journal_dir():
    """A short path: a Unix socket's path has at most 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="aw-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def process_env(**extra) -> dict:
    """The environment of another process on the test database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRLOCK_", "DATABASE_URL", "REDIS_URL"))}
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        env["AIRLOCK_SQLITE_PATH"] = db["NAME"]
    else:
        password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
        env["DATABASE_URL"] = f"postgres://{db['USER']}{password}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"
    env.update(DJANGO_SETTINGS_MODULE="airlock.settings", PYTHONPATH=str(ROOT),
               AIRLOCK_AUDIT_KEYS=",".join(settings.AIRLOCK_AUDIT_KEYS), AIRLOCK_AUDIT_RECOVER_SECONDS="1",
               AIRLOCK_VAR_DIR=str(Path(tempfile.gettempdir()) / f"airlock-writer-test-{os.getpid()}"))
    env.update(extra)
    return env


STARTED: list["WriterProcess"] = []


@pytest.fixture(autouse=True)
def no_writer_left_behind():
    """A failing test leaves no writer running (it would serve forever)."""
    yield
    while STARTED:
        writer = STARTED.pop()
        if writer.proc.poll() is None:
            writer.kill()


class WriterProcess:
    def __init__(self, directory: Path, **env):
        self.directory = directory
        self.socket = directory / "writer.sock"
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "audit_writer", "--journal-dir", str(directory), "--batch-size", "50"],
            cwd=ROOT, env=process_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        STARTED.append(self)
        deadline = time.monotonic() + 60
        while not self.socket.exists():
            assert self.proc.poll() is None, self.proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the writer did not start"
            time.sleep(0.05)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self, timeout: float = 30) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out + err


def recorder(directory: Path, **kwargs) -> Recorder:
    return Recorder(journal_dir=directory, writer="process", spawn_writer=False, sync_interval=0.05, **kwargs)


def rows() -> list[tuple[str, str, int | None]]:
    """(audit id, stage, response code) of every stored event, in chain order."""
    try:
        return [(str(a), s, c) for a, s, c in AuditEvent.objects.order_by("seq").values_list(
            "audit_id", "stage", "response_code")]
    finally:
        connections.close_all()


def verified() -> bool:
    try:
        return chain.verify_chain().ok
    finally:
        connections.close_all()


async def eventually(check, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while True:
        result = await asyncio.to_thread(check)
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.1)


GATEWAY = """
import asyncio, os, signal, sys, uuid, django
django.setup()
from audit.recorder import Recorder
from audit.tests.factories import event

async def main():
    directory, ids = sys.argv[1], sys.argv[2:]
    recorder = Recorder(journal_dir=directory, writer="process", spawn_writer=False, sync_interval=0)
    await recorder.start()
    write = event(0, stage="RequestReceived", verb="create", audit_id=ids[0])
    recorder.received(write)
    await recorder.begin(write)  # committed: the write would be forwarded now
    for n, audit_id in enumerate(ids[1:-1], 1):
        recorder.received(event(n, stage="RequestReceived", audit_id=audit_id))
        await recorder.finish(event(n, audit_id=audit_id))
    recorder.received(event(99, stage="RequestReceived", audit_id=ids[-1]))  # still being answered
    os.kill(os.getpid(), signal.SIGKILL)  # no flush, no shutdown: whatever the writer has not committed is lost here

asyncio.run(main())
"""


async def test_a_serving_process_killed_after_journaling_loses_nothing(journal_dir):
    writer = WriterProcess(journal_dir)
    try:
        ids = [str(uuid.uuid4()) for _ in range(42)]
        killed = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", GATEWAY, str(journal_dir), *ids],
                                         cwd=ROOT, env=process_env(), capture_output=True, text=True, timeout=120)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]

        def complete():
            return len([r for r in rows() if r[1] == "ResponseComplete"]) >= len(ids)

        assert await eventually(complete), await asyncio.to_thread(rows)

        def check():
            stored = rows()
            completions = {audit_id: code for audit_id, stage, code in stored if stage == "ResponseComplete"}
            assert len(completions) == len(ids) == len([r for r in stored if r[1] == "ResponseComplete"])
            assert [r[:2] for r in stored if r[1] == "RequestReceived"] == [(ids[0], "RequestReceived")]
            assert all(completions[i] == 200 for i in ids[1:-1])
            # The write (its RequestReceived committed) and the request still being answered: closed as crashed.
            crashed = dict(AuditEvent.objects.filter(stage="ResponseComplete", audit_id__in=[ids[0], ids[-1]])
                           .values_list("audit_id", "response_reason"))
            assert set(crashed.values()) == {journal.CRASHED_REASON}
            assert chain.verify_chain().ok
            connections.close_all()

        await asyncio.to_thread(check)
        assert not list(journal_dir.glob("*.journal"))  # replayed and removed
    finally:
        writer.stop()


async def test_the_writer_killed_and_restarted_loses_and_duplicates_nothing(journal_dir):
    writer = WriterProcess(journal_dir)
    audit = recorder(journal_dir)
    await audit.start()
    queue = REGISTRY.get_sample_value("airlock_audit_queue_depth") or 0.0
    batches = REGISTRY.get_sample_value("airlock_audit_append_seconds_count", {"kind": "batch"}) or 0.0
    sent = []
    try:
        for n in range(300):
            if n == 100:
                await eventually(lambda: len(rows()) >= 50)  # some committed, some in flight
                writer.kill()
            if n == 200:
                writer = WriterProcess(journal_dir)
            e = event(n)
            sent.append(str(e["audit_id"]))
            await audit.finish(e)
        await asyncio.wait_for(audit.flush(), 60)
        assert audit.pending == 0
        await audit.aclose()
    finally:
        writer.stop()
    stored = await asyncio.to_thread(rows)
    assert sorted(r[0] for r in stored) == sorted(sent)  # every one, once
    assert await asyncio.to_thread(verified)
    assert REGISTRY.get_sample_value("airlock_audit_queue_depth") == queue
    assert REGISTRY.get_sample_value("airlock_audit_append_seconds_count", {"kind": "batch"}) > batches
    assert not list(journal_dir.glob("*.journal"))


async def test_a_write_is_refused_when_no_writer_can_commit_its_event(journal_dir):
    audit = recorder(journal_dir, commit_wait=0.5)
    write = event(0, stage="RequestReceived", verb="delete", response_code=None, response_body=None)
    started = time.monotonic()
    with pytest.raises(AuditUnavailable, match="not forwarded"):
        await audit.begin(write)  # nothing listens
    assert time.monotonic() - started < 5

    # A writer whose database refuses: the write is refused at once, not after the wait.
    broken = WriterProcess(journal_dir, AIRLOCK_SQLITE_PATH="/nonexistent/airlock.sqlite3",
                           DATABASE_URL="postgres://nobody@127.0.0.1:9/none?connect_timeout=1")
    audit.commit_wait = 30
    second = event(1, stage="RequestReceived", verb="delete", response_code=None, response_body=None)
    started = time.monotonic()
    with pytest.raises(AuditUnavailable, match="not forwarded"):
        await audit.begin(second)
    assert time.monotonic() - started < 20
    await audit.finish(dict(second, stage="ResponseComplete", response_code=503))  # the refusal's own event
    assert await asyncio.to_thread(rows) == []
    broken.kill()

    # A working writer later: what the journal held is committed, the refusal's completion after its request.
    writer = WriterProcess(journal_dir)
    try:
        await asyncio.wait_for(audit.flush(), 60)
        await audit.aclose()
    finally:
        writer.stop()
    stored = await asyncio.to_thread(rows)
    mine = [(stage, code) for audit_id, stage, code in stored if audit_id == str(second["audit_id"])]
    assert mine == [("RequestReceived", None), ("ResponseComplete", 503)]


async def test_a_stopped_writer_makes_finish_wait_and_a_sigterm_drains_and_anchors(journal_dir):
    writer = WriterProcess(journal_dir)
    audit = recorder(journal_dir, queue_size=5)
    await audit.start()
    os.kill(writer.proc.pid, signal.SIGSTOP)
    try:
        for n in range(5):
            await asyncio.wait_for(audit.finish(event(n)), 5)
        waiting = asyncio.create_task(audit.finish(event(5)))
        await asyncio.sleep(0.3)
        assert not waiting.done()  # back-pressure: waits, drops nothing
    finally:
        os.kill(writer.proc.pid, signal.SIGCONT)
    await asyncio.wait_for(waiting, 30)
    writer.proc.send_signal(signal.SIGTERM)  # the writer keeps serving its client until it leaves
    await asyncio.sleep(0.2)
    assert writer.proc.poll() is None
    await audit.finish(event(6))
    await asyncio.wait_for(audit.aclose(), 30)  # drained, then the head anchored
    code, output = writer.stop()
    assert code == 0, output
    stored = await asyncio.to_thread(rows)
    assert len(stored) == 7
    def newest_anchor():
        try:
            return Anchor.objects.order_by("-seq").values_list("seq", flat=True).first()
        finally:
            connections.close_all()

    assert await asyncio.to_thread(newest_anchor) == 7


async def test_gateway_processes_start_one_writer_when_none_runs(journal_dir, monkeypatch, settings):
    """AIRLOCK_AUDIT_WRITER_SPAWN: the first gateway process that finds no writer starts it; two starting at
    once leave one writer (the directory's lock), which serves both and exits once they are gone."""
    for name, value in process_env(AIRLOCK_AUDIT_WRITER_IDLE_SECONDS="1").items():
        monkeypatch.setenv(name, value)
    settings.AIRLOCK_AUDIT_WRITER_IDLE_SECONDS = 1
    first = Recorder(journal_dir=journal_dir, writer="process", spawn_writer=True, sync_interval=0.05)
    second = Recorder(journal_dir=journal_dir, writer="process", spawn_writer=True, sync_interval=0.05)
    await asyncio.gather(first.start(), second.start())
    children = [r._channel._child for r in (first, second) if r._channel._child is not None]
    assert children  # started by a gateway process, nobody else
    sent = []
    for n in range(20):
        e = event(n)
        sent.append(str(e["audit_id"]))
        await (first if n % 2 else second).finish(e)
    await asyncio.wait_for(asyncio.gather(first.flush(), second.flush()), 30)
    # One writer serves both (a second one started at the same moment finds the directory taken and ends).
    assert await eventually(lambda: sum(child.poll() is None for child in children) == 1, 30)
    await first.aclose()
    await second.aclose()
    for child in children:
        assert child.wait(30) == 0  # the spare one at once, the writer once idle
    assert sorted(r[0] for r in await asyncio.to_thread(rows)) == sorted(sent)
    assert await asyncio.to_thread(verified)


async def test_a_writer_that_lost_the_directory_to_another_is_reaped(journal_dir, monkeypatch):
    """Two gateway processes starting a writer at once: the one whose writer finds the directory's lock
    taken is served by the other's, never spawns again, and must not keep its ended child as a zombie."""
    from audit.channel import WriterChannel
    from audit.writer import LOCK_NAME

    for name, value in process_env().items():
        monkeypatch.setenv(name, value)
    held = os.open(journal_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the other process's writer
    channel = WriterChannel(journal_dir / "writer.sock", journal_dir, spawn=True, idle_exit=1,
                            on_acked=lambda done: None, on_failed=lambda failed: None)
    try:
        channel._spawn()
        pid = channel._child.pid

        # Gone from /proc, not merely ended (a zombie stays there); asking the child (poll, wait) would reap it here.
        assert await eventually(lambda: not os.path.exists(f"/proc/{pid}"), 30), \
            "the writer that lost the lock is still a zombie"
        assert channel._child.returncode == 0
    finally:
        os.close(held)


def test_the_writer_checks_its_connection_after_a_failed_append_not_before_every_one(journal_dir, monkeypatch):
    """close_old_connections() (and so Django's health-check round trip) before the first append, after
    a failed one and at most once a second otherwise, not before every append."""
    from audit import writer as writer_module

    checks = []
    monkeypatch.setattr(writer_module, "close_old_connections", lambda: checks.append(True))
    writer = writer_module.AuditWriter(journal_dir=journal_dir)
    batch = lambda: [journal.to_prepared(  # noqa: E731
        {"k": journal.COMPLETED, "p": False, "e": event(0)}, max_body=1024, max_recording=1024)]
    assert writer._append(batch()) == 1
    assert writer._append(batch()) == 1
    assert len(checks) == 1
    monkeypatch.setattr(chain, "append", lambda *args, **kwargs: (_ for _ in ()).throw(RuntimeError("gone")))
    with pytest.raises(RuntimeError):
        writer._append(batch())
    monkeypatch.undo()
    monkeypatch.setattr(writer_module, "close_old_connections", lambda: checks.append(True))
    assert writer._append(batch()) == 1
    assert len(checks) == 2  # not before the failed one (within the second), before the retry after it
    assert AuditEvent.objects.count() == 3


class _Client:
    """What the commit loop answers (audit.writer._Client's answer), for driving it without a socket."""

    def __init__(self):
        self.received = 0
        self.answers = []

    def answer(self, kind, n):
        self.answers.append((kind, n))


def _record(n: int, *, begin: bool = False) -> dict:
    stage = "RequestReceived" if begin else "ResponseComplete"
    return {"k": journal.RECEIVED if begin else journal.COMPLETED, "p": False, "e": event(n, stage=stage)}


async def _committing(journal_dir, monkeypatch, **kwargs):
    """A writer whose commit loop runs and whose batches are only counted (sizes in ``batches``)."""
    from audit import writer as writer_module

    writer = writer_module.AuditWriter(journal_dir=journal_dir, **kwargs)
    batches = []

    async def commit(batch):
        batches.append(len(batch))

    monkeypatch.setattr(writer, "_commit", commit)
    client = _Client()

    def take(*records):
        for record in records:
            client.received += 1
            writer._take(client, record)
        writer._work.set()

    return writer, asyncio.get_running_loop().create_task(writer._commit_loop()), take, batches


async def _until(check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return check()


async def test_events_nobody_waits_on_gather_and_a_begin_is_committed_at_once_with_them(journal_dir, monkeypatch):
    """Completions wait for company (one transaction for several at one request at a time); a write's
    RequestReceived, which its serving process waits on, ends the wait."""
    writer, loop_task, take, batches = await _committing(journal_dir, monkeypatch, gather_seconds=600)
    try:
        take(_record(1))
        await asyncio.sleep(0.2)
        take(_record(2))
        await asyncio.sleep(0.2)
        assert batches == []  # gathering: nothing waits on these two
        take(_record(3, begin=True))
        assert await _until(lambda: batches == [3])
    finally:
        loop_task.cancel()


async def test_gathering_ends_with_a_full_batch_or_a_stop(journal_dir, monkeypatch):
    writer, loop_task, take, batches = await _committing(journal_dir, monkeypatch, gather_seconds=600, batch_size=2)
    try:
        take(_record(1), _record(2))
        assert await _until(lambda: batches == [2])
        take(_record(3))
        await asyncio.sleep(0.2)
        assert batches == [2]
        writer.stop()
        assert await _until(lambda: batches == [2, 1])
    finally:
        loop_task.cancel()


async def test_without_gathering_each_arrival_is_committed_as_it_comes(journal_dir, monkeypatch):
    writer, loop_task, take, batches = await _committing(journal_dir, monkeypatch, gather_seconds=0)
    try:
        take(_record(1))
        assert await _until(lambda: batches == [1])
    finally:
        loop_task.cancel()


async def test_arrivals_that_end_no_gathering_do_not_wake_the_commit_loop(journal_dir, monkeypatch):
    """Each wake-up of a gathering commit loop cost the writer a task, a timer and a loop turn per
    chunk read: only what ends the gathering (a begin, a full batch, a stop) wakes it now."""
    from audit import writer as writer_module

    waits = []
    wait_at_most = writer_module.wait_at_most

    def counted(awaitable, seconds):
        waits.append(seconds)
        return wait_at_most(awaitable, seconds)

    monkeypatch.setattr(writer_module, "wait_at_most", counted)
    writer, loop_task, take, batches = await _committing(journal_dir, monkeypatch, gather_seconds=600)
    try:
        for n in range(5):
            take(_record(n))
            await asyncio.sleep(0.02)
        assert batches == [] and len(waits) == 1
        take(_record(5, begin=True))
        assert await _until(lambda: batches == [6])
    finally:
        loop_task.cancel()


async def test_completions_a_serving_process_held_when_it_was_killed_are_replayed(journal_dir):
    """AIRLOCK_AUDIT_CHANNEL_GATHER_MS holds completions in the serving process before they are sent:
    killed then, it has sent none of them; its journal has every one."""
    writer = WriterProcess(journal_dir)
    try:
        ids = [str(uuid.uuid4()) for _ in range(12)]
        killed = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", GATEWAY, str(journal_dir), *ids], cwd=ROOT,
            env=process_env(AIRLOCK_AUDIT_CHANNEL_GATHER_MS="600000"), capture_output=True, text=True, timeout=120)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]

        def complete():
            return len([r for r in rows() if r[1] == "ResponseComplete"]) >= len(ids)

        assert await eventually(complete), await asyncio.to_thread(rows)
        stored = await asyncio.to_thread(rows)
        assert sorted(r[0] for r in stored if r[1] == "ResponseComplete") == sorted(ids)  # each once
        assert [r[0] for r in stored if r[1] == "RequestReceived"] == [ids[0]]
        assert await asyncio.to_thread(verified)
    finally:
        writer.stop()


async def test_a_shutdown_sends_the_held_completions_at_once(journal_dir, settings):
    """A flush or a shutdown does not wait for the gathering time: what the channel holds goes now."""
    settings.AIRLOCK_AUDIT_CHANNEL_GATHER_MS = 600000
    writer = WriterProcess(journal_dir)
    audit = recorder(journal_dir)
    await audit.start()
    try:
        sent = []
        for n in range(5):
            e = event(n)
            sent.append(str(e["audit_id"]))
            await audit.finish(e)
        await asyncio.sleep(0.3)
        assert await asyncio.to_thread(rows) == []  # held
        await asyncio.wait_for(audit.aclose(), 20)
        assert audit.pending == 0
    finally:
        writer.stop()
    assert sorted(r[0] for r in await asyncio.to_thread(rows)) == sorted(sent)
    assert not list(journal_dir.glob("*.journal"))
