"""The audit writer process: the one place a pod's gateway processes' audit events reach the chain.

The serving processes do no database work for the audit trail (``AIRLOCK_AUDIT_WRITER=process``,
audit.recorder): each journals an event (audit.journal, one ``write(2)``) and sends the same
framed bytes over a Unix socket to this process, which appends what every serving process sent
in one transaction per batch (audit.chain.append: the chain lock is taken once per batch, held
only to number, hash, sign, COPY and commit) and answers each process with how far its events
are committed.  A serving process forwards a write, exec, attach or port-forward only once this
process has said its ``RequestReceived`` is committed (``Recorder.begin``), as before.

The protocol (audit.channel): the client sends journal records (``<u32 length><u32 crc32>`` then
msgpack) and control records (``{"k": "A"}``: anchor the chain head once everything before is
committed); the writer answers ``<u8 kind><u64 n>``: the client's first ``n`` records are
committed (``COMMITTED``), could not be committed yet and are being retried (``FAILED``), or the
anchor that was record ``n`` is made (``ANCHORED``).  Only a process of the writer's own user may
connect (``SO_PEERCRED``); the socket sits in the journal's 0700 directory.

Nothing is lost when either side dies: the serving process keeps every event in its journal until
it is told the event is committed (and re-sends what was not acknowledged when it reconnects;
appends skip an event already stored); this process replays the journals of dead serving
processes (audit.journal.recover) when it starts, when a client goes away and every
``AIRLOCK_AUDIT_RECOVER_SECONDS``.  A full writer stops reading its sockets, so serving processes
wait (back-pressure) instead of dropping.  One writer per journal directory (``writer.lock``);
SIGTERM or SIGINT: it keeps committing until its clients have gone (they drain first; at most
60 s, or three times ``AIRLOCK_DRAIN_SECONDS``), anchors the chain head and exits.

Long because reading clients, batching, answering and replaying dead journals share one queue and
one database thread: what a client is told depends on all of them.
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import logging
import os
import queue
import signal
import socket
import struct
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import close_old_connections, connections

from audit import chain, journal
from audit.models import AnchorReason
from runtime import workers
from runtime.timeouts import wait_at_most

log = logging.getLogger(__name__)

ACK = struct.Struct("<BQ")
COMMITTED, FAILED, ANCHORED = 1, 2, 3
ANCHOR = "A"
LOCK_NAME = "writer.lock"
READ_CHUNK = 1 << 18
CONNECTION_CHECK_SECONDS = 1.0


def encode_control(kind: str) -> bytes:
    return journal.frame(journal.packb({"k": kind}))


class ProtocolError(Exception):
    """A client sent bytes that are not records: it is disconnected."""


def frames(buffer: bytearray) -> tuple[list[dict], int]:
    """The complete records at the start of ``buffer`` and how many bytes they took."""
    records, offset, size = [], 0, journal.HEADER.size
    while offset + size <= len(buffer):
        length, crc = journal.HEADER.unpack_from(buffer, offset)
        end = offset + size + length
        if end > len(buffer):
            break
        payload = bytes(buffer[offset + size:end])
        if zlib.crc32(payload) != crc:
            raise ProtocolError("a record's checksum does not match")
        try:
            record = journal.unpackb(payload)
        except ValueError:
            raise ProtocolError("a record is not msgpack") from None
        if not isinstance(record, dict):
            raise ProtocolError("a record is not a map")
        records.append(record)
        offset = end
    return records, offset


class DatabaseThread:
    """One daemon thread that runs database calls in order (started on first use).

    A daemon: a call stuck on a database that takes bytes and never answers must not keep the
    process from exiting (concurrent.futures joins its threads at interpreter exit).
    """

    def __init__(self, name: str):
        self.name = name
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = None

    def submit(self, fn, *args):
        if self._thread is None:
            self._thread = threading.Thread(target=workers.work, args=(self._jobs,), name=self.name, daemon=True)
            self._thread.start()
        return workers.submit(self._jobs, fn, *args)

    async def run(self, fn, *args):
        return await asyncio.wrap_future(self.submit(fn, *args))

    def stop(self) -> None:
        """The thread ends once the calls before are done (never, if one of them never returns)."""
        if self._thread is not None:
            self._jobs.put(None)


@dataclass(eq=False)
class _Client:
    stream: asyncio.StreamWriter
    name: str
    received: int = 0  # records read so far (control records included)
    open: bool = True

    def answer(self, kind: int, n: int) -> None:
        if self.open and not self.stream.is_closing():
            self.stream.write(ACK.pack(kind, n))


@dataclass
class _Entry:
    client: _Client
    n: int
    prepared: object = None  # a PreparedEvent, or None for an anchor request
    begin: bool = False


@dataclass
class WriterStats:
    batches: int = 0
    events: int = 0
    failures: int = 0
    recovered: int = 0


class AuditWriter:
    def __init__(
        self,
        *,
        journal_dir=None,
        socket_path=None,
        batch_size: int | None = None,
        gather_seconds: float | None = None,
        max_pending: int | None = None,
        idle_exit: float | None = None,
        recover_seconds: float | None = None,
        drain_seconds: float | None = None,
        retry_delay: float = 0.2,
        max_retry_delay: float = 5.0,
    ):
        self.journal_dir = Path(journal_dir or settings.AIRLOCK_AUDIT_JOURNAL_DIR)
        self.socket_path = Path(socket_path or socket_path_for(self.journal_dir))
        self.batch_size = batch_size or settings.AIRLOCK_AUDIT_WRITER_BATCH_SIZE
        self.gather_seconds = (gather_seconds if gather_seconds is not None
                               else settings.AIRLOCK_AUDIT_WRITER_GATHER_MS / 1000)
        self.max_pending = max_pending or max(settings.AIRLOCK_AUDIT_QUEUE_SIZE, self.batch_size * 4)
        self.idle_exit = idle_exit
        self.recover_seconds = recover_seconds if recover_seconds is not None else settings.AIRLOCK_AUDIT_RECOVER_SECONDS
        # Its gateway processes drain their streams, then their requests, then their recorders (each at most
        # AIRLOCK_DRAIN_SECONDS, the requests up to uvicorn's graceful timeout) before they leave: wait for that.
        self.drain_seconds = drain_seconds if drain_seconds is not None else max(60.0, 3 * settings.AIRLOCK_DRAIN_SECONDS)
        self.retry_delay, self.max_retry_delay = retry_delay, max_retry_delay
        self.session_gap = timedelta(minutes=settings.AIRLOCK_AUDIT_SESSION_GAP_MINUTES)
        self.sessions = chain.SessionCache()  # this writer's sessions, used only on its database thread
        self.max_body = settings.AIRLOCK_AUDIT_MAX_BODY_BYTES
        self.max_recording = settings.AIRLOCK_AUDIT_MAX_RECORDING_BYTES
        self.stats = WriterStats()
        self._db = DatabaseThread("audit-writer")
        self._pending: collections.deque[_Entry] = collections.deque()
        self._awaited = False  # a pending entry is waited on (a begin, an anchor request): commit without gathering
        self._work = asyncio.Event()  # something arrived (wakes an idle commit loop)
        self._due = asyncio.Event()  # gathering must end: a waited-on entry, a full batch or a stop
        self._space = asyncio.Event()
        self._clients: set[_Client] = set()
        self._stop = asyncio.Event()
        self._recover_soon = asyncio.Event()
        self._idle_since = time.monotonic()
        self._wrote = False
        self._lock_fd: int | None = None
        self._connection_checked = -CONNECTION_CHECK_SECONDS  # monotonic; used on the database thread only
        self._connection_suspect = False

    # -- lifetime -------------------------------------------------------------------------------

    def claim(self) -> bool:
        """Take the journal directory's writer lock; False when another writer holds it."""
        self.journal_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.journal_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    async def serve(self, *, ready=None) -> None:
        """Run until stopped (SIGTERM, SIGINT, :meth:`stop`, or idle for ``idle_exit`` seconds)."""
        if self._lock_fd is None and not self.claim():
            log.info("an audit writer already serves %s", self.journal_dir)
            return
        # The database thread holds the chain lock across round trips; each time it waits for the GIL
        # back from the thread reading the sockets, every writer of the chain waits too (default 5 ms).
        sys.setswitchinterval(0.0005)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(signum, self.stop)
            except (RuntimeError, ValueError):  # not the main thread (tests)
                pass
        try:
            self.socket_path.unlink()
        except FileNotFoundError:
            pass
        server = await asyncio.start_unix_server(self._client, path=str(self.socket_path), limit=READ_CHUNK)
        os.chmod(self.socket_path, 0o600)
        await self._recover()
        tasks = [loop.create_task(self._commit_loop(), name="audit-writer-commit"),
                 loop.create_task(self._recover_loop(), name="audit-writer-recover")]
        log.info("audit writer serving %s on %s", self.journal_dir, self.socket_path)
        if ready is not None:
            ready()
        try:
            await self._wait_for_stop()
            server.close()  # no new clients; the connected ones are served until they go
            deadline = loop.time() + self.drain_seconds
            while (self._clients or self._pending) and loop.time() < deadline:
                await asyncio.sleep(0.05)
            if self._pending:
                log.error("audit writer stopped with %d events not committed; their gateway processes' journals "
                          "keep them", len(self._pending))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for client in list(self._clients):
                client.open = False
                client.stream.close()
            try:
                self.socket_path.unlink()
            except FileNotFoundError:
                pass
            try:
                await wait_at_most(self._db.run(self._last_calls), max(self.drain_seconds, 1.0))
            except TimeoutError:
                log.error("audit chain not anchored when the writer stopped (the database did not answer)")
            self._db.stop()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def stop(self) -> None:
        self._stop.set()
        self._work.set()
        self._due.set()  # a commit loop gathering events commits them now

    async def _wait_for_stop(self) -> None:
        while not self._stop.is_set():
            try:
                await wait_at_most(self._stop.wait(), 0.5)
            except TimeoutError:
                pass
            if (self.idle_exit is not None and not self._clients and not self._pending
                    and time.monotonic() - self._idle_since > self.idle_exit):
                log.info("audit writer: no gateway process for %gs; exiting", self.idle_exit)
                return

    def _last_calls(self) -> None:
        try:
            if self._wrote:
                close_old_connections()
                chain.make_anchor(AnchorReason.SHUTDOWN)
        except Exception as exc:
            log.error("audit chain not anchored when the writer stopped (%s)", type(exc).__name__)
        finally:
            connections.close_all()

    # -- clients --------------------------------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, stream: asyncio.StreamWriter) -> None:
        sock = stream.get_extra_info("socket")
        pid, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        if uid != os.getuid():
            log.error("audit writer: refused a connection from uid %d (pid %d)", uid, pid)
            stream.close()
            return
        client = _Client(stream, f"pid {pid}")
        self._clients.add(client)
        buffer = bytearray()
        try:
            while True:
                while len(self._pending) >= self.max_pending:  # back-pressure: stop reading
                    self._space.clear()
                    await self._space.wait()
                chunk = await reader.read(READ_CHUNK)
                if not chunk:
                    break
                buffer += chunk
                records, used = frames(buffer)
                del buffer[:used]
                for record in records:
                    client.received += 1
                    self._take(client, record)
                if records:
                    self._work.set()
        except (ProtocolError, ConnectionError) as exc:
            log.error("audit writer: connection from %s ended: %s", client.name, exc)
        finally:
            client.open = False
            self._clients.discard(client)
            if not self._clients:
                self._idle_since = time.monotonic()
            stream.close()
            self._recover_soon.set()  # a serving process that went away may have died

    def _take(self, client: _Client, record: dict) -> None:
        kind = record.get("k")
        if kind == ANCHOR:
            self._pending.append(_Entry(client, client.received))
            self._awaited = True
            self._due.set()
            return
        if kind not in (journal.RECEIVED, journal.COMPLETED) or not isinstance(record.get("e"), dict):
            raise ProtocolError("a record is neither an event nor a control")
        prepared = journal.to_prepared(record, max_body=self.max_body, max_recording=self.max_recording)
        if prepared is None:
            raise ProtocolError("a record holds no event")
        self._pending.append(_Entry(client, client.received, prepared, begin=kind == journal.RECEIVED))
        if kind == journal.RECEIVED:
            self._awaited = True
            self._due.set()
        elif len(self._pending) >= self.batch_size:
            self._due.set()

    # -- committing -----------------------------------------------------------------------------

    def _append(self, batch: list) -> int:
        self._tend_connection()
        try:
            return chain.append(batch, session_gap=self.session_gap, replay=True, rows=False, sessions=self.sessions)
        except Exception:
            self._connection_suspect = True
            raise

    def _tend_connection(self) -> None:
        """close_old_connections() (a broken or too old connection replaced) before the append after a
        failed one, else at most every CONNECTION_CHECK_SECONDS: each call makes Django check the
        connection with a round trip of its own (CONN_HEALTH_CHECKS) before the next query, one of a
        small append's eight.  A connection that broke in between fails that append, which is retried."""
        now = time.monotonic()
        if self._connection_suspect or now - self._connection_checked >= CONNECTION_CHECK_SECONDS:
            close_old_connections()
            self._connection_checked, self._connection_suspect = now, False

    def _anchor(self) -> None:
        close_old_connections()
        if self._wrote:
            chain.make_anchor(AnchorReason.SHUTDOWN)

    async def _commit_loop(self) -> None:
        while True:
            if not self._pending:
                self._work.clear()
                await self._work.wait()
                continue
            if self._pending[0].prepared is None:
                entry = self._pending.popleft()
                try:
                    await self._db.run(self._anchor)
                except Exception as exc:
                    log.error("audit chain not anchored for %s (%s)", entry.client.name, type(exc).__name__)
                entry.client.answer(ANCHORED, entry.n)
                continue
            await self._gather()
            batch: list[_Entry] = []
            while self._pending and len(batch) < self.batch_size and self._pending[0].prepared is not None:
                batch.append(self._pending.popleft())
            if not self._pending:
                self._awaited = False
            self._space.set()
            await self._commit(batch)

    async def _gather(self) -> None:
        """Group commit: events nobody waits on (completions, the journaled RequestReceived of reads)
        wait up to ``gather_seconds`` for company, so one transaction (its lock, head lookup, two COPYs
        and commit, each a round trip) stores several at one request at a time, where it stored one.
        They are durable in their serving processes' journals meanwhile.  A RequestReceived a serving
        process waits on (a write, an exec), an anchor request, a full batch or a stop ends it at once
        (``_due``: an arrival that ends nothing does not wake this loop)."""
        if self.gather_seconds <= 0:
            return
        self._due.clear()
        if len(self._pending) >= self.batch_size or self._stop.is_set() or self._awaited:
            return
        try:
            await wait_at_most(self._due.wait(), self.gather_seconds)
        except TimeoutError:
            pass

    async def _commit(self, batch: list[_Entry]) -> None:
        delay, told = self.retry_delay, False
        while True:
            try:
                appended = await self._db.run(self._append, [entry.prepared for entry in batch])
                break
            except Exception as exc:
                self.stats.failures += 1
                log.error("audit batch of %d events not written (%s); retrying in %.1fs", len(batch),
                          type(exc).__name__, delay)
                if not told:  # a begin() waiting on one of them refuses its request now
                    told = True
                    for client, n in _last_by_client(entry for entry in batch if entry.begin).items():
                        client.answer(FAILED, n)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry_delay)
        self._wrote = self._wrote or appended > 0
        self.stats.batches += 1
        self.stats.events += len(batch)
        for client, n in _last_by_client(batch).items():
            client.answer(COMMITTED, n)

    # -- recovery -------------------------------------------------------------------------------

    async def _recover(self) -> None:
        try:
            result = await self._db.run(self._replay)
        except Exception as exc:
            log.error("audit journals of dead processes not replayed (%s); they are kept", type(exc).__name__)
            return
        if result.segments:
            self.stats.recovered += result.segments
            self._wrote = self._wrote or result.appended > 0
            log.warning("%s", result)

    def _replay(self) -> journal.Recovery:
        close_old_connections()
        return journal.recover(self.journal_dir, session_gap=self.session_gap, batch_size=self.batch_size,
                               max_body=self.max_body, max_recording=self.max_recording)

    async def _recover_loop(self) -> None:
        while True:
            try:
                await wait_at_most(self._recover_soon.wait(), self.recover_seconds or None)
            except TimeoutError:
                pass
            self._recover_soon.clear()
            await asyncio.sleep(0.05)  # a process that just went away has released its journal's lock
            # What a process that went away had sent is committed first: its journal's replay then only
            # skips those, and a request it began is not closed as crashed ahead of its RequestReceived.
            while any(not entry.client.open for entry in self._pending):
                await asyncio.sleep(0.05)
            await self._recover()


def _last_by_client(entries) -> dict:
    last = {}
    for entry in entries:
        last[entry.client] = entry.n
    return last


def socket_path_for(journal_dir) -> Path:
    """Where the writer of a journal directory listens (``AIRLOCK_AUDIT_WRITER_SOCKET`` or ``writer.sock`` there)."""
    configured = settings.AIRLOCK_AUDIT_WRITER_SOCKET
    return Path(configured) if configured else Path(journal_dir) / "writer.sock"
