"""The processes a bench run starts (gateway servers, kubectl proxy) and what it reads from /proc.

Every process is started by this module, remembered by its Popen handle and
stopped by that handle only.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
KUBECTL = str(Path(sys.executable).parent / "kubectl")
START_TIMEOUT = 30.0

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

    def rss_kib(self) -> int:
        return rss_kib(self.proc.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, limit: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


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


def _spawn(name: str, argv: list[str], env: dict[str, str], log_path: Path, port: int) -> Service:
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=env, cwd=REPO)
    return Service(name=name, proc=proc, url=f"https://127.0.0.1:{port}", log_path=log_path, port=port)


def spawn_uvicorn(name: str, app: str, env: dict[str, str], tls, workdir: Path) -> Service:
    """The gateway as docker-compose.yml runs it (uvloop, httptools with airlock.server's read limits,
    wsproto), on a loopback port.

    Returns at once; pass the result to wait_listening.
    """
    port = free_port()
    argv = [
        PYTHON, "-m", "uvicorn", app, "--host=127.0.0.1", f"--port={port}",
        f"--ssl-certfile={tls.cert_file}", f"--ssl-keyfile={tls.key_file}",
        "--loop=uvloop", "--http=airlock.server:HttpToolsProtocol", "--ws=wsproto", "--timeout-graceful-shutdown=30",
        "--no-access-log",
    ]
    return _spawn(name, argv, env, workdir / f"{name}.log", port)


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
