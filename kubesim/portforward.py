"""Port-forward for kubesim: SPDY/3.1 tunnelled in WebSocket, and the legacy channel protocol.

kubectl >= 1.31 negotiates ``SPDY/3.1+portforward.k8s.io`` and then runs a SPDY session
over the WebSocket's binary messages, as client-go's ``tools/portforward`` does against the
kubelet (``pkg/kubelet/cri/streaming/portforward/httpstream.go``).  Per forwarded connection
the client opens an ``error`` and a ``data`` stream carrying headers ``streamtype``, ``port``
and ``requestid``; the pair is matched by request id, the data stream is pumped both ways
to ``cluster.port_target(pod, port)`` with FIN as TCP half-close, and failures are written
as text on the error stream, which is then finished.

Flow control: we grant WINDOW_UPDATEs as the target consumes bytes, so a peer that obeys
SPDY/3.1 windows can send any amount.  Go's spdystream (kubectl, the kubelet) neither sends
WINDOW_UPDATE nor honours ours, so our own sending obeys the peer's windows only once the
peer shows it does flow control (a WINDOW_UPDATE or an INITIAL_WINDOW_SIZE setting);
otherwise WebSocket/TCP back-pressure is what slows us down, as between kubectl and kubelet.

The legacy protocol (``v4.channel.k8s.io``, used by the Python client) takes ports from the
query and gives each port two channels: data ``2i`` and error ``2i+1``; the first message on
each is the port as little-endian uint16.

Long because the SPDY tunnel and the legacy channel protocol are two forms of one port-forward and
share the pumping and error reporting.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections import deque

from aiohttp import WSMsgType, web
from multidict import MultiMapping

from kube import spdy
from kube.channels import PORTFORWARD_PROTOCOLS, TUNNEL_PROTOCOL, ChannelError, ChannelProtocol
from kubesim import errors, sandbox
from kubesim.channels import ChannelWriter, accept, negotiate
from kubesim.process import SpawnError
from kubesim.store import encode_body

READ_CHUNK = 32 * 1024
INBOX_LIMIT = 1024 * 1024  # bytes buffered per stream before the session reader waits
STREAM_CREATION_TIMEOUT = 30.0  # the kubelet's default for the second stream of a pair
STARTUP_GRACE = 10.0  # how long after a pod's processes start a refused connection is retried
STARTUP_POLL = 0.1


def parse_ports(query: MultiMapping[str]) -> list[int]:
    """``ports`` query values (each may be a comma list), each 1..65535."""
    ports = []
    for value in query.getall("ports", ()):
        for item in value.split(","):
            if not item.isdigit() or not 0 < int(item) <= 0xFFFF:
                raise errors.bad_request(f"unable to parse {value!r} as a port")
            ports.append(int(item))
    return ports


async def handle(request: web.Request, cluster, pod: dict, start) -> web.StreamResponse:
    """``start()`` starts the pod (kubesim.streams.start_pod) for connections into its network."""
    try:
        ports = parse_ports(request.query)
        protocol = negotiate(request, [TUNNEL_PROTOCOL, *PORTFORWARD_PROTOCOLS])
        if protocol != TUNNEL_PROTOCOL and not ports:
            raise errors.bad_request('query parameter "ports" is required')
    except errors.ApiError as exc:
        return web.Response(body=encode_body(exc.status()), status=exc.code, content_type="application/json")
    ws = await accept(request, protocol)
    if protocol == TUNNEL_PROTOCOL:
        await SpdyTunnel(ws, Target(cluster, pod, start)).run()
    else:
        await serve_legacy(ws, PORTFORWARD_PROTOCOLS[protocol], Target(cluster, pod, start), ports)
    return ws


class Target:
    """Where a pod port leads, and the kubelet's wording when it leads nowhere.

    A port mapped by the ``kubesim.airlock.dev/ports`` annotation leads to that host address;
    any other port is the pod's own: ``localhost:port`` in the pod's network namespace, where the
    containers' processes listen.  Connections refused while the pod's processes are starting are
    retried for up to STARTUP_GRACE seconds after the newest one started.
    """

    def __init__(self, cluster, pod: dict, start) -> None:
        self.cluster = cluster
        self.pod = pod
        self.start = start
        meta = pod.get("metadata") or {}
        self.name, self.namespace, self.uid = meta.get("name", ""), meta.get("namespace", ""), meta.get("uid", "")

    async def connect(self, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open a TCP connection to the pod port; OSError with the client-facing message."""
        address = self.cluster.port_target(self.pod, port)
        try:
            if address is not None:
                return await asyncio.open_connection(*address)
            return await asyncio.open_connection(sock=await self._inside(port))
        except (OSError, sandbox.ConfinementError, SpawnError) as exc:
            reason = (getattr(exc, "strerror", None) or str(exc)).lower()
            raise OSError(
                f"error forwarding port {port} to pod {self.name}, uid {self.uid}: failed to connect to "
                f'localhost:{port} inside namespace "{self.namespace}": connect: {reason}'
            ) from None

    async def _inside(self, port: int):
        _, started = await self.start()
        network = await sandbox.PodNetwork.get(self.cluster, self.pod)
        while True:
            try:
                return await network.connect(port)
            except ConnectionRefusedError:
                if time.monotonic() > started + STARTUP_GRACE:
                    raise
            await asyncio.sleep(STARTUP_POLL)


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


class _Inbox:
    """Bytes the client sent on a stream, waiting for the target; None marks the end."""

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._ended = False
        self._changed = asyncio.Condition()

    async def put(self, data: bytes) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._size < INBOX_LIMIT or self._ended)
            if not self._ended:
                self._chunks.append(data)
                self._size += len(data)
                self._changed.notify_all()

    async def end(self) -> None:
        async with self._changed:
            self._ended = True
            self._changed.notify_all()

    async def get(self) -> bytes | None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._chunks or self._ended)
            if not self._chunks:
                return None
            data = self._chunks.popleft()
            self._size -= len(data)
            self._changed.notify_all()
            return data


class _Stream:
    def __init__(self, stream_id: int, headers: spdy.HeaderBlock, send_window: int) -> None:
        self.id = stream_id
        self.headers = headers
        self.inbox = _Inbox()
        self.remote_fin = False
        self.local_fin = False
        self.reset = asyncio.Event()
        self.send_window = spdy.FlowWindow(send_window)
        self.unacked = 0


class _Pair:
    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.error: _Stream | None = None
        self.data: _Stream | None = None
        self.timer: asyncio.TimerHandle | None = None


class SpdyTunnel:
    """Server side of one port-forward SPDY session carried by a WebSocket."""

    def __init__(self, ws: web.WebSocketResponse, target: Target) -> None:
        self.ws = ws
        self.target = target
        self.decoder = spdy.FrameDecoder()
        self.encoder = spdy.FrameEncoder()
        self.streams: dict[int, _Stream] = {}
        self.pairs: dict[str, _Pair] = {}
        self.last_stream_id = 0
        self.going_away = False
        self.flow_control = False
        self.initial_send_window = spdy.DEFAULT_INITIAL_WINDOW
        self.session_send = spdy.FlowWindow()
        self.session_unacked = 0
        self._windows = asyncio.Condition()
        self._send_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()

    async def send(self, frame: spdy.Frame) -> None:
        async with self._send_lock:
            await self.ws.send_bytes(self.encoder.encode(frame))

    async def run(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type is not WSMsgType.BINARY:
                    if msg.type is WSMsgType.TEXT:
                        await self.send(spdy.GoAway(self.last_stream_id, spdy.GoAwayStatus.PROTOCOL_ERROR))
                        break
                    continue
                self.decoder.receive_data(msg.data)
                if not await self._drain_frames():
                    break
        except ConnectionError:
            pass
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            for pair in self.pairs.values():
                if pair.timer:
                    pair.timer.cancel()
            await self.ws.close()

    async def _drain_frames(self) -> bool:
        """Handle every complete frame; False once the session is broken."""
        while True:
            try:
                frame = self.decoder.next_frame()
            except spdy.SpdyError as exc:
                if not exc.stream_id:
                    await self.send(spdy.GoAway(self.last_stream_id, spdy.GoAwayStatus.PROTOCOL_ERROR))
                    return False
                await self._reset(exc.stream_id, exc.status)
                continue
            if frame is None:
                return True
            await self._on_frame(frame)

    async def _reset(self, stream_id: int, status: spdy.RstStatus) -> None:
        await self.send(spdy.RstStream(stream_id, status))
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            stream.reset.set()
            await stream.inbox.end()

    async def _on_frame(self, frame: spdy.Frame) -> None:
        match frame:
            case spdy.SynStream():
                await self._on_syn_stream(frame)
            case spdy.Data(stream_id, data, fin):
                await self._on_data(stream_id, data, fin)
            case spdy.RstStream(stream_id):
                stream = self.streams.pop(stream_id, None)
                if stream is not None:
                    stream.reset.set()
                    await stream.inbox.end()
                    await self._notify_windows()
            case spdy.Headers(stream_id, _, fin) if fin and stream_id in self.streams:
                await self._remote_finished(self.streams[stream_id])
            case spdy.Ping(ping_id) if ping_id % 2 == 1:
                await self.send(frame)
            case spdy.GoAway():
                self.going_away = True
            case spdy.Settings(entries):
                await self._on_settings(entries)
            case spdy.WindowUpdate(stream_id, delta):
                await self._on_window_update(stream_id, delta)
            case spdy.SynReply(stream_id):
                # We never open streams, so there is nothing to reply to.
                await self.send(spdy.RstStream(stream_id, spdy.RstStatus.INVALID_STREAM))

    async def _on_syn_stream(self, frame: spdy.SynStream) -> None:
        sid = frame.stream_id
        if sid % 2 == 0 or sid <= self.last_stream_id:
            await self.send(spdy.RstStream(sid, spdy.RstStatus.PROTOCOL_ERROR))
            return
        self.last_stream_id = sid
        if self.going_away:
            await self.send(spdy.RstStream(sid, spdy.RstStatus.REFUSED_STREAM))
            return
        port, stream_type = frame.headers.get("port", ""), frame.headers.get("streamtype", "")
        if not port.isdigit() or not 0 < int(port) <= 0xFFFF or stream_type not in ("error", "data"):
            await self.send(spdy.RstStream(sid, spdy.RstStatus.PROTOCOL_ERROR))
            return
        stream = _Stream(sid, frame.headers, self.initial_send_window)
        self.streams[sid] = stream
        await self.send(spdy.SynReply(sid))
        if frame.fin:
            await self._remote_finished(stream)
        await self._add_to_pair(stream, stream_type)

    def _request_id(self, stream: _Stream, stream_type: str) -> str:
        """The pairing key; pre-requestid clients open error then data with consecutive ids."""
        request_id = stream.headers.get("requestid", "")
        if request_id:
            return request_id
        return str(stream.id if stream_type == "error" else stream.id - 2)

    async def _add_to_pair(self, stream: _Stream, stream_type: str) -> None:
        request_id = self._request_id(stream, stream_type)
        pair = self.pairs.get(request_id)
        if pair is None:
            pair = self.pairs[request_id] = _Pair(request_id)
            loop = asyncio.get_running_loop()
            pair.timer = loop.call_later(STREAM_CREATION_TIMEOUT, lambda: self._spawn(self._pair_timed_out(pair)))
        if getattr(pair, stream_type) is not None:
            await self._reset(stream.id, spdy.RstStatus.PROTOCOL_ERROR)
            if pair.error is not None:
                message = f"error processing stream for request {request_id}: {stream_type} stream already assigned"
                await self._write_error(pair.error, message)
            return
        setattr(pair, stream_type, stream)
        if pair.error is not None and pair.data is not None:
            pair.timer.cancel()
            self._spawn(self._forward(pair))

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pair_timed_out(self, pair: _Pair) -> None:
        if self.pairs.get(pair.request_id) is not pair:
            return
        del self.pairs[pair.request_id]
        if pair.error is not None:
            await self._write_error(pair.error, f"timed out waiting for streams of request {pair.request_id}")
            await self._finish(pair.error)
        for stream in (pair.error, pair.data):
            if stream is not None:
                self.streams.pop(stream.id, None)

    async def _remote_finished(self, stream: _Stream) -> None:
        stream.remote_fin = True
        await stream.inbox.end()

    async def _on_data(self, stream_id: int, data: bytes, fin: bool) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            await self.send(spdy.RstStream(stream_id, spdy.RstStatus.INVALID_STREAM))
            return
        if stream.remote_fin:
            await self._reset(stream_id, spdy.RstStatus.STREAM_ALREADY_CLOSED)
            return
        if data:
            if stream.headers.get("streamtype") == "data":
                await stream.inbox.put(data)
            else:  # nothing reads what a client writes on an error stream
                await self.consumed(stream, len(data))
        if fin:
            await self._remote_finished(stream)

    async def _on_settings(self, entries: tuple[spdy.Setting, ...]) -> None:
        for entry in entries:
            if entry.id == spdy.SettingId.INITIAL_WINDOW_SIZE and entry.value <= spdy.MAX_WINDOW:
                delta = entry.value - self.initial_send_window
                self.initial_send_window = entry.value
                self.flow_control = True
                for stream in self.streams.values():
                    stream.send_window.size += delta
        await self._notify_windows()

    async def _on_window_update(self, stream_id: int, delta: int) -> None:
        self.flow_control = True
        try:
            if stream_id == 0:
                self.session_send.grow(delta)
            elif stream_id in self.streams:
                self.streams[stream_id].send_window.grow(delta)
        except spdy.SpdyError:
            if stream_id == 0:
                await self.send(spdy.GoAway(self.last_stream_id, spdy.GoAwayStatus.PROTOCOL_ERROR))
                raise ConnectionResetError("session flow-control window overflow") from None
            await self._reset(stream_id, spdy.RstStatus.FLOW_CONTROL_ERROR)
        await self._notify_windows()

    async def _notify_windows(self) -> None:
        async with self._windows:
            self._windows.notify_all()

    async def consumed(self, stream: _Stream, n: int) -> None:
        """Give back receive window for ``n`` bytes the target has taken."""
        threshold = spdy.DEFAULT_INITIAL_WINDOW // 2
        stream.unacked += n
        self.session_unacked += n
        if stream.unacked >= threshold and stream.id in self.streams and not stream.remote_fin:
            await self.send(spdy.WindowUpdate(stream.id, stream.unacked))
            stream.unacked = 0
        if self.session_unacked >= threshold:
            await self.send(spdy.WindowUpdate(0, self.session_unacked))
            self.session_unacked = 0

    async def send_data(self, stream: _Stream, data: bytes, fin: bool = False) -> None:
        """Send on ``stream`` within the peer's windows when it does flow control."""
        view = memoryview(data)
        while True:
            n = len(view)
            if self.flow_control and n:
                async with self._windows:
                    await self._windows.wait_for(
                        lambda: stream.reset.is_set() or min(stream.send_window.size, self.session_send.size) > 0
                    )
                n = min(n, stream.send_window.size, self.session_send.size)
            if stream.reset.is_set():
                return
            stream.send_window.consume(n)
            self.session_send.consume(n)
            last = n == len(view)
            await self.send(spdy.Data(stream.id, bytes(view[:n]), fin=fin and last))
            view = view[n:]
            if last:
                break
        if fin:
            stream.local_fin = True

    async def _write_error(self, stream: _Stream, message: str) -> None:
        if not stream.local_fin and not stream.reset.is_set():
            await self.send_data(stream, message.encode())

    async def _finish(self, stream: _Stream) -> None:
        if not stream.local_fin and not stream.reset.is_set():
            await self.send_data(stream, b"", fin=True)

    async def _forward(self, pair: _Pair) -> None:
        data, error = pair.data, pair.error
        try:
            try:
                reader, writer = await self.target.connect(int(data.headers["port"]))
            except OSError as exc:
                await self._write_error(error, str(exc))
                await self._finish(data)
                return
            try:
                both = asyncio.gather(self._upstream(data, writer), self._downstream(data, reader))
                reset = asyncio.ensure_future(data.reset.wait())
                await asyncio.wait((both, reset), return_when=asyncio.FIRST_COMPLETED)
                for task in (both, reset):
                    task.cancel()
                await asyncio.gather(both, reset, return_exceptions=True)
            finally:
                await _close_writer(writer)
        finally:
            if self.pairs.get(pair.request_id) is pair:
                del self.pairs[pair.request_id]
            with contextlib.suppress(ConnectionError):
                await self._finish(error)
            for stream in (data, error):
                self.streams.pop(stream.id, None)

    async def _upstream(self, stream: _Stream, writer: asyncio.StreamWriter) -> None:
        """Client -> target; the client's FIN half-closes the TCP connection."""
        while (chunk := await stream.inbox.get()) is not None:
            writer.write(chunk)
            await writer.drain()
            await self.consumed(stream, len(chunk))
        if stream.remote_fin and not stream.reset.is_set() and writer.can_write_eof():
            with contextlib.suppress(OSError):
                writer.write_eof()

    async def _downstream(self, stream: _Stream, reader: asyncio.StreamReader) -> None:
        """Target -> client; the target's EOF becomes FIN."""
        while chunk := await reader.read(READ_CHUNK):
            await self.send_data(stream, chunk)
            if stream.reset.is_set():
                return
        await self.send_data(stream, b"", fin=True)


async def serve_legacy(ws: web.WebSocketResponse, protocol: ChannelProtocol, target: Target, ports: list[int]) -> None:
    """The kubelet's WebSocket port-forward: one connection per requested port, no half-close."""
    out = ChannelWriter(ws, protocol)
    writers: dict[int, asyncio.Future] = {i: asyncio.get_running_loop().create_future() for i in range(len(ports))}

    async def forward(index: int, port: int) -> None:
        try:
            reader, writer = await target.connect(port)
        except OSError as exc:
            writers[index].set_result(None)
            await out.send(2 * index + 1, str(exc).encode())
            return
        writers[index].set_result(writer)
        try:
            while chunk := await reader.read(READ_CHUNK):
                await out.send(2 * index, chunk)
        finally:
            await _close_writer(writer)

    async def inbound() -> None:
        async for msg in ws:
            if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                continue
            try:
                channel, payload = protocol.decode(msg.data)
            except ChannelError:
                continue
            if channel % 2 or channel // 2 not in writers or not payload:
                continue
            writer = await writers[channel // 2]
            if writer is not None and not writer.is_closing():
                writer.write(payload)
                with contextlib.suppress(ConnectionError):
                    await writer.drain()

    try:
        for index, port in enumerate(ports):
            prefix = struct.pack("<H", port)
            await out.send(2 * index, prefix)
            await out.send(2 * index + 1, prefix)
        forwards = asyncio.gather(*(forward(i, p) for i, p in enumerate(ports)))
        reading = asyncio.ensure_future(inbound())
        try:
            await asyncio.wait((forwards, reading), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (forwards, reading):
                task.cancel()
            await asyncio.gather(forwards, reading, return_exceptions=True)
    except ConnectionError:
        pass
    finally:
        await ws.close()
