"""Real kubectl through real uvicorn and daphne processes: no query or proxied path reaches their logs.

uvicorn writes '"WebSocket <target>" [accepted]' even with --no-access-log, its
access log writes every request line, its trace level prints ASGI scopes, and
daphne's CLI access log goes straight to a stream.  An agent's exec command
words, label selectors and proxied workload paths are in those targets.
"""

import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from kubesim.certs import generate_tls
from kubesim.testing import read_until
from tests.gateway_harness import AGENT_TOKEN, AGENT_TOKENS

ROOT = Path(__file__).resolve().parents[2]
EXEC_PATH = "/k8s/kubesim/api/v1/namespaces/payments/pods/debug-shell/exec"

SEED = """
import os
from pathlib import Path
from connections.models import Connection
from policy.models import Rule

c = Connection(name="kubesim", server_url=os.environ["SEED_URL"], ca_bundle=Path(os.environ["SEED_CA"]).read_text())
c.bearer_token = os.environ["SEED_TOKEN"]
c.full_clean()
c.save()
Rule.objects.create(connection=c, order=10, name="agents-all", effect="allow", groups=["agents"], verbs=["*"],
                    api_groups=["*"], resources=["*", "*/*"], namespaces=["*"], names=["*"])
Rule.objects.create(connection=c, order=20, name="discovery", effect="allow", groups=["agents"], verbs=["*"],
                    non_resource_urls=["*"])
"""


def server_argv(server: str, sock: socket.socket, tls) -> list[str]:
    if server == "daphne":  # the CLI's default verbosity writes its access log to stdout
        port = sock.getsockname()[1]
        sock.close()  # daphne binds TLS endpoints itself
        return [sys.executable, "-m", "daphne", "-e",
                f"ssl:port={port}:interface=127.0.0.1:privateKey={tls.key_file}:certKey={tls.cert_file}",
                "airlock.asgi:application"]
    uvicorn = [sys.executable, "-m", "uvicorn", "airlock.asgi:application", "--fd", str(sock.fileno()),
               "--ssl-certfile", str(tls.cert_file), "--ssl-keyfile", str(tls.key_file), "--lifespan", "on",
               "--timeout-graceful-shutdown", "5"]
    if server == "uvicorn-access-log":  # docker-compose's protocols, with the access log left on
        return uvicorn + ["--http", "httptools", "--ws", "wsproto"]
    return uvicorn + ["--http", "h11", "--ws", "wsproto", "--log-level", "trace"]


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    """One migrated SQLite file; each test copies it."""
    path = tmp_path_factory.mktemp("server-logs") / "airlock.sqlite3"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRLOCK_", "DATABASE_URL", "REDIS_URL"))}
    subprocess.run([sys.executable, "manage.py", "migrate", "--no-input"], cwd=ROOT, check=True, timeout=180,
                   capture_output=True, env={**env, "AIRLOCK_SQLITE_PATH": str(path),
                                             "AIRLOCK_VAR_DIR": str(path.parent / "var")})
    return path


@pytest.fixture
def deployment(migrated, kubesim, tmp_path):
    database = tmp_path / "airlock.sqlite3"
    shutil.copyfile(migrated, database)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRLOCK_", "DATABASE_URL", "REDIS_URL", "KUBE"))}
    env.update(PYTHONPATH=str(ROOT), AIRLOCK_SQLITE_PATH=str(database), AIRLOCK_VAR_DIR=str(tmp_path / "var"),
               AIRLOCK_DEV_STATIC_TOKENS=AGENT_TOKENS)
    subprocess.run([sys.executable, "manage.py", "shell"], cwd=ROOT, input=SEED, text=True, check=True,
                   capture_output=True, timeout=120,
                   env={**env, "SEED_URL": kubesim.url, "SEED_CA": str(kubesim.ca_file),
                        "SEED_TOKEN": kubesim.admin_token})
    return env


class Server:
    def __init__(self, server: str, env: dict, directory: Path):
        self.tls = generate_tls(directory / "tls")
        self.log_path = directory / f"{server}.log"
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        self.url = f"https://127.0.0.1:{sock.getsockname()[1]}"
        argv = server_argv(server, sock, self.tls)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT,
                                         pass_fds=[] if sock.fileno() < 0 else [sock.fileno()])
        sock.close()
        trust = ssl.create_default_context(cafile=str(self.tls.ca_file))
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, f"{server} exited:\n{self.log()}"
            try:
                if httpx.get(f"{self.url}/approvals/login/", verify=trust, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"{server} did not start:\n{self.log()}"
            time.sleep(0.1)

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "a", "cluster": {"server": f"{self.url}/k8s/kubesim",
                                                   "certificate-authority": str(self.tls.ca_file)}}],
            "users": [{"name": "agent", "user": {"token": AGENT_TOKEN}}],
            "contexts": [{"name": "a", "context": {"cluster": "a", "user": "agent"}}],
            "current-context": "a",
        }))
        return path

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.log()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.mark.parametrize("server", ["uvicorn-access-log", "uvicorn-trace", "daphne"])
def test_exec_commands_selectors_and_proxied_paths_stay_out_of_server_logs(server, deployment, kubectl, tmp_path):
    word = f"cmdword{uuid.uuid4().hex[:8]}"
    selector = f"sel{uuid.uuid4().hex[:8]}"
    proxied = f"proxied{uuid.uuid4().hex[:8]}"
    running = Server(server, deployment, tmp_path)
    try:
        agent = running.kubeconfig(tmp_path / "agent.kubeconfig")
        executed = kubectl.popen("exec", "-n", "payments", "debug-shell", "--", "echo", word, kubeconfig=agent)
        read_until(executed, word)  # the exec went through the gateway
        kubectl("get", "pods", "-n", "payments", "-l", f"app={selector}", kubeconfig=agent)
        kubectl("get", "--raw", f"/api/v1/namespaces/payments/services/web/proxy/{proxied}", kubeconfig=agent,
                check=False)
    finally:
        log = running.stop()
    for secret in (word, selector, proxied):
        assert secret not in log, f"{secret} in the {server} log:\n{log[-3000:]}"
    # Each layer did log these requests, without what the agent put in them.
    if server.startswith("uvicorn"):
        assert f'"WebSocket {EXEC_PATH}?[redacted]" [accepted]' in log, log[-3000:]
    assert "GET /k8s/kubesim/api/v1/namespaces/payments/pods?[redacted]" in log, log[-3000:]
    assert "GET /k8s/kubesim/api/v1/namespaces/payments/services/web/proxy/[redacted]" in log, log[-3000:]
