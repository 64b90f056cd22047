"""The top-level ASGI router: /k8s/ to the gateway, the rest to Django, static assets served."""

import asyncio
import json

import pytest

# airlock.asgi.application is a process-wide singleton (its recorder and HTTP
# pools are bound to one event loop), so the module shares one loop; the
# lifespan test, which shuts it down, runs last.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio(loop_scope="module")]


async def call(path, method="GET"):
    from airlock.asgi import application

    messages = [{"type": "http.request", "body": b"", "more_body": False}]
    sent = []

    async def receive():
        if messages:
            return messages.pop()
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": [(b"host", b"localhost")], "scheme": "https", "server": ("127.0.0.1", 443),
             "client": ("127.0.0.1", 1), "asgi": {"version": "3.0"}, "http_version": "1.1", "root_path": ""}
    await asyncio.wait_for(application(scope, receive, send), 10)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def test_gateway_prefix_goes_to_the_gateway():
    from airlock.asgi import gateway

    status, body = await call("/k8s/no-such-connection/api/v1/pods")
    assert status == 401 and json.loads(body)["kind"] == "Status"  # no token: refused before any lookup
    await gateway.recorder.flush()  # its audit event is written before the test database is flushed


async def test_static_assets_served_by_the_app():
    status, body = await call("/static/admin/css/base.css")
    assert status == 200 and body


@pytest.mark.parametrize("method, path", [
    ("GET", "/"), ("GET", "/api/v1/pods"), ("GET", "/api"), ("GET", "/apis/apps/v1"), ("GET", "/version"),
    ("GET", "/version/"), ("GET", "/healthz/"), ("GET", "/openapi/v2"), ("POST", "/api/v1/namespaces/x/pods"),
    ("DELETE", "/api/v1/namespaces/default"), ("GET", "/k8s"), ("GET", "/approvals/nope/"), ("GET", "/admin-x"),
    ("GET", "/static/"), ("GET", "/static/admin/"), ("GET", "/static/nope.css"), ("GET", "/static/../airlock/settings.py"),
    ("GET", "/ws/approvals/"),
])
async def test_a_path_no_part_of_airlock_serves_is_a_kubernetes_status_404(method, path):
    """kubectl proxy without --append-server-path sends /api/v1/pods to the root: kubectl must be able to
    print the answer, and Django's debug page (it lists every URL pattern) must never show."""
    status, body = await call(path, method)
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
async def test_pages_of_the_dashboard_admin_and_audit_still_reach_django(path, code):
    status, body = await call(path)
    assert status == code
    assert not body.startswith(b'{"kind":"Status"')


async def test_a_websocket_to_an_unknown_path_is_refused_with_a_status_404():
    from airlock.asgi import application

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
    from airlock.asgi import application, sweeper

    inbox = asyncio.Queue()
    inbox.put_nowait({"type": "lifespan.startup"})
    sent, started = [], asyncio.Event()

    async def send(message):
        sent.append(message["type"])
        started.set()

    lifespan = asyncio.ensure_future(application({"type": "lifespan"}, inbox.get, send))
    await asyncio.wait_for(started.wait(), 10)
    assert sent == ["lifespan.startup.complete"]
    assert sweeper.task is not None and not sweeper.task.done()
    inbox.put_nowait({"type": "lifespan.shutdown"})
    await asyncio.wait_for(lifespan, 10)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert sweeper.task is None
