"""The resilience rig: two gateway processes on PostgreSQL and Redis in front of kubesim, every
dependency behind a TCP proxy the caller controls.

Used by tests/e2e_resilience (short forms, in CI) and bench/soak.py (``make soak``, long forms).

* :class:`Postgres` is the PostgreSQL server: a database per rig, copied from a template migrated
  once.
* :class:`Gateway` is one gateway process started exactly as docker-compose.yml starts it
  (uvicorn, uvloop, airlock.server's protocol, wsproto, 30 s graceful shutdown) on a loopback
  port it keeps across restarts, so clients reconnect to the same address.
* :class:`Rig` holds the proxies (PostgreSQL, Redis and the cluster), the seeded database and two
  gateways sharing all three, and reads what the checks need: the audit rows, kubesim's request
  log and ``verify_audit``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

import dj_database_url
import httpx
import psycopg
import yaml

from kubesim.certs import generate_tls
from tests.gateway_harness import AGENT_TOKEN, AGENT_TOKENS
from tests.rig_procs import AuditReads, flush_redis, serving_workers
from tests.tcpproxy import TcpProxy

ROOT = Path(__file__).resolve().parents[1]
REVIEWER_TOKEN = "3c9a1f0e5d7b2c4a6e8f0a1b3c5d7e9f1a2b4c6d"
REDIS = ("127.0.0.1", 6379)
START_TIMEOUT = 60.0

SEED = """
from pathlib import Path
import os
from django.contrib.auth.models import Group, User
from rest_framework.authtoken.models import Token
from connections.models import Connection
from policy.models import Rule

for name in ("kubesim", "kubesim-b"):
    c = Connection(name=name, server_url=os.environ["SEED_URL"], ca_bundle=Path(os.environ["SEED_CA"]).read_text(),
                   **{k: float(os.environ[f"SEED_{k.upper()}"]) for k in ("connect_timeout", "first_byte_timeout",
                                                                          "idle_timeout") if f"SEED_{k.upper()}" in os.environ})
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


def redis_db() -> int:
    """REDIS_URL's database when it names one (each CI job or checkout its own: the rig flushes it), else 7."""
    path = urlsplit(os.environ.get("REDIS_URL", "")).path.strip("/")
    return int(path) if path.isdigit() else 7


REDIS_DB = redis_db()


def postgres_url() -> str:
    """DATABASE_URL when it is PostgreSQL (CI), else AIRLOCK_TEST_POSTGRES_URL, else the local default."""
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith(("postgres://", "postgresql://")):
        return url
    return os.environ.get("AIRLOCK_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/airlock")


def base_env(**extra) -> dict:
    """The caller's environment without its database, broker and Airlock settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DATABASE_URL", "REDIS_URL", "CELERY_", "KUBE", "AIRLOCK_", "BENCH_"))}
    env.update(PYTHONPATH=str(ROOT), AIRLOCK_DEV_STATIC_TOKENS=AGENT_TOKENS, DJANGO_SETTINGS_MODULE="airlock.settings")
    env.update(extra)
    return env


def manage(env: dict, *args, input=None, check=True, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=base_env(**env), input=input, text=True,
                          check=check, capture_output=True, timeout=timeout)


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


def compose_command() -> list[str]:
    """docker-compose.yml's gateway command without its listener, certificate and worker-count options."""
    command = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["gateway"]["command"]
    assert command[0] == "uvicorn", command
    return [arg for arg in command[1:] if not arg.startswith(("--host", "--port", "--ssl-", "--workers"))]


class Gateway:
    """One gateway process; it keeps its loopback port across restarts.

    ``workers``: uvicorn's ``--workers`` (1: the process serves itself, as the resilience tests kill
    and restart it; more: a supervisor and that many worker processes, which :meth:`kill` ends too).
    """

    def __init__(self, name: str, directory: Path, tls, env: dict, workers: int = 1):
        self.name = name
        self.directory = directory
        self.tls = tls
        self.env = env
        self.workers = workers
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "gateway.log"

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(1024)
        self.port = sock.getsockname()[1]
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"--- start {self.starts} ---\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", *compose_command(), "--fd", str(sock.fileno()),
                 f"--ssl-certfile={self.tls.cert_file}", f"--ssl-keyfile={self.tls.key_file}", "--no-access-log",
                 *([f"--workers={self.workers}"] if self.workers > 1 else [])],
                cwd=ROOT, env=self.env, pass_fds=[sock.fileno()], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT,
            )
        sock.close()  # the process holds the listener: once it is gone, connections are refused
        context = ssl.create_default_context(cafile=str(self.tls.ca_file))
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self.proc.poll() is None, f"gateway {self.name} exited:\n{self.log()[-4000:]}"
            try:
                if httpx.get(f"{self.url}/approvals/login/", verify=context, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"gateway {self.name} did not start:\n{self.log()[-4000:]}"
            time.sleep(0.1)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        workers = serving_workers(self.proc.pid)
        self.proc.send_signal(signal.SIGKILL)
        for pid in workers:  # orphans otherwise, still holding the listener
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Rig(AuditReads):
    """Two gateways sharing one PostgreSQL database, one Redis and one cluster, each behind a proxy.

    ``settings`` are extra environment variables for both gateways (shorter timeouts and cache
    intervals than production, so a fault and its recovery fit in a few seconds); ``timeouts`` the
    Connections' connect, first-byte and idle timeouts.  The gateways share one audit journal
    directory, as docker-compose.yml's do.
    """

    def __init__(self, directory: Path, postgres: Postgres, kubesim, settings: dict[str, str],
                 timeouts: tuple[float, float, float]):
        self.directory = directory
        self.postgres = postgres
        self.kubesim = kubesim
        self.timeouts = timeouts
        self.database = postgres.create()
        self.db_proxy = TcpProxy(postgres.host, postgres.port).start()
        self.redis_proxy = TcpProxy(*REDIS).start()
        self.cluster_proxy = TcpProxy("127.0.0.1", kubesim.port).start()
        self.tls = generate_tls(directory / "tls")
        self.trust = ssl.create_default_context(cafile=str(self.tls.ca_file))
        manage({"DATABASE_URL": postgres.url(self.database), "SEED_URL": f"https://127.0.0.1:{self.cluster_proxy.port}",
                "SEED_CA": str(kubesim.ca_file), "SEED_TOKEN": kubesim.admin_token,
                "SEED_REVIEWER_TOKEN": REVIEWER_TOKEN, "SEED_CONNECT_TIMEOUT": str(timeouts[0]),
                "SEED_FIRST_BYTE_TIMEOUT": str(timeouts[1]), "SEED_IDLE_TIMEOUT": str(timeouts[2])},
               "shell", input=SEED)
        self._flush_redis()
        self.journal_dir = directory / "journal"
        self.gateways = [
            Gateway(name, directory / name, self.tls, base_env(
                DATABASE_URL=postgres.url(self.database, self.db_proxy.port),
                REDIS_URL=f"redis://127.0.0.1:{self.redis_proxy.port}/{REDIS_DB}",
                AIRLOCK_VAR_DIR=str(directory / name / "var"), AIRLOCK_AUDIT_JOURNAL_DIR=str(self.journal_dir),
                **settings))
            for name in ("a", "b")
        ]

    def start(self) -> "Rig":
        for gateway in self.gateways:
            gateway.start()
        return self

    def stop(self) -> None:
        for proxy in (self.db_proxy, self.redis_proxy, self.cluster_proxy):
            proxy.resume()
        for gateway in self.gateways:
            gateway.stop()
        for proxy in (self.db_proxy, self.redis_proxy, self.cluster_proxy):
            proxy.stop()
        self.postgres.drop(self.database)

    @staticmethod
    def _flush_redis() -> None:
        flush_redis(REDIS, REDIS_DB)

    # -- faults that are not the proxies' ----------------------------------------------------------

    @contextlib.contextmanager
    def database_frozen(self, tables=("connections_connection", "gateway_rule", "audit_auditevent")):
        """The database answers TCP and keepalives but the gateway's statements wait: another session
        holds an exclusive lock on the tables the gateway reads and appends to (a migration or a
        VACUUM FULL gone long)."""
        with psycopg.connect(self.postgres.url(self.database), connect_timeout=5) as holder:
            holder.execute(f"LOCK TABLE {', '.join(tables)} IN ACCESS EXCLUSIVE MODE")
            try:
                yield
            finally:
                holder.rollback()

    @contextlib.contextmanager
    def cluster_frozen(self):
        """kubesim stopped (SIGSTOP): the kernel still accepts connections, nothing answers."""
        self.kubesim.proc.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.kubesim.proc.send_signal(signal.SIGCONT)

    # -- what the checks read -------------------------------------------------------------------

    def verify_audit(self) -> subprocess.CompletedProcess:
        """``manage.py verify_audit``: the chain intact and no request without its completion (those in
        flight in a live gateway's journal aside)."""
        return manage({"DATABASE_URL": self.postgres.url(self.database),
                       "AIRLOCK_AUDIT_JOURNAL_DIR": str(self.journal_dir)},
                      "verify_audit", "--in-flight-minutes", "0", check=False)

    def logs(self) -> str:
        return "\n".join(f"=== gateway {g.name}\n{g.log()[-6000:]}" for g in self.gateways)
