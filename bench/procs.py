"""The processes a bench run starts (gateway servers, kubectl proxy), the database and Redis they use,
and what it reads from /proc.

Every process is started by this module, remembered by its Popen handle and
stopped by that handle only.  The production gateway is docker-compose.yml's command (uvicorn with its
``--workers``, production flags, no access log) on PostgreSQL and Redis when they answer on loopback
(as .ci/run starts them), else on SQLite without Redis; its memory and CPU are those of the whole
process tree (uvicorn's supervisor and its workers).
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import yaml

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
KUBECTL = str(Path(sys.executable).parent / "kubectl")
START_TIMEOUT = 90.0  # a cold start of the workers and the audit writer beside a busy test run

# The gateway process gets a clean environment: the caller's database, broker and
# Airlock settings (e.g. CI's PostgreSQL) must never reach the bench's throw-away gateway.
_DROPPED_ENV = ("DATABASE_URL", "REDIS_URL", "KUBECONFIG")
_DROPPED_PREFIXES = ("AIRLOCK_", "CELERY_", "BENCH_")


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items()
        if k not in _DROPPED_ENV and not k.startswith(_DROPPED_PREFIXES)
    }
    env["PYTHONPATH"] = str(REPO)
    env["DJANGO_SETTINGS_MODULE"] = "airlock.settings"
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc/<pid>/status (VmRSS, in KiB)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children, ...), from /proc/<pid>/task/*/children."""
    found, queue = [], [pid]
    while queue:
        parent = queue.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as listed:
                    kids = [int(child) for child in listed.read().split()]
            except (FileNotFoundError, ProcessLookupError):
                continue
            found += kids
            queue += kids
    return found


def tree(pid: int) -> list[int]:
    return [pid, *descendants(pid)]


def _sum_alive(read, pids: list[int]):
    total = 0
    for pid in pids:
        try:
            total += read(pid)
        except (FileNotFoundError, ProcessLookupError, RuntimeError):
            pass  # gone meanwhile
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat), to see what else ran meanwhile."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass
class Service:
    """A started server process and where its output goes."""

    name: str
    proc: subprocess.Popen = field(repr=False)
    url: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    port: int = 0
    workers: int = 1  # serving processes (uvicorn --workers); the supervisor is not one when there are several

    def pids(self) -> list[int]:
        """The process and everything it started (uvicorn's workers)."""
        return tree(self.proc.pid)

    def rss_kib(self) -> int:
        """Resident memory of the whole tree: the supervisor and every worker."""
        return _sum_alive(rss_kib, self.pids())

    def rss_kib_each(self) -> dict[int, int]:
        return {pid: _sum_alive(rss_kib, [pid]) for pid in self.pids()}

    def cpu_seconds(self) -> float:
        return _sum_alive(cpu_seconds, self.pids())

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, limit: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            below = descendants(self.proc.pid)
            self.proc.send_signal(signal.SIGTERM)  # uvicorn's supervisor passes it on to its workers
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            for pid in below:  # a worker left behind would keep the port
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def wait_listening(service: Service) -> Service:
    """Block until the service accepts connections; raises (with its log) if it exits or times out."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if not service.alive():
            raise RuntimeError(f"{service.name} exited with {service.proc.returncode}:\n{service.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", service.port), timeout=0.5):
                return service
        except OSError:
            if time.monotonic() > deadline:
                service.stop()
                raise RuntimeError(f"{service.name} did not start listening:\n{service.log_tail()}") from None
            time.sleep(0.05)


def _spawn(name: str, argv: list[str], env: dict[str, str], log_path: Path, port: int, workers: int = 1) -> Service:
    """A gateway with an audit journal directory of its own (as each pod has), so the audit writer its
    workers start is its own process and counted in its CPU and memory: gateways sharing one directory
    shared the writer that whichever started first owned."""
    env = {"AIRLOCK_AUDIT_JOURNAL_DIR": str(log_path.parent / f"audit-journal-{name}"), **env}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=env, cwd=REPO)
    return Service(name=name, proc=proc, url=f"https://127.0.0.1:{port}", log_path=log_path, port=port,
                   workers=workers)


def production_command() -> list[str]:
    """docker-compose.yml's gateway command (after ``uvicorn``), without its listener and certificates."""
    command = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["gateway"]["command"]
    if command[0] != "uvicorn":
        raise RuntimeError(f"docker-compose.yml's gateway is not uvicorn: {command[0]}")
    return [arg for arg in command[1:] if not arg.startswith(("--host", "--port", "--ssl-"))]


def production_workers() -> int:
    """docker-compose.yml's ``--workers`` (1 when it names none)."""
    flag = next((arg for arg in production_command() if arg.startswith("--workers")), "--workers=1")
    return int(flag.split("=", 1)[1])


def spawn_uvicorn(name: str, app: str, env: dict[str, str], tls, workdir: Path, workers: int | None = None) -> Service:
    """The gateway as docker-compose.yml runs it (its uvicorn flags, ``--workers`` included unless
    ``workers`` says otherwise), on a loopback port.  The application is ``app`` (production's
    ``airlock.asgi:application``, or a bench variant).

    Returns at once; pass the result to wait_listening.
    """
    port = free_port()
    command = [arg for arg in production_command() if not arg.startswith("--workers")]
    workers = production_workers() if workers is None else workers
    argv = [
        PYTHON, "-m", "uvicorn", app, *command[1:], "--host=127.0.0.1", f"--port={port}",
        f"--ssl-certfile={tls.cert_file}", f"--ssl-keyfile={tls.key_file}",
        *([f"--workers={workers}"] if workers > 1 else []),
    ]
    return _spawn(name, argv, env, workdir / f"{name}.log", port, workers)


def wait_workers(service: Service, timeout: float = START_TIMEOUT) -> Service:
    """Block until every worker of a multi-worker gateway has started its application (its log says so)."""
    if service.workers <= 1:
        return service
    deadline = time.monotonic() + timeout
    while service.log_tail(200_000).count("Application startup complete") < service.workers:
        if not service.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"{service.name}: its {service.workers} workers did not start:\n{service.log_tail()}")
        time.sleep(0.1)
    return service


# -- the gateway's database and Redis ---------------------------------------------------------------

POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")


def _answers(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=1):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def backends(tag: str) -> Iterator[dict[str, str]]:
    """The production gateway's DATABASE_URL and REDIS_URL: a throw-away PostgreSQL database (dropped
    afterwards) and BENCH_REDIS_URL's Redis database when they answer on loopback, else nothing (the
    caller's SQLite, one process's in-memory channel layer).  Yields the environment to add."""
    env: dict[str, str] = {}
    database = None
    if _answers(POSTGRES_URL, 5432):
        import psycopg

        database = f"airlock_bench_{tag}_{os.getpid()}"  # helpers bench side by side
        with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{database}"')
        env["DATABASE_URL"] = urlunsplit(urlsplit(POSTGRES_URL)._replace(path=f"/{database}"))
    if _answers(REDIS_URL, 6379):
        env["REDIS_URL"] = REDIS_URL
    try:
        yield env
    finally:
        if database is not None:
            import psycopg

            with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def spawn_daphne(name: str, app: str, env: dict[str, str], tls, workdir: Path) -> Service:
    """The same ASGI application under daphne, TLS through a Twisted endpoint string (see spawn_uvicorn)."""
    port = free_port()
    endpoint = f"ssl:port={port}:interface=127.0.0.1:privateKey={tls.key_file}:certKey={tls.cert_file}"
    argv = [PYTHON, "-m", "daphne", "-e", endpoint, app]
    return _spawn(name, argv, env, workdir / f"{name}.log", port)


def start_kubectl_proxy(kubeconfig: Path, workdir: Path) -> Service:
    """``kubectl proxy`` (plain HTTP on loopback) using kubesim's admin kubeconfig."""
    home = workdir / "kubectl-home"
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    env["HOME"] = str(home)
    argv = [KUBECTL, "proxy", "--port=0", "--address=127.0.0.1", f"--kubeconfig={kubeconfig}",
            f"--cache-dir={home / 'cache'}"]
    log_path = workdir / "kubectl-proxy.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, env=env)
    service = Service(name="kubectl-proxy", proc=proc, url="", log_path=log_path)
    # kubectl prints "Starting to serve on 127.0.0.1:PORT" once it listens.
    seen = b""
    deadline = time.monotonic() + START_TIMEOUT
    while (match := re.search(rb"Starting to serve on 127\.0\.0\.1:(\d+)", seen)) is None:
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([proc.stdout], [], [], max(remaining, 0))
        chunk = os.read(proc.stdout.fileno(), 4096) if ready else b""
        if not chunk:
            service.stop()
            raise RuntimeError(f"kubectl proxy did not start:\n{service.log_tail()}")
        seen += chunk
    service.url = f"http://127.0.0.1:{int(match.group(1))}"
    return service


def kubectl_version() -> str:
    out = subprocess.run([KUBECTL, "version", "--client", "-o", "json"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    return re.search(r'"gitVersion":\s*"([^"]+)"', out).group(1)
