"""A raw WebSocket client over TLS for attack tests: it sends any frame, on any path, as given.

Client libraries (kubectl, the Python client) only send well-formed channel frames on the paths
they know; an attacker sends what it likes.  wsproto (sans-IO, already a gateway dependency)
frames the messages and a plain TLS socket carries them.  Synchronous, one connection each.
"""

import socket
import ssl
from dataclasses import dataclass, field

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


@dataclass
class Refused:
    """The server answered the upgrade with a plain HTTP response."""

    status: int
    body: bytes = b""


@dataclass
class Session:
    """What one WebSocket session received: messages in order and the close code."""

    subprotocol: str | None
    messages: list = field(default_factory=list)
    close_code: int | None = None


class RawWebSocket:
    def __init__(self, sock, ws: WSConnection, subprotocol: str | None, pending):
        self.sock = sock
        self.ws = ws
        self.session = Session(subprotocol)
        self._partial = []
        self._handle(pending)

    def send(self, data: bytes | str):
        self.sock.sendall(self.ws.send(Message(data=data)))

    def receive(self, *, until=None, timeout: float = 15.0) -> Session:
        """Read until ``until(messages)`` is true, the server closes or ``timeout`` passes; the session so far."""
        self.sock.settimeout(timeout)
        while self.session.close_code is None and not (until and until(self.session.messages)):
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                self.session.close_code = self.session.close_code or 1006
                break
            self.ws.receive_data(data)
            self._handle(self.ws.events())
        return self.session

    def _handle(self, events):
        for event in events:
            if isinstance(event, (BytesMessage, TextMessage)):
                self._partial.append(event.data)
                if event.message_finished:
                    empty = b"" if isinstance(event, BytesMessage) else ""
                    self.session.messages.append(empty.join(self._partial))
                    self._partial = []
            elif isinstance(event, Ping):
                self.sock.sendall(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self.session.close_code = event.code
                try:
                    self.sock.sendall(self.ws.send(event.response()))
                except OSError:
                    pass

    def close(self):
        self.sock.close()


def connect(host: str, port: int, ca_file, target: str, *, token: str, subprotocols=(),
            timeout: float = 15.0, extra_headers=()) -> "RawWebSocket | Refused":
    """Open a WebSocket to ``target`` (sent byte for byte) with a bearer token and ``extra_headers`` (bytes)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    raw = socket.create_connection((host, port), timeout=timeout)
    sock = context.wrap_socket(raw, server_hostname=host)
    ws = WSConnection(ConnectionType.CLIENT)
    sock.sendall(ws.send(Request(host=f"{host}:{port}", target=target, subprotocols=list(subprotocols),
                                 extra_headers=[(b"authorization", f"Bearer {token}".encode()),
                                                *extra_headers])))
    status, body = None, b""
    while True:
        data = sock.recv(65536)
        if not data:
            sock.close()
            if status is None:
                raise ConnectionError("the server closed the connection during the handshake")
            return Refused(status, body)
        ws.receive_data(data)
        events = list(ws.events())
        for index, event in enumerate(events):
            if isinstance(event, AcceptConnection):
                return RawWebSocket(sock, ws, event.subprotocol, events[index + 1:])
            if isinstance(event, RejectConnection):
                status = event.status_code
                if not event.has_body:
                    sock.close()
                    return Refused(status)
            elif isinstance(event, RejectData):
                body += event.data
                if event.body_finished:
                    sock.close()
                    return Refused(status, body)
