"""The upgrade decision and StreamTap, sans IO: hostile frames in both directions."""

import base64
import json

import pytest

import masking
from audit.frames import read, render
from gateway.streams import StreamTap, StreamViolation
from gateway.upgrades import relayed_protocols, stream_kind
from kube import spdy
from kube.requestinfo import parse
from kube.status import GatewayError

EXEC = "/api/v1/namespaces/default/pods/web/exec"


def info(path, query=""):
    return parse("GET", path, query)


@pytest.mark.parametrize("path, query, kind", [
    (EXEC, "command=sh", "exec"),
    ("/api/v1/namespaces/default/pods/web/attach", "", "attach"),
    ("/api/v1/namespaces/default/pods/web/portforward", "ports=80", "portforward"),
    ("/api/v1/namespaces/default/secrets", "watch=1", None),
    ("/api/v1/watch/namespaces/default/secrets", "", None),
    ("/api/v1/namespaces/default/secrets/db", "", None),
    ("/api/v1/namespaces/default/pods/web/log", "follow=true", None),
    ("/api/v1/namespaces/default/pods/web/proxy/", "", None),
    ("/api/v1/namespaces/default/services/web/proxy/", "", None),
    ("/api/v1/nodes/n1/proxy/exec", "", None),
    ("/api/v1/watch/namespaces/default/pods/web/exec", "", None),
    ("/api/v1/namespaces/default/pods/web/exec/extra", "", None),
    ("/apis/example.com/v1/namespaces/default/pods/web/exec", "", None),
    ("/version", "", None),
])
def test_only_pod_exec_attach_and_portforward_are_upgraded(path, query, kind):
    assert stream_kind(info(path, query)) == kind
    if kind is None:
        with pytest.raises(GatewayError) as refused:
            relayed_protocols(info(path, query), ["v5.channel.k8s.io", "base64.binary.k8s.io"])
        assert refused.value.code == 400 and "WebSocket" in refused.value.message


def test_subprotocols_are_filtered_to_what_the_relay_reads():
    assert relayed_protocols(info(EXEC), ["base64.binary.k8s.io", "v5.channel.k8s.io", "v4.channel.k8s.io"]) == [
        "v5.channel.k8s.io", "v4.channel.k8s.io"]
    forward = info("/api/v1/namespaces/default/pods/web/portforward")
    assert relayed_protocols(forward, ["v5.channel.k8s.io", "v4.channel.k8s.io"]) == ["v4.channel.k8s.io"]
    for offered in ([], ["base64.binary.k8s.io"]):
        with pytest.raises(GatewayError):
            relayed_protocols(info(EXEC), offered)


def exec_tap(protocol="v5.channel.k8s.io", detectors=None):
    return StreamTap(info(EXEC), protocol, "command=sh&stdin=true", detectors or masking.Detectors.default())


def cast_events(tap):
    recording = tap.recording(1.0)
    return [json.loads(line) for line in render(recording["frames"], recording["command"]).splitlines()[1:]]


@pytest.mark.parametrize("frame", [
    b"\x01forged", b"\x02forged", b'\x03{"status":"Success"}', b"\x05x", b"\xfe", b"\xff\x01", b"",
    "\x01forged",  # a text frame is read as its UTF-8 bytes, as the cluster reads it
])
def test_a_client_frame_outside_stdin_resize_and_close_ends_the_stream(frame):
    tap = exec_tap()
    with pytest.raises(StreamViolation) as violation:
        tap.from_client(frame)
    assert violation.value.error.code == 400 and violation.value.error.message.startswith("airlock: the client")
    assert not any(code == "o" for _, code, _ in cast_events(tap))


def test_client_stdin_resize_and_close_are_input_only():
    tap = exec_tap()
    for frame in (b"\x00ls\r", "\x00typed as text\r", b'\x04{"Width":100,"Height":30}', b"\xff\x00"):
        assert tap.from_client(frame) == frame  # the cluster gets what was sent
    events = cast_events(tap)
    assert {code for _, code, _ in events} == {"i", "r"}
    assert "".join(data for _, code, data in events if code == "i") == "ls\rtyped as text\r"
    assert tap.recording(1.0)["exit_code"] is None


@pytest.mark.parametrize("protocol, frame", [
    ("v4.channel.k8s.io", b"\xff\x00"),  # close is v5 only
    ("v4.base64.channel.k8s.io", "1" + base64.b64encode(b"forged").decode()),
    ("v4.base64.channel.k8s.io", b"1" + base64.b64encode(b"forged")),
    ("v4.base64.channel.k8s.io", "0not base64!"),
    ("v4.base64.channel.k8s.io", "x" + base64.b64encode(b"forged").decode()),
])
def test_legacy_framings_take_the_same_rule(protocol, frame):
    with pytest.raises(StreamViolation):
        exec_tap(protocol).from_client(frame)


def test_cluster_frames_on_client_channels_are_dropped_not_recorded():
    tap = exec_tap()
    for frame in (b"\x00cluster wrote stdin", b'\x04{"Width":1,"Height":1}', b"\xff\x00", b"\x09x"):
        assert tap.from_cluster(frame) == []
    assert tap.from_cluster(b"\x01") == [b"\x01"]  # v5's ready signal
    assert tap.from_cluster("\x01out\n") + tap.flush() == [b"\x01out\n"]
    assert [code for _, code, _ in cast_events(tap)] == ["o"]


def test_cluster_exit_status_and_masking():
    tap = exec_tap()
    out = tap.from_cluster(b"\x01password=hunter2-secret-value\n") + tap.flush()
    assert b"hunter2" not in b"".join(out)
    status = {"status": "Failure", "reason": "NonZeroExitCode",
              "details": {"causes": [{"reason": "ExitCode", "message": "9" * 30}]}}
    tap.from_cluster(b"\x03" + json.dumps(status).encode())
    assert tap.recording(1.0)["exit_code"] is None  # not an int32: no exit status, and no lost event


def test_the_gateway_ending_a_stream_is_recorded_with_its_message():
    tap = exec_tap("v4.base64.channel.k8s.io")
    tap.from_cluster("1" + base64.b64encode(b"partial output").decode())
    frames = tap.end(GatewayError(400, "airlock: the client sent a frame on channel 1"))
    assert frames[-1][0] == "3"
    assert json.loads(base64.b64decode(frames[-1][1:]))["message"] == "airlock: the client sent a frame on channel 1"
    assert cast_events(tap)[-1][1:] == ["m", "terminated: airlock: the client sent a frame on channel 1"]


def tunnel_tap():
    return StreamTap(info("/api/v1/namespaces/default/pods/web/portforward"), "SPDY/3.1+portforward.k8s.io", "",
                     masking.Detectors.default())


def test_tunnel_records_ports_of_streams_the_client_opened():
    tap, encoder = tunnel_tap(), spdy.FrameEncoder()
    for frame in (spdy.SynStream(1, {"streamtype": "error", "port": "80", "requestid": "0"}),
                  spdy.SynStream(3, {"streamtype": "data", "port": "80", "requestid": "0"}),
                  spdy.Data(3, b"GET / HTTP/1.0\r\n\r\n"), spdy.Ping(1), spdy.WindowUpdate(0, 10)):
        tap.from_client(encoder.encode(frame))
    assert tap.recording(1.0)["ports"] == [80]


@pytest.mark.parametrize("frames", [
    [spdy.SynReply(2)],
    [spdy.Data(1, b"x")],
    [spdy.SynStream(1, {"streamtype": "data", "port": "80"}), spdy.Data(2, b"x")],
    [spdy.SynStream(3, {"streamtype": "data", "port": "80"}), spdy.SynStream(1, {"streamtype": "data"})],
    [spdy.SynStream(2, {"streamtype": "data", "port": "80"})],
])
def test_tunnel_frames_the_client_may_not_send(frames):
    tap, encoder = tunnel_tap(), spdy.FrameEncoder()
    with pytest.raises(StreamViolation):
        for frame in frames:
            tap.from_client(encoder.encode(frame))


def test_tunnel_refuses_text_and_garbage():
    with pytest.raises(StreamViolation):
        tunnel_tap().from_client("text")
    with pytest.raises(StreamViolation):
        tunnel_tap().from_client(b"\x80\x07\x00\x01\x00\x00\x00\x01x")  # SPDY version 7


def test_legacy_port_forward_client_writes_only_data_channels():
    tap = StreamTap(info("/api/v1/namespaces/default/pods/web/portforward"), "v4.channel.k8s.io",
                    "ports=80,443", masking.Detectors.default())
    assert tap.from_client(b"\x00data") == b"\x00data" and tap.from_client(b"\x02data") == b"\x02data"
    for frame in (b"\x01error channel", b"\x04beyond the ports", b""):
        with pytest.raises(StreamViolation):
            tap.from_client(frame)


def test_the_gateway_ending_a_legacy_port_forward_writes_its_message_on_every_error_channel():
    tap = StreamTap(info("/api/v1/namespaces/default/pods/web/portforward"), "v4.channel.k8s.io",
                    "ports=80,443", masking.Detectors.default())
    frames = tap.end(GatewayError(503, "airlock: the gateway is shutting down"))
    assert frames == [b"\x01airlock: the gateway is shutting down", b"\x03airlock: the gateway is shutting down"]


def test_the_gateway_ending_a_tunnel_writes_its_message_on_the_open_error_streams_between_cluster_frames():
    tap, agent, cluster = tunnel_tap(), spdy.FrameEncoder(), spdy.FrameEncoder()
    for stream_id, kind in ((1, "error"), (3, "data"), (5, "error"), (7, "data"), (9, "error")):
        tap.from_client(agent.encode(spdy.SynStream(stream_id, {"streamtype": kind, "port": "80",
                                                                "requestid": str(stream_id // 4)})))
    tap.from_client(agent.encode(spdy.RstStream(9, spdy.RstStatus.CANCEL)))  # the agent gave that one up
    answer = b"".join(cluster.encode(frame) for frame in (
        spdy.SynReply(1), spdy.SynReply(3), spdy.SynReply(5), spdy.SynReply(7), spdy.SynReply(9),
        spdy.Data(5, b"", fin=True),  # the second connection ended normally
        spdy.Data(3, b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * 1000)))
    tap.from_cluster(answer[:-500])
    error = GatewayError(503, "airlock: the gateway is shutting down")
    assert tap.end(error) == []  # in the middle of the cluster's frame: nothing can be added
    tap.from_cluster(answer[-500:])
    decoded = spdy.FrameDecoder().feed(b"".join(tap.end(error)))
    assert decoded == [spdy.Data(1, b"airlock: the gateway is shutting down", fin=True), spdy.Data(3, b"", fin=True),
                       spdy.Data(7, b"", fin=True)]


def test_with_masking_off_the_agent_sees_secret_values_and_the_recording_does_not():
    """A rule or review unmasked the stream: the agent's output skips masking by value, the
    recording (output split across frames, the exit message, stdin and the command) does not."""
    value = b"Copied-v4lue-8Jw2"
    values = masking.SecretValues.build([("shop", "db", [value])])
    request = type("Request", (), {"info": info(EXEC), "query": "command=echo&command=Copied-v4lue-8Jw2",
                                   "secret_values": None})()
    tap = StreamTap.for_request(request, "v5.channel.k8s.io", masking.Detectors.default(), values)
    assert tap.from_client(b"\x00typed " + value + b"\n") == b"\x00typed " + value + b"\n"
    out = tap.from_cluster(b"\x01val=Copied-v4") + tap.from_cluster(b"\x01lue-8Jw2 done\n") + tap.flush()
    out += tap.from_cluster(b"\x02" + base64.b64encode(value) + b"\n") + tap.flush()
    out += tap.from_cluster(b"\x03" + json.dumps({"status": "Failure", "message": value.decode()}).encode())
    shown = b"".join(frame[1:] for frame in out)  # the payloads the agent got
    assert shown.count(value) == 2 and base64.b64encode(value) in shown
    recording = tap.recording(1.0)
    assert value not in recording["frames"] and base64.b64encode(value) not in recording["frames"]
    recorded = json.dumps({**recording, "frames": render(recording["frames"], recording["command"])})
    assert value.decode() not in recorded and base64.b64encode(value).decode() not in recorded
    assert "**AIRLOCK-MASKED**" in recorded and "done" in recorded


def test_a_tar_stream_is_masked_as_bytes_and_recorded_as_the_agent_received_it():
    """`kubectl cp` reads `tar cf -` from stdout: the value is replaced inside the archive's bytes, every
    other byte (headers, NULs, binary file contents) passes unchanged, and the recording keeps those bytes."""
    import io
    import os
    import tarfile

    value = b"Tar-s3cret-Qm9wZm9v"
    values = masking.SecretValues.build([("shop", "db", [value])])
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name, data in (("bin/blob", os.urandom(30_000)), ("etc/app.env", b"DSN=db://u:" + value + b"@db\n"),
                           ("bin/blob2", os.urandom(20_000) + value + os.urandom(100))):
            entry = tarfile.TarInfo(name)
            entry.size = len(data)
            tar.addfile(entry, io.BytesIO(data))
    raw = archive.getvalue()
    request = type("Request", (), {"info": info(EXEC), "query": "command=tar&command=cf&command=-",
                                   "secret_values": values})()
    tap = StreamTap.for_request(request, "v5.channel.k8s.io", masking.Detectors.default())
    out = []
    for i in range(0, len(raw), 4096):
        out += tap.from_cluster(b"\x01" + raw[i : i + 4096])
    out += tap.from_cluster(b'\x03{"metadata":{},"status":"Success"}')
    shown = b"".join(frame[1:] for frame in out if frame[:1] == b"\x01")
    assert shown == raw.replace(value, masking.PLACEHOLDER.encode())
    recording = tap.recording(1.0)
    _, _, events = read(recording["frames"])
    assert b"".join(payload for _, kind, payload in events if kind == 1) == shown
