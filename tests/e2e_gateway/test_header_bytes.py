"""Issue 12, finding 7 (headers): bytes outside ASCII in a forwarded header never give a 500.

Sent on a raw TLS socket, as an attacker (or a kubectl binary renamed ``kübectl``) would: a
``User-Agent`` in UTF-8 (``caf\\xc3\\xa9``) reaches the cluster byte for byte and is recorded as
``café``; one in Latin-1 (``caf\\xe9``) is not UTF-8, so it can be neither recorded nor sent as
it was, and is refused with a 400 ``Status`` before anything reaches the cluster.  The
HTTP and WebSocket paths treat the same bytes the same way, and the completion event records
the code the client saw.
"""

import http.client
import json
import socket
import ssl

import pytest

from tests import wsraw
from tests.e2e_gateway.test_audit_trail import events_for
from tests.gateway_harness import AGENT_TOKEN

pytestmark = pytest.mark.django_db(transaction=True)

UTF8 = b"caf\xc3\xa9"
LATIN1 = b"caf\xe9"


def raw_request(gateway, method: str, target: str, *user_agents: bytes) -> tuple[int, bytes]:
    host, port = "127.0.0.1", int(gateway.url.rsplit(":", 1)[1])
    context = ssl.create_default_context(cafile=str(gateway.ca_file))
    with context.wrap_socket(socket.create_connection((host, port), timeout=15), server_hostname=host) as sock:
        sock.sendall(
            f"{method} /k8s/{gateway.connection.name}{target} HTTP/1.1\r\nHost: {host}:{port}\r\n".encode()
            + f"Authorization: Bearer {AGENT_TOKEN}\r\nAccept: application/json\r\n".encode()
            + b"".join(b"User-Agent: " + agent + b"\r\n" for agent in user_agents) + b"Connection: close\r\n\r\n"
        )
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        return response.status, response.read()


def forwarded(kubesim, method: str, path: str) -> list[dict]:
    return [r for r in kubesim.requests() if r["method"] == method and r["path"] == path]


def user_agents(record) -> list[str]:
    return [value for name, value in record["headers"] if name.lower() == "user-agent"]


def test_utf8_user_agent_is_forwarded_byte_for_byte_and_recorded(gateway, kubesim):
    path = "/api/v1/namespaces/shop/configmaps/web-config"
    status, body = raw_request(gateway, "DELETE", path, UTF8)
    assert status == 200, body
    assert [user_agents(r) for r in forwarded(kubesim, "DELETE", path)] == [["café"]]
    event = events_for(verb="delete", object_name="web-config")[0]
    assert event.response_code == 200 and event.user_agent == "café"


def test_a_repeated_user_agent_is_forwarded_and_recorded_as_kube_apiserver_reads_it(gateway, kubesim):
    """Go's server accepts a repeated User-Agent and kube-apiserver reads the first; kubesim (aiohttp)
    refused it with a plain-text 400, which the gateway answered 502.  Only the first goes on."""
    path = "/api/v1/namespaces/shop/configmaps/web-config"
    status, body = raw_request(gateway, "DELETE", path, b"first-agent/1.0", b"second-agent/2.0")
    assert status == 200, body
    assert [user_agents(r) for r in forwarded(kubesim, "DELETE", path)] == [["first-agent/1.0"]]
    event = events_for(verb="delete", object_name="web-config")[0]
    assert event.response_code == 200 and event.user_agent == "first-agent/1.0"


def test_latin1_user_agent_is_refused_with_a_status_and_recorded_as_seen(gateway, kubesim):
    path = "/api/v1/namespaces/shop/configmaps/web-config"
    status, body = raw_request(gateway, "DELETE", path, LATIN1)
    assert status == 400
    refusal = json.loads(body)
    assert refusal["kind"] == "Status" and refusal["code"] == 400 and "user-agent" in refusal["message"]
    assert forwarded(kubesim, "DELETE", path) == []
    event = events_for(request_uri__contains="web-config")[0]
    assert event.response_code == 400


def test_websocket_handshake_treats_header_bytes_as_http_does(gateway, kubesim):
    target = (f"/k8s/{gateway.connection.name}/api/v1/namespaces/payments/pods/debug-shell/exec"
              "?command=true&stdout=true")
    exec_path = "/api/v1/namespaces/payments/pods/debug-shell/exec"

    def upgrade(user_agent):
        return wsraw.connect("127.0.0.1", int(gateway.url.rsplit(":", 1)[1]), gateway.ca_file, target,
                             token=AGENT_TOKEN, subprotocols=["v5.channel.k8s.io"],
                             extra_headers=[(b"user-agent", user_agent)])

    refused = upgrade(LATIN1)
    assert isinstance(refused, wsraw.Refused) and refused.status == 400
    assert json.loads(refused.body)["kind"] == "Status"
    assert forwarded(kubesim, "GET", exec_path) == []
    assert events_for(request_uri__contains="/exec")[0].response_code == 400

    accepted = upgrade(UTF8)
    assert isinstance(accepted, wsraw.RawWebSocket)
    accepted.receive()
    accepted.close()
    assert [user_agents(r) for r in forwarded(kubesim, "GET", exec_path)] == [["café"]]
    assert [e.response_code for e in events_for(at_least=2, request_uri__contains="/exec")] == [400, 101]


def response_fields(gateway, target: str, token: str = AGENT_TOKEN) -> tuple[int, list[tuple[str, str]]]:
    host, port = "127.0.0.1", int(gateway.url.rsplit(":", 1)[1])
    context = ssl.create_default_context(cafile=str(gateway.ca_file))
    with context.wrap_socket(socket.create_connection((host, port), timeout=15), server_hostname=host) as sock:
        sock.sendall(f"GET /k8s/{gateway.connection.name}{target} HTTP/1.1\r\nHost: {host}:{port}\r\n".encode()
                     + f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n".encode())
        response = http.client.HTTPResponse(sock, method="GET")
        response.begin()
        response.read()
        return response.status, [(name.lower(), value) for name, value in response.getheaders()]


def test_the_agent_gets_the_clusters_date_once_and_no_server_field_of_the_gateway(gateway):
    """The cluster's Date alone on a proxied answer (uvicorn's used to follow it); the gateway's own
    refusal has uvicorn's; neither names uvicorn (``--no-server-header``, as docker-compose.yml)."""
    status, fields = response_fields(gateway, "/api/v1/namespaces/shop/configmaps/web-config")
    assert status == 200
    assert len([value for name, value in fields if name == "date"]) == 1
    refused, own = response_fields(gateway, "/api/v1/namespaces/shop/configmaps/web-config", token="not-a-token")
    assert refused == 401 and len([value for name, value in own if name == "date"]) == 1
    assert not [value for name, value in fields + own if name == "server" and "uvicorn" in value]
