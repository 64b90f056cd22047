"""A real gateway process on PostgreSQL (and Redis) reached through TCP proxies the test controls.

The gateway runs as ``uvicorn airlock.asgi:application`` in a subprocess, as in production.  Its
database is always PostgreSQL, also when the rest of the suite runs on SQLite: the server of
DATABASE_URL when that is PostgreSQL (CI), else AIRLOCK_TEST_POSTGRES_URL (default
postgres://postgres@127.0.0.1:5432/airlock).  Each test gets a fresh database copied from a
template migrated once per session, named after that URL's database and this process, and
dropped afterwards.
"""

import itertools
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import dj_database_url
import httpx
import psycopg
import pytest
import yaml

from kubesim.certs import generate_tls
from tests.gateway_harness import AGENT_TOKEN, AGENT_TOKENS
from tests.tcpproxy import TcpProxy

ROOT = Path(__file__).resolve().parents[2]
REVIEWER_TOKEN = "3c9a1f0e5d7b2c4a6e8f0a1b3c5d7e9f1a2b4c6d"
REDIS = ("127.0.0.1", 6379)
REDIS_DB = 7

SEED = """
from pathlib import Path
import os
from django.contrib.auth.models import Group, User
from rest_framework.authtoken.models import Token
from connections.models import Connection
from gateway.models import Rule

for name in ("kubesim", "kubesim-b"):
    c = Connection(name=name, server_url=os.environ["SEED_URL"], ca_bundle=Path(os.environ["SEED_CA"]).read_text())
    c.bearer_token = os.environ["SEED_TOKEN"]
    c.full_clean()
    c.save()
    Rule.objects.create(connection=c, order=5, name="review-deletes", effect="review", groups=["agents"],
                        verbs=["delete"], api_groups=["apps"], resources=["deployments"], namespaces=["*"],
                        names=["*"])
    Rule.objects.create(connection=c, order=10, name="agents-all", effect="allow", groups=["agents"], verbs=["*"],
                        api_groups=["*"], resources=["*", "*/*"], namespaces=["*"], names=["*"])
    Rule.objects.create(connection=c, order=20, name="discovery", effect="allow", groups=["agents"], verbs=["*"],
                        non_resource_urls=["*"])
rita = User.objects.create_user("rita")
rita.groups.add(Group.objects.get(name="reviewers"))
Token.objects.create(user=rita, key=os.environ["SEED_REVIEWER_TOKEN"])
"""


def postgres_url() -> str:
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith(("postgres://", "postgresql://")):
        return url
    return os.environ.get("AIRLOCK_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/airlock")


class Postgres:
    """The PostgreSQL server the gateway processes use; databases are created from a migrated template."""

    def __init__(self, url: str):
        self.config = dj_database_url.parse(url)
        self.host, self.port = self.config["HOST"] or "127.0.0.1", int(self.config["PORT"] or 5432)
        self.prefix = f"{self.config['NAME']}_resil_{os.getpid()}"
        self.template = f"{self.prefix}_t"
        self._names = itertools.count(1)

    def url(self, database: str, port: int | None = None) -> str:
        user, password = quote(self.config["USER"] or "", safe=""), quote(self.config["PASSWORD"] or "", safe="")
        auth = f"{user}:{password}@" if password else f"{user}@"
        return f"postgres://{auth}{self.host}:{port or self.port}/{database}"

    def admin(self, sql: str) -> None:
        with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=5) as connection:
            connection.execute(sql)

    def create_template(self) -> None:
        self.admin(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')
        self.admin(f'CREATE DATABASE "{self.template}"')
        manage({"DATABASE_URL": self.url(self.template)}, "migrate", "--no-input")

    def create(self) -> str:
        name = f"{self.prefix}_{next(self._names)}"
        self.admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return name

    def drop(self, name: str) -> None:
        self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def base_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DATABASE_URL", "REDIS_URL", "CELERY_", "KUBE", "AIRLOCK_"))}
    env.update(PYTHONPATH=str(ROOT), AIRLOCK_DEV_STATIC_TOKENS=AGENT_TOKENS)
    env.update(extra)
    return env


def manage(env: dict, *args, input=None):
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=base_env(**env), input=input, text=True,
                   check=True, capture_output=True, timeout=120)


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
                 "--lifespan", "on", "--no-access-log", "--ws", "wsproto", "--timeout-graceful-shutdown", "5"],
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
