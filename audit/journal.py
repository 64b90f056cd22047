"""A write-ahead journal of audit events per gateway process: what a crash must not lose.

The recorder appends a *received* record when a request arrives and again, with everything the
pipeline learned, before it is forwarded; when the request ends, its *completion* record, and
only then does the completion wait in memory for the database writer.  Each record is one
``write(2)`` to a file opened with ``O_APPEND``: once it returns, the bytes are in the kernel's
page cache and survive the process being killed (SIGKILL, the OOM killer).  A machine crash
keeps only what was fsynced: the recorder fsyncs every ``AIRLOCK_AUDIT_JOURNAL_SYNC_SECONDS``.

A process appends to its own *segment* and holds ``flock(LOCK_EX)`` on it for as long as it
lives, so a segment nobody holds belongs to a dead process.  When a segment grows past its
size limit the records still needed (requests in flight, completions not yet committed) are
copied into a new segment and the old one is removed.

:func:`recover` replays dead processes' segments: their completions are appended to the chain
and every request that was received but never completed gets a completion marked "gateway
crashed" (response unknown).  Replaying is idempotent: the chain skips an (audit id, stage) it
already holds, so a segment replayed twice, or whose completions were already committed, adds
nothing twice.

Record framing: ``<u32 length><u32 crc32>`` then a msgpack map; a torn or corrupt record ends
the segment (it was never complete).  The journal is as trusted as the process's memory: files
are 0600 in a 0700 directory.

Long because segment ownership, rotation and recovery are one protocol on one file format: a reader
of recovery must see how segments are written.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import struct
import time
import uuid
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgpack
import msgspec
from django.conf import settings

from audit import chain
from audit.events import PreparedEvent, prepare
from audit.models import AuditEvent, Stage

log = logging.getLogger(__name__)

SUFFIX = ".journal"
HEADER = struct.Struct("<II")
RECEIVED, COMPLETED = "R", "C"
CRASHED_REASON = "GatewayCrashed"
CRASHED_MESSAGE = (
    "airlock: the gateway process ended (killed, out of memory or crashed) before this request completed; "
    "whether the client got a response, and which, is unknown. Closed from the process's audit journal"
)
_FIELDS = frozenset(f.name for f in AuditEvent._meta.concrete_fields) - {"id", "seq", "session", "prev_hash",
                                                                          "hash", "key_id", "mac"}


class JournalError(Exception):
    """A record could not be appended; the request it describes must not go ahead."""


def _default(value) -> str:
    """Audit ids (UUIDs) and anything else msgpack does not know, as text; prepare() checks it on replay."""
    return str(value)


# msgspec writes the same bytes as msgpack.packb(default=str, datetime=True) for what events hold (UUIDs
# as text, aware datetimes as timestamps) in a third of the time, three records per request; and reads
# them back (any msgpack: older journals too) in half.  An integer beyond 64 bits, which only a raw
# event dict can hold (prepare() clamps it), is left to msgpack.
_ENCODER = msgspec.msgpack.Encoder(enc_hook=_default)
_DECODER = msgspec.msgpack.Decoder()


def packb(body: dict) -> bytes:
    try:
        return _ENCODER.encode(body)
    except OverflowError:
        return msgpack.packb(body, default=_default, datetime=True)


def unpackb(payload: bytes):
    """One record's msgpack (timestamps as aware datetimes); raises ValueError when it is not msgpack."""
    return _DECODER.decode(payload)


def frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def encode(kind: str, event: PreparedEvent | dict) -> bytes:
    """One framed record: a prepared event (its stored field values) or a raw event dict."""
    if isinstance(event, PreparedEvent):
        body = {"k": kind, "p": True, "e": event.fields, "r": event.recording}
    else:
        body = {"k": kind, "p": False, "e": event}
    return frame(packb(body))


def decode(data: bytes):
    """The records of one segment, in order, up to the first torn or corrupt one."""
    offset = 0
    while offset + HEADER.size <= len(data):
        length, crc = HEADER.unpack_from(data, offset)
        payload = data[offset + HEADER.size: offset + HEADER.size + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            return
        offset += HEADER.size + length
        try:
            record = unpackb(payload)
        except ValueError:
            return
        if isinstance(record, dict) and record.get("k") in (RECEIVED, COMPLETED) and isinstance(record.get("e"), dict):
            yield record


def to_prepared(record: dict, *, max_body: int, max_recording: int) -> PreparedEvent | None:
    """The event a record holds, as the chain stores it; None for one that cannot be an event."""
    event = record["e"]
    if not record.get("p"):
        return prepare(event, max_body=max_body, max_recording=max_recording)
    if not event.keys() <= _FIELDS:
        return None
    fields = dict(event)
    try:
        fields["audit_id"] = uuid.UUID(str(fields["audit_id"]))
    except (KeyError, ValueError):
        return None
    recording = record.get("r")
    return PreparedEvent(fields=fields, recording=recording if isinstance(recording, dict) else None)


def crashed(received: PreparedEvent, now: datetime, segment: str) -> PreparedEvent:
    """The completion of a request its process never completed: response unknown."""
    fields = dict(received.fields)
    fields.update(
        stage=Stage.RESPONSE_COMPLETE,
        stage_timestamp=now,
        response_code=None,
        response_reason=CRASHED_REASON,
        response_message=f"{CRASHED_MESSAGE} ({segment}).",
        latency_ms=None,
        bytes_out=0,
        response_body=b"",
        response_body_size=0,
    )
    return PreparedEvent(fields=fields)


def _owner(path: Path) -> str:
    """Segments ``<owner>.<n>.journal`` of one process share their owner."""
    return path.name[: -len(SUFFIX)].rpartition(".")[0]


def _number(path: Path) -> int:
    tail = path.name[: -len(SUFFIX)].rpartition(".")[2]
    return int(tail) if tail.isdigit() else 0


class Journal:
    """This process's segment; every method runs on the event loop's thread, except :meth:`sync`."""

    def __init__(self, directory: Path, *, segment_bytes: int):
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._number = 0
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0
        self._synced = 0  # bytes of the current segment known to be on disk
        self._open: dict[str, bytes] = {}  # audit id -> latest received record of a request in flight
        self._unwritten: dict[tuple[str, str], bytes] = {}  # (audit id, stage) -> completion not committed yet

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def dirty(self) -> bool:
        return self._fd is not None and self._synced < self._size

    def open(self) -> None:
        if self._fd is None:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._fd, self._path = self._new_segment()

    def _new_segment(self) -> tuple[int, Path]:
        self._number += 1
        path = self.directory / f"{self.owner}.{self._number:06d}{SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._size = self._synced = 0
        return fd, path

    def _append(self, record: bytes) -> None:
        try:
            self.open()
            written = os.write(self._fd, record)
            if written != len(record):
                raise OSError(f"short write ({written} of {len(record)} bytes)")
        except OSError as exc:
            if self._fd is not None:
                try:
                    os.ftruncate(self._fd, self._size)  # no torn record in front of the next one
                except OSError:
                    pass
            raise JournalError(f"the audit journal in {self.directory} cannot be written: {exc}") from None
        self._size += len(record)

    def received(self, audit_id, event: PreparedEvent | dict) -> bytes:
        """A request is being handled; raises JournalError (then it must be refused).  Returns the
        record (what the audit writer process is sent, audit.writer)."""
        record = encode(RECEIVED, event)
        self._append(record)
        self._open[str(audit_id)] = record
        return record

    def completed(self, prepared: PreparedEvent) -> bytes:
        """A request ended; its completion now survives the process until it is committed.  Returns
        the record (raises JournalError when it cannot be written)."""
        record = encode(COMPLETED, prepared)
        key = str(prepared.audit_id)
        self._append(record)
        self._open.pop(key, None)
        self._unwritten[(key, prepared.stage)] = record
        return record

    def committed(self, batch: list[PreparedEvent]) -> None:
        for prepared in batch:
            self._unwritten.pop((str(prepared.audit_id), prepared.stage), None)

    @property
    def needs_rotation(self) -> bool:
        return self._fd is not None and self._size > self.segment_bytes

    def rotate(self) -> tuple[int, Path]:
        """Continue in a new segment holding only the records still needed.

        Returns the old segment, for :meth:`retire` once the new one is fsynced: until then a
        machine crash may have only the old one's copy of a record.
        """
        old_fd, old_path, old_size, old_synced = self._fd, self._path, self._size, self._synced
        fd, path = self._new_segment()
        live = b"".join([*self._open.values(), *self._unwritten.values()])
        try:
            if live and os.write(fd, live) != len(live):
                raise OSError("short write")
        except OSError as exc:
            os.close(fd)
            os.unlink(path)
            self._size, self._synced = old_size, old_synced
            raise JournalError(f"the audit journal cannot be rotated: {exc}") from None
        self._fd, self._path, self._size = fd, path, len(live)
        return old_fd, old_path

    @staticmethod
    def retire(old: tuple[int, Path]) -> None:
        """Remove a segment :meth:`rotate` replaced (still locked, so nobody replays it meanwhile)."""
        fd, path = old
        os.unlink(path)
        os.close(fd)

    def sync(self) -> None:
        """fsync the segment (runs on a worker thread; the recorder never rotates meanwhile)."""
        if self._fd is not None:
            size = self._size
            os.fsync(self._fd)
            self._synced = max(self._synced, size)

    def close(self) -> None:
        """Release the segment; it is removed when it holds nothing a recovery would need, and
        fsynced when it is kept (the process is about to go: nothing else will)."""
        if self._fd is None:
            return
        if not self._open and not self._unwritten:
            os.unlink(self._path)
        else:
            log.error("audit journal %s kept with %d requests in flight and %d events not written; the next start "
                      "(or manage.py recover_audit) closes them", self._path, len(self._open), len(self._unwritten))
            try:
                self.sync()
            except OSError as exc:
                log.error("audit journal %s not fsynced at shutdown: %s", self._path, exc)
        os.close(self._fd)
        self._fd = None


@dataclass
class Recovery:
    """What :func:`recover` did."""

    segments: int = 0
    completions: int = 0  # completion events found in the journals (appended unless already stored)
    crashed: int = 0  # requests closed with a "gateway crashed" completion
    skipped_live: int = 0  # segments held by running processes (the caller's own included)
    appended: int = 0  # events written (the others were in the chain already)

    def __str__(self):
        return (f"audit journal segments of dead processes replayed: {self.segments}; their completions: "
                f"{self.completions}, requests closed as crashed: {self.crashed}, events appended: "
                f"{self.appended}; segments held by running processes: {self.skipped_live}")


def _claim(path: Path) -> int | None:
    """An fd holding the segment's lock, or None if its process is alive or it is already gone."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_nlink == 0:
            raise BlockingIOError  # replayed and removed by another process meanwhile
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _read(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def recover(directory, *, session_gap, batch_size: int, max_body: int, max_recording: int) -> Recovery:
    """Replay every dead process's segments in ``directory`` into the chain (synchronous: run off-loop).

    A process's segments are replayed together (a rotation interrupted by the crash leaves two);
    each is removed once its events are committed.  Raises on a database error: the segments stay
    for the next attempt.
    """
    result = Recovery()
    directory = Path(directory)
    if not directory.is_dir():
        return result
    owners: dict[str, list[Path]] = {}
    for path in directory.glob(f"*{SUFFIX}"):
        owners.setdefault(_owner(path), []).append(path)
    for owner, paths in sorted(owners.items()):
        paths.sort(key=_number)
        claimed = []
        try:
            for path in paths:
                fd = _claim(path)
                if fd is None:
                    break
                claimed.append((path, fd))
            if len(claimed) < len(paths):
                result.skipped_live += len(paths) - len(claimed)
                continue
            events, completions, closed = _plan(claimed, max_body=max_body, max_recording=max_recording)
            for start in range(0, len(events), batch_size):
                result.appended += len(chain.append(events[start:start + batch_size], session_gap=session_gap,
                                                    replay=True))
            for path, _ in claimed:
                path.unlink()
            result.segments += len(claimed)
            result.completions += completions
            result.crashed += closed
            if events:
                log.warning("audit journal of dead process %s replayed: %d completions, %d requests closed as "
                            "crashed", owner, completions, closed)
        finally:
            for _, fd in claimed:
                os.close(fd)
    return result


def _plan(claimed, *, max_body: int, max_recording: int) -> tuple[list[PreparedEvent], int, int]:
    """The events one dead process owes the chain: its completions, then a crashed completion per open request."""
    completions: dict[tuple[str, str], PreparedEvent] = {}
    received: dict[str, PreparedEvent] = {}
    last_write = 0.0
    for path, fd in claimed:
        last_write = max(last_write, os.fstat(fd).st_mtime)
        for record in decode(_read(fd)):
            prepared = to_prepared(record, max_body=max_body, max_recording=max_recording)
            if prepared is None:
                log.error("audit journal %s holds a record that is not an event; skipped", path.name)
                continue
            key = str(prepared.audit_id)
            if record["k"] == COMPLETED:
                completions[(key, prepared.stage)] = prepared
            else:
                received[key] = prepared
    done = {key for key, _ in completions}
    now = datetime.now(UTC)
    segment = f"last written {datetime.fromtimestamp(last_write or time.time(), UTC).isoformat(timespec='seconds')}"
    closed = [crashed(event, now, segment) for key, event in received.items() if key not in done]
    events = sorted(completions.values(), key=lambda e: e.fields["stage_timestamp"]) + closed
    return events, len(completions), len(closed)


def in_flight(directory) -> set[str]:
    """Audit ids of requests in flight in live processes' segments (their completion is not missing)."""
    ids: set[str] = set()
    directory = Path(directory)
    if not directory.is_dir():
        return ids
    for path in directory.glob(f"*{SUFFIX}"):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # held: a live process
            else:
                continue  # nobody holds it: a dead process, whose open requests are missing, not in flight
            open_ids: set[str] = set()
            for record in decode(_read(fd)):
                audit_id = str(record["e"].get("audit_id"))
                if record["k"] == RECEIVED:
                    open_ids.add(audit_id)
                else:
                    open_ids.discard(audit_id)
            ids |= open_ids
        finally:
            os.close(fd)
    return ids


def recover_configured(directory=None) -> Recovery:
    """:func:`recover` with the recorder's settings (the beat task and ``manage.py recover_audit``)."""
    return recover(
        directory or settings.AIRLOCK_AUDIT_JOURNAL_DIR,
        session_gap=timedelta(minutes=settings.AIRLOCK_AUDIT_SESSION_GAP_MINUTES),
        batch_size=settings.AIRLOCK_AUDIT_BATCH_SIZE,
        max_body=settings.AIRLOCK_AUDIT_MAX_BODY_BYTES,
        max_recording=settings.AIRLOCK_AUDIT_MAX_RECORDING_BYTES,
    )
