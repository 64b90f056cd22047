"""A kubesim pod's own network: a container serving HTTP on its declared port, reached by real kubectl
port-forward (directly and through the gateway), and nothing of the host's network inside the pod."""

from __future__ import annotations

import json
import re
import urllib.request

import pytest

from kubesim.testing import read_until

pytestmark = pytest.mark.django_db(transaction=True)  # the gateway variant of ``route``

WEB = """
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: default
  annotations:
    kubesim.airlock.dev/files: '{"srv/index.html": "<h1>served from the pod</h1>"}'
spec:
  containers:
  - name: web
    image: python:3.11
    command: ["python3", "-m", "http.server", "80", "--directory", "/srv"]
    ports: [{containerPort: 80, name: http}]
"""


@pytest.fixture
def web_pod(route, kubectl):
    kubectl("apply", "-f", "-", input=WEB)
    return "web"


def forward(kubectl, pod: str, port: str) -> tuple[object, int]:
    proc = kubectl.popen("port-forward", f"pod/{pod}", port)
    out = read_until(proc, "Forwarding from 127.0.0.1:")
    while not (match := re.search(r"Forwarding from 127\.0\.0\.1:(\d+) -> \d+\n", out)):
        out += read_until(proc, "\n")
    return proc, int(match.group(1))


def test_port_forward_reaches_the_http_server_in_the_pod(kubectl, web_pod):
    proc, local = forward(kubectl, web_pod, ":http")
    with urllib.request.urlopen(f"http://127.0.0.1:{local}/index.html", timeout=30) as response:
        assert response.status == 200
        assert response.read() == b"<h1>served from the pod</h1>"
    assert proc.poll() is None


def test_the_pod_has_its_own_loopback_only(kubesim, kubectl, web_pod):
    probe = ("import json, socket, time\n"
             "def reach(port, tries):\n"
             "    for _ in range(tries):\n"
             "        try:\n"
             "            socket.create_connection(('127.0.0.1', port), timeout=5).close()\n"
             "            return True\n"
             "        except OSError:\n"
             "            time.sleep(0.1)\n"
             "    return False\n"
             f"print(json.dumps([reach(80, 100), reach({kubesim.port}, 1)]))\n")
    own, host = json.loads(kubectl("exec", web_pod, "--", "python3", "-c", probe).stdout)
    assert own, "the pod's server (started with the pod's first use) is on the pod's loopback"
    assert not host, "kubesim's API port on the host's loopback is not reachable from the pod"
