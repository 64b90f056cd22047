"""Slow and oversized requests against the server exactly as docker-compose.yml starts it, over raw TLS sockets.

The gateway, the dashboard login and the admin share this one listener.  Before
airlock.server, a client trickling header bytes or sending half a body held its connection for
ever, and headers of any size were buffered.  The limits are set short here through the same
environment variables production uses; the bounds asserted are generous (no timing claims).
"""

import os
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from airlock.server import Limits
from kubesim.certs import generate_tls

ROOT = Path(__file__).resolve().parent.parent
LIMITS = {
    "AIRLOCK_HEADER_TIMEOUT_SECONDS": "1",
    "AIRLOCK_BODY_TIMEOUT_SECONDS": "1",
    "AIRLOCK_MAX_HEADER_BYTES": "16384",
    "AIRLOCK_MAX_CONNECTIONS": "8",
}
BOUND = 15.0  # seconds: far above the 1 s limits, far below "for ever"
ASSET = "/static/admin/css/base.css"


@dataclass
class Server:
    port: int
    ca_file: Path
    log: Path

    def connect(self) -> ssl.SSLSocket:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=BOUND)
        return context.wrap_socket(sock, server_hostname="127.0.0.1")


def compose_gateway_argv(port: int, tls, http: str | None) -> list[str]:
    """docker-compose.yml's gateway command on a loopback port with test certificates, in one process (the
    limits, the connection cap above all, are each process's: one worker keeps the counts exact)."""
    command = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["gateway"]["command"]
    assert command[0] == "uvicorn"
    kept = [arg for arg in command[1:] if not arg.startswith(("--host", "--port", "--ssl-", "--workers"))]
    if http is not None:
        kept = [f"--http={http}" if arg.startswith("--http=") else arg for arg in kept]
    return [sys.executable, "-m", "uvicorn", *kept, "--host=127.0.0.1", f"--port={port}",
            f"--ssl-certfile={tls.cert_file}", f"--ssl-keyfile={tls.key_file}"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module", params=["compose", "h11"])
def server(request, tmp_path_factory):
    """The compose command as is (httptools), and with the h11 variant of the protocol."""
    directory = tmp_path_factory.mktemp(request.param)
    tls = generate_tls(directory / "tls")
    port = free_port()
    http = None if request.param == "compose" else "airlock.server:H11Protocol"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL") and not k.startswith("AIRLOCK_")}
    env.update(LIMITS, AIRLOCK_SQLITE_PATH=str(directory / "db.sqlite3"), AIRLOCK_STATIC_ROOT=str(directory / "static"))
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=120)  # the gateway's audit events of early answers are written
    log = directory / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(compose_gateway_argv(port, tls, http), cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT)
    running = Server(port, tls.ca_file, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start:\n{log.read_text(errors='replace')[-3000:]}") from None
                time.sleep(0.1)
        yield running
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_closed(sock: ssl.SSLSocket, trickle: bytes = b"") -> bytes | None:
    """Everything the server sends until it closes, sending ``trickle`` one byte a second meanwhile;
    None if the connection is still open after BOUND seconds."""
    received = b""
    deadline = time.monotonic() + BOUND
    next_byte = 0
    sock.settimeout(1.0)  # TLS records that carry no data (session tickets) make select() say readable
    while time.monotonic() < deadline:
        if next_byte < len(trickle):
            try:
                sock.sendall(trickle[next_byte:next_byte + 1])
            except OSError:
                return received
            next_byte += 1
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except (ssl.SSLError, OSError):
            return received
        if not chunk:
            return received
        received += chunk
    return None


def status_line(response: bytes) -> str:
    return response.split(b"\r\n", 1)[0].decode()


def test_trickled_headers_are_cut(server):
    request = f"GET {ASSET} HTTP/1.1\r\nHost: airlock\r\nX-Slow: {'a' * 100}\r\n\r\n".encode()
    with server.connect() as sock:
        response = wait_closed(sock, trickle=request)
    assert response is not None, "a connection trickling its headers is still open"
    assert status_line(response) == "HTTP/1.1 408 Request Timeout"
    assert b'"kind":"Status"' in response and b"request headers did not arrive" in response


def test_silent_connection_is_cut(server):
    with server.connect() as sock:
        assert wait_closed(sock) is not None, "a connection that never sends a request is still open"


def test_half_sent_body_is_cut(server):
    """The dashboard login waits for the body Django reads first."""
    with server.connect() as sock:
        sock.sendall(b"POST /admin/login/ HTTP/1.1\r\nHost: airlock\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                     b"Content-Length: 100\r\n\r\nusername=ad")
        response = wait_closed(sock)
    assert response is not None, "a connection holding back its body is still open"
    assert status_line(response) == "HTTP/1.1 408 Request Timeout"
    assert b"request body did not arrive" in response


def test_trickled_body_after_an_early_answer_is_cut(server):
    """The gateway answers an unknown connection at once; the body still has to arrive in time."""
    head = (b"PATCH /k8s/Not_A_Connection/api/v1/namespaces/a/configmaps/b HTTP/1.1\r\nHost: airlock\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
    with server.connect() as sock:
        sock.sendall(head)
        response = wait_closed(sock, trickle=b"{" + b" " * 50)
    assert response is not None, "a connection trickling a body is still open"
    assert status_line(response) == "HTTP/1.1 404 Not Found" and response.count(b"HTTP/1.1 ") == 1


@pytest.mark.parametrize("shape", ["one-piece", "never-ending"])
def test_oversized_headers_get_431(server, shape):
    big = b"X-Big: " + b"a" * 40_000
    with server.connect() as sock:
        if shape == "one-piece":
            sock.sendall(b"GET " + ASSET.encode() + b" HTTP/1.1\r\nHost: airlock\r\n" + big + b"\r\n\r\n")
        else:
            sock.sendall(b"GET " + ASSET.encode() + b" HTTP/1.1\r\nHost: airlock\r\n" + big)
        response = wait_closed(sock)
    assert response is not None
    assert status_line(response) == "HTTP/1.1 431 Request Header Fields Too Large"
    assert b"exceed 16384 bytes" in response


class Responses:
    """Reads HTTP/1.1 responses with a Content-Length one after another from a socket."""

    def __init__(self, sock: ssl.SSLSocket):
        self.sock = sock
        self.buffer = b""

    def _fill(self):
        chunk = self.sock.recv(65536)
        assert chunk, "the server closed the connection without a (complete) response"
        self.buffer += chunk

    def next(self) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        while len(rest) < length:
            self._fill()
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
        self.buffer = rest[length:]
        return head


def read_response(sock: ssl.SSLSocket) -> bytes:
    return Responses(sock).next()


def test_keep_alive_with_pauses_between_requests_keeps_working(server):
    """Longer than the header deadline between requests, shorter than uvicorn's keep-alive timeout."""
    request = f"GET {ASSET} HTTP/1.1\r\nHost: airlock\r\n\r\n".encode()
    with server.connect() as sock:
        for _ in range(3):
            sock.sendall(request)
            assert status_line(read_response(sock)) == "HTTP/1.1 200 OK"
            time.sleep(2.5)


def test_pipelined_requests_are_all_answered(server):
    request = f"GET {ASSET} HTTP/1.1\r\nHost: airlock\r\n\r\n".encode()
    with server.connect() as sock:
        sock.sendall(request * 3)
        responses = Responses(sock)
        for _ in range(3):
            assert status_line(responses.next()) == "HTTP/1.1 200 OK"


def test_connection_cap(server):
    """Opened faster than the header deadline: the one above the cap is answered at once."""
    opened = [server.connect() for _ in range(int(LIMITS["AIRLOCK_MAX_CONNECTIONS"]) + 1)]
    first = []
    try:
        for sock in opened:
            sock.settimeout(0.5)
            try:
                first.append(sock.recv(65536))
            except TimeoutError:
                first.append(b"")
    finally:
        for sock in opened:
            sock.close()
    refused = [answer for answer in first if status_line(answer) == "HTTP/1.1 503 Service Unavailable"]
    assert refused, f"no connection was refused above AIRLOCK_MAX_CONNECTIONS: {[status_line(a) for a in first]}"
    assert b"too many open connections" in refused[0]
    deadline = time.monotonic() + BOUND
    while True:  # the cap is on open connections: closing them frees it
        with server.connect() as sock:
            sock.sendall(f"GET {ASSET} HTTP/1.1\r\nHost: airlock\r\n\r\n".encode())
            line = status_line(read_response(sock))
        if line == "HTTP/1.1 200 OK" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert line == "HTTP/1.1 200 OK"


@pytest.mark.parametrize("value", ["0", "-1", "ten", "nan", "inf"])
def test_a_bad_limit_stops_the_server_from_starting(value):
    with pytest.raises(ValueError, match="AIRLOCK_HEADER_TIMEOUT_SECONDS must be a positive number"):
        Limits.from_env({"AIRLOCK_HEADER_TIMEOUT_SECONDS": value})
    assert Limits.from_env({"AIRLOCK_MAX_CONNECTIONS": "50"}).max_connections == 50
