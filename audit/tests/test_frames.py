"""Recordings kept as frames and rendered to asciicast on replay and export (audit/frames.py)."""

import base64
import hashlib
import io
import json
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.asciicast import AsciicastWriter
from audit.chain import document_of, verify_chain
from audit.events import Clamps, prepare_recording
from audit.document import chain_hash, strip_export_fields
from audit.export import encode_line, export_document
from audit.frames import EVENT, FrameRecorder, cap_frames, read, render
from audit.models import AuditEvent, Recording
from audit.tests.factories import append, broken, event, tampering, verify

SUCCESS = b'{"metadata":{},"status":"Success"}'
EXIT_3 = (b'{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code 3",'
          b'"reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}')


def both(messages, *, command=("sh",), started_at=1_700_000_000.25, max_bytes=8 * 1024 * 1024):
    """The old path (the writer fed live) and the new one (frames, rendered) for the same stream."""
    writer = AsciicastWriter(command=command, started_at=started_at, max_bytes=max_bytes)
    recorder = FrameRecorder(command=command, started_at=started_at, max_bytes=max_bytes)
    for t, side, channel, payload in messages:
        for target in (writer, recorder):
            (target.client_frame if side == "client" else target.cluster_frame)(t, channel, payload)
    return writer, recorder


def same_recording(writer, recorder):
    old = writer.recording(kind="exec", namespace="shop", pod="web-0", container="app")
    new = recorder.recording(kind="exec", namespace="shop", pod="web-0", container="app")
    assert render(new["frames"], new["command"]) == old["asciicast"]
    # The live writer's duration counted only frames that completed a character; the frames' is the last frame's.
    assert new.pop("duration_s") >= old.pop("duration_s")
    assert {k: v for k, v in new.items() if k != "frames"} == {k: v for k, v in old.items() if k != "asciicast"}


def test_a_text_session_renders_as_the_live_writer_wrote_it():
    writer, recorder = both([
        (0.0, "cluster", 1, b""),
        (0.01, "client", 4, b'{"Width":100,"Height":30}'),
        (0.2, "client", 0, b"ls -l\r"),
        (0.25, "cluster", 1, "bin  etc  caf\u00e9 \u2603\r\n".encode()),
        (0.3, "cluster", 2, b"sh: warning\r\n"),
        (0.4, "client", 4, b'{"Width":120,"Height":40}'),
        (0.5, "cluster", 1, "multi-byte split: \u00e9".encode()[:-1]),
        (0.51, "cluster", 1, "\u00e9".encode()[-1:] + b" joined\r\n"),
        (0.6, "cluster", 3, EXIT_3),
    ])
    same_recording(writer, recorder)
    assert recorder.exit_code == 3 and (recorder.width, recorder.height) == (100, 30)


def test_binary_output_is_kept_as_bytes_and_renders_as_before():
    rnd = random.Random(5)
    messages = [(0.001 * i, "cluster", 1 + i % 2, bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 300))))
                for i in range(200)]
    writer, recorder = both(messages + [(0.5, "cluster", 3, SUCCESS)])
    same_recording(writer, recorder)
    _, _, events = read(recorder.frames)
    assert b"".join(p for _, kind, p in events if kind in (1, 2)) == b"".join(m[3] for m in messages)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(
    st.sampled_from(["client", "cluster"]),
    st.sampled_from([0, 1, 2, 3, 4]),
    st.one_of(st.binary(max_size=40), st.text(max_size=20).map(str.encode),
              st.sampled_from([b'{"Width":90,"Height":20}', b'{"Width":0,"Height":1}', SUCCESS, EXIT_3,
                               b"\xe2\x98", b"\x83", b"\xf0\x9f\x98\x80"])),
), max_size=40))
def test_any_stream_renders_as_the_live_writer_wrote_it(messages):
    stream = [(0.01 * i, side, channel, payload) for i, (side, channel, payload) in enumerate(messages)]
    writer, recorder = both(stream)
    same_recording(writer, recorder)


def test_a_flood_stops_the_frames_at_their_bound_and_keeps_the_exit():
    messages = [(0.01 * i, "cluster", 1, b"x" * 1000) for i in range(100)] + [(2.0, "cluster", 3, EXIT_3)]
    writer, recorder = both(messages, max_bytes=20_000)
    assert recorder.truncated and len(recorder.frames) <= 20_000
    cast = render(recorder.frames, ["sh"])
    lines = [json.loads(line) for line in cast.splitlines()[1:]]
    assert lines[-2][1:] == ["m", "recording truncated: size limit reached"]
    assert lines[-1] == [2.0, "m", "exit status 3"]
    assert len(cast.encode()) <= 20_000


def test_the_recorders_cap_cuts_frames_at_an_event_and_bounds_the_rendering():
    recorder = FrameRecorder(command=["cat"])
    for i in range(50):
        recorder.cluster_frame(0.01 * i, 1, b"y" * 999 + b"\n")
    recorder.cluster_frame(1.0, 3, EXIT_3)
    clamps = Clamps()
    prepared = prepare_recording(recorder.recording(kind="exec"), max_recording=10_000, clamps=clamps)
    assert prepared["truncated"] and len(prepared["frames"]) <= 10_000 and not clamps.names
    cast = render(prepared["frames"], ["cat"])
    assert len(cast.encode()) <= 10_000 and cast.rstrip().endswith('"exit status 3"]')
    again, cut = cap_frames(prepared["frames"], 10_000)
    assert again == prepared["frames"] and not cut


def test_frames_that_are_not_frames_are_clamped_not_stored():
    clamps = Clamps()
    prepared = prepare_recording({"kind": "exec", "frames": b"ALF1 not really"}, max_recording=10_000, clamps=clamps)
    assert prepared["frames"] == b"" and clamps.names == ["frames"]


@pytest.mark.django_db
def test_frames_are_stored_hashed_replayed_and_exported():
    recorder = FrameRecorder(command=["cat", "/etc/hostname"])
    recorder.client_frame(0.0, 4, b'{"Width":90,"Height":20}')
    recorder.cluster_frame(0.1, 1, b"web-0\n\xff")
    recorder.cluster_frame(0.2, 3, SUCCESS)
    (row,) = append(event(0, verb="create", object_subresource="exec", transport="websocket",
                          recording=recorder.recording(kind="exec", namespace="default", pod="web-0")))
    stored = Recording.objects.get(event=row)
    frames = bytes(stored.frames)  # the rendering cap in its header is the recorder's max_recording
    assert read(frames)[2] == read(recorder.frames)[2] and read(frames)[1] == 1 << 20 and stored.cast_text == ""
    lines = [json.loads(line) for line in stored.asciicast.splitlines()]
    assert lines[0]["width"] == 90 and lines[2] == [0.1, "o", "web-0\n\ufffd"]
    document = document_of(AuditEvent.objects.get(pk=row.pk))
    assert document["airlock"]["recording"]["framesSha256"] == hashlib.sha256(frames).hexdigest()
    assert "castSha256" not in document["airlock"]["recording"]
    exported = export_document(AuditEvent.objects.get(pk=row.pk), include_cast=True)
    assert base64.b64decode(exported["airlock"]["recordingFrames"]) == frames
    assert exported["airlock"]["recordingCast"] == stored.asciicast
    line = json.loads(encode_line(exported))
    document, prev_hash, digest = strip_export_fields(line)
    assert chain_hash(prev_hash, document) == digest  # a receiver re-checks the line without this code
    assert verify_chain().ok


@pytest.mark.django_db
def test_editing_recorded_frames_breaks_the_chain():
    recorder = FrameRecorder(command=["env"])
    recorder.cluster_frame(0.1, 1, b"PASSWORD=**AIRLOCK-MASKED**\n")
    append(event(0), event(1, verb="create", object_subresource="exec", transport="websocket",
                           recording=recorder.recording(kind="exec", pod="web")))
    assert "intact" in verify()
    edited = bytes(Recording.objects.get().frames).replace(b"**AIRLOCK-MASKED**", b"hunter2-hunter2-ab")
    with tampering("audit_recording") as cursor:
        cursor.execute("UPDATE audit_recording SET frames = %s", [edited])
    assert "event #2 " in broken()


def test_recording_a_frame_does_not_decode_it():
    """The point of frames: output is appended as bytes; nothing is decoded once the size is known."""
    recorder = FrameRecorder(command=["cat"])
    recorder.client_frame(0.0, 4, b'{"Width":80,"Height":24}')
    payload = os.urandom(1 << 16)
    recorder.cluster_frame(0.1, 1, payload)
    assert recorder.frames.endswith(EVENT.pack(0.1, 1, len(payload)) + payload)
    assert not recorder._decoders
    assert io.BytesIO(recorder.frames).read(4) == b"ALF1"
