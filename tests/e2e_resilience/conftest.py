"""A real gateway process on PostgreSQL (and Redis) reached through TCP proxies the test controls.

The gateway runs as ``uvicorn airlock.asgi:application`` in a subprocess, as in production.  Its
database is always PostgreSQL, also when the rest of the suite runs on SQLite: the server of
DATABASE_URL when that is PostgreSQL (CI), else AIRLOCK_TEST_POSTGRES_URL (default
postgres://postgres@127.0.0.1:5432/airlock).  Each test gets a fresh database copied from a
template migrated once per session, named after that URL's database and this process, and
dropped afterwards.

``rig`` (tests/resilience_rig.py) is two such gateways sharing one database, Redis and kubesim, each
dependency behind its own proxy, for the fault scenarios and the fuzz; it lives for the session.
"""

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
from kubesim.testing import start_kubesim
from tests.gateway_harness import AGENT_TOKEN
from tests.resilience_rig import (
    REDIS, REDIS_DB, REVIEWER_TOKEN, ROOT, SEED, Postgres, Rig, base_env, manage, postgres_url,
)
from tests.tcpproxy import TcpProxy


@pytest.fixture(scope="session")
def postgres():
    server = Postgres(postgres_url())
    server.create_template()
    yield server
    server.drop(server.template)


class GatewayProcess:
    """One gateway (uvicorn, TLS, airlock.asgi) whose PostgreSQL and Redis are behind TcpProxy objects."""

    def __init__(self, directory: Path, postgres: Postgres, database: str, kubesim):
        self.directory = directory
        self.postgres = postgres
        self.database = database
        self.db_proxy = TcpProxy(postgres.host, postgres.port).start()
        self.redis_proxy: TcpProxy | None = None
        self.tls = generate_tls(directory / "tls")
        self.trust = ssl.create_default_context(cafile=str(self.tls.ca_file))
        manage({"DATABASE_URL": postgres.url(database), "SEED_URL": kubesim.url, "SEED_CA": str(kubesim.ca_file),
                "SEED_TOKEN": kubesim.admin_token, "SEED_REVIEWER_TOKEN": REVIEWER_TOKEN}, "shell", input=SEED)
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.clients: list[httpx.Client] = []

    def start(self, *, redis: bool = False, **settings) -> str:
        env = base_env(DATABASE_URL=self.postgres.url(self.database, self.db_proxy.port),
                       AIRLOCK_VAR_DIR=str(self.directory / "var"), **settings)
        if redis:
            self.redis_proxy = TcpProxy(*REDIS).start()
            env["REDIS_URL"] = f"redis://127.0.0.1:{self.redis_proxy.port}/{REDIS_DB}"
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        with open(self.directory / "gateway.log", "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "airlock.asgi:application", "--fd", str(sock.fileno()),
                 "--ssl-certfile", str(self.tls.cert_file), "--ssl-keyfile", str(self.tls.key_file),
                 "--lifespan", "on", "--no-access-log", "--no-server-header", "--ws", "wsproto",
                 "--timeout-graceful-shutdown", "5"],
                cwd=ROOT, env=env, pass_fds=[sock.fileno()], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.url = f"https://127.0.0.1:{sock.getsockname()[1]}"
        sock.close()
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, f"the gateway exited:\n{self.log()}"
            try:
                if httpx.get(f"{self.url}/approvals/login/", verify=self.trust, timeout=2).status_code == 200:
                    return self.url
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"the gateway did not start:\n{self.log()}"
            time.sleep(0.1)

    def client(self, token: str | None = AGENT_TOKEN, timeout: float = 10.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self._keep(httpx.Client(base_url=self.url, verify=self.trust, headers=headers, timeout=timeout))

    def reviewer(self, timeout: float = 10.0) -> httpx.Client:
        return self._keep(httpx.Client(base_url=f"{self.url}/approvals/api", verify=self.trust, timeout=timeout,
                                       headers={"Authorization": f"Token {REVIEWER_TOKEN}"}))

    def _keep(self, client: httpx.Client) -> httpx.Client:
        self.clients.append(client)  # closed before the gateway stops: open keep-alives delay its shutdown
        return client

    def kubeconfig(self, connection: str = "kubesim") -> Path:
        path = self.directory / f"{connection}.kubeconfig"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "a", "cluster": {"server": f"{self.url}/k8s/{connection}",
                                                   "certificate-authority": str(self.tls.ca_file)}}],
            "users": [{"name": "agent", "user": {"token": AGENT_TOKEN}}],
            "contexts": [{"name": "a", "context": {"cluster": "a", "user": "agent", "namespace": "default"}}],
            "current-context": "a",
        }))
        return path

    def log(self) -> str:
        path = self.directory / "gateway.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        for proxy in (self.db_proxy, self.redis_proxy):
            if proxy is not None:
                proxy.resume()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for proxy in (self.db_proxy, self.redis_proxy):
            if proxy is not None:
                proxy.stop()


@pytest.fixture
def gateway_process(tmp_path, postgres, kubesim):
    database = postgres.create()
    process = GatewayProcess(tmp_path, postgres, database, kubesim)
    try:
        yield process
    finally:
        process.stop()
        postgres.drop(database)
        print(f"--- gateway log (end) ---\n{process.log()[-6000:]}")  # shown by pytest when the test failed


RIG_SETTINGS = {
    # Caches revalidated every second and kept for 60 s while the database is away (production: 5 and 60).
    "AIRLOCK_CONNECTION_REVALIDATE_SECONDS": "1",
    "AIRLOCK_POLICY_CACHE_SECONDS": "1",
    # A database call waits 1 s, a write's audit commit 3 s, a statement 2 s, a lock 1 s (production: 3, 10,
    # 30, 10).
    "AIRLOCK_DB_WAIT_SECONDS": "1",
    "AIRLOCK_AUDIT_COMMIT_SECONDS": "3",
    "AIRLOCK_DB_STATEMENT_TIMEOUT_SECONDS": "2",
    "AIRLOCK_DB_LOCK_TIMEOUT_SECONDS": "1",
    # Held requests poll their review every second and wait up to a minute.
    "AIRLOCK_REVIEW_POLL_SECONDS": "1",
    "AIRLOCK_REVIEW_HOLD_SECONDS": "60",
    # A request's headers and body must arrive within 2 s (production: 10 and 60).
    "AIRLOCK_HEADER_TIMEOUT_SECONDS": "2",
    "AIRLOCK_BODY_TIMEOUT_SECONDS": "2",
    "AIRLOCK_DEBUG": "false",
}
# The Connections' connect, first-byte and idle timeouts (production defaults: see connections.models).
RIG_TIMEOUTS = (3.0, 4.0, 4.0)  # room for a TLS connect through the proxy on a busy 2-core machine


@pytest.fixture(scope="session")
def rig(postgres, tmp_path_factory):
    """Two gateway processes on one PostgreSQL database and Redis in front of one kubesim, for the session."""
    directory = tmp_path_factory.mktemp("rig")
    sim = start_kubesim(directory / "kubesim")
    running = Rig(directory, postgres, sim, RIG_SETTINGS, RIG_TIMEOUTS)
    try:
        yield running.start()
    finally:
        running.stop()
        sim.stop()
        print(running.logs())  # shown by pytest when a test failed
