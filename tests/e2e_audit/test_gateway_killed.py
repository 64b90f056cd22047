"""Issue 12, finding 3: a gateway process killed under load loses no audit event.

A real gateway (uvicorn with the production settings, TLS, its own SQLite database and audit
journal directory) in front of kubesim serves concurrent reads, writes and watches, and is
SIGKILLed while requests are in flight, as the OOM killer would.  It is then started again on
the same database and journal directory, and stopped cleanly.  Afterwards:

* every request whose response a client fully received has exactly one completion event, with
  the status the client saw, or marked "gateway crashed" (the kill came between its last byte
  and its completion);
* every request kubesim logged as forwarded (each carries a unique User-Agent) has its
  completion event in the audit trail: those in flight at the kill are closed as crashed;
* no request has a RequestReceived event without a completion, and verify_audit passes.
"""

import asyncio
import json
import secrets
import signal
import sqlite3
import ssl
import subprocess
from collections import Counter
from itertools import count

import httpx
import pytest

from audit.journal import CRASHED_REASON
from bench import procs
from kubesim import requestlog
from kubesim.certs import generate_tls

CLIENTS = 8
WATCHES = 3
KILL_AFTER = 150  # responses fully received before the kill
NS = "/api/v1/namespaces/default"
AGENT = "crash-test/"


@pytest.fixture
def gateway_env(kubesim, tmp_path):
    token = secrets.token_urlsafe(24)
    env = procs.clean_env(
        AIRLOCK_ENV="development",
        AIRLOCK_VAR_DIR=str(tmp_path / "var"),
        AIRLOCK_SQLITE_PATH=str(tmp_path / "airlock.sqlite3"),
        AIRLOCK_AUDIT_JOURNAL_DIR=str(tmp_path / "journal"),
        AIRLOCK_DEV_STATIC_TOKENS=f"{token}=agent-1:agents",
        AIRLOCK_DEBUG="false",
    )
    spec = json.dumps({"server_url": kubesim.url, "ca_file": str(kubesim.ca_file), "token": kubesim.admin_token,
                       "group": "agents", "rules": "allow-all"})
    subprocess.run([procs.PYTHON, "-m", "bench.prepare"], input=spec, text=True, env=env, cwd=procs.REPO,
                   check=True, timeout=120)
    return env, token


def start(env, tls, tmp_path) -> procs.Service:
    """One server process (no uvicorn supervisor): SIGKILL must hit the process that holds the journal."""
    return procs.wait_listening(procs.spawn_uvicorn("gateway", "airlock.asgi:application", env, tls, tmp_path,
                                                    workers=1))


def plan(n: int) -> tuple[str, str, dict | None]:
    marker = f"crash-{n:05d}"
    kind = n % 4
    if kind == 0:
        return "POST", f"{NS}/configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": marker}}
    if kind == 1:
        return "GET", f"{NS}/configmaps?limit=5", None
    if kind == 2:
        return "DELETE", f"{NS}/configmaps/{marker}-missing", None
    return "GET", f"{NS}/configmaps/{marker}-missing", None


async def load(base_url: str, token: str, ca_file, gateway: procs.Service) -> dict[str, int]:
    """Clients and watches until the gateway is killed; returns User-Agent -> status of every response
    fully received."""
    context = ssl.create_default_context(cafile=str(ca_file))
    received: dict[str, int] = {}
    numbers = count()
    killed = asyncio.Event()
    watching = asyncio.Semaphore(0)

    def headers(n: int) -> dict:
        return {"Authorization": f"Bearer {token}", "User-Agent": f"{AGENT}{n}"}

    async def client():
        async with httpx.AsyncClient(base_url=base_url, verify=context, timeout=30) as http:
            while not killed.is_set():
                n = next(numbers)
                method, target, body = plan(n)
                try:
                    response = await http.request(method, target, json=body, headers=headers(n))
                except httpx.HTTPError:
                    return
                received[f"{AGENT}{n}"] = response.status_code
                if len(received) >= KILL_AFTER and not killed.is_set():
                    gateway.proc.send_signal(signal.SIGKILL)
                    killed.set()

    async def watch():
        n = next(numbers)
        async with httpx.AsyncClient(base_url=base_url, verify=context, timeout=30) as http:
            try:
                async with http.stream("GET", f"{NS}/configmaps?watch=1", headers=headers(n)) as response:
                    assert response.status_code == 200
                    watching.release()
                    async for _ in response.aiter_raw():
                        pass
            except httpx.HTTPError:
                return
        raise AssertionError("a watch ended cleanly although its gateway was killed")

    watches = [asyncio.create_task(watch()) for _ in range(WATCHES)]
    for _ in range(WATCHES):
        await asyncio.wait_for(watching.acquire(), 30)
    await asyncio.wait_for(asyncio.gather(*(client() for _ in range(CLIENTS)), *watches), 120)
    assert killed.is_set()
    return received


def audit_rows(database) -> list[tuple]:
    with sqlite3.connect(database) as db:
        return db.execute(
            "SELECT audit_id, stage, user_agent, response_code, response_reason FROM audit_auditevent"
        ).fetchall()


def test_a_killed_gateway_loses_no_audit_event(kubesim, gateway_env, tmp_path):
    env, token = gateway_env
    tls = generate_tls(tmp_path / "tls")
    gateway = start(env, tls, tmp_path)
    try:
        received = asyncio.run(load(f"{gateway.url}/k8s/kubesim", token, tls.ca_file, gateway))
    finally:
        gateway.stop()
    assert gateway.proc.returncode == -signal.SIGKILL
    left = list((tmp_path / "journal").glob("*.journal"))
    assert left, "the killed process left its journal"
    for segment in left:
        content = segment.read_bytes()
        assert token.encode() not in content and kubesim.admin_token.encode() not in content

    restarted = start(env, tls, tmp_path)  # replays the dead journal before it listens
    restarted.stop()
    assert "Application shutdown complete" in restarted.log_tail(), restarted.log_tail()
    assert not list((tmp_path / "journal").glob("*.journal"))

    rows = audit_rows(tmp_path / "airlock.sqlite3")
    completions = {agent: (code, reason) for _, stage, agent, code, reason in rows if stage == "ResponseComplete"}
    per_request = Counter(audit_id for audit_id, stage, *_ in rows if stage == "ResponseComplete")
    assert max(per_request.values()) == 1, "a request has two completion events"

    missing = sorted(agent for agent in received if agent not in completions)
    assert not missing, f"{len(missing)} of {len(received)} answered requests have no completion event: {missing[:10]}"
    for agent, status in received.items():
        assert completions[agent] in ((status, ""), (None, CRASHED_REASON)), (agent, status, completions[agent])

    forwarded = {agent for r in kubesim.requests() for agent in requestlog.header(r, "user-agent")
                 if agent.startswith(AGENT)}
    unaudited = sorted(forwarded - set(completions))
    assert not unaudited, f"{len(unaudited)} of {len(forwarded)} forwarded requests have no audit row: {unaudited[:10]}"
    crashed = sorted(agent for agent, (_, reason) in completions.items() if reason == CRASHED_REASON)
    assert len(crashed) >= WATCHES, crashed  # at least the watches were in flight at the kill

    opened = {audit_id for audit_id, stage, *_ in rows if stage == "RequestReceived"}
    assert opened <= set(per_request), "a RequestReceived event without its completion"

    verify = subprocess.run([procs.PYTHON, "manage.py", "verify_audit", "--in-flight-minutes", "0"], env=env,
                            cwd=procs.REPO, capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "has its completion event" in verify.stdout
