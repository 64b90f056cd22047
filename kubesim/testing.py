"""pytest plugin: the ``kubesim`` and ``kubectl`` fixtures (registered in the root conftest.py).

``kubesim`` runs a fresh kubesim per test on a free port with a fresh state directory (forked from a
per-session fork server that has imported kubesim once, kubesim/forkserver.py: the same process as
``python -m kubesim``, started in a fraction of the time) and yields a :class:`KubeSimProcess`; extra command-line arguments come from the
``kubesim_args`` marker, e.g. ``@pytest.mark.kubesim_args("--token", "t=alice:dev")``.
``kubectl`` runs the real kubectl next to the interpreter (.venv/bin/kubectl) with a private HOME
and discovery cache, against kubesim's admin kubeconfig unless told otherwise.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import json
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from . import requestlog
from .certs import TLSFiles, write_client_cert
from .forkserver import ForkedProcess, ForkServer

START_TIMEOUT = 15.0
ROOT = str(Path(__file__).resolve().parent.parent)


@dataclass
class KubeSimProcess:
    """A running kubesim: where it listens, its credentials and its state directory."""

    url: str
    port: int
    ca_file: Path
    kubeconfig: Path
    admin_token: str
    state_dir: Path
    proc: subprocess.Popen | ForkedProcess = field(repr=False)

    def requests(self) -> list[dict]:
        """The parsed request log (see kubesim.requestlog.read)."""
        return requestlog.read(self.state_dir / "requests.jsonl")

    def sandbox_dir(self, namespace: str, pod: str) -> Path:
        return self.state_dir / "sandbox" / namespace / pod

    def log_file(self, namespace: str, pod: str, container: str) -> Path:
        return self.sandbox_dir(namespace, pod) / ".logs" / f"{container}.log"

    def write_kubeconfig(self, path: Path, *, token: str | None = None, client_cert: tuple[Path, Path] | None = None,
                         namespace: str = "default") -> Path:
        """A kubeconfig for this server with another credential (a token or a client certificate)."""
        user: dict = {}
        if token is not None:
            user["token"] = token
        if client_cert is not None:
            user["client-certificate"] = str(client_cert[0])
            user["client-key"] = str(client_cert[1])
        config = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "kubesim", "cluster": {
                "server": self.url,
                "certificate-authority-data": base64.b64encode(self.ca_file.read_bytes()).decode()}}],
            "users": [{"name": "user", "user": user}],
            "contexts": [{"name": "kubesim", "context": {"cluster": "kubesim", "user": "user", "namespace": namespace}}],
            "current-context": "kubesim",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def client_cert(self, user: str, groups: tuple[str, ...] = ()) -> tuple[Path, Path]:
        """A client certificate (CN=user, O=groups) signed by kubesim's generated CA."""
        tls = TLSFiles(ca_file=self.ca_file, cert_file=self.state_dir / "server.crt",
                       key_file=self.state_dir / "server.key", ca_key_file=self.state_dir / "ca.key")
        return write_client_cert(tls, self.state_dir / "clients", user, groups)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr(self) -> str:
        try:
            return (self.state_dir / "kubesim.stderr").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def kubesim_env() -> dict[str, str]:
    """The environment a kubesim gets: this process's (at the time of the start), without KUBECONFIG."""
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def start_kubesim(state_dir: Path, *args: str, timeout: float = START_TIMEOUT,
                  forkserver: ForkServer | None = None) -> KubeSimProcess:
    """Start ``python -m kubesim`` (or fork one from ``forkserver``) and wait for its ready.json."""
    state_dir.mkdir(parents=True, exist_ok=True)
    argv = ["--host", "127.0.0.1", "--port", "0", "--state-dir", str(state_dir), *args]
    if forkserver is not None:
        proc = forkserver.spawn(argv, kubesim_env(), ROOT, state_dir / "kubesim.stderr")
    else:
        with open(state_dir / "kubesim.stderr", "wb") as stderr:
            proc = subprocess.Popen([sys.executable, "-m", "kubesim", *argv], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=stderr, env=kubesim_env(), cwd=ROOT)
    ready = state_dir / "ready.json"
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"kubesim exited with {proc.returncode}:\n"
                               + (state_dir / "kubesim.stderr").read_text(errors="replace"))
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError("kubesim did not become ready in time")
        time.sleep(0.01)
    info = json.loads(ready.read_text())
    kubeconfig = Path(info["kubeconfig"])
    token = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["token"]
    return KubeSimProcess(url=info["url"], port=info["port"], ca_file=Path(info["ca_file"]), kubeconfig=kubeconfig,
                          admin_token=token, state_dir=state_dir, proc=proc)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kubesim_args(*args): extra command-line arguments for the kubesim fixture")


@pytest.fixture(scope="session")
def kubesim_forkserver():
    """One process per test session (per xdist worker) that has imported kubesim and forks each test's."""
    server = ForkServer(Path(ROOT), kubesim_env())
    yield server
    server.close()


@pytest.fixture
def kubesim(request: pytest.FixtureRequest, tmp_path: Path, kubesim_forkserver: ForkServer):
    """A fresh kubesim for the test: its own process, port, CA, state directory and seeded objects."""
    marker = request.node.get_closest_marker("kubesim_args")
    sim = start_kubesim(tmp_path / "kubesim", *(marker.args if marker else ()), forkserver=kubesim_forkserver)
    yield sim
    crashed = not sim.alive()
    code = sim.stop()
    if crashed or code != 0:
        pytest.fail(f"kubesim exited with {code} (crashed during the test: {crashed}):\n{sim.stderr()[-4000:]}")


class Kubectl:
    """Runs the real kubectl with an isolated HOME and discovery cache."""

    def __init__(self, kubeconfig: Path, home: Path) -> None:
        self.binary = str(Path(sys.executable).parent / "kubectl")
        self.kubeconfig = kubeconfig
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
        self.env["HOME"] = str(home)
        self._running: list[subprocess.Popen] = []

    def argv(self, args: tuple[str, ...], kubeconfig: Path | None) -> list[str]:
        return [self.binary, f"--kubeconfig={kubeconfig or self.kubeconfig}",
                f"--cache-dir={self.home / 'cache'}", *args]

    def __call__(self, *args: str, kubeconfig: Path | None = None, input: str | None = None, timeout: float = 30,
                 check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(self.argv(args, kubeconfig), input=input, capture_output=True, text=True,
                                timeout=timeout, env=self.env)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {result.returncode}\n"
                                 f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
        return result

    def popen(self, *args: str, kubeconfig: Path | None = None) -> subprocess.Popen:
        """A long-running kubectl (-w, logs -f, port-forward); stopped at teardown."""
        proc = subprocess.Popen(self.argv(args, kubeconfig), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=self.env)
        self._running.append(proc)
        return proc

    def close(self) -> None:
        for proc in self._running:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


def read_until(proc: subprocess.Popen, needle: str, timeout: float = 15.0) -> str:
    """Read a popen'd process's stdout until ``needle`` appears; AssertionError after ``timeout``."""
    fd = proc.stdout.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    while needle.encode() not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{needle!r} not seen within {timeout}s; output so far:\n{seen.decode(errors='replace')}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"{needle!r} not seen before EOF; output:\n{seen.decode(errors='replace')}")
            seen += chunk
    return seen.decode(errors="replace")


@pytest.fixture
def kubectl(kubesim: KubeSimProcess, tmp_path: Path):
    runner = Kubectl(kubesim.kubeconfig, tmp_path / "kubectl-home")
    yield runner
    runner.close()


class PtyProcess:
    """kubectl running on a pseudo-terminal it owns (controlling tty, so resizes reach it)."""

    def __init__(self, argv: list[str], env: dict[str, str], rows: int, cols: int) -> None:
        self.master, slave = os.openpty()
        self.resize(rows, cols)
        setsid = shutil.which("setsid")
        self.proc = subprocess.Popen([setsid, "--ctty", *argv], stdin=slave, stdout=slave, stderr=slave, env=env)
        os.close(slave)
        self.output = b""
        self.seen = b""  # everything the terminal showed, for leak checks

    def resize(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def expect(self, pattern: str, timeout: float = 20.0) -> re.Match:
        """Read until ``pattern`` matches output not consumed by an earlier expect."""
        regex = re.compile(pattern.encode())
        deadline = time.monotonic() + timeout
        while not (match := regex.search(self.output)):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{pattern!r} not seen; output so far: {self.output[-2000:]!r}")
            if select.select([self.master], [], [], remaining)[0]:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError as exc:  # EIO: kubectl exited and closed the terminal
                    if exc.errno != errno.EIO:
                        raise
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"{pattern!r} not seen before EOF; output: {self.output[-2000:]!r}")
                self.output += chunk
                self.seen += chunk
        self.output = self.output[match.end() :]
        return match

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        os.close(self.master)
