"""The scale-out rig: three gateway processes behind HAProxy, one Celery worker and one beat, all
sharing one PostgreSQL database and one Redis, in front of kubesim.

Used by tests/e2e_scaleout (short form, in CI) and bench/scaleout.py (``make soak``, long form).

* Each gateway is :class:`tests.resilience_rig.Gateway`: ``uvicorn airlock.asgi:application`` as
  docker-compose.yml starts it, with TLS, on a loopback port.
* :class:`Balancer` is Debian's HAProxy in TCP mode: TLS passes through to the gateways (the
  balancer holds no certificate), round-robin per connection, so every new connection may land on
  another replica.  Its runtime API (a UNIX socket) tells which replica a client connection reached
  (``show sess``: the client's port and the server) and how many connections each one got
  (``show stat``).
* The worker and beat run ``celery -A airlock worker|beat`` as docker-compose.yml does (the worker
  with one child: the machine is small), with the gateways' database, Redis, journal directory
  and anchor file.

PostgreSQL is DATABASE_URL's server when that is PostgreSQL (CI), else AIRLOCK_TEST_POSTGRES_URL,
else postgres@127.0.0.1:5432 (tests/resilience_rig.postgres_url), also when the rest of the suite
runs on SQLite: several processes sharing one chain is what is being proved.  Redis is
127.0.0.1:6379, REDIS_URL's database (else 7), flushed when the rig starts.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg

from kubesim.certs import generate_tls
from kubesim.testing import start_kubesim
from tests.gateway_harness import AGENT_TOKEN
from tests.rig_procs import AuditReads, Workers, flush_redis, free_port
from tests.resilience_rig import REDIS, REDIS_DB, REVIEWER_TOKEN, ROOT, Gateway, Postgres, base_env, manage, postgres_url

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
REPLICAS = ("a", "b", "c")
ONCALL_TOKEN = "0d6e2b9a7c4f1e3d5b8a6c0f2e4d6b8a1c3e5f7a"
LEASED = "kubesim-leased"  # every request on this connection needs a lease
START_TIMEOUT = 60.0

SEED = """
from pathlib import Path
import os
from django.contrib.auth.models import Group, Permission, User
from rest_framework.authtoken.models import Token
from connections.models import Connection
from policy.models import Rule

def connection(name):
    c = Connection(name=name, server_url=os.environ["SEED_URL"], ca_bundle=Path(os.environ["SEED_CA"]).read_text())
    c.bearer_token = os.environ["SEED_TOKEN"]
    c.full_clean()
    c.save()
    return c

c = connection("kubesim")
Rule.objects.create(connection=c, order=5, name="review-deletes", effect="review", groups=["agents"],
                    verbs=["delete"], api_groups=["apps"], resources=["deployments"], namespaces=["*"], names=["*"])
Rule.objects.create(connection=c, order=6, name="review-held-configmaps", effect="review", review_hold="retry",
                    groups=["agents"], verbs=["delete"], api_groups=[""], resources=["configmaps"],
                    namespaces=["*"], names=["held-*"])
Rule.objects.create(connection=c, order=10, name="agents-all", effect="allow", groups=["agents"], verbs=["*"],
                    api_groups=["*"], resources=["*", "*/*"], namespaces=["*"], names=["*"])
Rule.objects.create(connection=c, order=20, name="discovery", effect="allow", groups=["agents"], verbs=["*"],
                    non_resource_urls=["*"])
leased = connection(os.environ["SEED_LEASED"])
Rule.objects.create(connection=leased, order=10, name="agents-with-lease", effect="allow", groups=["agents"],
                    verbs=["*"], api_groups=["*"], resources=["*", "*/*"], namespaces=["*"], names=["*"],
                    requires_lease=True)
rita = User.objects.create_user("rita")
rita.groups.add(Group.objects.get(name="reviewers"))
Token.objects.create(user=rita, key=os.environ["SEED_REVIEWER_TOKEN"])
oncall = User.objects.create_user("oncall")
oncall.user_permissions.add(Permission.objects.get(codename="request_lease"))
Token.objects.create(user=oncall, key=os.environ["SEED_ONCALL_TOKEN"])
"""


def client_port(response: httpx.Response) -> int:
    """The local port of the connection a response came over (the balancer's ``src``)."""
    return response.extensions["network_stream"].get_extra_info("client_addr")[1]


class Balancer:
    """HAProxy in TCP mode (TLS passthrough), round-robin over ``servers`` (name: loopback port)."""

    def __init__(self, directory: Path, servers: dict[str, int]):
        self.directory = directory
        self.servers = servers
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.socket_path = directory / "haproxy.sock"
        self.log_path = directory / "haproxy.log"

    def config(self) -> str:
        return "\n".join([
            "global",
            "    maxconn 4096",
            f"    stats socket {self.socket_path} mode 600 level admin",
            "",
            "defaults",
            "    mode tcp",
            "    timeout connect 5s",
            "    timeout client 10m",  # watches and exec sessions stay open this long without a byte
            "    timeout server 10m",
            "",
            "frontend gateway",
            f"    bind 127.0.0.1:{self.port}",
            "    default_backend replicas",
            "",
            "backend replicas",
            "    balance roundrobin",
            *(f"    server {name} 127.0.0.1:{port}" for name, port in self.servers.items()),
            "",
        ])

    def start(self) -> "Balancer":
        assert Path(HAPROXY).exists(), "HAProxy is not installed: run `make haproxy` (Debian's haproxy package)"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = self.directory / "haproxy.cfg"
        config.write_text(self.config())
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([HAPROXY, "-db", "-f", str(config)], stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self.proc.poll() is None, f"haproxy exited:\n{self.log()}"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
                if "replicas" in self.command("show stat"):
                    return self
            except OSError:
                pass
            assert time.monotonic() < deadline, f"haproxy did not start:\n{self.log()}"
            time.sleep(0.05)

    def command(self, text: str) -> str:
        """One command on HAProxy's runtime API; its whole answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.socket_path))
            sock.sendall(text.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def replica_of(self, port: int) -> str | None:
        """The replica the client connection from 127.0.0.1:``port`` was sent to (None: not open)."""
        for line in self.command("show sess").splitlines():
            match = re.search(r"\bsrc=127\.0\.0\.1:(\d+)\b.*?\bsrv=(\S+)", line)
            if match and int(match.group(1)) == port:
                return match.group(2)
        return None

    def connections(self) -> dict[str, int]:
        """Connections sent to each replica so far (``stot``)."""
        text = self.command("show stat").lstrip("# ")
        return {row["svname"]: int(row["stot"]) for row in csv.DictReader(io.StringIO(text))
                if row.get("pxname") == "replicas" and row.get("svname") in self.servers}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""


class Celery:
    """``celery -A airlock worker`` or ``beat``, as docker-compose.yml runs them."""

    def __init__(self, role: str, directory: Path, env: dict):
        self.role = role
        self.directory = directory
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.log_path = directory / f"celery-{role}.log"

    def start(self) -> "Celery":
        self.directory.mkdir(parents=True, exist_ok=True)
        extra = (["--concurrency=1"] if self.role == "worker"
                 else [f"--schedule={self.directory / 'celerybeat-schedule'}"])
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "airlock", self.role,
                                          "--loglevel=INFO", *extra], cwd=ROOT, env=self.env,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""


class ScaleOut(AuditReads):
    """Three gateways, HAProxy in front, a Celery worker and beat, one database, one Redis, one kubesim.

    ``settings`` are extra environment variables for every process of the deployment.  With
    ``replicas`` of one name and ``workers`` above 1 it is one gateway serving from that many worker
    processes (``uvicorn --workers``), as a pod runs it: no HAProxy, :class:`tests.rig_procs.Workers`
    answers where the balancer would (which worker holds a connection); ``celery=False`` leaves the
    worker and beat out (the gateways then sweep leases themselves).
    """

    def __init__(self, directory: Path, postgres: Postgres, kubesim, settings: dict[str, str],
                 replicas: tuple[str, ...] = REPLICAS, workers: int = 1, celery: bool = True):
        self.directory = directory
        self.postgres = postgres
        self.kubesim = kubesim
        self.database = postgres.create()
        self.tls = generate_tls(directory / "tls")
        self.trust = ssl.create_default_context(cafile=str(self.tls.ca_file))
        manage({"DATABASE_URL": postgres.url(self.database), "SEED_URL": kubesim.url,
                "SEED_CA": str(kubesim.ca_file), "SEED_TOKEN": kubesim.admin_token, "SEED_LEASED": LEASED,
                "SEED_REVIEWER_TOKEN": REVIEWER_TOKEN, "SEED_ONCALL_TOKEN": ONCALL_TOKEN}, "shell", input=SEED)
        self._flush_redis()
        self.journal_dir = directory / "journal"
        self.anchor_file = directory / "anchors" / "anchors.jsonl"
        self.anchor_file.parent.mkdir(parents=True, exist_ok=True)
        self.env = base_env(DATABASE_URL=postgres.url(self.database),
                            REDIS_URL=f"redis://{REDIS[0]}:{REDIS[1]}/{REDIS_DB}",
                            AIRLOCK_AUDIT_JOURNAL_DIR=str(self.journal_dir),
                            AIRLOCK_AUDIT_ANCHOR_FILE=str(self.anchor_file), **settings)
        self.workers = workers
        self.gateways = [Gateway(name, directory / name, self.tls,
                                 dict(self.env, AIRLOCK_VAR_DIR=str(directory / name / "var"),
                                      **({"PROMETHEUS_MULTIPROC_DIR": str(directory / name / "metrics")}
                                         if workers > 1 else {})),
                                 workers=workers)
                         for name in replicas]
        self.celery = [Celery(role, directory / "celery", dict(self.env, AIRLOCK_VAR_DIR=str(directory / "celery")))
                       for role in ("worker", "beat")] if celery else []
        self.balancer: Balancer | Workers | None = None

    def start(self) -> "ScaleOut":
        for process in self.celery:
            process.start()
        failures = []

        def start(gateway):
            try:
                gateway.start()
            except BaseException as exc:  # noqa: BLE001 - reported below, with the gateway's log
                failures.append(f"{gateway.name}: {exc}")

        threads = [threading.Thread(target=start, args=(g,)) for g in self.gateways]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not failures, "\n".join(failures)
        if len(self.gateways) == 1 and self.workers > 1:
            gateway = self.gateways[0]
            self.balancer = Workers(gateway.proc.pid, gateway.port, Path(gateway.env["PROMETHEUS_MULTIPROC_DIR"]),
                                    expected=self.workers)
        else:
            self.balancer = Balancer(self.directory / "haproxy", {g.name: g.port for g in self.gateways}).start()
        for process in self.celery:
            assert process.alive(), f"celery {process.role} exited:\n{process.log()}"
        return self

    def stop(self) -> None:
        for gateway in self.gateways:
            gateway.terminate() if gateway.alive() else None
        for gateway in self.gateways:
            gateway.stop()
        if isinstance(self.balancer, Balancer):
            self.balancer.stop()
        for process in self.celery:
            process.stop()
        self.postgres.drop(self.database)

    @staticmethod
    def _flush_redis() -> None:
        flush_redis(REDIS, REDIS_DB)

    # -- clients through the balancer ----------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.balancer.port}"

    def agent(self, timeout: float = 15.0, **headers) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=self.trust, timeout=timeout,
                            headers={"Authorization": f"Bearer {AGENT_TOKEN}", **headers})

    def api(self, token: str = REVIEWER_TOKEN, timeout: float = 15.0) -> httpx.Client:
        return httpx.Client(base_url=f"{self.url}/approvals/api", verify=self.trust, timeout=timeout,
                            headers={"Authorization": f"Token {token}"})

    def pinned(self, make, probe, *, avoid=(), want=None, attempts: int = 30) -> tuple[httpx.Client, str]:
        """A client (from ``make()``) whose keep-alive connection through the balancer reached a replica
        not in ``avoid`` (or exactly ``want``); ``probe(client)`` is the request that opens it."""
        for _ in range(attempts):
            client = make()
            response = probe(client)
            assert response.status_code < 500, response.text
            replica = self.balancer.replica_of(client_port(response))
            if replica is not None and replica not in avoid and (want is None or replica == want):
                return client, replica
            client.close()
        raise AssertionError(f"no connection reached a replica other than {avoid} in {attempts} attempts")

    # -- what the checks read -------------------------------------------------------------------------

    def scheduled_anchors(self) -> int:
        """Anchors beat's task made on the worker (the gateways make theirs at shutdown)."""
        with psycopg.connect(self.postgres.url(self.database), connect_timeout=5) as db:
            return db.execute("SELECT count(*) FROM audit_anchor WHERE reason = 'schedule'").fetchone()[0]

    def received(self, method: str, path: str) -> int:
        """How many times kubesim received ``method path`` for real: the gateways' forwarding, not the
        agent's sending, and not the dry runs that preview a held write for its reviewers."""
        return sum(1 for record in self.kubesim.requests()
                   if record.get("method") == method and record.get("path") == path
                   and "dryRun=All" not in (record.get("query") or ""))

    def verify_audit(self) -> subprocess.CompletedProcess:
        """``manage.py verify_audit`` against the signed anchors beat and the gateways wrote: the chain
        intact, and no request without its completion (those in flight in a live journal aside)."""
        anchors = ["--anchors", str(self.anchor_file)] if self.anchor_file.exists() else []
        return manage({"DATABASE_URL": self.postgres.url(self.database),
                       "AIRLOCK_AUDIT_JOURNAL_DIR": str(self.journal_dir),
                       "AIRLOCK_AUDIT_ANCHOR_FILE": str(self.anchor_file)},
                      "verify_audit", "--in-flight-minutes", "0", *anchors, check=False)

    def logs(self) -> str:
        parts = [f"=== gateway {g.name}\n{g.log()[-4000:]}" for g in self.gateways]
        parts += [f"=== celery {c.role}\n{c.log()}" for c in self.celery]
        if isinstance(self.balancer, Balancer):
            parts.append(f"=== haproxy\n{self.balancer.log()}")
        return "\n".join(parts)


@contextmanager
def running(tmp_path_factory, name: str, settings: dict, **options):
    """A started ScaleOut on its own PostgreSQL template and kubesim, stopped (its logs printed for a
    failed test) and dropped afterwards: the body of the module fixtures that use this rig."""
    postgres = Postgres(postgres_url())
    postgres.prefix = f"{postgres.config['NAME']}_{name}_{postgres.prefix.rsplit('_', 1)[-1]}"
    postgres.template = f"{postgres.prefix}_t"
    postgres.create_template()
    directory = tmp_path_factory.mktemp(name)
    sim = start_kubesim(directory / "kubesim")
    rig = None
    try:
        rig = ScaleOut(directory, postgres, sim, settings, **options)
        yield rig.start()
    finally:
        if rig is not None:
            rig.stop()
            print(rig.logs())  # shown by pytest when a test failed
        sim.stop()
        postgres.drop(postgres.template)
