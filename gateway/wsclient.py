"""The upstream half of exec/attach/port-forward relays: a WebSocket client on wsproto.

Why not the ``websockets`` package: its strict RFC 7230 token parser rejects
``SPDY/3.1+portforward.k8s.io`` (``/`` is not a token character), the
subprotocol kubectl >= 1.31 and kube-apiserver use for port-forward.  wsproto
(sans-IO, also uvicorn's WebSocket implementation here) compares subprotocols
as strings, and exposes a refused handshake's status, content type and
body, so the cluster's own ``Status`` ("pods "x" not found") reaches the
agent once the proxy has masked it.
"""

import asyncio
import collections
from urllib.parse import urlsplit

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

from runtime.timeouts import wait_at_most

READ_SIZE = 256 * 1024
MAX_REJECT_BODY = 64 * 1024


class UpstreamRejected(Exception):
    """The cluster answered the upgrade with a non-101 status."""

    def __init__(self, status: int, body: bytes, content_type: str | None = None):
        super().__init__(f"upgrade refused with {status}")
        self.status = status
        self.body = body
        self.content_type = content_type


class UpstreamClosed(Exception):
    pass


class UpstreamTimeout(Exception):
    """Connecting (``phase`` "connect") or the handshake's answer ("answer") took longer than ``seconds``."""

    def __init__(self, phase: str, seconds: float):
        super().__init__(f"{phase} timed out after {seconds:g} s")
        self.phase = phase
        self.seconds = seconds


class UpstreamWebSocket:
    """An open client WebSocket: ``send``, ``async for message in ws``, ``close``."""

    def __init__(self, reader, writer, protocol: WSConnection, subprotocol, pending):
        self._reader = reader
        self._writer = writer
        self._ws = protocol
        self.subprotocol = subprotocol
        self.close_code = None
        self._pending = collections.deque(pending)
        self._fragments = []
        self._closed = False

    async def send(self, data: bytes | str):
        if self._closed:
            raise UpstreamClosed
        self._writer.write(self._ws.send(Message(data=data)))
        await self._writer.drain()

    def __aiter__(self):
        return self

    async def __anext__(self):
        while True:
            while self._pending:
                message = self._handle(self._pending.popleft())
                if message is not None:
                    return message
            if self._closed:
                raise StopAsyncIteration
            data = await self._reader.read(READ_SIZE)
            if not data:
                self._closed = True
                self.close_code = self.close_code or 1006
                raise StopAsyncIteration
            self._ws.receive_data(data)
            self._pending.extend(self._ws.events())

    def _handle(self, event):
        if isinstance(event, (BytesMessage, TextMessage)):
            self._fragments.append(event.data)
            if not event.message_finished:
                return None
            parts, self._fragments = self._fragments, []
            return (b"" if isinstance(event, BytesMessage) else "").join(parts)
        if isinstance(event, Ping):
            self._writer.write(self._ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            self.close_code = event.code
            if not self._closed:
                self._writer.write(self._ws.send(event.response()))
            self._closed = True
        return None

    async def close(self, code: int = 1000):
        if not self._closed:
            self._closed = True
            try:
                self._writer.write(self._ws.send(CloseConnection(code=code)))
                await self._writer.drain()
            except (ConnectionError, RuntimeError):
                pass
        self._writer.close()


async def connect(url: str, *, ssl, headers, subprotocols, connect_timeout: float = 10.0,
                  answer_timeout: float = 10.0, on_socket=None) -> UpstreamWebSocket:
    """Open a client WebSocket; ``headers`` are (name, value) byte pairs sent as they are.

    Raises UpstreamTimeout when the TCP and TLS connection takes longer than ``connect_timeout``
    or the handshake's answer longer than ``answer_timeout``; ``on_socket`` gets the connected
    socket (for keepalive options).
    """
    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    target = parts.path + ("?" + parts.query if parts.query else "")
    try:
        reader, writer = await wait_at_most(asyncio.open_connection(
            parts.hostname, port, ssl=ssl if secure else None, server_hostname=parts.hostname if secure else None
        ), connect_timeout)
    except TimeoutError:
        raise UpstreamTimeout("connect", connect_timeout) from None
    if on_socket is not None:
        on_socket(writer.get_extra_info("socket"))

    async def handshake():
        protocol = WSConnection(ConnectionType.CLIENT)
        host = parts.netloc.rpartition("@")[2]
        writer.write(protocol.send(Request(host=host, target=target, subprotocols=list(subprotocols),
                                           extra_headers=list(headers))))
        await writer.drain()
        status, body, content_type = None, b"", None
        try:
            while True:
                data = await reader.read(READ_SIZE)
                if not data:
                    writer.close()
                    if status is not None:
                        raise UpstreamRejected(status, body, content_type)
                    raise ConnectionError("upstream closed during the WebSocket handshake")
                protocol.receive_data(data)
                events = protocol.events()
                for event in events:
                    if isinstance(event, AcceptConnection):
                        return UpstreamWebSocket(reader, writer, protocol, event.subprotocol, events)
                    if isinstance(event, RejectConnection):
                        status = event.status_code
                        content_type = next((v.decode("latin-1") for k, v in event.headers
                                             if k.lower() == b"content-type"), None)
                        if not event.has_body:
                            writer.close()
                            raise UpstreamRejected(status, b"", content_type)
                    elif isinstance(event, RejectData):
                        body = (body + event.data)[:MAX_REJECT_BODY]
                        if event.body_finished:
                            writer.close()
                            raise UpstreamRejected(status, body, content_type)
        except RemoteProtocolError:
            writer.close()
            raise ConnectionError("upstream broke the WebSocket handshake") from None

    try:
        return await wait_at_most(handshake(), answer_timeout)
    except TimeoutError:
        writer.close()
        raise UpstreamTimeout("answer", answer_timeout) from None
    except BaseException:  # cancelled (the agent went away, its lease was cut) or refused: no socket left open
        writer.close()
        raise
