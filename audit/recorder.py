"""The gateway's audit recorder: no database work on the event loop, nothing recorded is lost.

* :meth:`Recorder.received` journals a request as it arrives and again before it is forwarded
  (audit.journal: one write(2) to this process's append-only file, no database), so even a
  killed process leaves a trace of every request it was handling.  If the journal cannot be
  written it raises :class:`AuditUnavailable` and the gateway must refuse the request.
* :meth:`Recorder.begin` is for mutating requests: it returns only once the ``RequestReceived``
  event is committed, so the gateway forwards nothing it has not recorded.  If the write
  fails, or is not committed within ``commit_wait`` seconds (``AIRLOCK_AUDIT_COMMIT_SECONDS``:
  a database that stopped answering does not close the connection, and its statement timeout
  runs on the server), it raises :class:`AuditUnavailable` and the gateway must refuse the
  request.  It is idempotent per audit id (a held request is recorded when the hold starts).
* :meth:`Recorder.finish` journals a completion event, then hands it to a bounded in-memory
  queue; a background task writes queued events in batches.  A full queue makes ``finish`` wait
  (back-pressure on the requests being recorded) instead of dropping events, and a failed batch
  is retried until it is written.
* :meth:`Recorder.start` (ASGI lifespan startup) replays dead processes' journals: their
  completions are written and their unfinished requests closed as "gateway crashed".
* :meth:`Recorder.flush` waits until everything queued is committed; :meth:`Recorder.aclose`
  (ASGI lifespan shutdown) refuses new events, flushes for at most ``AIRLOCK_DRAIN_SECONDS``,
  anchors the chain head (audit.anchors: the events of this process's last minutes are then
  covered by the anchor file too), removes the journal and releases the writer thread.  What a
  database that does not answer kept from being committed by then stays in the journal, which
  is then kept: the next start (or ``manage.py recover_audit``) writes it.

Where the database work happens (``AIRLOCK_AUDIT_WRITER``):

* ``process`` (production's default): in the pod's audit writer process (audit.writer), not here.
  ``begin`` and ``finish`` send the journal record they just wrote over the writer's socket
  (audit.channel) and the writer's answer says it is committed: ``begin`` returns then (still
  committed before forwarding; its record goes at once, with the completions the channel held for
  up to ``AIRLOCK_AUDIT_CHANNEL_GATHER_MS`` ahead of it), a completion leaves the queue then.  The
  queue is the records not yet confirmed (at most ``queue_size`` completions, then ``finish``
  waits); a broken connection is re-established (the writer started if nothing listens) and
  what was not confirmed is sent again.  Dead processes' journals are replayed by the writer.
* ``thread`` (development's default, and the tests'): on one dedicated daemon thread of this
  process, as a batch per transaction.

The journal is fsynced on another thread every ``sync_interval`` seconds.

Long because the two places the database work can happen share one contract with the gateway
(received, begin, finish, flush, aclose) and one journal; a reader compares them side by side.
"""

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections, connections

from audit import chain, journal
from audit.channel import Pending, WriterChannel
from audit.events import PreparedEvent, Record, prepare
from audit.models import AnchorReason
from audit.writer import DatabaseThread, socket_path_for
from runtime import metrics
from runtime.timeouts import wait_at_most

log = logging.getLogger(__name__)


class AuditUnavailable(Exception):
    """The audit trail could not record an event; the request must not go ahead."""


class RecorderClosed(RuntimeError):
    """An event arrived after shutdown began."""


class Recorder:
    def __init__(
        self,
        *,
        queue_size: int | None = None,
        batch_size: int | None = None,
        max_body: int | None = None,
        max_recording: int | None = None,
        session_gap: timedelta | None = None,
        retry_delay: float = 0.2,
        max_retry_delay: float = 10.0,
        journal_dir=None,
        sync_interval: float | None = None,
        segment_bytes: int | None = None,
        commit_wait: float | None = None,
        writer: str | None = None,
        writer_socket=None,
        spawn_writer: bool | None = None,
    ):
        self.queue_size = queue_size or settings.AIRLOCK_AUDIT_QUEUE_SIZE
        self.batch_size = batch_size or settings.AIRLOCK_AUDIT_BATCH_SIZE
        self.max_body = max_body if max_body is not None else settings.AIRLOCK_AUDIT_MAX_BODY_BYTES
        self.max_recording = (
            max_recording if max_recording is not None else settings.AIRLOCK_AUDIT_MAX_RECORDING_BYTES
        )
        self.session_gap = session_gap or timedelta(minutes=settings.AIRLOCK_AUDIT_SESSION_GAP_MINUTES)
        self._sessions = chain.SessionCache()  # used only on the writer thread (``thread`` mode)
        self.retry_delay = retry_delay
        self.commit_wait = commit_wait if commit_wait is not None else settings.AIRLOCK_AUDIT_COMMIT_SECONDS
        self.max_retry_delay = max_retry_delay
        self.sync_interval = (
            sync_interval if sync_interval is not None else settings.AIRLOCK_AUDIT_JOURNAL_SYNC_SECONDS
        )
        self.journal = journal.Journal(
            journal_dir or settings.AIRLOCK_AUDIT_JOURNAL_DIR,
            segment_bytes=segment_bytes or settings.AIRLOCK_AUDIT_JOURNAL_SEGMENT_BYTES,
        )
        self.mode = writer or settings.AIRLOCK_AUDIT_WRITER
        if self.mode not in ("thread", "process"):
            raise ValueError(f"AIRLOCK_AUDIT_WRITER is 'thread' or 'process', not {self.mode!r}")
        self._writer = DatabaseThread("audit-writer")
        self._channel: WriterChannel | None = None
        if self.mode == "process":
            self._channel = WriterChannel(
                writer_socket or socket_path_for(self.journal.directory), self.journal.directory,
                spawn=settings.AIRLOCK_AUDIT_WRITER_SPAWN if spawn_writer is None else spawn_writer,
                idle_exit=settings.AIRLOCK_AUDIT_WRITER_IDLE_SECONDS, on_acked=self._acked, on_failed=self._failed,
                gather_seconds=settings.AIRLOCK_AUDIT_CHANNEL_GATHER_MS / 1000,
                batch_size=settings.AIRLOCK_AUDIT_WRITER_BATCH_SIZE)
        self._space: asyncio.Event | None = None  # process mode: set while fewer than queue_size are pending
        self._syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-journal")
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._maintenance: asyncio.Task | None = None
        self._durable: set = set()  # audit ids whose RequestReceived begin() committed, until they finish
        self._closing = False  # aclose() began: still accepting while the queue drains
        self._closed = False
        self._pending = 0
        self._waiting_since: float | None = None  # monotonic: events pending and none committed since
        self._wrote = False  # anything committed: the shutdown anchor has something of ours to cover

    def prepare(self, event: Record | dict) -> PreparedEvent:
        if self._closed:
            raise RecorderClosed("the audit recorder is shut down")
        if isinstance(event, Record):
            return event.prepared(max_body=self.max_body, max_recording=self.max_recording)
        return prepare(event, max_body=self.max_body, max_recording=self.max_recording)

    async def start(self) -> None:
        """Open this process's journal and replay dead processes' journals (a failure is logged:
        their segments stay for the next start, ``manage.py recover_audit`` or the beat task)."""
        self.journal.open()
        if self._channel is not None:  # the writer replays them
            if not await self._channel.wait_connected(self.commit_wait):
                log.error("the audit writer at %s did not answer within %gs; writes are refused until it does",
                          self._channel.socket_path, self.commit_wait)
            return
        try:
            result = await self._in_writer(self._recover)
        except Exception as exc:
            log.error("audit journals of dead processes not replayed (%s); they are kept", type(exc).__name__)
            return
        if result.segments:
            log.warning("%s", result)

    def received(self, event: Record | dict) -> None:
        """Journal a request being handled (the raw event; prepared only if it is ever replayed).

        Raises AuditUnavailable when the journal cannot be written, or after shutdown: the request
        must be refused.
        """
        if self._closed:
            raise AuditUnavailable("the gateway is shutting down; the request was not forwarded")
        if isinstance(event, Record):
            event = event.event()
        try:
            self.journal.received(event.get("audit_id"), event)
        except journal.JournalError as exc:
            log.error("%s", exc)
            raise AuditUnavailable("the audit journal is unavailable; the request was not forwarded") from None

    async def begin(self, event: Record | dict) -> None:
        """Record a mutating request durably before it is forwarded; raises AuditUnavailable.

        An audit id already begun is not recorded twice.
        """
        prepared = self.prepare(event)
        if prepared.audit_id in self._durable:
            return
        try:
            record = self.journal.received(prepared.audit_id, prepared)
            # Not started by then: never written.  Started: it may still commit, and the refusal's
            # completion event follows it.
            if self._channel is not None:
                self._start()
                entry = self._channel.send(record, "commit", prepared)
                await wait_at_most(asyncio.shield(entry.done), self.commit_wait)
            else:
                await wait_at_most(self._in_writer(self._timed_write, "commit", [prepared]), self.commit_wait)
        except Exception as exc:
            log.error("audit event %s could not be recorded: %s", prepared.audit_id, type(exc).__name__)
            raise AuditUnavailable("the audit trail is unavailable; the request was not forwarded") from None
        self._durable.add(prepared.audit_id)

    async def finish(self, event: Record | dict) -> None:
        """Journal a completion event and queue it; waits while the queue is full.

        The wait is shielded: a request cancelled while waiting still gets its event queued.
        """
        prepared = self.prepare(event)
        self._durable.discard(prepared.audit_id)
        try:
            record = self.journal.completed(prepared)
        except journal.JournalError as exc:
            log.error("%s; event %s is held in memory only", exc, prepared.audit_id)
            record = journal.encode(journal.COMPLETED, prepared)
        self._start()
        self._pending += 1
        if self._waiting_since is None:
            self._waiting_since = time.monotonic()
        metrics.AUDIT_QUEUE.inc()
        if self._channel is not None:
            self._channel.send(record, "batch", prepared)
            if self._pending > self.queue_size:  # as many as the thread's queue holds, then wait
                self._space.clear()
                await asyncio.shield(self._space.wait())
            return
        try:
            self._queue.put_nowait(prepared)
        except asyncio.QueueFull:
            await asyncio.shield(self._queue.put(prepared))

    @property
    def pending(self) -> int:
        """Events handed to finish() and not yet committed (queued or being written)."""
        return self._pending

    def stalled_seconds(self, now: float | None = None) -> float:
        """How long events have been pending without a batch being committed (0 when none is pending):
        a writer stuck on the database, or failing, grows it (readiness: airlock.health)."""
        since = self._waiting_since
        if since is None or self._pending == 0:
            return 0.0
        return (time.monotonic() if now is None else now) - since

    async def flush(self) -> None:
        """Return once every event queued so far is committed."""
        if self._channel is not None:
            await self._channel.wait_empty()
        elif self._queue is not None:
            await self._queue.join()

    async def aclose(self, timeout: float | None = None) -> None:
        """Write everything queued, then refuse new events and stop the writer (idempotent).

        Events handed over while the queue drains are still written.  It all takes at most
        ``timeout`` seconds (``AIRLOCK_DRAIN_SECONDS``): what is not committed by then stays in
        the journal, kept for the next start, and a writer stuck on the database is left behind.
        """
        if self._closing:
            return
        self._closing = True
        if self._channel is not None:
            self._channel.spawn = False  # a writer that went away meanwhile is not started again for the last events
        timeout = settings.AIRLOCK_DRAIN_SECONDS if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        drained = False
        try:
            await wait_at_most(self._drain(), timeout)
            drained = True
        except TimeoutError:
            log.error("audit recorder shut down with %d events not committed within %gs; the audit journal keeps "
                      "them for the next start (or manage.py recover_audit)", self._pending, timeout)
        finally:
            self._closed = True
            tasks = [task for task in (self._task, self._maintenance) if task is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if drained and self._channel is not None:
                await self._anchor_remote(max(deadline - loop.time(), 0.0))
            elif drained:  # else the writer is stuck on the database: nothing more for it
                try:
                    await wait_at_most(self._in_writer(self._last_calls), max(deadline - loop.time(), 0.0))
                except TimeoutError:
                    log.error("audit chain not anchored at shutdown (the database did not answer within %gs)",
                              timeout)
            if self._channel is not None:
                await self._channel.close()
            self._writer.stop()
            self._syncer.shutdown(wait=True)
            self.journal.close()

    async def _drain(self) -> None:
        if self._channel is not None:
            await self._channel.wait_empty()
        while self._queue is not None:
            await self._queue.join()
            if self._pending == 0:
                break
            await asyncio.sleep(0)  # a finish() waiting for queue space puts its event now
        self._closed = True

    # -- internals ----------------------------------------------------------------------

    def _start(self) -> None:
        if self._maintenance is None:
            loop = asyncio.get_running_loop()
            if self._channel is None:
                self._queue = asyncio.Queue(self.queue_size)
                self._task = loop.create_task(self._writer_loop(), name="audit-writer")
            else:
                self._space = asyncio.Event()
                self._space.set()
                self._channel.start()
            self._maintenance = loop.create_task(self._journal_loop(), name="audit-journal")

    # -- process mode: the writer's answers ----------------------------------------------------

    def _acked(self, entries: list[Pending]) -> None:
        """The writer committed these (in order): the journal forgets them, the queue shrinks."""
        now = time.perf_counter()
        completions = [entry for entry in entries if entry.kind == "batch"]
        for entry in entries:
            if entry.kind == "commit":
                metrics.AUDIT_APPEND_SECONDS.labels("commit").observe(now - entry.sent_at)
        committed = len(entries) - sum(entry.kind == "anchor" for entry in entries)
        if committed:
            self._wrote = True
            metrics.AUDIT_COMMITTED.inc(committed)
        if completions:
            metrics.AUDIT_APPEND_SECONDS.labels("batch").observe(now - completions[0].sent_at)
            self.journal.committed([entry.prepared for entry in completions])
            self._pending -= len(completions)
            metrics.AUDIT_QUEUE.dec(len(completions))
            self._waiting_since = time.monotonic() if self._pending else None
            if self._pending <= self.queue_size and self._space is not None:
                self._space.set()

    def _failed(self, entries: list[Pending]) -> None:
        """The writer could not commit these yet (it retries): a begin() waiting on one refuses now."""
        kinds = {entry.kind for entry in entries if entry.kind != "anchor"}
        for kind in kinds:
            metrics.AUDIT_FAILURES.labels(kind).inc()
        for entry in entries:
            if entry.done is not None and not entry.done.done():
                entry.done.set_exception(AuditUnavailable("the audit writer could not commit the event"))

    async def _anchor_remote(self, timeout: float) -> None:
        """Ask the writer to anchor the chain head (it covers this process's last events) and wait for it."""
        if not self._wrote:
            return
        try:
            await wait_at_most(asyncio.shield(self._channel.anchor().done), timeout)
        except Exception as exc:
            log.error("audit chain not anchored at shutdown (%s)", type(exc).__name__ or "no answer")

    def _recover(self) -> journal.Recovery:
        close_old_connections()
        return journal.recover(self.journal.directory, session_gap=self.session_gap, batch_size=self.batch_size,
                               max_body=self.max_body, max_recording=self.max_recording)

    async def _journal_loop(self) -> None:
        """fsync the journal every sync_interval (if it changed) and rotate it once it is large.

        Both happen here only, so a rotation never closes the file under an fsync; the old
        segment goes once the new one is fsynced.
        """
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.sync_interval or 1.0)
            try:
                if self.sync_interval and self.journal.dirty:
                    await loop.run_in_executor(self._syncer, self.journal.sync)
                if self.journal.needs_rotation:
                    old = self.journal.rotate()
                    try:
                        if self.sync_interval:
                            await loop.run_in_executor(self._syncer, self.journal.sync)
                    finally:
                        self.journal.retire(old)
            except (OSError, journal.JournalError) as exc:
                log.error("audit journal maintenance failed: %s", exc)

    async def _in_writer(self, fn, *args):
        return await asyncio.wrap_future(self._writer.submit(fn, *args))

    def _last_calls(self) -> None:
        """The shutdown anchor (a failure is logged, not raised: shutdown goes on regardless), then
        the writer's connection closed."""
        try:
            if self._wrote:
                close_old_connections()
                chain.make_anchor(AnchorReason.SHUTDOWN)
        except Exception as exc:
            log.error("audit chain not anchored at shutdown (%s)", type(exc).__name__)
        finally:
            connections.close_all()

    def _write(self, batch: list[PreparedEvent]) -> None:
        close_old_connections()
        with chain.remembering(self._sessions):
            chain.append(batch, session_gap=self.session_gap)
        self._wrote = True

    def _timed_write(self, kind: str, batch: list[PreparedEvent]) -> None:
        """_write, measured: airlock_audit_append_seconds and _events_committed, or _write_failures
        (``kind``: ``commit``, one event before forwarding, or ``batch``, queued completions)."""
        started = time.perf_counter()
        try:
            self._write(batch)
        except Exception:
            metrics.AUDIT_FAILURES.labels(kind).inc()
            raise
        metrics.AUDIT_APPEND_SECONDS.labels(kind).observe(time.perf_counter() - started)
        metrics.AUDIT_COMMITTED.inc(len(batch))

    async def _writer_loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            delay = self.retry_delay
            while True:
                try:
                    await self._in_writer(self._timed_write, "batch", batch)
                    break
                except Exception as exc:
                    log.error(
                        "audit batch of %d events not written (%s); retrying in %.1fs",
                        len(batch), type(exc).__name__, delay,
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.max_retry_delay)
            self.journal.committed(batch)
            self._pending -= len(batch)
            self._waiting_since = time.monotonic() if self._pending else None
            metrics.AUDIT_QUEUE.dec(len(batch))
            for _ in batch:
                self._queue.task_done()
