"""The recorder on the gateway's hot path: durable begin, nothing lost under load or at shutdown."""

import asyncio
import concurrent.futures
import threading
import time
import uuid

import pytest
from django.db import OperationalError, connections

from audit import chain
from audit.models import AuditEvent, Recording, Session
from audit.recorder import AuditUnavailable, Recorder, RecorderClosed
from audit.tests.factories import event
from audit.tests.test_channel import socket_dir, stand_in, until  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db(transaction=True)


async def db(fn):
    """Run a query in a fresh thread that closes its connection (the test database is dropped later)."""

    def run():
        try:
            return fn()
        finally:
            connections.close_all()

    return await asyncio.to_thread(run)


async def stored_ids(stage: str = "ResponseComplete") -> list[str]:
    return await db(lambda: [str(a) for a in AuditEvent.objects.filter(stage=stage).values_list("audit_id", flat=True)])


async def chain_ok() -> bool:
    return await db(lambda: chain.verify_chain().ok)


async def test_concurrent_finishes_record_exactly_one_row_per_request():
    recorder = Recorder(queue_size=32, batch_size=25)
    sent: list[str] = []

    async def client(n: int):
        for i in range(10):
            e = event(n + i / 100)
            sent.append(str(e["audit_id"]))
            await recorder.finish(e)

    await asyncio.gather(*(client(n) for n in range(40)))
    await recorder.flush()
    assert recorder.pending == 0
    ids = await stored_ids()
    assert len(ids) == 400
    assert sorted(ids) == sorted(sent)
    assert await chain_ok()
    await recorder.aclose()


async def test_shutdown_writes_every_pending_event():
    recorder = Recorder(queue_size=1000, batch_size=50)
    sent = []
    for i in range(300):
        e = event(i)
        sent.append(str(e["audit_id"]))
        await recorder.finish(e)
    assert recorder.pending == 300  # nothing written yet: the writer has not had a turn
    await recorder.aclose()
    assert sorted(await stored_ids()) == sorted(sent)
    assert await chain_ok()
    with pytest.raises(RecorderClosed):
        await recorder.finish(event(0))
    with pytest.raises(RecorderClosed):
        await recorder.begin(event(0, stage="RequestReceived"))
    await recorder.aclose()


async def test_a_full_queue_makes_finish_wait_instead_of_dropping():
    recorder = Recorder(queue_size=2, batch_size=1)
    gate = threading.Event()
    write = recorder._write

    def gated(batch):
        gate.wait(30)
        write(batch)

    recorder._write = gated
    events = [event(i) for i in range(6)]
    for e in events[:3]:  # one taken by the (blocked) writer, two fill the queue
        await recorder.finish(e)
    await asyncio.sleep(0)
    waiting = asyncio.create_task(recorder.finish(events[3]))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    gate.set()
    await waiting
    for e in events[4:]:
        await recorder.finish(e)
    await recorder.aclose()
    assert sorted(await stored_ids()) == sorted(str(e["audit_id"]) for e in events)


async def test_begin_is_committed_before_it_returns():
    recorder = Recorder()
    received = event(0, stage="RequestReceived", verb="create", response_code=None, response_body=None)
    await recorder.begin(received)
    assert await stored_ids("RequestReceived") == [str(received["audit_id"])]
    await recorder.finish(dict(received, stage="ResponseComplete", response_code=201))
    await recorder.aclose()
    sessions = await db(lambda: set(AuditEvent.objects.values_list("session_id", flat=True)))
    assert len(sessions) == 1
    assert await db(Session.objects.count) == 1
    assert await chain_ok()


async def test_begin_fails_closed_when_the_trail_cannot_be_written(monkeypatch, caplog):
    def unavailable(batch, session_gap):
        raise OperationalError("could not connect to server: password=hunter2")

    monkeypatch.setattr(chain, "append", unavailable)
    recorder = Recorder()
    with pytest.raises(AuditUnavailable, match="not forwarded"):
        await recorder.begin(event(0, stage="RequestReceived"))
    assert "hunter2" not in caplog.text
    await recorder.aclose()


async def test_begin_waits_for_its_commit_as_long_as_the_audit_commit_setting_says(settings):
    """Not AIRLOCK_DB_WAIT_SECONDS, a lookup's bound: under steady load a commit queued behind a batch of
    completions outlasted it, and writes got "audit unavailable" 503s with the database up (make soak)."""
    settings.AIRLOCK_DB_WAIT_SECONDS = 0.05
    settings.AIRLOCK_AUDIT_COMMIT_SECONDS = 30
    recorder = Recorder()
    write = recorder._write
    recorder._write = lambda batch: (time.sleep(0.5), write(batch))
    received = event(0, stage="RequestReceived")
    await recorder.begin(received)  # slower than a lookup may be, well within its own bound
    assert await stored_ids("RequestReceived") == [str(received["audit_id"])]
    await recorder.aclose()

    settings.AIRLOCK_DB_WAIT_SECONDS = 30
    settings.AIRLOCK_AUDIT_COMMIT_SECONDS = 0.1
    stuck = threading.Event()
    recorder = Recorder()
    recorder._write = lambda batch: stuck.wait(30)
    try:
        with pytest.raises(AuditUnavailable, match="not forwarded"):
            await asyncio.wait_for(recorder.begin(event(1, stage="RequestReceived")), 5)
    finally:
        stuck.set()
        await recorder.aclose()


async def test_a_begin_cancelled_as_the_writer_confirms_its_commit_is_cancelled(stand_in, socket_dir):  # noqa: F811
    """The agent goes away in the loop turn the audit writer's answer arrives: begin raises CancelledError, so
    the write is not forwarded.  (asyncio.wait_for on Python 3.11 returned instead, and it was forwarded.)"""
    recorder = Recorder(journal_dir=socket_dir, writer="process", writer_socket=stand_in.path, spawn_writer=False)
    await recorder.start()
    acked = recorder._channel.on_acked
    recorder._channel.on_acked = lambda entries: (acked(entries), begun.cancel())
    write = event(0, stage="RequestReceived", verb="create")
    begun = asyncio.ensure_future(recorder.begin(write))
    try:
        await until(lambda: stand_in.connections and stand_in.connections[0])
        stand_in.ack(1)
        with pytest.raises(asyncio.CancelledError):
            await begun
        assert write["audit_id"] not in recorder._durable
    finally:
        await recorder.aclose(0.1)


async def test_a_begin_cancelled_as_the_writer_thread_answers_is_cancelled():
    """The thread writer's answer reaches the loop in the turn the request is cancelled: CancelledError."""
    recorder = Recorder()
    answer, asked = concurrent.futures.Future(), []
    recorder._writer.submit = lambda fn, *args: (asked.append(fn), answer)[1]
    write = event(0, stage="RequestReceived", verb="create")
    begun = asyncio.ensure_future(recorder.begin(write))
    try:
        while not asked:
            await asyncio.sleep(0)
        answer.set_result(None)  # as from the writer thread: the answer is queued for the next turn...
        asyncio.get_running_loop().call_soon(begun.cancel)  # ...and so is the cancellation
        with pytest.raises(asyncio.CancelledError):
            await begun
        assert write["audit_id"] not in recorder._durable
    finally:
        await recorder.aclose()


async def test_a_failed_batch_is_retried_until_written(monkeypatch):
    append = chain.append
    failures = []

    def flaky(batch, session_gap):
        if len(failures) < 2:
            failures.append(len(batch))
            raise OperationalError("database restarting")
        return append(batch, session_gap=session_gap)

    monkeypatch.setattr(chain, "append", flaky)
    recorder = Recorder(retry_delay=0.01)
    events = [event(i) for i in range(5)]
    for e in events:
        await recorder.finish(e)
    await recorder.flush()
    assert failures
    assert sorted(await stored_ids()) == sorted(str(e["audit_id"]) for e in events)
    await recorder.aclose()


async def test_completion_events_with_absurd_values_are_recorded_not_dropped():
    """Out-of-range values are clamped and named; the event is written (PostgreSQL's int32 columns too)."""
    recorder = Recorder()
    absurd = event(0, response_code=9999, bytes_out=2**70, latency_ms=float("inf"), audit_id="not-a-uuid",
                   recording={"kind": "exec", "pod": "web", "asciicast": "x\n", "exit_code": 2**40,
                              "width": 10**9, "duration_s": -1})
    await recorder.finish(absurd)
    await recorder.begin(event(1, stage="RequestReceived", verb="create", bytes_in=-1, password="x"))
    await asyncio.wait_for(recorder.flush(), 30)
    rows = await db(lambda: list(AuditEvent.objects.order_by("seq").values_list("stage", "response_code", "clamped")))
    assert sorted(rows) == [
        ("RequestReceived", 200, ["bytes_in", "unknown field password"]),
        ("ResponseComplete", 599, ["audit_id", "bytes_out", "latency_ms", "recording.duration_s",
                                   "recording.exit_code", "recording.width", "response_code"]),
    ]
    assert await db(lambda: Recording.objects.get().exit_code) == 2**31 - 1
    assert await chain_ok()
    await recorder.aclose()


async def test_cancelled_finish_still_queues_its_event():
    recorder = Recorder(queue_size=1, batch_size=1)
    gate = threading.Event()
    write = recorder._write
    recorder._write = lambda batch: (gate.wait(30), write(batch))
    first, second, third = event(0), event(1), event(2)
    await recorder.finish(first)
    await asyncio.sleep(0)  # the writer takes the first event and blocks
    await recorder.finish(second)  # fills the queue
    waiting = asyncio.create_task(recorder.finish(third))
    await asyncio.sleep(0)
    waiting.cancel()
    gate.set()
    await recorder.aclose()
    assert sorted(await stored_ids()) == sorted(str(e["audit_id"]) for e in (first, second, third))


def test_settings_configure_the_recorder(settings):
    settings.AIRLOCK_AUDIT_SESSION_GAP_MINUTES = 2
    settings.AIRLOCK_AUDIT_MAX_BODY_BYTES = 10
    recorder = Recorder()
    assert recorder.session_gap.total_seconds() == 120
    prepared = recorder.prepare(event(0, response_body=b"x" * 100, audit_id=uuid.uuid4()))
    assert prepared.fields["response_body"] == b"x" * 10
    assert prepared.fields["response_body_size"] == 100
    recorder._writer.stop()
