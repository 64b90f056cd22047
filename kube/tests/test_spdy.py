"""Sans-IO tests of the SPDY/3.1 codec in kube.spdy."""

import struct
import zlib

import pytest

from kube import spdy

ALL_FRAMES = [
    spdy.SynStream(1, {"streamtype": "error", "port": "80", "requestid": "0"}),
    spdy.SynStream(3, {"streamtype": "data"}, associated_to=1, priority=7, slot=2, fin=True, unidirectional=True),
    spdy.SynReply(1),
    spdy.SynReply(5, {"status": "200", "multi": "a\x00b"}, fin=True),
    spdy.RstStream(3, spdy.RstStatus.CANCEL),
    spdy.Settings((spdy.Setting(spdy.SettingId.INITIAL_WINDOW_SIZE, 1 << 20, flags=1),), clear=True),
    spdy.Settings(),
    spdy.Ping(1),
    spdy.Ping(0xFFFFFFFF),
    spdy.GoAway(7, spdy.GoAwayStatus.INTERNAL_ERROR),
    spdy.Headers(1, {"x": ""}, fin=True),
    spdy.WindowUpdate(0, spdy.MAX_WINDOW),
    spdy.WindowUpdate(9, 1),
    spdy.Data(1, b"payload", fin=False),
    spdy.Data(spdy.MAX_STREAM_ID, b"", fin=True),
]


def roundtrip(frames):
    encoder, decoder = spdy.FrameEncoder(), spdy.FrameDecoder()
    wire = b"".join(encoder.encode(f) for f in frames)
    return wire, decoder.feed(wire), decoder


def control(ftype: int, payload: bytes, flags: int = 0, version: int = 3) -> bytes:
    return struct.pack(">HHI", 0x8000 | version, ftype, flags << 24 | len(payload)) + payload


def test_dictionary_is_the_spdy3_dictionary():
    # The zlib DICTID peers put in every header stream is adler32 of the dictionary.
    assert len(spdy.DICTIONARY) == 1423
    assert zlib.adler32(spdy.DICTIONARY) == 0xE3C6A7C2
    assert spdy.DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert spdy.DICTIONARY.endswith(b"utf-,*,enq=0.")


@pytest.mark.parametrize("frame", ALL_FRAMES, ids=lambda f: type(f).__name__)
def test_each_frame_type_roundtrips(frame):
    wire, frames, decoder = roundtrip([frame])
    assert frames == [frame]
    assert decoder.buffered == 0


def test_wire_layout_of_fixed_frames():
    enc = spdy.FrameEncoder()
    assert enc.encode(spdy.Data(5, b"ab", fin=True)) == b"\x00\x00\x00\x05\x01\x00\x00\x02ab"
    assert enc.encode(spdy.Ping(2)) == b"\x80\x03\x00\x06\x00\x00\x00\x04\x00\x00\x00\x02"
    assert enc.encode(spdy.RstStream(1, spdy.RstStatus.PROTOCOL_ERROR)) == control(3, struct.pack(">II", 1, 1))
    assert enc.encode(spdy.WindowUpdate(3, 100)) == control(9, struct.pack(">II", 3, 100))
    assert enc.encode(spdy.GoAway(0)) == control(7, b"\x00" * 8)


def test_header_blocks_share_one_zlib_context_per_direction():
    frames = [spdy.SynStream(i, {"streamtype": "data", "port": "8080", "requestid": str(i)}) for i in (1, 3, 5)]
    wire, decoded, _ = roundtrip(frames)
    assert decoded == frames
    encoder = spdy.FrameEncoder()
    first, second = encoder.encode(frames[0]), encoder.encode(frames[0])
    # The repeat compresses against the history, so a fresh decoder cannot read it alone.
    assert len(second) < len(first)
    with pytest.raises(spdy.SpdyError):
        spdy.FrameDecoder().feed(second)


def test_header_block_is_zlib_with_the_spdy_dictionary():
    frame = spdy.FrameEncoder().encode(spdy.SynReply(1, {"port": "80"}))
    compressed = frame[12:]
    cmf, flg = compressed[0], compressed[1]
    assert cmf & 0x0F == 8 and flg & 0x20  # deflate with a preset dictionary (FDICT)
    assert struct.unpack(">I", compressed[2:6])[0] == zlib.adler32(spdy.DICTIONARY)
    raw = zlib.decompressobj(zdict=spdy.DICTIONARY).decompress(compressed)
    assert raw == struct.pack(">I", 1) + struct.pack(">I", 4) + b"port" + struct.pack(">I", 2) + b"80"


def test_fragmented_input_byte_by_byte():
    wire, expected, _ = roundtrip(ALL_FRAMES)
    decoder = spdy.FrameDecoder()
    got = []
    for i in range(len(wire)):
        got += decoder.feed(wire[i : i + 1])
    assert got == ALL_FRAMES
    assert decoder.buffered == 0


def test_partial_frame_is_buffered_until_complete():
    wire = spdy.FrameEncoder().encode(spdy.Data(1, b"x" * 100))
    decoder = spdy.FrameDecoder()
    assert decoder.feed(wire[:50]) == []
    assert decoder.buffered == 50
    assert decoder.feed(wire[50:] + wire[:3]) == [spdy.Data(1, b"x" * 100)]
    assert decoder.buffered == 3


def test_unknown_control_frame_types_are_skipped():
    noop = control(5, b"")
    credential = control(10, b"\x00" * 12)
    ping = spdy.FrameEncoder().encode(spdy.Ping(3))
    assert spdy.FrameDecoder().feed(noop + credential + ping) == [spdy.Ping(3)]


@pytest.mark.parametrize(
    "wire, message",
    [
        (control(6, b"\x00\x00\x00\x01", version=2), "unsupported SPDY version 2"),
        (b"\x00\x00\x00\x00\x00\x00\x00\x00", "DATA frame on stream 0"),
        (control(6, b"\x00\x00\x01"), "PING must be 4 bytes"),
        (control(3, struct.pack(">II", 1, 0)), "RST_STREAM with invalid status 0"),
        (control(3, struct.pack(">II", 0, 5)), "RST_STREAM: stream id"),
        (control(7, struct.pack(">II", 1, 9)), "GOAWAY with invalid status 9"),
        (control(9, struct.pack(">II", 1, 0)), "WINDOW_UPDATE with zero delta"),
        (control(9, struct.pack(">III", 1, 1, 1)), "WINDOW_UPDATE must be 8 bytes"),
        (control(4, struct.pack(">I", 2) + b"\x00" * 8), "SETTINGS length"),
        (control(1, b"\x00" * 6), "SYN_STREAM too short"),
        (control(2, b"\x00\x00"), "SYN_REPLY too short"),
        (control(1, struct.pack(">IIBB", 1, 0, 0, 0) + b"not zlib at all"), "corrupt compressed header block"),
    ],
)
def test_invalid_input_raises_a_clear_error(wire, message):
    with pytest.raises(spdy.SpdyError, match=message):
        spdy.FrameDecoder().feed(wire)


def compressed_block(raw: bytes) -> bytes:
    c = zlib.compressobj(zdict=spdy.DICTIONARY)
    return c.compress(raw) + c.flush(zlib.Z_SYNC_FLUSH)


def pairs(*items: tuple[bytes, bytes]) -> bytes:
    out = struct.pack(">I", len(items))
    for name, value in items:
        out += struct.pack(">I", len(name)) + name + struct.pack(">I", len(value)) + value
    return out


@pytest.mark.parametrize(
    "raw, message",
    [
        (pairs((b"Port", b"80")), "lower case"),
        (pairs((b"port", b"80"), (b"port", b"81")), "duplicate header name"),
        (pairs((b"", b"80")), "lower case"),
        (pairs((b"port", b"80"))[:-1], "truncated header block"),
        (pairs((b"port", b"80")) + b"junk", "trailing bytes"),
    ],
)
def test_bad_header_blocks_are_stream_errors(raw, message):
    wire = control(2, struct.pack(">I", 7) + compressed_block(raw))
    with pytest.raises(spdy.SpdyError, match=message) as info:
        spdy.FrameDecoder().feed(wire)
    assert info.value.stream_id == 7


def test_header_block_decompression_is_bounded():
    bomb = pairs((b"x", b"a" * (spdy.MAX_HEADER_BLOCK * 2)))
    wire = control(2, struct.pack(">I", 1) + compressed_block(bomb))
    with pytest.raises(spdy.SpdyError, match="header block larger than"):
        spdy.FrameDecoder().feed(wire)


def test_oversized_frame_is_refused_before_buffering_it():
    decoder = spdy.FrameDecoder(max_frame_length=1024)
    with pytest.raises(spdy.SpdyError, match="exceeds the 1024 byte limit"):
        decoder.feed(b"\x00\x00\x00\x01\x00\x00\x04\x01")


@pytest.mark.parametrize(
    "frame",
    [
        spdy.Data(0, b""),
        spdy.SynStream(0, {}),
        spdy.SynReply(spdy.MAX_STREAM_ID + 1),
        spdy.Ping(0),
        spdy.WindowUpdate(1, 0),
        spdy.SynStream(1, {}, priority=8),
        spdy.Headers(1, {"Upper": "x"}),
    ],
)
def test_encoder_refuses_illegal_frames(frame):
    with pytest.raises(spdy.SpdyError):
        spdy.FrameEncoder().encode(frame)


def test_encoder_rejects_non_frames():
    with pytest.raises(TypeError):
        spdy.FrameEncoder().encode(object())


def test_flow_window_arithmetic():
    window = spdy.FlowWindow()
    assert window.size == 65536
    window.consume(65536)
    assert window.size == 0
    window.grow(10)
    assert window.size == 10
    with pytest.raises(spdy.SpdyError) as info:
        window.grow(spdy.MAX_WINDOW)
    assert info.value.status is spdy.RstStatus.FLOW_CONTROL_ERROR


def test_decoding_continues_after_a_stream_error():
    encoder = spdy.FrameEncoder()
    bad = control(2, struct.pack(">I", 5) + compressed_block(pairs((b"Port", b"80"))))
    good = encoder.encode(spdy.Ping(9))
    decoder = spdy.FrameDecoder()
    decoder.receive_data(bad + good)
    with pytest.raises(spdy.SpdyError) as info:
        decoder.next_frame()
    assert info.value.stream_id == 5
    assert decoder.next_frame() == spdy.Ping(9)
    assert decoder.next_frame() is None


# The first frames kubectl 1.37 sent for `port-forward pod/web 18091:80` (captured from
# the WebSocket tunnel): header blocks compressed by Go's zlib with the SPDY dictionary.
KUBECTL_FRAMES = bytes.fromhex(
    "800300010000003d0000000100000000000078f9e3c6a7c202253a060606ce2248fc6482d22da30138e5"
    "9514a526e6420b17d65450d0430aea2250a266b23000000000ffff"
    "0000000101000000"
    "800300010000001c00000003000000000000826a4555082a851231d4a1190f000000ffff"
)


def test_decodes_frames_from_real_kubectl():
    frames = spdy.FrameDecoder().feed(KUBECTL_FRAMES)
    assert frames == [
        spdy.SynStream(1, {"requestid": "0", "streamtype": "error", "port": "80"}),
        spdy.Data(1, b"", fin=True),
        spdy.SynStream(3, {"streamtype": "data", "port": "80", "requestid": "0"}),
    ]
