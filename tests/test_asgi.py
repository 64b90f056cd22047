"""The top-level ASGI router: /k8s/ to the gateway, the rest to Django, static assets served."""

import asyncio
import json

import pytest

# airlock.asgi.application is a process-wide singleton (its recorder and HTTP
# pools are bound to one event loop), so the module shares one loop; the
# lifespan test, which shuts it down, runs last.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio(loop_scope="module")]


async def call(path):
    from airlock.asgi import application

    messages = [{"type": "http.request", "body": b"", "more_body": False}]
    sent = []

    async def receive():
        if messages:
            return messages.pop()
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": b"",
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
