"""SPDY/3.1 framing as a sans-IO codec: bytes in -> frames out, frames -> bytes.

The gateway reads the port-forward tunnel with it (to record which ports an agent
forwarded); kubesim, the test double, serves port-forward with it.

kubectl >= 1.31 tunnels a raw SPDY/3.1 session inside WebSocket binary messages for
port-forward (client-go ``tools/portforward``, built on moby/spdystream).  There is no
maintained Python SPDY library, so this module implements the wire format of the SPDY/3
draft (section 2) with the 3.1 session-level WINDOW_UPDATE.  It does no I/O and keeps no
stream state: :class:`FrameDecoder` turns arbitrarily fragmented input into frame objects,
:class:`FrameEncoder` turns frame objects into bytes.  Each owns the zlib context for
name/value header blocks of its direction, which SPDY shares across the whole session.
:class:`FlowWindow` is the plain arithmetic of one flow-control window.
:class:`ReplyTracker` follows the other direction without decoding it: where its frames
begin, and which streams it answered and has not finished.

Long because it is the whole SPDY/3.1 frame codec (every frame type, both directions, the shared
zlib dictionary); a codec split by frame type would hide the wire format.
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass, field

VERSION = 3
MAX_FRAME_LENGTH = 0xFFFFFF  # the length field is 24 bits
MAX_STREAM_ID = 0x7FFFFFFF
MAX_WINDOW = 0x7FFFFFFF
DEFAULT_INITIAL_WINDOW = 64 * 1024
# Decompressed header blocks larger than this are refused (zlib bomb guard).
MAX_HEADER_BLOCK = 256 * 1024

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
FLAG_CLEAR_SETTINGS = 0x01

_CONTROL_BIT = 0x80000000
_HEADER = struct.Struct(">II")
_U32 = struct.Struct(">I")


def _build_dictionary() -> bytes:
    """The SPDY/3 zlib dictionary (draft 3, section 2.6.10.1).

    Its first part is a list of words, each prefixed by its 32-bit big-endian length;
    the rest is literal text.  Spelled as data here so it can be checked by eye.
    """
    words = (
        "options head post put delete trace accept accept-charset accept-encoding "
        "accept-language accept-ranges age allow authorization cache-control connection "
        "content-base content-encoding content-language content-length content-location "
        "content-md5 content-range content-type date etag expect expires from host "
        "if-match if-modified-since if-none-match if-range if-unmodified-since "
        "last-modified location max-forwards pragma proxy-authenticate proxy-authorization "
        "range referer retry-after server te trailer transfer-encoding upgrade user-agent "
        "vary via warning www-authenticate method get status"
    ).split() + ["200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"]
    tail = (
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417"
        "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently"
        "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error"
        "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct "
        "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,"
        "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,"
        "publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
    )
    prefixed = b"".join(_U32.pack(len(w)) + w.encode("ascii") for w in words)
    return prefixed + tail.encode("ascii")


DICTIONARY = _build_dictionary()


class FrameType(enum.IntEnum):
    SYN_STREAM = 1
    SYN_REPLY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PING = 6
    GOAWAY = 7
    HEADERS = 8
    WINDOW_UPDATE = 9


class RstStatus(enum.IntEnum):
    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9
    INVALID_CREDENTIALS = 10
    FRAME_TOO_LARGE = 11


class GoAwayStatus(enum.IntEnum):
    OK = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


class SettingId(enum.IntEnum):
    UPLOAD_BANDWIDTH = 1
    DOWNLOAD_BANDWIDTH = 2
    ROUND_TRIP_TIME = 3
    MAX_CONCURRENT_STREAMS = 4
    CURRENT_CWND = 5
    DOWNLOAD_RETRANS_RATE = 6
    INITIAL_WINDOW_SIZE = 7
    CLIENT_CERTIFICATE_VECTOR_SIZE = 8


class SpdyError(ValueError):
    """Malformed or illegal SPDY input.

    ``stream_id`` is set when the fault is confined to one stream (answer with
    RST_STREAM ``status``); otherwise the whole session is broken (answer with GOAWAY).
    """

    def __init__(self, message: str, *, stream_id: int = 0, status: RstStatus = RstStatus.PROTOCOL_ERROR):
        super().__init__(message)
        self.stream_id = stream_id
        self.status = status


# Header blocks map lower-case names to values; several values of one name are
# joined with NUL, exactly as they travel on the wire.
HeaderBlock = dict[str, str]


@dataclass(frozen=True)
class SynStream:
    stream_id: int
    headers: HeaderBlock
    associated_to: int = 0
    priority: int = 0
    slot: int = 0
    fin: bool = False
    unidirectional: bool = False


@dataclass(frozen=True)
class SynReply:
    stream_id: int
    headers: HeaderBlock = field(default_factory=dict)
    fin: bool = False


@dataclass(frozen=True)
class RstStream:
    stream_id: int
    status: RstStatus


@dataclass(frozen=True)
class Setting:
    id: int
    value: int
    flags: int = 0


@dataclass(frozen=True)
class Settings:
    entries: tuple[Setting, ...] = ()
    clear: bool = False


@dataclass(frozen=True)
class Ping:
    ping_id: int


@dataclass(frozen=True)
class GoAway:
    last_good_stream_id: int
    status: GoAwayStatus = GoAwayStatus.OK


@dataclass(frozen=True)
class Headers:
    stream_id: int
    headers: HeaderBlock
    fin: bool = False


@dataclass(frozen=True)
class WindowUpdate:
    stream_id: int  # 0 = the session window (SPDY/3.1)
    delta: int


@dataclass(frozen=True)
class Data:
    stream_id: int
    data: bytes
    fin: bool = False


Frame = SynStream | SynReply | RstStream | Settings | Ping | GoAway | Headers | WindowUpdate | Data


def _check_stream_id(stream_id: int, what: str) -> None:
    if not 0 < stream_id <= MAX_STREAM_ID:
        raise SpdyError(f"{what}: stream id must be in 1..2^31-1, got {stream_id}")


def pack_header_block(headers: HeaderBlock) -> bytes:
    """Serialise a name/value block (uncompressed).  Names must be lower case."""
    parts = [_U32.pack(len(headers))]
    for name, value in headers.items():
        if not name or name != name.lower():
            raise SpdyError(f"header name must be non-empty lower case: {name!r}")
        raw_name, raw_value = name.encode("utf-8"), value.encode("utf-8")
        parts += [_U32.pack(len(raw_name)), raw_name, _U32.pack(len(raw_value)), raw_value]
    return b"".join(parts)


def unpack_header_block(block: bytes, stream_id: int) -> HeaderBlock:
    """Parse a decompressed name/value block; duplicate or upper-case names are errors."""
    view = memoryview(block)

    def take(n: int) -> bytes:
        nonlocal view
        if len(view) < n:
            raise SpdyError("truncated header block", stream_id=stream_id)
        chunk, view = bytes(view[:n]), view[n:]
        return chunk

    (count,) = _U32.unpack(take(4))
    headers: HeaderBlock = {}
    for _ in range(count):
        (name_len,) = _U32.unpack(take(4))
        name = take(name_len).decode("utf-8", "replace")
        (value_len,) = _U32.unpack(take(4))
        value = take(value_len).decode("utf-8", "replace")
        if not name or name != name.lower():
            raise SpdyError(f"header name must be non-empty lower case: {name!r}", stream_id=stream_id)
        if name in headers:
            raise SpdyError(f"duplicate header name {name!r}", stream_id=stream_id)
        headers[name] = value
    if len(view):
        raise SpdyError("trailing bytes after header block", stream_id=stream_id)
    return headers


class FrameEncoder:
    """Frames -> bytes for one direction of a session (owns the header compressor)."""

    def __init__(self) -> None:
        self._compressor = zlib.compressobj(
            zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, DICTIONARY
        )

    def _compress(self, headers: HeaderBlock) -> bytes:
        raw = pack_header_block(headers)
        return self._compressor.compress(raw) + self._compressor.flush(zlib.Z_SYNC_FLUSH)

    @staticmethod
    def _control(ftype: FrameType, flags: int, payload: bytes) -> bytes:
        if len(payload) > MAX_FRAME_LENGTH:
            raise SpdyError(f"{ftype.name} payload too large: {len(payload)} bytes")
        return _HEADER.pack(_CONTROL_BIT | VERSION << 16 | ftype, flags << 24 | len(payload)) + payload

    def encode(self, frame: Frame) -> bytes:
        match frame:
            case Data(stream_id, data, fin):
                _check_stream_id(stream_id, "DATA")
                if len(data) > MAX_FRAME_LENGTH:
                    raise SpdyError(f"DATA payload too large: {len(data)} bytes")
                return _HEADER.pack(stream_id, (FLAG_FIN if fin else 0) << 24 | len(data)) + bytes(data)
            case SynStream(stream_id, headers, associated_to, priority, slot, fin, unidirectional):
                _check_stream_id(stream_id, "SYN_STREAM")
                if not 0 <= associated_to <= MAX_STREAM_ID or not 0 <= priority <= 7 or not 0 <= slot <= 255:
                    raise SpdyError("SYN_STREAM: associated id, priority or slot out of range")
                flags = (FLAG_FIN if fin else 0) | (FLAG_UNIDIRECTIONAL if unidirectional else 0)
                body = struct.pack(">IIBB", stream_id, associated_to, priority << 5, slot) + self._compress(headers)
                return self._control(FrameType.SYN_STREAM, flags, body)
            case SynReply(stream_id, headers, fin):
                _check_stream_id(stream_id, "SYN_REPLY")
                body = _U32.pack(stream_id) + self._compress(headers)
                return self._control(FrameType.SYN_REPLY, FLAG_FIN if fin else 0, body)
            case Headers(stream_id, headers, fin):
                _check_stream_id(stream_id, "HEADERS")
                body = _U32.pack(stream_id) + self._compress(headers)
                return self._control(FrameType.HEADERS, FLAG_FIN if fin else 0, body)
            case RstStream(stream_id, status):
                _check_stream_id(stream_id, "RST_STREAM")
                return self._control(FrameType.RST_STREAM, 0, struct.pack(">II", stream_id, RstStatus(status)))
            case Settings(entries, clear):
                body = _U32.pack(len(entries)) + b"".join(
                    struct.pack(">II", (e.flags & 0xFF) << 24 | (e.id & 0xFFFFFF), e.value) for e in entries
                )
                return self._control(FrameType.SETTINGS, FLAG_CLEAR_SETTINGS if clear else 0, body)
            case Ping(ping_id):
                if not 0 < ping_id <= 0xFFFFFFFF:
                    raise SpdyError(f"PING id must be in 1..2^32-1, got {ping_id}")
                return self._control(FrameType.PING, 0, _U32.pack(ping_id))
            case GoAway(last_good, status):
                if not 0 <= last_good <= MAX_STREAM_ID:
                    raise SpdyError(f"GOAWAY: last good stream id out of range: {last_good}")
                return self._control(FrameType.GOAWAY, 0, struct.pack(">II", last_good, GoAwayStatus(status)))
            case WindowUpdate(stream_id, delta):
                if not 0 <= stream_id <= MAX_STREAM_ID or not 0 < delta <= MAX_WINDOW:
                    raise SpdyError(f"WINDOW_UPDATE out of range: stream {stream_id}, delta {delta}")
                return self._control(FrameType.WINDOW_UPDATE, 0, struct.pack(">II", stream_id, delta))
        raise TypeError(f"not a SPDY frame: {type(frame).__name__}")


class FrameDecoder:
    """Bytes -> frames for one direction of a session (owns the header decompressor).

    Input may be split at any byte boundary.  Unknown control frame types are skipped, as
    the draft requires.  After a :class:`SpdyError` without ``stream_id`` the session is
    broken and the decoder must not be used again.
    """

    def __init__(self, max_frame_length: int = MAX_FRAME_LENGTH) -> None:
        self._buffer = bytearray()
        self._max = max_frame_length
        self._decompressor = zlib.decompressobj(15, DICTIONARY)

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def receive_data(self, data: bytes) -> None:
        """Buffer input; frames come out of :meth:`next_frame`."""
        self._buffer += data

    def next_frame(self) -> Frame | None:
        """The next complete frame, or None until more input arrives.

        A :class:`SpdyError` with a ``stream_id`` consumed its (bad) frame; decoding can go
        on with the next call.
        """
        while len(self._buffer) >= 8:
            first, second = _HEADER.unpack_from(self._buffer)
            length = second & 0xFFFFFF
            if length > self._max:
                raise SpdyError(f"frame of {length} bytes exceeds the {self._max} byte limit")
            if len(self._buffer) < 8 + length:
                return None
            payload = bytes(self._buffer[8 : 8 + length])
            del self._buffer[: 8 + length]
            frame = self._parse(first, second >> 24, payload)
            if frame is not None:
                return frame
        return None

    def feed(self, data: bytes) -> list[Frame]:
        """Buffer input and return every frame now complete."""
        self.receive_data(data)
        frames = []
        while (frame := self.next_frame()) is not None:
            frames.append(frame)
        return frames

    def _decompress(self, compressed: bytes, stream_id: int) -> HeaderBlock:
        try:
            raw = self._decompressor.decompress(compressed, MAX_HEADER_BLOCK)
        except zlib.error as exc:
            raise SpdyError(f"corrupt compressed header block: {exc}") from None
        if self._decompressor.unconsumed_tail:
            raise SpdyError(f"header block larger than {MAX_HEADER_BLOCK} bytes")
        return unpack_header_block(raw, stream_id)

    def _parse(self, first: int, flags: int, payload: bytes) -> Frame | None:
        if not first & _CONTROL_BIT:
            stream_id = first & MAX_STREAM_ID
            if stream_id == 0:
                raise SpdyError("DATA frame on stream 0")
            return Data(stream_id, payload, bool(flags & FLAG_FIN))
        version, ftype = (first >> 16) & 0x7FFF, first & 0xFFFF
        if version != VERSION:
            raise SpdyError(f"unsupported SPDY version {version}", status=RstStatus.UNSUPPORTED_VERSION)
        try:
            kind = FrameType(ftype)
        except ValueError:
            return None
        size = len(payload)
        match kind:
            case FrameType.SYN_STREAM:
                if size < 10:
                    raise SpdyError(f"SYN_STREAM too short: {size} bytes")
                stream_id, assoc, prio, slot = struct.unpack_from(">IIBB", payload)
                stream_id &= MAX_STREAM_ID
                # Decompress even for a bad stream id: the zlib context is session-wide.
                headers = self._decompress(payload[10:], stream_id)
                _check_stream_id(stream_id, "SYN_STREAM")
                return SynStream(
                    stream_id, headers, assoc & MAX_STREAM_ID, prio >> 5, slot,
                    bool(flags & FLAG_FIN), bool(flags & FLAG_UNIDIRECTIONAL),
                )
            case FrameType.SYN_REPLY | FrameType.HEADERS:
                if size < 4:
                    raise SpdyError(f"{kind.name} too short: {size} bytes")
                stream_id = _U32.unpack_from(payload)[0] & MAX_STREAM_ID
                headers = self._decompress(payload[4:], stream_id)
                _check_stream_id(stream_id, kind.name)
                cls = SynReply if kind is FrameType.SYN_REPLY else Headers
                return cls(stream_id, headers, bool(flags & FLAG_FIN))
            case FrameType.RST_STREAM:
                stream_id, status = self._fixed(kind, payload, 8, ">II")
                stream_id &= MAX_STREAM_ID
                _check_stream_id(stream_id, "RST_STREAM")
                try:
                    return RstStream(stream_id, RstStatus(status))
                except ValueError:
                    raise SpdyError(f"RST_STREAM with invalid status {status}") from None
            case FrameType.SETTINGS:
                if size < 4 or (size - 4) % 8 or _U32.unpack_from(payload)[0] != (size - 4) // 8:
                    raise SpdyError(f"SETTINGS length {size} does not match its entry count")
                entries = tuple(
                    Setting(flag_id & 0xFFFFFF, value, flag_id >> 24)
                    for flag_id, value in struct.iter_unpack(">II", payload[4:])
                )
                return Settings(entries, bool(flags & FLAG_CLEAR_SETTINGS))
            case FrameType.PING:
                (ping_id,) = self._fixed(kind, payload, 4, ">I")
                return Ping(ping_id)
            case FrameType.GOAWAY:
                last_good, status = self._fixed(kind, payload, 8, ">II")
                try:
                    return GoAway(last_good & MAX_STREAM_ID, GoAwayStatus(status))
                except ValueError:
                    raise SpdyError(f"GOAWAY with invalid status {status}") from None
            case FrameType.WINDOW_UPDATE:
                stream_id, delta = self._fixed(kind, payload, 8, ">II")
                stream_id, delta = stream_id & MAX_STREAM_ID, delta & MAX_WINDOW
                if delta == 0:
                    raise SpdyError("WINDOW_UPDATE with zero delta", stream_id=stream_id)
                return WindowUpdate(stream_id, delta)

    @staticmethod
    def _fixed(kind: FrameType, payload: bytes, size: int, fmt: str) -> tuple[int, ...]:
        if len(payload) != size:
            raise SpdyError(f"{kind.name} must be {size} bytes, got {len(payload)}")
        return struct.unpack(fmt, payload)


class ReplyTracker:
    """Frame boundaries and open answered streams of one direction, from the frame headers only.

    The gateway may add a frame of its own to the cluster's half of a tunnel (an error stream's
    message when it ends the session) only between two of the cluster's frames, and only on a
    stream the cluster replied to and has not finished.  Header blocks are never decompressed,
    so payloads cost nothing but a length subtraction.
    """

    def __init__(self) -> None:
        self._head = b""  # the start of a frame header not complete yet
        self._rest = 0  # bytes of the current frame's payload still to come
        self.open: set[int] = set()  # replied to, not finished (FIN or RST_STREAM)

    @property
    def at_boundary(self) -> bool:
        return not self._head and not self._rest

    def feed(self, data: bytes) -> None:
        position = 0
        while position < len(data):
            if self._rest:
                step = min(self._rest, len(data) - position)
                self._rest -= step
                position += step
                continue
            needed = self._header_size() - len(self._head)
            self._head += data[position:position + needed]
            position += needed
            if len(self._head) == self._header_size():
                self._finish_header()

    def _header_size(self) -> int:
        if len(self._head) < 8:
            return 8
        first = _U32.unpack_from(self._head)[0]
        if first & _CONTROL_BIT and first & 0xFFFF in (FrameType.SYN_REPLY, FrameType.RST_STREAM):
            return 12  # their payload starts with the stream id
        return 8

    def _finish_header(self) -> None:
        first, second = _HEADER.unpack_from(self._head)
        flags, length = second >> 24, second & 0xFFFFFF
        if not first & _CONTROL_BIT:
            if flags & FLAG_FIN:
                self.open.discard(first)
        elif first & 0xFFFF == FrameType.SYN_REPLY or first & 0xFFFF == FrameType.RST_STREAM:
            stream_id = _U32.unpack_from(self._head, 8)[0] & MAX_STREAM_ID
            if first & 0xFFFF == FrameType.SYN_REPLY and not flags & FLAG_FIN:
                self.open.add(stream_id)
            else:
                self.open.discard(stream_id)
        self._rest = max(0, length - (len(self._head) - 8))
        self._head = b""


class FlowWindow:
    """One SPDY/3.1 flow-control window (a stream's or the session's), in bytes."""

    def __init__(self, size: int = DEFAULT_INITIAL_WINDOW) -> None:
        self.size = size

    def consume(self, n: int) -> None:
        self.size -= n

    def grow(self, delta: int) -> None:
        """Apply a WINDOW_UPDATE; overflowing 2^31-1 is a flow-control error."""
        if self.size + delta > MAX_WINDOW:
            raise SpdyError("flow-control window overflow", status=RstStatus.FLOW_CONTROL_ERROR)
        self.size += delta
