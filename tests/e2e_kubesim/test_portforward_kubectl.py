"""Real kubectl port-forward (SPDY/3.1 tunnelled in WebSocket) and the Python client's
legacy WebSocket port-forward against kubesim, to a TCP echo server started by the test,
directly and through the gateway (the ``route`` fixture)."""

import os
import re
import socket
import socketserver
import threading

import pytest

from kubesim.testing import read_until

pytestmark = pytest.mark.django_db(transaction=True)  # the gateway variant of ``route``


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)
        self.request.shutdown(socket.SHUT_WR)


@pytest.fixture
def echo_port():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def forwarded_pod(route, kubectl, echo_port):
    manifest = f"""
apiVersion: v1
kind: Pod
metadata:
  name: echo
  namespace: default
  annotations:
    kubesim.airlock.dev/ports: "80=127.0.0.1:{echo_port}"
spec:
  containers:
  - name: echo
    image: busybox:1.37
    ports: [{{containerPort: 80}}]
"""
    kubectl("apply", "-f", "-", input=manifest)
    return "echo"


def roundtrip(port: int, payload: bytes) -> bytes:
    """Send ``payload`` while reading concurrently, half-close, read to EOF."""
    received = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        def reader() -> None:
            while chunk := sock.recv(65536):
                received.extend(chunk)

        thread = threading.Thread(target=reader)
        thread.start()
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        thread.join(30)
        assert not thread.is_alive(), "no EOF from the forwarded connection"
    return bytes(received)


def start_port_forward(kubectl, *ports: str):
    proc = kubectl.popen("port-forward", "pod/echo", *ports)
    out = read_until(proc, "Forwarding from 127.0.0.1:")
    while not (match := re.search(r"Forwarding from 127\.0\.0\.1:(\d+) -> \d+\n", out)):
        out += read_until(proc, "\n")
    return proc, int(match.group(1))


def test_kubectl_port_forward_carries_bytes_both_ways(kubectl, forwarded_pod):
    proc, local = start_port_forward(kubectl, ":80")
    big = os.urandom(3 * 1024 * 1024)
    assert roundtrip(local, big) == big
    # A second connection over the same SPDY session.
    assert roundtrip(local, b"second connection\n") == b"second connection\n"
    assert proc.poll() is None


# Nothing will ever listen on port 81: the refusal need not be retried for the default 10 s of start-up grace.
@pytest.mark.kubesim_args("--port-forward-grace", "0.5")
def test_kubectl_port_forward_to_an_unmapped_port(kubectl, forwarded_pod):
    proc, local = start_port_forward(kubectl, ":81")
    with socket.create_connection(("127.0.0.1", local), timeout=30) as sock:
        sock.sendall(b"hello?")
        assert sock.recv(100) == b""
    stderr = proc.communicate(timeout=30)[1]
    assert "error forwarding port 81 to pod echo" in stderr
    assert "connection refused" in stderr


def test_python_client_legacy_port_forward(route, forwarded_pod):
    from kubernetes import client, config
    from kubernetes.stream import portforward

    api_client = config.new_client_from_config(config_file=str(route))
    try:
        pf = portforward(client.CoreV1Api(api_client).connect_get_namespaced_pod_portforward,
                         forwarded_pod, "default", ports="80")
        sock = pf.socket(80)
        sock.setblocking(True)
        payload = os.urandom(200_000)
        sock.sendall(payload)
        echoed = b""
        while len(echoed) < len(payload):
            chunk = sock.recv(65536)
            assert chunk, "forwarded socket closed early"
            echoed += chunk
        assert echoed == payload
        sock.close()
        assert pf.error(80) is None
    finally:
        api_client.close()
