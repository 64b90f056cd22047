"""Every kubectl action through the gateway leaves its audit event, with the right attributes."""

import time

import pytest

from kubesim.testing import read_until
from tests.gateway_harness import AGENT_TOKEN

pytestmark = pytest.mark.django_db(transaction=True)


def events_for(*, at_least=1, timeout=10.0, **filters):
    """Completion events matching ``filters``, waiting for the recorder's background writer.

    (SQLite's shared in-memory test database reports "table is locked" to a
    reader while the writer's transaction is open: that read is retried.)
    """
    from django.db import OperationalError

    from audit.models import AuditEvent

    deadline = time.monotonic() + timeout
    while True:
        try:
            rows = list(AuditEvent.objects.filter(stage="ResponseComplete", **filters).order_by("seq"))
        except OperationalError:
            rows = []
        if len(rows) >= at_least or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def test_kubectl_actions_leave_events(gateway, kubectl, kubesim):
    from audit.models import AuditEvent

    agent = gateway.kubeconfig()
    kubectl("get", "pods", "-n", "shop", kubeconfig=agent)
    kubectl("delete", "configmap", "web-config", "-n", "shop", kubeconfig=agent)
    kubectl("scale", "deployment", "web", "-n", "shop", "--replicas=3", kubeconfig=agent)
    denied = kubectl("get", "pods", "-n", "shop", kubeconfig=gateway.kubeconfig(token="viewer-token-2b9d", name="viewer"),
                     check=False)
    assert denied.returncode != 0

    listed = events_for(verb="list", object_resource="pods", object_namespace="shop", response_code=200)[0]
    assert listed.user_username == "agent-1" and listed.user_groups == ["agents", "dev"]
    assert listed.connection == "kubesim" and listed.decision_effect == "allow"
    assert listed.decision_rule_name == "agents-all" and listed.request_uri.startswith("/api/v1/namespaces/shop/pods")
    assert listed.source_ips == ["127.0.0.1"] and listed.user_agent.startswith("kubectl")

    deleted = events_for(verb="delete", object_resource="configmaps", object_name="web-config")[0]
    assert deleted.response_code == 200 and deleted.object_namespace == "shop"
    received = AuditEvent.objects.get(audit_id=deleted.audit_id, stage="RequestReceived")  # committed earlier
    assert received.seq < deleted.seq, "a write is recorded before it is forwarded"

    scaled = events_for(verb="patch", object_resource="deployments", object_subresource="scale")[0]
    assert scaled.object_api_group == "apps" and scaled.response_code == 200

    refused = events_for(user_username="viewer-1")[0]
    assert refused.response_code == 403 and refused.decision_effect == "deny"
    assert refused.decision_rule_name == "default-deny"


def test_exec_session_recorded_as_asciicast(gateway, kubectl):
    import json

    agent = gateway.kubeconfig()
    kubectl("apply", "-f", "-", kubeconfig=agent, input=(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: rec, namespace: default}\n"
        "spec:\n  containers:\n  - {name: main, image: busybox}\n"))
    result = kubectl("exec", "-i", "rec", "--", "sh", "-c", "cat; echo done-$((40+2)); exit 3", kubeconfig=agent,
                     input="typed-input-line\n", check=False)
    assert result.returncode == 3
    event = events_for(object_resource="pods", object_subresource="exec", object_name="rec")[0]
    recording = event.recording
    assert recording.kind == "exec" and recording.exit_code == 3 and recording.pod == "rec"
    lines = [json.loads(line) for line in recording.asciicast.splitlines()]
    assert lines[0]["version"] == 2
    inputs = "".join(e[2] for e in lines[1:] if e[1] == "i")
    outputs = "".join(e[2] for e in lines[1:] if e[1] == "o")
    assert "typed-input-line" in inputs and "typed-input-line" in outputs and "done-42" in outputs


def test_watch_recorded_when_the_agent_stops_it(gateway, kubectl):
    agent = gateway.kubeconfig()
    watch = kubectl.popen("get", "configmaps", "-n", "default", "-w", kubeconfig=agent)
    read_until(watch, "NAME")
    kubectl("create", "configmap", "seen-by-watch", "-n", "default")
    read_until(watch, "seen-by-watch")
    watch.terminate()
    watch.wait(10)
    event = events_for(verb="watch", object_resource="configmaps")[0]
    assert event.response_code == 200 and event.user_username == "agent-1"
    assert b"seen-by-watch" in bytes(event.response_body)


def test_port_forward_recorded_with_ports_and_bytes(gateway, kubectl):
    import re
    import socket
    import socketserver
    import threading

    class Echo(socketserver.BaseRequestHandler):
        def handle(self):
            while data := self.request.recv(65536):
                self.request.sendall(data)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    agent = gateway.kubeconfig()
    try:
        kubectl("apply", "-f", "-", kubeconfig=agent, input=(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: fwd\n  namespace: default\n  annotations:\n"
            f'    kubesim.airlock.dev/ports: "80=127.0.0.1:{server.server_address[1]}"\n'
            "spec:\n  containers:\n  - {name: main, image: busybox}\n"))
        forward = kubectl.popen("port-forward", "pod/fwd", ":80", kubeconfig=agent)
        out = read_until(forward, "Forwarding from 127.0.0.1:")
        while not (match := re.search(r"Forwarding from 127\.0\.0\.1:(\d+) -> 80\n", out)):
            out += read_until(forward, "\n")
        with socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=10) as sock:
            sock.sendall(b"x" * 5000)
            echoed = b""
            while len(echoed) < 5000:
                echoed += sock.recv(65536)
        forward.terminate()
        forward.wait(10)
    finally:
        server.shutdown()
        server.server_close()
    recording = events_for(object_resource="pods", object_subresource="portforward", object_name="fwd")[0].recording
    assert recording.kind == "portforward" and recording.pod == "fwd" and recording.ports == [80]
    assert recording.bytes_to_pod >= 5000 and recording.bytes_from_pod >= 5000


def test_the_recorded_source_is_the_peer_not_what_the_agent_says_in_x_forwarded_for(gateway):
    """uvicorn believes X-Forwarded-For from loopback by default; the gateway runs with
    --no-proxy-headers (docker-compose.yml), so an agent behind a loopback sidecar cannot choose the
    source address the audit trail records."""
    import ssl

    import httpx

    context = ssl.create_default_context(cafile=str(gateway.ca_file))
    headers = {"Authorization": f"Bearer {AGENT_TOKEN}", "User-Agent": "xff-probe",
               "X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.9", "Forwarded": "for=203.0.113.9"}
    with httpx.Client(base_url=gateway.server_url(), verify=context, timeout=30) as client:
        assert client.get("/api/v1/namespaces/shop/pods", headers=headers).status_code == 200
    (event,) = events_for(user_agent="xff-probe")
    assert event.source_ips == ["127.0.0.1"]
