"""A request the HTTP server cuts off while the gateway reads its body is recorded with the answer
the client got (found by the resilience fuzz: its completion event said the client went away, with
no status, although the client was answered 408 or 400)."""

import socket
import ssl

import pytest

from tests.gateway_harness import AGENT_TOKEN
from tests.resilience_load import settle

CONFIGMAPS = "/k8s/kubesim/api/v1/namespaces/default/configmaps"
BODY = b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cut-off"}}'


@pytest.mark.parametrize("shape, token, framing, body, answer", [
    ("half-body", AGENT_TOKEN, b"Content-Length: %d" % (len(BODY) + 100), BODY, 408),
    ("bad-chunk", AGENT_TOKEN, b"Transfer-Encoding: chunked", b"zz\r\n" + BODY + b"\r\n0\r\n\r\n", 400),
    # refused before its body is read: the gateway's 401 never reached the client, the server's 400 did
    ("bad-chunk-bad-token", "not-a-token", b"Transfer-Encoding: chunked", b"zz\r\n" + BODY + b"\r\n0\r\n\r\n",
     400),
])
def test_a_request_cut_off_by_the_server_is_recorded_with_the_answer_the_client_got(rig, shape, token, framing,
                                                                                   body, answer):
    agent = f"cut/{shape}"
    request = (f"POST {CONFIGMAPS} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {agent}\r\n"
               f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n").encode()
    gateway = rig.gateways[0]
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=15) as raw:
        with rig.trust.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.sendall(request + framing + b"\r\n\r\n" + body)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
    assert received.startswith(b"HTTP/1.1 %d " % answer), received[:200]
    rows = [row for row in settle(rig, "cut/") if row[0] == agent]
    assert [(stage, code) for _, stage, code, _ in rows] == [("ResponseComplete", answer)]


def test_bytes_that_are_not_http_after_a_request_are_answered_after_that_request(rig):
    """HTTP/1.1 answers pipelined requests in order.  uvicorn answered the bytes that follow a
    request (a Content-Length shorter than the body sent) with its 400 at once and closed, before
    the request's own answer, which was lost although the request had been forwarded and was
    recorded as answered 200."""
    agent = "cut/pipelined-garbage"
    request = (f"GET {CONFIGMAPS}?limit=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {agent}\r\n"
               f"Authorization: Bearer {AGENT_TOKEN}\r\nContent-Length: 2\r\n\r\n").encode()
    gateway = rig.gateways[0]
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=15) as raw:
        with rig.trust.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.sendall(request + b"{}" + b"\x00\x01 is not a request line\r\n\r\n")
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
    statuses = [line.split(b" ")[1] for line in received.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]
    assert statuses == [b"200", b"400"], received[:300]
    rows = [row for row in settle(rig, "cut/") if row[0] == agent]
    assert [(stage, code) for _, stage, code, _ in rows] == [("ResponseComplete", 200)]
