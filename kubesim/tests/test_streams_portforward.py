"""kubesim port-forward: SPDY/3.1 tunnelled in WebSocket and the legacy channel protocol.

The SPDY peer here is a small test client built on kube.spdy; the end-to-end tests use
real kubectl.
"""

import os
import struct

import aiohttp
import pytest
from multidict import MultiDict

from kube import spdy
from kube.channels import TUNNEL_PROTOCOL
from kubesim import errors, portforward
from kubesim.portforward import parse_ports
from kubesim.tests.streamkit import StreamServer, echo_server, make_pod


class SpdyPeer:
    """Client end of a SPDY session over an aiohttp WebSocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.encoder = spdy.FrameEncoder()
        self.decoder = spdy.FrameDecoder()
        self.pending: list[spdy.Frame] = []

    async def send(self, *frames: spdy.Frame) -> None:
        for frame in frames:
            await self.ws.send_bytes(self.encoder.encode(frame))

    async def recv(self) -> spdy.Frame:
        while not self.pending:
            msg = await self.ws.receive()
            assert msg.type is aiohttp.WSMsgType.BINARY, msg
            self.pending += self.decoder.feed(msg.data)
        return self.pending.pop(0)

    async def open_pair(self, request_id: int, port: int, first_id: int) -> tuple[int, int]:
        """Open error + data streams like client-go: error first, closed at once by us."""
        headers = {"streamtype": "error", "port": str(port), "requestid": str(request_id)}
        await self.send(spdy.SynStream(first_id, headers))
        assert await self.recv() == spdy.SynReply(first_id)
        await self.send(spdy.Data(first_id, b"", fin=True))
        await self.send(spdy.SynStream(first_id + 2, {**headers, "streamtype": "data"}))
        assert await self.recv() == spdy.SynReply(first_id + 2)
        return first_id, first_id + 2

    async def until_fin(self, *stream_ids: int) -> tuple[dict[int, bytes], list[spdy.Frame]]:
        """Read until every stream in ``stream_ids`` has FIN; returns data per stream and other frames."""
        data = {sid: b"" for sid in stream_ids}
        others, open_ids = [], set(stream_ids)
        while open_ids:
            frame = await self.recv()
            if isinstance(frame, spdy.Data) and frame.stream_id in data:
                data[frame.stream_id] += frame.data
                if frame.fin:
                    open_ids.discard(frame.stream_id)
            else:
                others.append(frame)
        return data, others


@pytest.fixture
async def kube(tmp_path):
    async with echo_server() as port, StreamServer(tmp_path) as server:
        server.add_pod(make_pod("web", ports=f"80=127.0.0.1:{port}"))
        yield server


def tunnel(kube, params=()):
    return kube.ws("web", "portforward", params, protocols=(TUNNEL_PROTOCOL,))


def test_parse_ports():
    assert parse_ports(MultiDict([("ports", "80,443"), ("ports", "8080")])) == [80, 443, 8080]
    for bad in ("0", "65536", "http", "80,", "-1"):
        with pytest.raises(errors.ApiError):
            parse_ports(MultiDict(ports=bad))


async def test_tunnel_forwards_bytes_both_ways(kube):
    payload = os.urandom(200_000)
    async with tunnel(kube) as ws:
        assert ws.protocol == TUNNEL_PROTOCOL
        peer = SpdyPeer(ws)
        error_id, data_id = await peer.open_pair(0, 80, 1)
        for i in range(0, len(payload), 32768):
            await peer.send(spdy.Data(data_id, payload[i : i + 32768]))
        await peer.send(spdy.Data(data_id, b"", fin=True))
        data, others = await peer.until_fin(data_id, error_id)
    assert data[data_id] == payload
    assert data[error_id] == b""
    updates = {f.stream_id for f in others if isinstance(f, spdy.WindowUpdate)}
    assert {0, data_id} <= updates


async def test_tunnel_pairs_streams_by_request_id(kube):
    async with tunnel(kube) as ws:
        peer = SpdyPeer(ws)
        base = {"port": "80"}
        await peer.send(
            spdy.SynStream(1, {**base, "streamtype": "error", "requestid": "7"}),
            spdy.SynStream(3, {**base, "streamtype": "error", "requestid": "8"}),
            spdy.SynStream(5, {**base, "streamtype": "data", "requestid": "8"}),
            spdy.SynStream(7, {**base, "streamtype": "data", "requestid": "7"}),
        )
        replies = [await peer.recv() for _ in range(4)]
        assert replies == [spdy.SynReply(i) for i in (1, 3, 5, 7)]
        await peer.send(spdy.Data(7, b"for seven", fin=True), spdy.Data(5, b"for eight", fin=True))
        await peer.send(spdy.Data(1, b"", fin=True), spdy.Data(3, b"", fin=True))
        data, _ = await peer.until_fin(5, 7, 1, 3)
    assert data == {7: b"for seven", 5: b"for eight", 1: b"", 3: b""}


@pytest.fixture
def short_grace(monkeypatch):
    """Nothing will ever listen on port 81: its refusal need not be retried for the default 10 s."""
    monkeypatch.setattr(portforward, "STARTUP_GRACE", 0.5)


async def test_tunnel_unmapped_port_is_reported_on_the_error_stream(kube, short_grace):
    async with tunnel(kube) as ws:
        peer = SpdyPeer(ws)
        error_id, data_id = await peer.open_pair(0, 81, 1)
        data, _ = await peer.until_fin(error_id, data_id)
    message = data[error_id].decode()
    assert message.startswith("error forwarding port 81 to pod web, uid uid-web: ")
    assert "connection refused" in message
    assert data[data_id] == b""


async def test_tunnel_reset_by_client_closes_the_pair(kube):
    async with tunnel(kube) as ws:
        peer = SpdyPeer(ws)
        error_id, data_id = await peer.open_pair(0, 80, 1)
        await peer.send(spdy.Data(data_id, b"ping"))
        assert await peer.recv() == spdy.Data(data_id, b"ping")
        await peer.send(spdy.RstStream(data_id, spdy.RstStatus.CANCEL))
        data, _ = await peer.until_fin(error_id)
        assert data[error_id] == b""
        await peer.send(spdy.Data(data_id, b"late"))
        assert await peer.recv() == spdy.RstStream(data_id, spdy.RstStatus.INVALID_STREAM)


async def test_tunnel_control_frames(kube):
    async with tunnel(kube) as ws:
        peer = SpdyPeer(ws)
        await peer.send(spdy.Ping(1))
        assert await peer.recv() == spdy.Ping(1)
        await peer.send(spdy.SynStream(1, {"streamtype": "data"}))  # no port header
        assert await peer.recv() == spdy.RstStream(1, spdy.RstStatus.PROTOCOL_ERROR)
        await peer.send(spdy.SynStream(3, {"streamtype": "stdin", "port": "80"}))
        assert await peer.recv() == spdy.RstStream(3, spdy.RstStatus.PROTOCOL_ERROR)
        await peer.send(spdy.SynStream(2, {"streamtype": "data", "port": "80"}))  # even id: server-initiated
        assert await peer.recv() == spdy.RstStream(2, spdy.RstStatus.PROTOCOL_ERROR)
        await ws.send_bytes(struct.pack(">HHI", 0x8002, 6, 4) + b"\x00\x00\x00\x01")  # SPDY/2
        assert await peer.recv() == spdy.GoAway(3, spdy.GoAwayStatus.PROTOCOL_ERROR)
        assert (await ws.receive()).type is aiohttp.WSMsgType.CLOSE


async def test_tunnel_honours_the_window_of_a_flow_controlled_peer(kube):
    window, total = 1000, 5000
    async with tunnel(kube) as ws:
        peer = SpdyPeer(ws)
        await peer.send(spdy.Settings((spdy.Setting(spdy.SettingId.INITIAL_WINDOW_SIZE, window),)))
        error_id, data_id = await peer.open_pair(0, 80, 1)
        await peer.send(spdy.Data(data_id, b"x" * total))
        received = b""
        while len(received) < window:
            frame = await peer.recv()
            assert isinstance(frame, spdy.Data | spdy.WindowUpdate)
            if isinstance(frame, spdy.Data):
                received += frame.data
        assert len(received) == window
        # The window is spent: the echo of our ping must come before any more data.
        await peer.send(spdy.Ping(3))
        while not isinstance(frame := await peer.recv(), spdy.Ping):
            assert not isinstance(frame, spdy.Data), "sent beyond the peer's window"
        await peer.send(spdy.WindowUpdate(data_id, total - window), spdy.Data(data_id, b"", fin=True))
        data, _ = await peer.until_fin(data_id, error_id)
    assert len(received) + len(data[data_id]) == total


async def test_legacy_websocket_port_forward(kube):
    payload = os.urandom(100_000)
    async with kube.ws("web", "portforward", [("ports", "80")], protocols=("v5.channel.k8s.io", "v4.channel.k8s.io")) as ws:
        assert ws.protocol == "v4.channel.k8s.io"
        prefix = struct.pack("<H", 80)
        assert (await ws.receive()).data == b"\x00" + prefix
        assert (await ws.receive()).data == b"\x01" + prefix
        await ws.send_bytes(b"\x00" + payload)
        echoed = b""
        while len(echoed) < len(payload):
            msg = await ws.receive()
            assert msg.data[0] == 0
            echoed += msg.data[1:]
    assert echoed == payload


async def test_legacy_port_forward_error_channel(kube, short_grace):
    async with kube.ws("web", "portforward", [("ports", "81")], protocols=("v4.channel.k8s.io",)) as ws:
        messages = [m.data async for m in ws if m.type is aiohttp.WSMsgType.BINARY]
    assert messages[:2] == [b"\x00Q\x00", b"\x01Q\x00"]
    assert messages[2][0] == 1
    assert messages[2][1:].startswith(b"error forwarding port 81 to pod web")


async def test_port_forward_refusals(kube):
    status, body = await kube.upgrade_refused("web", "portforward", [], protocols="v4.channel.k8s.io")
    assert (status, body["message"]) == (400, 'query parameter "ports" is required')
    status, body = await kube.upgrade_refused("web", "portforward", [("ports", "x")], protocols=TUNNEL_PROTOCOL)
    assert status == 400 and body["reason"] == "BadRequest"
    status, body = await kube.upgrade_refused("web", "portforward", [("ports", "80")], protocols="v5.channel.k8s.io")
    assert status == 400 and "no supported WebSocket subprotocol" in body["message"]


async def test_legacy_base64_port_forward(kube):
    async with kube.ws("web", "portforward", [("ports", "80")], protocols=("v4.base64.channel.k8s.io",)) as ws:
        first, second = await ws.receive(), await ws.receive()
        assert (first.type, first.data) == (aiohttp.WSMsgType.TEXT, "0UAA=")
        assert second.data == "1UAA="
        await ws.send_str("0aGVsbG8=")  # "hello" on the data channel
        reply = await ws.receive()
    assert reply.data == "0aGVsbG8="


async def test_tunnel_pair_without_data_stream_times_out(kube, monkeypatch):
    monkeypatch.setattr("kubesim.portforward.STREAM_CREATION_TIMEOUT", 0.05)
    async with tunnel(kube) as ws:
        peer = SpdyPeer(ws)
        await peer.send(spdy.SynStream(1, {"streamtype": "error", "port": "80", "requestid": "3"}))
        assert await peer.recv() == spdy.SynReply(1)
        data, _ = await peer.until_fin(1)
    assert data[1] == b"timed out waiting for streams of request 3"
