"""Issue 6, done-when: two gateway processes behind one Redis; a request held on one is released by an
approval made through the other.

Both are real uvicorn processes (airlock.asgi routing) sharing a SQLite file
database and Redis database 14.  Their database poll interval is set far
beyond the test's waits, so only the channel-layer message from the other
process can release the held request in time.
"""

import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from kubesim.certs import generate_tls
from tests.gateway_harness import AGENT_TOKEN, AGENT_TOKENS

ROOT = Path(__file__).resolve().parents[2]
REDIS = "redis://127.0.0.1:6379/14"
REVIEWER_TOKEN = "5b0d0c5a2f3e4d1c9a8b7e6f5d4c3b2a1f0e9d8c"

SEED = """
from pathlib import Path
import os
from django.contrib.auth.models import Group, Permission, User
from rest_framework.authtoken.models import Token
from connections.models import Connection
from policy.models import Rule

c = Connection(name="kubesim", server_url=os.environ["SEED_URL"], ca_bundle=Path(os.environ["SEED_CA"]).read_text())
c.bearer_token = os.environ["SEED_TOKEN"]
c.full_clean()
c.save()
Rule.objects.create(connection=c, order=5, name="review-deletes", effect="review", groups=["agents"],
                    verbs=["delete"], api_groups=["apps"], resources=["deployments"], namespaces=["*"], names=["*"])
Rule.objects.create(connection=c, order=10, name="agents-all", effect="allow", groups=["agents"], verbs=["*"],
                    api_groups=["*"], resources=["*", "*/*"], namespaces=["*"], names=["*"])
Rule.objects.create(connection=c, order=20, name="discovery", effect="allow", groups=["agents"], verbs=["*"],
                    non_resource_urls=["*"])
rita = User.objects.create_user("rita")
rita.groups.add(Group.objects.get(name="reviewers"))
Token.objects.create(user=rita, key=os.environ["SEED_REVIEWER_TOKEN"])
"""


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


class Deployment:
    """The shared environment of both processes: one SQLite file, one Redis database, dev tokens."""

    def __init__(self, directory: Path, kubesim):
        self.directory = directory
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "KUBE"))}
        env.update(
            PYTHONPATH=str(ROOT), AIRLOCK_SQLITE_PATH=str(directory / "airlock.sqlite3"), REDIS_URL=REDIS,
            AIRLOCK_DEV_STATIC_TOKENS=AGENT_TOKENS, AIRLOCK_REVIEW_POLL_SECONDS="300",
            AIRLOCK_REVIEW_HOLD_SECONDS="90", AIRLOCK_VAR_DIR=str(directory / "var"),
        )
        self.env = env
        self.tls = generate_tls(directory / "tls")
        self.trust = ssl.create_default_context(cafile=str(self.tls.ca_file))
        self.manage("migrate", "--no-input")
        self.manage("shell", input=SEED, extra={
            "SEED_URL": kubesim.url, "SEED_CA": str(kubesim.ca_file), "SEED_TOKEN": kubesim.admin_token,
            "SEED_REVIEWER_TOKEN": REVIEWER_TOKEN,
        })
        self.processes = []

    def manage(self, *args, input=None, extra=None):
        subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env={**self.env, **(extra or {})},
                       input=input, text=True, check=True, capture_output=True, timeout=120)

    def start_gateway(self, name: str) -> str:
        sock = free_socket()
        log = open(self.directory / f"{name}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "airlock.asgi:application",
             "--fd", str(sock.fileno()), "--ssl-certfile", str(self.tls.cert_file), "--ssl-keyfile",
             str(self.tls.key_file), "--lifespan", "on", "--no-access-log", "--no-server-header", "--ws", "wsproto",
             "--http", "airlock.server:HttpToolsProtocol",
             "--timeout-graceful-shutdown", "5"],
            cwd=ROOT, env=self.env, pass_fds=[sock.fileno()], stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        url = f"https://127.0.0.1:{sock.getsockname()[1]}"
        sock.close()
        self.processes.append((name, proc))
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"gateway {name} exited:\n{self.log(name)}"
            try:
                if httpx.get(f"{url}/approvals/login/", verify=self.trust, timeout=2).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"gateway {name} did not start:\n{self.log(name)}"
            time.sleep(0.1)

    def log(self, name: str) -> str:
        return (self.directory / f"{name}.log").read_text(errors="replace")[-4000:]

    def kubeconfig(self, url: str) -> Path:
        path = self.directory / "agent.kubeconfig"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "a", "cluster": {"server": f"{url}/k8s/kubesim",
                                                   "certificate-authority": str(self.tls.ca_file)}}],
            "users": [{"name": "agent", "user": {"token": AGENT_TOKEN}}],
            "contexts": [{"name": "a", "context": {"cluster": "a", "user": "agent", "namespace": "default"}}],
            "current-context": "a",
        }))
        return path

    def stop(self):
        for _, proc in self.processes:
            proc.terminate()
        for _, proc in self.processes:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def deployment(tmp_path, kubesim):
    env = Deployment(tmp_path, kubesim)
    yield env
    env.stop()


def test_a_request_held_on_one_gateway_is_released_by_an_approval_on_the_other(deployment, kubectl):
    first = deployment.start_gateway("gateway-a")
    second = deployment.start_gateway("gateway-b")
    api = httpx.Client(base_url=f"{second}/approvals/api", verify=deployment.trust,
                       headers={"Authorization": f"Token {REVIEWER_TOKEN}"}, timeout=10)
    proc = kubectl.popen("delete", "deployment", "web", "-n", "shop", "--wait=false",
                         kubeconfig=deployment.kubeconfig(first))
    deadline = time.monotonic() + 30
    while not (pending := api.get("/reviews/").json()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the held request never became a review"
        time.sleep(0.1)
    review = pending[0]
    assert review["description"] == 'delete deployments "web" in namespace "shop"'
    approved = api.post(f"/reviews/{review['id']}/approve/", json={"reason": "via the other gateway"})
    assert approved.status_code == 200, approved.text
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, f"{err}\n--- gateway a ---\n{deployment.log('gateway-a')}"
    assert 'deployment.apps "web" deleted' in out
    gone = kubectl("get", "deployment", "web", "-n", "shop", check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr
    events = [e["kind"] for e in api.get(f"/reviews/{review['id']}/").json()["events"]]
    assert events == ["requested", "approved", "used"]
