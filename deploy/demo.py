"""``make demo``: kubesim, the real test OpenID provider and the gateway, wired together locally.

Everything lives in one directory (default ``.demo``) and needs neither PostgreSQL nor Redis:
SQLite and the in-memory channel layer.  Each run re-creates what is per-run (the simulated cluster,
the identity provider, TLS material, kubeconfigs, the reviewer password) and reuses what must survive
a restart (the SQLite database, the keys its credentials are encrypted with, and the connection's
rules: the preset is applied only to a connection without rules), so running it again is always
safe.  Reviews an earlier run left pending are expired at start (nothing can release them: the
cluster and the identity provider are new), and the gateway expires reviews itself (no Celery beat).
``.demo/env`` holds the gateway's environment for ``manage.py`` (``. .demo/env``, ``make demo-shell``).  Secret values only ever go to 0600 files and to the children's environment; the
terminal gets file paths.  The demo and every child it starts run with umask 077, so everything in the
directory (database, logs, keys, kubeconfigs, kubesim's state) is readable by its owner only; what an
earlier run left with wider modes is narrowed at start.

Children (kubesim, node for the identity provider, uvicorn for the gateway) are stopped in reverse
start order on Ctrl-C, SIGTERM, any failure, and after ``--exit-after-ready``; none outlives the demo.
"""

from __future__ import annotations

import argparse
import fcntl
import io
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization

from audit import keys as audit_keys
from identity import credential_plugin
from kubesim.certs import SERVER_SANS, issue_cert, make_ca
from kubesim.testing import start_kubesim
from tests.idp.harness import IdP, IdPError, ensure_installed

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PORT = 8443
HOST = "127.0.0.1"
CONNECTION = "demo"
PRESET = "production-guardrails"
AGENT_CLIENT_ID = "demo-agent"
AGENT_GROUPS = ("agents",)
REVIEWER = "reviewer"
AIRLOCK_APPS = ("connections", "policy", "approvals", "audit")
READY_LINE = "Press Ctrl-C to stop."
# The caller's configuration for a production-like setup must not leak into the demo.
CLEARED_ENV_PREFIXES = ("AIRLOCK_", "DATABASE_URL", "REDIS_URL", "CELERY_", "KUBECONFIG")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
PRIVATE_UMASK = 0o077  # files 0600 and directories 0700, inherited by every child


class DemoError(Exception):
    """A problem the person running the demo can act on; the message is shown as is."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; a BaseException so that no ``except Exception`` swallows it."""


class Signals:
    """SIGINT and SIGTERM raise Interrupted, but not while a child is being started and registered.

    Inside ``deferred()`` a signal is remembered and raised at the end, so no child can be started
    without the supervisor knowing it (which would leave it running after the demo).
    """

    def __init__(self):
        self._deferring = False
        self._pending = None

    def install(self) -> None:
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._handle)

    @staticmethod
    def ignore() -> None:
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)

    def _handle(self, signum, frame):
        if self._deferring:
            self._pending = signum
            return
        raise Interrupted(signum)

    @contextmanager
    def deferred(self):
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
        if self._pending is not None:
            raise Interrupted(self._pending)


@dataclass(frozen=True)
class Layout:
    """Where the demo keeps each file."""

    root: Path

    @property
    def kubesim(self) -> Path:
        return self.root / "kubesim"

    @property
    def tls(self) -> Path:
        return self.root / "tls"

    @property
    def agent_kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def cluster_kubeconfig(self) -> Path:
        return self.root / "cluster-kubeconfig"

    @property
    def client_secret(self) -> Path:
        return self.root / "agent-client-secret"

    @property
    def keys(self) -> Path:
        return self.root / "gateway-keys.json"

    @property
    def database(self) -> Path:
        return self.root / "airlock.sqlite3"

    @property
    def var(self) -> Path:
        return self.root / "var"

    @property
    def gateway_log(self) -> Path:
        return self.root / "gateway.log"

    @property
    def lock(self) -> Path:
        return self.root / "demo.lock"

    @property
    def env_file(self) -> Path:
        return self.root / "env"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.demo",
        description="Run kubesim, an OpenID provider and the Airlock gateway locally (SQLite, no Redis).",
    )
    parser.add_argument("--dir", type=Path, default=Path(".demo"), help="state directory (default: .demo)")
    parser.add_argument("--port", type=int, default=None,
                        help=f"gateway port on {HOST} (default {DEFAULT_PORT}, or a free one if taken; 0: a free one)")
    parser.add_argument("--exit-after-ready", action="store_true",
                        help="set up, verify with kubectl, print the summary, then stop (for tests)")
    args = parser.parse_args(argv)
    if args.port is not None and not 0 <= args.port <= 65535:
        parser.error("--port must be between 0 and 65535")
    return args


# --------------------------------------------------------------------------- files and secrets


def write_private(path: Path, data: str | bytes) -> None:
    """Replace ``path`` atomically with a file only the owner can read (mkstemp creates it 0600)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load_or_create_keys(path: Path) -> dict:
    """Django's secret key and the credential encryption key, kept so the database stays readable."""
    try:
        keys = json.loads(path.read_text())
        Fernet(keys["field_encryption_key"])
        if isinstance(keys["secret_key"], str) and len(keys["secret_key"]) >= 50:
            if not isinstance(keys.get("audit_key"), str):  # .demo/ from before the keyed audit chain
                keys["audit_key"] = audit_keys.generate()
                write_private(path, json.dumps(keys))
            return keys
    except (OSError, ValueError, KeyError, TypeError):
        pass
    keys = {"secret_key": secrets.token_urlsafe(50), "field_encryption_key": Fernet.generate_key().decode(),
            "audit_key": audit_keys.generate()}
    write_private(path, json.dumps(keys))
    return keys


def load_or_create_secret(path: Path) -> str:
    try:
        secret = path.read_text().strip()
    except OSError:
        secret = ""
    if len(secret) < 32:
        secret = secrets.token_urlsafe(32)
        write_private(path, secret + "\n")
    return secret


def write_gateway_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A development CA and the gateway's server certificate (kubesim.certs); the CA key is not kept."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_key, ca_cert = make_ca("airlock-demo-ca")
    key, cert = issue_cert(ca_key, ca_cert, "airlock-gateway", sans=SERVER_SANS, server=True)
    ca_file, cert_file, key_file = directory / "ca.crt", directory / "gateway.crt", directory / "gateway.key"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_private(key_file, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return ca_file, cert_file, key_file


def make_private(root: Path) -> None:
    """Remove group and other permissions from everything under ``root`` (symlinks are left alone)."""
    for directory, _dirnames, filenames in os.walk(root):
        for path in [directory, *(os.path.join(directory, name) for name in filenames)]:
            mode = os.lstat(path).st_mode
            if not stat.S_ISLNK(mode) and stat.S_IMODE(mode) & 0o077:
                os.chmod(path, stat.S_IMODE(mode) & 0o700)


def lock_directory(layout: Layout):
    """Hold an exclusive lock for the demo's lifetime: two demos must not share a state directory."""
    handle = open(layout.lock, "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise DemoError(f"another demo is running with --dir {display(layout.root)}; stop it first") from None
    return handle


def display(path: Path) -> str:
    """A path as the user would type it from here."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- ports and environment


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def choose_port(requested: int | None) -> tuple[int, str | None]:
    """(port, note): the default falls back to a free port; a port asked for explicitly must be free."""
    if requested == 0:
        return free_port(), None
    if requested is None:
        if port_free(DEFAULT_PORT):
            return DEFAULT_PORT, None
        port = free_port()
        return port, f"port {DEFAULT_PORT} is in use, so the gateway uses {port} (choose one with --port)"
    if not port_free(requested):
        raise DemoError(f"port {requested} on {HOST} is in use; choose another with --port (0 picks a free one)")
    return requested, None


def clean_env(environ) -> dict:
    """The caller's environment without Airlock, database, broker and kubeconfig settings."""
    return {k: v for k, v in environ.items() if not k.startswith(CLEARED_ENV_PREFIXES)}


def gateway_env(base: dict, layout: Layout, keys: dict, issuer: str, audience: str, metrics_port: int) -> dict:
    """Django settings for the demo: SQLite under the demo directory, in-memory channels, the demo IdP,
    Prometheus metrics on ``metrics_port`` of the loopback interface.

    DEBUG is off: agents reach this server, and Django's debug pages show settings, tracebacks and
    URL patterns (static files are served by airlock.app's ASGIStaticFilesHandler either way).
    """
    return {
        **base,
        "DJANGO_SETTINGS_MODULE": "airlock.settings",
        "AIRLOCK_ENV": "development",
        "AIRLOCK_DEBUG": "false",
        "AIRLOCK_VAR_DIR": str(layout.var),
        "AIRLOCK_SQLITE_PATH": str(layout.database),
        "AIRLOCK_SECRET_KEY": keys["secret_key"],
        "AIRLOCK_FIELD_ENCRYPTION_KEYS": keys["field_encryption_key"],
        "AIRLOCK_AUDIT_KEYS": keys["audit_key"],
        "AIRLOCK_AUDIT_ANCHOR_FILE": str(layout.root / "audit-anchors.jsonl"),
        "AIRLOCK_OIDC_ISSUER": issuer,
        "AIRLOCK_OIDC_AUDIENCE": audience,
        "AIRLOCK_METRICS_ADDRESS": HOST,
        "AIRLOCK_METRICS_PORT": str(metrics_port),
        "PYTHONPATH": str(ROOT) + (os.pathsep + base["PYTHONPATH"] if base.get("PYTHONPATH") else ""),
    }


def write_env_file(layout: Layout, env: dict, base: dict) -> None:
    """``.demo/env``: what the gateway runs with beyond the caller's environment, as shell exports, so that
    ``. .demo/env`` gives ``manage.py`` the demo's database and keys, and kubectl the agent's kubeconfig.
    It holds the demo's keys, like gateway-keys.json: 0600."""
    lines = [
        "# The Airlock demo's environment (rewritten by every run of the demo). From the repository root:",
        "#   . .demo/env && python manage.py review list      (or: make demo-shell)",
        "# The caller's own database, broker and Airlock settings would point manage.py elsewhere (clean_env).",
        "unset DATABASE_URL REDIS_URL $(env | grep -oE '^(AIRLOCK|CELERY)_[A-Za-z0-9_]*=' | tr -d =)",
        f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:\"$PATH\"",
        f"export KUBECONFIG={shlex.quote(str(layout.agent_kubeconfig))}",
        f"export AIRLOCK_DEMO_DIR={shlex.quote(str(layout.root))}",
    ]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in sorted(env.items()) if base.get(name) != value]
    write_private(layout.env_file, "\n".join(lines) + "\n")


def plugin_args(issuer: str, audience: str, secret_file: Path) -> list[str]:
    return ["--issuer", issuer, "--client-id", AGENT_CLIENT_ID, "--audience", audience,
            "--client-secret-file", str(secret_file)]


def forget_cached_token(issuer: str, audience: str, secret_file: Path) -> None:
    """Drop the credential plugin's cached token for this demo's IdP: a new IdP has new signing keys."""
    path = credential_plugin.cache_path(credential_plugin.parse_args(plugin_args(issuer, audience, secret_file)))
    Path(path).unlink(missing_ok=True)


# --------------------------------------------------------------------------- children


class Supervisor:
    """The demo's children in start order; stopped in reverse, each with a bounded wait."""

    def __init__(self):
        self._children = []

    def add(self, name: str, stop, poll=None, log: str | None = None) -> None:
        self._children.append((name, stop, poll, log))

    def check(self) -> None:
        for name, _stop, poll, log in self._children:
            code = poll() if poll else None
            if code is not None:
                raise DemoError(f"{name} exited unexpectedly (exit code {code})" + (f"; see {log}" if log else ""))

    def stop_all(self) -> None:
        while self._children:
            name, stop, _poll, _log = self._children.pop()
            try:
                stop()
            except Exception as exc:  # keep stopping the others
                print(f"demo: cleaning up {name} failed: {exc}", file=sys.stderr)


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        with open(path, errors="replace") as handle:
            return "".join(deque(handle, maxlen=lines))
    except OSError:
        return ""


def start_gateway(env: dict, layout: Layout, port: int, cert: Path, key: Path) -> subprocess.Popen:
    """uvicorn over TLS with the read limits of airlock.server; the access log stays off (request URLs
    can carry exec commands)."""
    with open(layout.gateway_log, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "airlock.asgi:application", "--host", HOST, "--port", str(port),
             "--ssl-certfile", str(cert), "--ssl-keyfile", str(key), "--lifespan", "on", "--no-access-log", "--no-proxy-headers",
             "--no-server-header",
             "--http", "airlock.server:HttpToolsProtocol", "--timeout-graceful-shutdown", "5"],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )


def wait_for_gateway(proc: subprocess.Popen, url: str, ca_file: Path, log: Path, timeout: float = 30.0) -> None:
    context = ssl.create_default_context(cafile=str(ca_file))
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise DemoError(f"the gateway exited with {proc.returncode}; last lines of {display(log)}:\n"
                            + log_tail(log))
        try:
            if httpx.get(f"{url}/admin/login/", verify=context, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise DemoError(f"the gateway did not answer on {url} within {timeout:.0f}s; see {display(log)}")
        time.sleep(0.1)


# --------------------------------------------------------------------------- Django


def provision(env: dict, layout: Layout, *, issuer: str, audience: str, gateway_url: str,
              ca_file: Path) -> tuple[str, str]:
    """Database, connection, policy, reviewer and agent kubeconfig; returns the reviewer's new password
    and a line saying which policy the connection has."""
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command
    from django.core.management.base import CommandError
    from django.db import connections

    def run(*args):
        out = io.StringIO()
        call_command(*args, stdout=out)
        for line in out.getvalue().splitlines():
            print(f"  {line}")

    try:
        call_command("migrate", interactive=False, verbosity=0)
        run("add_connection", "--kubeconfig", str(layout.cluster_kubeconfig), "--name", CONNECTION, "--update")
        policy = apply_policy(run)
        expire_left_over_reviews()
        password = create_reviewer()
        run("kubeconfig", "--connection", CONNECTION, "--client-id", AGENT_CLIENT_ID,
            "--client-secret-file", str(layout.client_secret), "--issuer", issuer, "--audience", audience,
            "--gateway-url", gateway_url, "--gateway-ca", str(ca_file), "--python", sys.executable,
            "--output", str(layout.agent_kubeconfig), "--force")
    except CommandError as exc:
        raise DemoError(str(exc)) from None
    finally:
        connections.close_all()
    return password, policy


def apply_policy(run) -> str:
    """The preset, on a connection without rules only: the operator's own rules survive a restart."""
    from connections.models import Connection

    kept = Connection.objects.get(name=CONNECTION).rules.count()
    if kept:
        print(f"  kept the {kept} rule(s) of connection {CONNECTION!r} (the preset is applied only to a connection "
              "without rules)")
        return (f"{kept} rule(s) kept from an earlier run (python manage.py export_rules --connection {CONNECTION}; "
                "see the README's Changing the policy)")
    run("apply_preset", "--connection", CONNECTION, PRESET, *(f"--group={group}" for group in AGENT_GROUPS))
    return (f"{PRESET} for group {', '.join(AGENT_GROUPS)} on connection {CONNECTION!r}: reads allowed, "
            "changes need a reviewer")


def expire_left_over_reviews() -> None:
    """Reviews an earlier run left pending can never be released: its cluster and identity provider are gone."""
    from approvals.reviews import expire_pending

    expired = expire_pending("left over from an earlier run of the demo")
    if expired:
        print(f"  expired {expired} review(s) left pending by an earlier run")


def create_reviewer() -> str:
    """The demo reviewer: in the reviewers group (the dashboard), staff with view access to Airlock's
    models (the admin), and allowed to replay the audit trail."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group, Permission

    from approvals.auth import REVIEWERS

    password = secrets.token_urlsafe(12)
    user, _ = get_user_model().objects.get_or_create(username=REVIEWER)
    user.is_active, user.is_staff, user.is_superuser = True, True, False
    user.set_password(password)
    user.save()
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label__in=AIRLOCK_APPS, codename__startswith="view_"))
    user.groups.add(Group.objects.get_or_create(name=REVIEWERS)[0])
    return password


# --------------------------------------------------------------------------- the demo


def kubectl_binary() -> Path:
    binary = Path(sys.executable).parent / "kubectl"
    if not binary.exists():
        raise DemoError(f"kubectl is not installed at {display(binary)}; run `make setup`")
    return binary


def verify(kubectl: Path, kubeconfig: Path, env: dict) -> str:
    """`kubectl get pods -A` with the agent's kubeconfig, through the gateway; its output."""
    try:
        result = subprocess.run([str(kubectl), "--kubeconfig", str(kubeconfig), "get", "pods", "-A"],
                                env=env, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise DemoError("kubectl get pods -A through the gateway did not finish within 60s") from None
    if result.returncode != 0:
        hint = ""
        if "Forbidden" in result.stderr:
            hint = (f"\nThe connection's rules refuse it (a run keeps the rules it finds). Change them under the "
                    f"demo's environment: . {display(kubeconfig.parent / 'env')} && python manage.py import_rules "
                    f"--connection {CONNECTION} --replace FILE (or apply_preset ... --replace), or start afresh "
                    "with make clean")
        raise DemoError(f"kubectl get pods -A through the gateway failed:\n{result.stderr.strip()}{hint}")
    return result.stdout


def summary(*, layout: Layout, gateway_url: str, password: str, ca_file: Path, kubectl: Path, policy: str,
            metrics_url: str) -> str:
    agent, cluster = display(layout.agent_kubeconfig), display(layout.cluster_kubeconfig)
    return "\n".join([
        "",
        "Airlock demo is ready.",
        "",
        f"  Dashboard      {gateway_url}/approvals/  (held requests and leases, live)",
        f"  Audit replay   {gateway_url}/audit/",
        f"  Admin          {gateway_url}/admin/",
        f"                 (your browser does not know the demo CA {display(ca_file)})",
        f"  Reviewer       username {REVIEWER}, password {password}  (new on every run)",
        f"  Agent          {agent}",
        f"                 (through the gateway as OIDC client {AGENT_CLIENT_ID}, groups {', '.join(AGENT_GROUPS)};"
        " no cluster credential)",
        f"  Agent over MCP {gateway_url}/mcp/{CONNECTION}/",
        f"                 (Streamable HTTP; a bearer token from the OIDC provider for audience {gateway_url},"
        f" same rules and record as the kubeconfig; README: Agents over MCP)",
        f"  Cluster admin  {cluster}",
        "                 (straight to kubesim with the credential the gateway itself uses)",
        f"  Policy         {policy}",
        f"  Metrics        {metrics_url}  (Prometheus; health at {gateway_url}/livez and /readyz)",
        f"  Try            {display(kubectl)} --kubeconfig {agent} get pods -A",
        f"  manage.py      . {display(layout.env_file)} && python manage.py review list   (or: make demo-shell)",
        f"  Logs           {display(layout.gateway_log)}, {display(layout.kubesim / 'kubesim.stderr')},"
        f" {display(layout.kubesim / 'requests.jsonl')}",
        "",
    ])


def run(args: argparse.Namespace, layout: Layout, supervisor: Supervisor, signals: Signals) -> None:
    base_env = clean_env(os.environ)
    port, note = choose_port(args.port)
    if note:
        print(f"demo: {note}")
    gateway_url = f"https://{HOST}:{port}"
    audience = gateway_url
    kubectl = kubectl_binary()

    keys = load_or_create_keys(layout.keys)
    client_secret = load_or_create_secret(layout.client_secret)

    print("demo: installing the identity provider's npm packages (only when package-lock.json changed)")
    try:
        ensure_installed()
    except (IdPError, subprocess.CalledProcessError) as exc:
        raise DemoError(f"npm ci for tests/idp failed: {exc}") from None

    print("demo: starting kubesim")
    shutil.rmtree(layout.kubesim, ignore_errors=True)  # a fresh simulated cluster on every run
    with signals.deferred():
        try:
            sim = start_kubesim(layout.kubesim)
        except RuntimeError as exc:
            raise DemoError(str(exc)) from None
        supervisor.add("kubesim", sim.stop, sim.proc.poll, display(layout.kubesim / "kubesim.stderr"))
    write_private(layout.cluster_kubeconfig, sim.kubeconfig.read_bytes())

    print("demo: starting the OpenID provider")
    idp = IdP(audience=audience, clients=[
        {"client_id": AGENT_CLIENT_ID, "client_secret": client_secret, "groups": list(AGENT_GROUPS)}])
    with signals.deferred():
        try:
            idp.start()
        except IdPError as exc:
            raise DemoError(str(exc)) from None
        supervisor.add("the OpenID provider", idp.stop)
    forget_cached_token(idp.issuer, audience, layout.client_secret)
    supervisor.add("the cached agent token", lambda: forget_cached_token(idp.issuer, audience, layout.client_secret))

    ca_file, cert_file, key_file = write_gateway_tls(layout.tls)
    metrics_port = free_port()
    env = gateway_env(base_env, layout, keys, idp.issuer, audience, metrics_port)
    print(f"demo: preparing the database {display(layout.database)}")
    password, policy = provision(env, layout, issuer=idp.issuer, audience=audience, gateway_url=gateway_url,
                                 ca_file=ca_file)
    write_env_file(layout, env, base_env)

    print(f"demo: starting the gateway on {gateway_url}")
    with signals.deferred():
        gateway = start_gateway(env, layout, port, cert_file, key_file)
        supervisor.add("the gateway", lambda: stop_process(gateway), gateway.poll, display(layout.gateway_log))
    wait_for_gateway(gateway, gateway_url, ca_file, layout.gateway_log)

    print(f"demo: checking: {display(kubectl)} --kubeconfig {display(layout.agent_kubeconfig)} get pods -A")
    pods = verify(kubectl, layout.agent_kubeconfig, base_env)
    print("".join(f"  {line}\n" for line in pods.splitlines()), end="")
    print(summary(layout=layout, gateway_url=gateway_url, password=password, ca_file=ca_file, kubectl=kubectl,
                  policy=policy, metrics_url=f"http://{HOST}:{metrics_port}/metrics"))
    if args.exit_after_ready:
        print("demo: --exit-after-ready: stopping.", flush=True)
        return
    print(READY_LINE, flush=True)
    while True:
        supervisor.check()
        time.sleep(0.5)


def main(argv=None) -> int:
    args = parse_args(argv)
    layout = Layout(args.dir.resolve())
    signals = Signals()
    signals.install()
    supervisor = Supervisor()
    code = 0
    os.umask(PRIVATE_UMASK)
    try:
        layout.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = lock_directory(layout)
        try:
            make_private(layout.root)
            run(args, layout, supervisor, signals)
        finally:
            signals.ignore()  # nothing interrupts the shutdown itself
            supervisor.stop_all()
            lock.close()
    except Interrupted:
        print("\ndemo: stopped.")
    except DemoError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
