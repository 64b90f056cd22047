"""The application make_application builds: /k8s/ to the gateway, the rest to Django, static assets
served, a lifespan that starts and stops it and reports a failed start."""

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from airlock.app import make_application

# Each test builds its own application (airlock.app.make_application) on its own event loop and
# shuts it down: no test depends on another, in any order.
pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[1]


class Lifespan:
    """Drives an application's ASGI lifespan as a server does."""

    def __init__(self, app):
        self.inbox = asyncio.Queue()
        self.sent = []
        self.answered = asyncio.Event()
        self.task = asyncio.ensure_future(app({"type": "lifespan"}, self.inbox.get, self.send))

    async def send(self, message):
        self.sent.append(message)
        self.answered.set()

    async def step(self, kind: str) -> dict:
        self.answered.clear()
        self.inbox.put_nowait({"type": f"lifespan.{kind}"})
        await asyncio.wait_for(self.answered.wait(), 10)
        return self.sent[-1]


@pytest.fixture
async def application():
    """A started application, shut down (its audit events written) after the test."""
    app = make_application()
    lifespan = Lifespan(app)
    assert (await lifespan.step("startup"))["type"] == "lifespan.startup.complete"
    yield app
    assert (await lifespan.step("shutdown"))["type"] == "lifespan.shutdown.complete"
    await asyncio.wait_for(lifespan.task, 10)


async def call(application, path, method="GET", headers=()):
    messages = [{"type": "http.request", "body": b"", "more_body": False}]
    sent = []

    async def receive():
        if messages:
            return messages.pop()
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": [(b"host", b"localhost"), *headers], "scheme": "https", "server": ("127.0.0.1", 443),
             "client": ("127.0.0.1", 1), "asgi": {"version": "3.0"}, "http_version": "1.1", "root_path": ""}
    await asyncio.wait_for(application(scope, receive, send), 10)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def test_gateway_prefix_goes_to_the_gateway(application):
    status, body = await call(application, "/k8s/no-such-connection/api/v1/pods")
    assert status == 401 and json.loads(body)["kind"] == "Status"  # no token: refused before any lookup


async def test_static_assets_served_by_the_app(application):
    status, body = await call(application, "/static/admin/css/base.css")
    assert status == 200 and body


@pytest.mark.parametrize("method, path", [
    ("GET", "/"), ("GET", "/api/v1/pods"), ("GET", "/api"), ("GET", "/apis/apps/v1"), ("GET", "/version"),
    ("GET", "/version/"), ("GET", "/healthz/"), ("GET", "/openapi/v2"), ("POST", "/api/v1/namespaces/x/pods"),
    ("DELETE", "/api/v1/namespaces/default"), ("GET", "/k8s"), ("GET", "/approvals/nope/"), ("GET", "/admin-x"),
    ("GET", "/static/"), ("GET", "/static/admin/"), ("GET", "/static/nope.css"), ("GET", "/static/../airlock/settings.py"),
    ("GET", "/ws/approvals/"),
])
async def test_a_path_no_part_of_airlock_serves_is_a_kubernetes_status_404(application, method, path):
    """kubectl proxy without --append-server-path sends /api/v1/pods to the root: kubectl must be able to
    print the answer, and Django's debug page (it lists every URL pattern) must never show."""
    status, body = await call(application, path, method)
    assert status == 404
    answer = json.loads(body)
    assert answer["kind"] == "Status" and answer["apiVersion"] == "v1" and answer["reason"] == "NotFound"
    assert answer["code"] == 404 and answer["status"] == "Failure"
    assert answer["message"].startswith("the server could not find the requested resource")
    assert "/k8s/<connection>/" in answer["message"] and "--append-server-path" in answer["message"]


@pytest.mark.parametrize("path, code", [
    ("/approvals/login/", 200), ("/admin/login/", 200), ("/admin", 301), ("/audit", 301), ("/approvals/", 302),
    ("/static/admin/css/base.css", 200),
])
async def test_pages_of_the_dashboard_admin_and_audit_still_reach_django(application, path, code):
    status, body = await call(application, path)
    assert status == code
    assert not body.startswith(b'{"kind":"Status"')


async def test_a_websocket_to_an_unknown_path_is_refused_with_a_status_404(application):
    inbox = asyncio.Queue()
    inbox.put_nowait({"type": "websocket.connect"})
    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "websocket", "path": "/api/v1/namespaces/x/pods/y/exec", "raw_path": b"", "query_string": b"",
             "headers": [(b"host", b"localhost")], "subprotocols": ["v5.channel.k8s.io"],
             "extensions": {"websocket.http.response": {}}, "client": ("127.0.0.1", 1)}
    await asyncio.wait_for(application(scope, inbox.get, send), 10)
    assert sent[0]["type"] == "websocket.http.response.start" and sent[0]["status"] == 404
    assert json.loads(sent[1]["body"])["reason"] == "NotFound"


async def test_lifespan_shutdown_closes_the_gateway():
    """Outside production the lifespan also runs the approvals sweeper (no Celery beat needed)."""
    app = make_application()
    lifespan = Lifespan(app)
    assert await lifespan.step("startup") == {"type": "lifespan.startup.complete"}
    assert app.sweeper.task is not None and not app.sweeper.task.done()
    assert await lifespan.step("shutdown") == {"type": "lifespan.shutdown.complete"}
    await asyncio.wait_for(lifespan.task, 10)
    assert app.sweeper.task is None
    assert app.recorder._closed


async def test_the_agent_lease_api_gets_the_applications_authenticator(settings):
    """The application hands the agent lease API the authenticator its gateway uses."""
    from identity.chain import AuthenticatorChain
    from identity.static import StaticTokenAuthenticator

    settings.AIRLOCK_DEV_STATIC_TOKENS = ""  # the view must not build its own from the settings
    app = make_application(authenticator=AuthenticatorChain(static=StaticTokenAuthenticator("tok=agent-1:agents")),
                           sweeper=None)
    status, body = await call(app, "/approvals/api/agent/leases/", headers=[(b"authorization", b"Bearer tok")])
    assert status == 200 and json.loads(body) == []


async def test_a_failed_start_is_reported_as_lifespan_startup_failed(settings, tmp_path):
    """The audit journal cannot be opened: the server is told why, and the application serves nothing."""
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    settings.AIRLOCK_AUDIT_JOURNAL_DIR = blocked / "journal"
    app = make_application()
    lifespan = Lifespan(app)
    answer = await lifespan.step("startup")
    assert answer["type"] == "lifespan.startup.failed"
    assert answer["message"].startswith("airlock could not start: ") and "journal" in answer["message"]
    await asyncio.wait_for(lifespan.task, 10)
    assert app.sweeper.task is None


@pytest.mark.django_db(transaction=False)
def test_uvicorn_exits_non_zero_when_airlock_cannot_start(tmp_path):
    """As the image runs it (uvicorn's default lifespan "auto"): a failed start stops the process."""
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRLOCK_", "DATABASE_URL", "REDIS_URL"))}
    env.update(PYTHONPATH=str(ROOT), AIRLOCK_SQLITE_PATH=str(tmp_path / "airlock.sqlite3"),
               AIRLOCK_VAR_DIR=str(tmp_path / "var"), AIRLOCK_AUDIT_JOURNAL_DIR=str(blocked / "journal"))
    try:
        done = subprocess.run([sys.executable, "-m", "uvicorn", "airlock.asgi:application", "--host", "127.0.0.1",
                               "--port", "0"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError("uvicorn kept serving although airlock could not start") from exc
    assert done.returncode != 0
    assert "airlock could not start: " in done.stderr and "Application startup failed" in done.stderr
