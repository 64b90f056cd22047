"""A serving process's end of the audit writer's socket (audit.writer): send journal records, learn
which are committed.

Every record sent stays in :attr:`WriterChannel.unacked` until the writer says it is committed;
when the connection breaks, the channel reconnects (starting the writer itself when nothing
listens and ``spawn`` is on: one writer per journal directory, whoever starts it) and sends the
unacknowledged records again, in order (the writer's append skips an event already stored, so a
record committed just before the break is not stored twice).  Runs on the event loop.

Records nobody waits on (completions: already in the journal, and the writer gathers them for a
group commit anyway) are held up to ``gather_seconds`` (``AIRLOCK_AUDIT_CHANNEL_GATHER_MS``) and
go to the socket in one write, so the writer wakes once per gathered write, not once per request.
A record someone waits on (a write's RequestReceived, an anchor request), a full batch, or someone
waiting for the channel to empty sends everything held at the next turn of the loop, in order,
with it; the records of one turn of the loop always go in one write.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from audit.writer import ACK, ANCHOR, ANCHORED, COMMITTED, FAILED, READ_CHUNK, encode_control
from runtime.timeouts import wait_at_most

log = logging.getLogger(__name__)

SPAWN_INTERVAL = 5.0


class WriterUnavailable(Exception):
    """The writer said it could not commit a record (yet), or the channel is closed."""


@dataclass(eq=False)
class Pending:
    record: bytes
    kind: str  # "commit" (a begin), "batch" (a completion) or "anchor"
    prepared: object = None
    sent_at: float = 0.0
    n: int = 0
    done: asyncio.Future | None = None


class WriterChannel:
    def __init__(self, socket_path: Path, journal_dir: Path, *, spawn: bool, idle_exit: float, on_acked, on_failed,
                 gather_seconds: float = 0.0, batch_size: int = 1000):
        self.socket_path = Path(socket_path)
        self.gather_seconds = gather_seconds
        self.batch_size = batch_size  # held records that are sent at once (or READ_CHUNK bytes of them)
        self.journal_dir = Path(journal_dir)
        self.spawn = spawn
        self.idle_exit = idle_exit
        self.on_acked = on_acked  # called with the list of Pending the writer committed
        self.on_failed = on_failed  # called with the Pending a FAILED answer covered
        self.unacked: collections.deque[Pending] = collections.deque()
        self._stream: asyncio.StreamWriter | None = None
        self._sent = 0  # records written on the current connection
        self._outgoing: list[bytes] = []  # records not yet written to the socket
        self._outgoing_bytes = 0
        self._flush_handle: asyncio.Handle | None = None  # the scheduled _flush
        self._flush_soon = False  # ... at the next turn of the loop, not at the end of the gathering
        self._connected = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self._task: asyncio.Task | None = None
        self._closed = False
        self._spawned_at = -SPAWN_INTERVAL
        self._child: subprocess.Popen | None = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="audit-writer-channel")

    async def wait_connected(self, timeout: float) -> bool:
        self.start()
        try:
            await wait_at_most(self._connected.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def send(self, record: bytes, kind: str, prepared=None) -> Pending:
        """Queue a record (and write it now if connected); its ``done`` resolves once it is committed."""
        if self._closed:
            raise WriterUnavailable("the audit writer channel is closed")
        self.start()
        entry = Pending(record, kind, prepared, time.perf_counter())
        if kind != "batch":
            entry.done = asyncio.get_running_loop().create_future()
        self.unacked.append(entry)
        self._empty.clear()
        if self._stream is not None:
            self._write(entry)
            if entry.done is not None:
                self._flush_now()
        return entry

    def anchor(self) -> Pending:
        return self.send(encode_control(ANCHOR), "anchor")

    async def wait_empty(self) -> None:
        if self._outgoing:
            self._flush_now()  # somebody waits on them now
        await self._empty.wait()

    async def close(self) -> None:
        self._closed = True
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle, self._flush_soon = None, False
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        for entry in self.unacked:
            if entry.done is not None and not entry.done.done():
                entry.done.set_exception(WriterUnavailable("the audit recorder is shut down"))
                entry.done.exception()  # retrieved: nobody may be waiting any more

    # -- internals ------------------------------------------------------------------------------

    def _write(self, entry: Pending) -> None:
        """Number the record on this connection and hold it for the next write."""
        self._sent += 1
        entry.n = self._sent
        self._outgoing.append(entry.record)
        self._outgoing_bytes += len(entry.record)
        if (self.gather_seconds <= 0 or len(self._outgoing) >= self.batch_size
                or self._outgoing_bytes >= READ_CHUNK):
            self._flush_now()
        elif self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(self.gather_seconds, self._flush)

    def _flush_now(self) -> None:
        """Write what is held at the next turn of the loop (with what else that turn sends)."""
        if self._flush_soon:
            return
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)
        self._flush_soon = True

    def _flush(self) -> None:
        """One write (one send(2)) for the records held; on a connection that went away meanwhile
        they are dropped here and sent again from ``unacked`` on the next one."""
        self._flush_handle, self._flush_soon = None, False
        if self._outgoing and self._stream is not None:
            self._stream.write(b"".join(self._outgoing))
        self._outgoing.clear()
        self._outgoing_bytes = 0

    async def _run(self) -> None:
        delay = 0.05
        while not self._closed:
            try:
                reader, stream = await asyncio.open_unix_connection(str(self.socket_path))
            except (FileNotFoundError, ConnectionRefusedError):
                self._spawn()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            except OSError as exc:
                log.error("audit writer at %s unreachable: %s", self.socket_path, exc)
                await asyncio.sleep(1.0)
                continue
            delay = 0.05
            self._stream, self._sent = stream, 0
            self._outgoing.clear()  # numbered for the connection that broke: all of them are in unacked
            self._outgoing_bytes = 0
            for entry in self.unacked:  # in order: what the last writer did not confirm
                self._write(entry)
            if self._outgoing:
                self._flush_now()
            self._connected.set()
            try:
                await self._read(reader)
            finally:
                self._connected.clear()
                self._stream = None
                stream.close()
            if not self._closed:
                log.error("audit writer connection lost with %d records unacknowledged; reconnecting",
                          len(self.unacked))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                kind, n = ACK.unpack(await reader.readexactly(ACK.size))
                if kind in (COMMITTED, ANCHORED):
                    self._acked(n)
                elif kind == FAILED:
                    self.on_failed([e for e in self.unacked if 0 < e.n <= n])
        except (asyncio.IncompleteReadError, ConnectionError):
            return

    def _acked(self, n: int) -> None:
        done = []
        while self.unacked and self.unacked[0].n and self.unacked[0].n <= n:
            entry = self.unacked.popleft()
            if entry.done is not None and not entry.done.done():
                entry.done.set_result(True)
            done.append(entry)
        if not self.unacked:
            self._empty.set()
        if done:
            self.on_acked(done)

    def _spawn(self) -> None:
        """Start the writer for this journal directory (one wins the directory's lock; the others exit)."""
        if not self.spawn or time.monotonic() - self._spawned_at < SPAWN_INTERVAL:
            return
        if self._child is not None and self._child.poll() is None:
            return  # still starting
        self._spawned_at = time.monotonic()
        argv = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "audit_writer",
                "--journal-dir", str(self.journal_dir), "--socket", str(self.socket_path),
                "--idle-exit", str(self.idle_exit)]
        try:
            self._child = subprocess.Popen(argv, cwd=settings.BASE_DIR, stdin=subprocess.DEVNULL)
        except OSError as exc:
            log.error("audit writer not started: %s", exc)
            return
        # Reaped whenever it ends: one that lost the directory's lock to another process's writer ends at
        # once, and this process, served by the winner, never asks again (it stayed a zombie).
        threading.Thread(target=self._child.wait, name=f"audit-writer-{self._child.pid}-reaper", daemon=True).start()
        log.info("audit writer started (pid %d) for %s", self._child.pid, self.journal_dir)
