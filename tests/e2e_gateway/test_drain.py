"""Issue 12, finding 6: SIGTERM ends open streams cleanly and the gateway exits without waiting them out.

A real uvicorn process (docker-compose's protocols: httptools, wsproto) with a raw HTTP watch,
real ``kubectl get -w``, an exec session and ``kubectl port-forward`` with a forwarded connection
open gets SIGTERM.  Each watch client must see an ERROR event (a 503 ``Status``) and a proper end
of the chunked body, the exec session a ``Status`` on channel 3 and a normal close, kubectl
port-forward the message on the connection's error stream, and uvicorn must shut down without
hitting its graceful-shutdown timeout (it logs when it has to cancel what is still running).
"""

import json
import re
import signal
import socket
import socketserver
import sqlite3
import threading

import pytest

from kubesim.testing import read_until
from tests import wsraw
from tests.e2e_gateway.test_server_logs import Server, deployment, migrated  # noqa: F401 (fixtures)
from tests.e2e_gateway.test_upstream_faults import RawWatch
from tests.gateway_harness import AGENT_TOKEN

SHUTTING_DOWN = "the gateway is shutting down"
EXEC = ("/k8s/kubesim/api/v1/namespaces/payments/pods/debug-shell/exec"
        "?command=sh&stdin=true&stdout=true&stderr=true")


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def echo_pod(kubectl):
    """Pod ``fwd`` whose port 80 is a local echo server (kubesim's port-forward target)."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kubectl("apply", "-f", "-", input=(  # admin, straight to kubesim
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: fwd\n  namespace: default\n  annotations:\n"
        f'    kubesim.airlock.dev/ports: "80=127.0.0.1:{server.server_address[1]}"\n'
        "spec:\n  containers:\n  - {name: main, image: busybox}\n"))
    yield
    server.shutdown()
    server.server_close()


def forwarded_port(forward) -> int:
    out = read_until(forward, "Forwarding from 127.0.0.1:")
    while not (match := re.search(r"Forwarding from 127\.0\.0\.1:(\d+) -> 80\n", out)):
        out += read_until(forward, "\n")
    return int(match.group(1))


def test_sigterm_ends_watches_and_exec_cleanly_and_exits_without_waiting_them_out(  # noqa: F811
        deployment, echo_pod, kubectl, tmp_path):
    server = Server("uvicorn-access-log", deployment, tmp_path)
    agent = server.kubeconfig(tmp_path / "agent.kubeconfig")
    try:
        watcher = kubectl.popen("get", "pods", "-n", "shop", "-w", kubeconfig=agent)
        read_until(watcher, "web-")
        forward = kubectl.popen("port-forward", "pod/fwd", ":80", kubeconfig=agent)
        forwarded = socket.create_connection(("127.0.0.1", forwarded_port(forward)), timeout=10)
        forwarded.sendall(b"ping")
        assert forwarded.recv(4) == b"ping"
        raw = RawWatch(server.url, server.tls.ca_file, "/k8s/kubesim/api/v1/namespaces/shop/configmaps?watch=1")
        shell = wsraw.connect("127.0.0.1", int(server.url.rsplit(":", 1)[1]), server.tls.ca_file, EXEC,
                              token=AGENT_TOKEN, subprotocols=["v5.channel.k8s.io"])
        assert isinstance(shell, wsraw.RawWebSocket), shell
        shell.receive(until=lambda messages: bool(messages))  # the v5 "ready" frame

        server.proc.send_signal(signal.SIGTERM)

        events = raw.rest()  # the initial ADDED events, then the end; IncompleteRead unless it ends properly
        raw.close()
        session = shell.receive()
        shell.close()
        out, _ = watcher.communicate(timeout=15)
        _, forward_err = forward.communicate(timeout=15)
        forwarded.close()
        server.proc.wait(15)
    finally:
        log = server.stop()

    assert [e["type"] for e in events] == ["ADDED"] * (len(events) - 1) + ["ERROR"] and len(events) > 1
    assert events[-1]["object"]["code"] == 503 and SHUTTING_DOWN in events[-1]["object"]["message"]
    assert SHUTTING_DOWN in out  # kubectl printed the ERROR event's Status
    statuses = [json.loads(m[1:]) for m in session.messages if isinstance(m, bytes) and m[:1] == b"\x03"]
    assert [s["code"] for s in statuses] == [503] and SHUTTING_DOWN in statuses[0]["message"]
    assert session.close_code == 1000
    # the forwarded connection's error stream carried the message; kubectl prints it
    assert f'"An error occurred forwarding" err="airlock: {SHUTTING_DOWN}' in forward_err, forward_err
    assert "timeout graceful shutdown exceeded" not in log, log[-3000:]
    with sqlite3.connect(deployment["AIRLOCK_SQLITE_PATH"]) as database:
        ended = database.execute(
            "SELECT verb, object_subresource FROM audit_auditevent WHERE stage = 'ResponseComplete' "
            "AND response_message = ? ORDER BY verb", ("the gateway is shutting down",)).fetchall()
    assert ended == [("get", "exec"), ("get", "portforward"), ("watch", ""), ("watch", "")]
