"""Exec/attach recordings as the frames that passed, with their times; asciicast is rendered on replay.

The relay used to decode every output byte to text and serialise a JSON line per frame while the
stream ran (a quarter of the exec path's CPU).  :class:`FrameRecorder` instead appends each frame
as it came (already masked: what the agent saw) to one bounded buffer, and :func:`render` turns
that buffer into the asciicast v2 text the old writer produced (audit.asciicast.AsciicastWriter
does the rendering, so the two cannot drift) when the recording is replayed or exported.

The stored form (``Recording.frames``, hashed into the chain as ``framesSha256``)::

    header  b"ALF1" | started_at: float64 | cap: uint32          (little-endian, 16 bytes)
    event   time: float64 | kind: uint8 | length: uint32 | payload   (13 bytes + payload)

``time`` is seconds since the stream opened; ``cap`` is the most asciicast bytes a rendering
may take (the old writer's limit, lowered by the recorder's ``max_recording``); kinds are the
channel of a data frame (0 stdin, 1 stdout, 2 stderr), 4 a resize (payload two uint16: columns,
rows), ``x`` the exit (JSON ``[code or null, message]``) and ``t``
"the recording stopped here: size limit".  The buffer is bounded by ``max_bytes`` like the old
text: past it nothing but the exit is kept.  The recording's ``duration_s`` is the time of its
last frame (the live writer counted only frames that completed a character).
"""

from __future__ import annotations

import codecs
import json
import struct
import time

from audit.asciicast import AsciicastWriter, exit_status, terminal_size
from kube.channels import ERROR, RESIZE, STDERR, STDIN, STDOUT

MAGIC = b"ALF1"
HEADER = struct.Struct("<4sdI")
EVENT = struct.Struct("<dBI")
SIZE = struct.Struct("<HH")
EXIT, CUT = ord("x"), ord("t")
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
# Room kept below the cap for the exit (its message is bounded to 1 KiB by exit_status).
_RESERVE = 2048
_MAX_CAP = 2**32 - 1


class FramesError(ValueError):
    """A frames buffer that is not in the format above."""


class FrameRecorder:
    """The recording of one exec/attach stream: frames in, the ``recording`` dict out (sans-IO)."""

    def __init__(self, command=(), *, started_at: float | None = None, max_bytes: int = DEFAULT_MAX_BYTES):
        self.command = list(command)
        self.started_at = time.time() if started_at is None else started_at
        self.max_bytes = max_bytes
        self.exit_code: int | None = None
        self.truncated = False
        self.duration = 0.0
        self.width: int | None = None
        self.height: int | None = None
        self._buf = bytearray(HEADER.pack(MAGIC, self.started_at, min(max_bytes, _MAX_CAP)))
        # Until the terminal size is known: whether the rendering has a line yet (the first resize
        # sets the size only before any line), and the decoders that tell.
        self._sized = False
        self._decoders: dict[int, codecs.IncrementalDecoder] = {}

    def client_frame(self, t: float, channel: int, payload: bytes) -> None:
        """A frame the client sent: stdin is input, a resize a resize; nothing else is recorded."""
        if not payload:
            return
        if channel == STDIN:
            self._data(t, STDIN, payload)
        elif channel == RESIZE:
            size = terminal_size(payload)
            if size is not None and 0 < size[0] <= 10000 and 0 < size[1] <= 10000:
                if not self._sized:
                    self._sized = True
                    self.width, self.height = size
                self._add(t, RESIZE, SIZE.pack(*size))

    def cluster_frame(self, t: float, channel: int, payload: bytes) -> None:
        """A frame the cluster sent: stdout and stderr are output, the status channel is the exit."""
        if not payload:
            return
        if channel in (STDOUT, STDERR):
            self._data(t, channel, payload)
        elif channel == ERROR:
            self.exit(t, *exit_status(payload))

    def exit(self, t: float, code: int | None, message: str = "") -> None:
        """The command's end: its exit code, or None with the server's message when it failed."""
        self._sized = True
        self.exit_code = code
        payload = json.dumps([code, message[:1024]]).encode()
        self._add(t, EXIT, payload, final=True)

    def _data(self, t: float, channel: int, payload: bytes) -> None:
        if not self._sized:
            decoder = self._decoders.get(channel)
            if decoder is None:
                decoder = self._decoders[channel] = codecs.getincrementaldecoder("utf-8")("replace")
            if decoder.decode(bytes(payload)):
                self._sized = True
                self._decoders.clear()
        self._add(t, channel, payload)

    def _add(self, t: float, kind: int, payload: bytes, *, final: bool = False) -> None:
        t = float(t)
        if t > self.duration:
            self.duration = t
        if self.truncated and not final:
            return
        buf = self._buf
        if not final and len(buf) + EVENT.size + len(payload) > self.max_bytes - _RESERVE:
            self.truncated = True
            buf += EVENT.pack(t, CUT, 0)
            return
        buf += EVENT.pack(t, kind, len(payload))
        buf += payload

    @property
    def frames(self) -> bytes:
        return bytes(self._buf)

    def recording(self, *, kind: str, namespace: str = "", pod: str = "", container: str = "") -> dict:
        """The ``recording`` dict of the completion event (audit.events.prepare_recording)."""
        return {
            "kind": kind,
            "namespace": namespace,
            "pod": pod,
            "container": container,
            "command": self.command,
            "frames": self.frames,
            "width": self.width or 80,
            "height": self.height or 24,
            "exit_code": self.exit_code,
            "duration_s": round(self.duration, 3),
            "truncated": self.truncated,
        }


def _walk(frames: bytes) -> tuple[float, int, list[tuple[float, int, int, int]]]:
    """(started_at, cap, [(time, kind, start, end) of each payload]); FramesError if it is not a frames buffer."""
    if len(frames) < HEADER.size:
        raise FramesError("too short for a header")
    magic, started_at, cap = HEADER.unpack_from(frames, 0)
    if magic != MAGIC:
        raise FramesError("not a frames buffer")
    events, pos, n = [], HEADER.size, len(frames)
    while pos < n:
        if pos + EVENT.size > n:
            raise FramesError("an event header is cut off")
        t, kind, length = EVENT.unpack_from(frames, pos)
        pos += EVENT.size
        if pos + length > n:
            raise FramesError("an event is cut off")
        events.append((t, kind, pos, pos + length))
        pos += length
    return started_at, cap, events


def read(frames: bytes) -> tuple[float, int, list[tuple[float, int, bytes]]]:
    """(started_at, cap, events) of a frames buffer; FramesError if it is not one."""
    started_at, cap, spans = _walk(frames)
    return started_at, cap, [(t, kind, frames[start:end]) for t, kind, start, end in spans]


def cap_frames(frames: bytes, limit: int) -> tuple[bytes, bool]:
    """``frames`` with at most ``limit`` bytes and a rendering cap of at most ``limit``; cut at an
    event boundary (then ending with a "stopped here" event), and whether it was cut.  The exit
    event is kept when it fits.  Raises FramesError for a buffer that is not one."""
    started_at, cap, _ = _walk(frames)  # checks the whole buffer without copying it
    header = HEADER.pack(MAGIC, started_at, min(cap, limit, _MAX_CAP))
    if len(frames) <= limit:
        return header + frames[HEADER.size :], False
    _, _, events = read(frames)
    out = bytearray(header)
    budget = limit - EVENT.size  # room for the "stopped here" event
    exits = [e for e in events if e[1] == EXIT][-1:]
    if exits and HEADER.size + EVENT.size * 2 + len(exits[0][2]) <= limit:
        budget -= EVENT.size + len(exits[0][2])
    last = 0.0
    for t, kind, payload in events:
        if kind == EXIT:
            continue
        if len(out) + EVENT.size + len(payload) > budget:
            break
        out += EVENT.pack(t, kind, len(payload)) + payload
        last = t
    out += EVENT.pack(last, CUT, 0)
    if exits and len(out) + EVENT.size + len(exits[0][2]) <= limit:
        t, kind, payload = exits[0]
        out += EVENT.pack(t, kind, len(payload)) + payload
    return bytes(out), True


def render(frames: bytes, command=(), title: str = "") -> str:
    """The asciicast v2 text of a frames buffer, as the relay's writer used to produce it."""
    started_at, cap, events = read(frames)
    writer = AsciicastWriter(command=command, title=title, started_at=started_at, max_bytes=cap)
    for t, kind, payload in events:
        if kind in (STDOUT, STDERR):
            writer.output(t, payload, "stdout" if kind == STDOUT else "stderr")
        elif kind == STDIN:
            writer.input(t, payload)
        elif kind == RESIZE and len(payload) == SIZE.size:
            writer.resize(t, *SIZE.unpack(payload))
        elif kind == EXIT:
            code, message = json.loads(payload)
            writer.exit(t, code if isinstance(code, int) else None, message if isinstance(message, str) else "")
        elif kind == CUT:
            writer.truncate(t)
    return writer.text()
