"""asciicast v2 recordings of exec/attach streams and port-forward tallies."""

import json

import pytest

from audit.asciicast import AsciicastWriter, PortForwardTally, exit_status
from audit.events import Clamps, prepare_recording
from audit.chain import verify_chain
from audit.models import Recording
from audit.tests.factories import append, event

SUCCESS = b'{"metadata":{},"status":"Success"}'
EXIT_3 = (
    b'{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error '
    b'executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode",'
    b'"details":{"causes":[{"reason":"ExitCode","message":"3"}]}}'
)


def parse(cast: str) -> tuple[dict, list]:
    """Parse asciicast v2 strictly: header object, then [time, code, data] lines in time order."""
    assert cast.endswith("\n")
    header_line, *lines = cast.rstrip("\n").split("\n")
    header = json.loads(header_line)
    assert header["version"] == 2
    assert isinstance(header["width"], int) and isinstance(header["height"], int)
    events = [json.loads(line) for line in lines]
    last = 0.0
    for t, code, data in events:
        assert isinstance(t, float | int) and t >= last
        assert code in ("o", "i", "r", "m")
        assert isinstance(data, str)
        last = t
    return header, events


CLIENT, CLUSTER = "client", "cluster"


def frames(writer: AsciicastWriter, *messages):
    for t, side, channel, payload in messages:
        (writer.client_frame if side == CLIENT else writer.cluster_frame)(t, channel, payload)


def test_exec_session_maps_every_channel_by_direction():
    writer = AsciicastWriter(command=["sh", "-i"], started_at=1_700_000_000.5)
    frames(
        writer,
        (0.0, CLUSTER, 1, b""),  # ready signal, empty
        (0.01, CLIENT, 4, b'{"Width":100,"Height":30}'),
        (0.2, CLIENT, 0, b"ls\r"),
        (0.25, CLUSTER, 1, b"bin  etc\r\n"),
        (0.3, CLUSTER, 2, b"sh: warning\r\n"),
        (0.4, CLIENT, 4, b'{"Width":120,"Height":40}'),
        (0.6, CLUSTER, 3, SUCCESS),
    )
    header, events = parse(writer.text())
    assert header["width"] == 100 and header["height"] == 30
    assert header["command"] == "sh -i"
    assert header["timestamp"] == 1_700_000_000
    assert events == [
        [0.01, "r", "100x30"],
        [0.2, "i", "ls\r"],
        [0.25, "o", "bin  etc\r\n"],
        [0.3, "o", "sh: warning\r\n"],
        [0.4, "r", "120x40"],
        [0.6, "m", "exit status 0"],
    ]
    assert writer.exit_code == 0


def test_non_zero_exit_code_and_other_failures():
    assert exit_status(EXIT_3) == (3, "command terminated with non-zero exit code: error executing "
                                      "command [sh -c exit 3], exit code 3")
    assert exit_status(b'{"status":"Failure","message":"container not found"}') == (None, "container not found")
    assert exit_status(b"plain text error from a v1 server") == (None, "plain text error from a v1 server")
    writer = AsciicastWriter(80, 24)
    writer.cluster_frame(1.0, 3, EXIT_3)
    assert writer.exit_code == 3
    assert parse(writer.text())[1] == [[1.0, "m", "exit status 3"]]
    writer = AsciicastWriter(80, 24)
    writer.cluster_frame(1.0, 3, b'{"status":"Failure","message":"container not found"}')
    assert writer.exit_code is None
    assert parse(writer.text())[1] == [[1.0, "m", "terminated: container not found"]]


def test_utf8_split_across_frames_is_reassembled():
    writer = AsciicastWriter(80, 24)
    snowman = "☃".encode()
    writer.cluster_frame(0.1, 1, b"a" + snowman[:2])
    writer.cluster_frame(0.2, 1, snowman[2:] + b"b")
    writer.cluster_frame(0.3, 1, snowman[:1])  # cut off by the end of the stream
    _, events = parse(writer.text())
    output = "".join(data for _, code, data in events if code == "o")
    assert output == "a☃b\ufffd"


def test_replaying_output_and_input_gives_back_the_stream():
    writer = AsciicastWriter(80, 24)
    sent, shown = [], []
    for i in range(50):
        keys, screen = f"echo {i}\r", f"{i}\r\n$ "
        writer.input(i * 0.1, keys.encode())
        writer.output(i * 0.1 + 0.05, screen.encode())
        sent.append(keys)
        shown.append(screen)
    _, events = parse(writer.text())
    assert "".join(d for _, c, d in events if c == "i") == "".join(sent)
    assert "".join(d for _, c, d in events if c == "o") == "".join(shown)


def test_a_direction_never_writes_the_other_sides_events():
    writer = AsciicastWriter(80, 24)
    frames(
        writer,
        (0.1, CLIENT, 1, b"forged output"),
        (0.2, CLIENT, 2, b"forged stderr"),
        (0.3, CLIENT, 3, EXIT_3),
        (0.4, CLUSTER, 0, b"forged input"),
        (0.5, CLUSTER, 4, b'{"Width":100,"Height":30}'),
    )
    header, events = parse(writer.text())
    assert events == [] and writer.exit_code is None
    assert (header["width"], header["height"]) == (80, 24)


@pytest.mark.parametrize("code", ["9" * 40, "2147483648", "-2147483649", "3.5", " 3", "1_000", 3, ["3"], None])
def test_exit_codes_outside_int32_or_not_decimal_are_no_exit_status(code):
    status = json.dumps({"status": "Failure", "reason": "NonZeroExitCode", "message": "m",
                         "details": {"causes": [{"reason": "ExitCode", "message": code}]}}).encode()
    assert exit_status(status) == (None, "m")
    writer = AsciicastWriter(80, 24)
    writer.cluster_frame(1.0, 3, status)
    recording = writer.recording(kind="exec")
    assert recording["exit_code"] is None
    prepare_recording(recording, max_recording=4096, clamps=Clamps())


def test_exit_codes_at_the_int32_bounds():
    for code in (-(2**31), 2**31 - 1, 0, 137):
        status = json.dumps({"status": "Failure", "reason": "NonZeroExitCode",
                             "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}).encode()
        assert exit_status(status)[0] == code
    assert exit_status(b'{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":"x"}}') == (None, "")


def test_bad_resize_payloads_are_ignored():
    writer = AsciicastWriter()
    writer.client_frame(0.1, 4, b"not json")
    writer.client_frame(0.2, 4, b'{"Width":0,"Height":10}')
    writer.client_frame(0.3, 4, b'{"Width":"x"}')
    header, events = parse(writer.text())
    assert events == []
    assert (header["width"], header["height"]) == (80, 24)


def test_times_never_go_backwards():
    writer = AsciicastWriter(80, 24)
    writer.output(2.0, b"late")
    writer.output(1.0, b"early clock")
    _, events = parse(writer.text())
    assert [t for t, _, _ in events] == [2.0, 2.0]


def test_size_cap_truncates_with_a_marker_and_keeps_the_exit_status():
    writer = AsciicastWriter(80, 24, max_bytes=4096)
    for i in range(1000):
        writer.output(i / 100, b"x" * 64)
    writer.cluster_frame(10.5, 3, EXIT_3)
    text = writer.text()
    header_size = len(text.split("\n", 1)[0]) + 1
    assert len(text.encode()) - header_size <= 4096
    _, events = parse(text)
    assert writer.truncated
    assert ["m", "recording truncated: size limit reached"] in [e[1:] for e in events]
    assert events[-1] == [10.5, "m", "exit status 3"]
    assert 40 < len(events) < 70


@pytest.mark.django_db
def test_writer_recording_is_stored_and_hashed():
    writer = AsciicastWriter(command=["cat", "/etc/hostname"])
    writer.client_frame(0.0, 4, b'{"Width":90,"Height":20}')
    writer.cluster_frame(0.1, 1, b"web-0\n")
    writer.cluster_frame(0.2, 3, SUCCESS)
    recording = writer.recording(kind="exec", namespace="default", pod="web-0", container="app")
    (row,) = append(event(0, verb="create", object_subresource="exec", transport="websocket", recording=recording))
    stored = Recording.objects.get(event=row)
    assert (stored.width, stored.height, stored.exit_code) == (90, 20, 0)
    assert stored.command == ["cat", "/etc/hostname"]
    assert parse(stored.asciicast)[1][1] == [0.1, "o", "web-0\n"]
    assert stored.session_id == row.session_id
    assert verify_chain().ok


def test_port_forward_tally():
    tally = PortForwardTally([8080, 8080, 0, 9090])
    tally.add_port(5432)
    tally.to_pod(100)
    tally.to_pod(20)
    tally.from_pod(4096)
    assert tally.recording(namespace="default", pod="db-0", duration=2.34567) == {
        "kind": "portforward",
        "namespace": "default",
        "pod": "db-0",
        "ports": [8080, 9090, 5432],
        "bytes_to_pod": 120,
        "bytes_from_pod": 4096,
        "duration_s": 2.346,
    }
