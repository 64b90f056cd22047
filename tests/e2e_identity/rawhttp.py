"""A raw HTTP/1.1 client over TLS that sends the request target byte for byte.

HTTP client libraries normalise what a bypass attempt must send as is (dot segments, ``//``,
percent-encoding, method case), so requests are framed with h11 (sans-IO, already installed with
httpx and uvicorn) and written to a plain TLS socket.  One request per connection.
"""

import base64
import json
import os
import socket
import ssl
from dataclasses import dataclass

import h11


@dataclass
class Response:
    status: int
    headers: dict
    body: bytes

    def status_object(self) -> dict | None:
        """The Kubernetes Status in the body, or None when the body is not one."""
        try:
            document = json.loads(self.body)
        except ValueError:
            return None
        return document if isinstance(document, dict) and document.get("kind") == "Status" else None


def request(url_host: str, port: int, ca_file, method: str, target: str, headers=(), body: bytes = b"",
            timeout: float = 15.0) -> Response:
    context = ssl.create_default_context(cafile=str(ca_file))
    connection = h11.Connection(h11.CLIENT)
    all_headers = [("Host", f"{url_host}:{port}"), *headers]
    if body or method.upper() in ("POST", "PUT", "PATCH"):
        all_headers.append(("Content-Length", str(len(body))))
    names = {name.lower() for name, _ in all_headers}
    if "connection" not in names:
        all_headers.append(("Connection", "close"))
    with socket.create_connection((url_host, port), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=url_host) as tls:
            out = connection.send(h11.Request(method=method, target=target, headers=all_headers))
            if body:
                out += connection.send(h11.Data(data=body))
            out += connection.send(h11.EndOfMessage())
            tls.sendall(out)
            return _read(connection, tls, head=method.upper() == "HEAD")


def _read(connection, tls, head: bool, body_wait: float = 2.0) -> Response:
    """Read the response; a body still streaming after ``body_wait`` seconds (a watch) is cut short."""
    response, body = None, bytearray()
    while True:
        try:
            event = connection.next_event()
        except h11.RemoteProtocolError:
            if response is None:
                raise
            break
        if event is h11.NEED_DATA:
            try:
                data = tls.recv(65536)
            except TimeoutError:
                if response is None:
                    raise
                break
            connection.receive_data(data)
            continue
        if event is h11.PAUSED:
            break  # 101 Switching Protocols: the server accepted an upgrade
        if isinstance(event, (h11.Response, h11.InformationalResponse)):
            response = event
            if event.status_code == 101 or head:
                break
            tls.settimeout(body_wait)
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            break
    headers = {name.decode().lower(): value.decode("latin-1") for name, value in response.headers}
    return Response(response.status_code, headers, bytes(body))


def websocket_headers(subprotocol: str = "v5.channel.k8s.io") -> list[tuple[str, str]]:
    """What kubectl sends to open exec/attach/port-forward over WebSocket."""
    return [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", base64.b64encode(os.urandom(16)).decode()),
        ("Sec-WebSocket-Protocol", subprotocol),
    ]


def spdy_headers() -> list[tuple[str, str]]:
    """kubectl's fallback transport: POST with an SPDY/3.1 upgrade."""
    return [
        ("Connection", "Upgrade"),
        ("Upgrade", "SPDY/3.1"),
        ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
    ]
