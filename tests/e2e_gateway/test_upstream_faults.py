"""Issue 12, findings 5 and 6: a frozen or broken cluster gives clean answers, never a hang or a cut.

The gateway reaches kubesim through a TCP proxy the test controls (tests/tcpproxy.py), with short
timeouts on the Connection.  A frozen cluster (a partition: nothing answered) is a 504
``Status`` after the first-byte or connect timeout, and the gateway recovers by itself when the
cluster answers again.  A watch is a long-running request: it outlives both timeouts while it is
quiet, and when the cluster connection breaks, real kubectl and a raw client see an ERROR event
and a proper end of the chunked body, not an incomplete read.
"""

import http.client
import json
import socket
import ssl
import time

import httpx
import pytest

from kubesim.testing import read_until
from tests import wsraw
from tests.e2e_gateway.test_audit_trail import events_for
from tests.gateway_harness import AGENT_TOKEN, allow_everything_for, serving
from tests.tcpproxy import TcpProxy

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 1.0
CONNECT_TIMEOUT = 0.5  # the first-byte timeout includes connecting: shorter, so it is the one that fires
CONFIGMAPS = "/api/v1/namespaces/shop/configmaps"
EXEC = "/k8s/kubesim/api/v1/namespaces/payments/pods/debug-shell/exec?command=sh&stdin=true&stdout=true&stderr=true"


@pytest.fixture
def proxy(kubesim):
    running = TcpProxy("127.0.0.1", kubesim.port).start()
    yield running
    running.stop()


@pytest.fixture
def gateway(cluster_connection, proxy, gateway_app, tmp_path):
    """The gateway reaching kubesim through ``proxy``, with timeouts of a second or less."""
    cluster_connection.server_url = f"https://127.0.0.1:{proxy.port}"
    cluster_connection.connect_timeout = CONNECT_TIMEOUT
    cluster_connection.first_byte_timeout = TIMEOUT
    cluster_connection.idle_timeout = TIMEOUT
    cluster_connection.full_clean()
    cluster_connection.save()
    allow_everything_for(cluster_connection)
    with serving(gateway_app, cluster_connection, tmp_path / "gateway") as running:
        yield running


def agent_client(gateway) -> httpx.Client:
    return httpx.Client(base_url=gateway.server_url(), verify=ssl.create_default_context(cafile=str(gateway.ca_file)),
                        headers={"Authorization": f"Bearer {AGENT_TOKEN}"}, timeout=15)


def test_a_frozen_cluster_is_a_504_status_and_recovery_needs_no_restart(gateway, proxy):
    with agent_client(gateway) as http:
        assert http.get(CONFIGMAPS).status_code == 200
        proxy.partition()
        # The first goes out on a pooled cluster connection (nothing comes back); each one that
        # timed out closed its connection, so the last needs a new one (its TLS handshake hangs).
        frozen = [http.get(CONFIGMAPS) for _ in range(3)]
        shell = wsraw.connect("127.0.0.1", int(gateway.url.rsplit(":", 1)[1]), gateway.ca_file, EXEC,
                              token=AGENT_TOKEN, subprotocols=["v5.channel.k8s.io"])
        proxy.resume()
        recovered = http.get(CONFIGMAPS)
    assert [r.status_code for r in frozen] == [504] * 3
    messages = [r.json()["message"] for r in frozen if r.json()["kind"] == "Status"]
    assert f"the cluster did not answer within {TIMEOUT:g} s" in messages[0]
    assert "timed out connecting to the cluster" in messages[-1]
    assert recovered.status_code == 200 and recovered.json()["kind"] == "ConfigMapList"
    assert [e.response_code for e in events_for(at_least=5, verb="list")] == [200, 504, 504, 504, 200]
    assert isinstance(shell, wsraw.Refused) and shell.status == 504  # an exec upgrade: the same
    assert json.loads(shell.body)["kind"] == "Status"


class RawWatch:
    """A watch read event by event from the chunked body, as client-go reads it."""

    def __init__(self, url: str, ca_file, target: str):
        port = int(url.rsplit(":", 1)[1])
        context = ssl.create_default_context(cafile=str(ca_file))
        self.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=15),
                                        server_hostname="127.0.0.1")
        self.sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          f"Authorization: Bearer {AGENT_TOKEN}\r\nAccept: application/json\r\n\r\n".encode())
        self.response = http.client.HTTPResponse(self.sock, method="GET")
        self.response.begin()
        assert self.response.status == 200 and self.response.chunked

    def next_event(self) -> dict | None:
        """The next event; None at a proper end of the body (an incomplete one raises IncompleteRead)."""
        line = self.response.readline()
        return json.loads(line) if line else None

    def rest(self) -> list[dict]:
        events = []
        while (event := self.next_event()) is not None:
            events.append(event)
        return events

    def close(self):
        self.sock.close()


def test_a_quiet_watch_outlives_the_timeouts_and_ends_with_an_error_event_when_the_connection_breaks(
        gateway, proxy, kubectl):
    agent = gateway.kubeconfig()
    watcher = kubectl.popen("get", "configmaps", "-n", "shop", "-w", kubeconfig=agent)
    read_until(watcher, "web-config")
    with agent_client(gateway) as http:
        rv = http.get(CONFIGMAPS).json()["metadata"]["resourceVersion"]
    raw = RawWatch(gateway.url, gateway.ca_file, f"/k8s/kubesim{CONFIGMAPS}?watch=1&resourceVersion={rv}")
    try:
        time.sleep(3 * TIMEOUT)  # quiet for longer than the first-byte and idle timeouts
        kubectl("create", "configmap", "late-arrival", "-n", "shop")  # admin, straight to kubesim
        assert raw.next_event()["object"]["metadata"]["name"] == "late-arrival"
        read_until(watcher, "late-arrival")
        proxy.refuse()
        events = raw.rest()
    finally:
        raw.close()
    assert [e["type"] for e in events] == ["ERROR"]
    status = events[0]["object"]
    assert status["kind"] == "Status" and status["code"] == 502
    assert "the connection to the cluster broke" in status["message"]
    out, _ = watcher.communicate(timeout=15)
    assert "the connection to the cluster broke" in out  # kubectl prints the ERROR event's Status and ends


def test_an_exec_session_whose_cluster_connection_breaks_ends_with_a_status_on_the_error_channel(gateway, proxy):
    shell = wsraw.connect("127.0.0.1", int(gateway.url.rsplit(":", 1)[1]), gateway.ca_file, EXEC,
                          token=AGENT_TOKEN, subprotocols=["v5.channel.k8s.io"])
    assert isinstance(shell, wsraw.RawWebSocket), shell
    try:
        shell.receive(until=lambda messages: bool(messages))  # the v5 "ready" frame
        time.sleep(2 * TIMEOUT)  # an idle shell outlives the idle timeout
        shell.send(b"\x00echo still-$((40+2))\n")
        shell.receive(until=lambda messages: any(b"still-42" in m for m in messages))
        proxy.refuse()
        session = shell.receive()
    finally:
        shell.close()
    statuses = [json.loads(m[1:]) for m in session.messages if isinstance(m, bytes) and m[:1] == b"\x03"]
    assert [s["code"] for s in statuses] == [502]
    assert "the connection to the cluster broke" in statuses[0]["message"]
    assert session.close_code == 1000
    event = events_for(object_subresource="exec")[0]
    assert event.response_code == 101 and "the connection to the cluster broke" in event.response_message
