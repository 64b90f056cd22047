"""kubesim takes request headers as kube-apiserver's Go server does: up to 1 MiB of them, in any
number of fields, single-value fields repeated (aiohttp's defaults refuse more than 128 fields, a
field over 8 KiB or a repeated User-Agent with a plain-text 400, which the gateway, forwarding
what Go would accept, turned into a 502)."""

import http.client
import json
import socket
import ssl

import pytest

from kubesim import requestlog


@pytest.mark.parametrize("headers", [
    [(f"X-Field-{i}", "v") for i in range(1000)],
    [("X-Large", "a" * 100_000)],
], ids=["many-fields", "large-field"])
def test_headers_kube_apiserver_accepts_are_accepted(kubesim, headers):
    connection = http.client.HTTPSConnection("127.0.0.1", kubesim.port, timeout=15,
                                             context=ssl.create_default_context(cafile=str(kubesim.ca_file)))
    connection.putrequest("GET", "/version")
    connection.putheader("Authorization", f"Bearer {kubesim.admin_token}")
    for name, value in headers:
        connection.putheader(name, value)
    connection.endheaders()
    response = connection.getresponse()
    body = response.read()
    connection.close()
    assert response.status == 200, body[:200]
    assert "gitVersion" in json.loads(body)


def raw_request(kubesim, head: bytes) -> tuple[int, bytes]:
    """Send ``head`` (and nothing else) over TLS; the status code and body of the answer."""
    context = ssl.create_default_context(cafile=str(kubesim.ca_file))
    with socket.create_connection(("127.0.0.1", kubesim.port), timeout=15) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(head)
            answer = b""
            while chunk := tls.recv(65536):
                answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def head(kubesim, *fields: bytes, host: bytes = b"Host: 127.0.0.1\r\n") -> bytes:
    return (b"GET /version HTTP/1.1\r\n" + host + b"Authorization: Bearer " + kubesim.admin_token.encode()
            + b"\r\nConnection: close\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n")


def test_repeated_single_value_headers_are_accepted_as_go_reads_them(kubesim):
    """Go's net/http keeps every value of a repeated User-Agent or Content-Type (Header.Get gives the
    first); aiohttp's strict parser refused them with a plain-text 400 "Duplicate 'User-Agent' header
    found", which the gateway turned into a 502."""
    status, body = raw_request(kubesim, head(
        kubesim, b"User-Agent: first-agent/1.0", b"User-Agent: second-agent/2.0", b"Content-Type: application/json",
        b"Content-Type: text/plain", b"Server: a", b"Server: b", b"ETag: x", b"ETag: y"))
    assert status == 200, body[:200]
    [record] = [r for r in kubesim.requests() if "first-agent/1.0" in requestlog.header(r, "user-agent")]
    assert requestlog.header(record, "user-agent") == ["first-agent/1.0", "second-agent/2.0"]


@pytest.mark.parametrize("fields, host", [
    ((), b"Host: 127.0.0.1\r\nHost: example.com\r\n"),  # Go: "too many Host headers"
    ((b"Content-Length: 0", b"Content-Length: 5"), b"Host: 127.0.0.1\r\n"),  # differing lengths: smuggling
    ((b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"), b"Host: 127.0.0.1\r\n"),
    ((b"X-Bell: ring\x07",), b"Host: 127.0.0.1\r\n"),  # a control character (httpguts.ValidHeaderFieldValue)
], ids=["host", "content-length", "transfer-encoding", "control-character"])
def test_what_go_refuses_is_still_refused(kubesim, fields, host):
    status, _ = raw_request(kubesim, head(kubesim, *fields, host=host))
    assert status in (400, 501)
