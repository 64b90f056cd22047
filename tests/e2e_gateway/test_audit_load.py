"""Issue 7, done-when: under load from concurrent clients, exactly one event per request.

400 requests from 16 keep-alive clients through the real gateway (TLS, uvicorn) in front of
kubesim: creates, deletes of missing objects, reads, reads refused by policy and 404s.  Each
request carries a marker (``req-NNNN``) in its URI.  After a clean shutdown (the lifespan
flushes the recorder) every marker has exactly one ResponseComplete with the status the client
saw, every write exactly one earlier RequestReceived, and the hash chain verifies.  The
recorder's queue is kept small so that requests also wait for room in it.
"""

import asyncio
import re
import ssl
from collections import Counter

import httpx
import pytest
from django.core.management import call_command

from tests.gateway_harness import AGENT_TOKEN

pytestmark = pytest.mark.django_db(transaction=True)

REQUESTS = 400
CLIENTS = 16
VIEWER_TOKEN = "viewer-token-2b9d"  # group "viewers": no rule allows it
MARKER = re.compile(r"req-(\d{4})")
NS = "/api/v1/namespaces/default"


def plan(i: int) -> tuple[str, str, str, dict | None, bool, int]:
    """Request ``i``: (method, target, token, json body, is a write, expected status)."""
    marker = f"req-{i:04d}"
    kind = i % 5
    if kind == 0:
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": marker}, "data": {"n": str(i)}}
        return "POST", f"{NS}/configmaps?fieldManager={marker}", AGENT_TOKEN, body, True, 201
    if kind == 1:
        return "GET", f"{NS}/configmaps?labelSelector=load%3D{marker}", AGENT_TOKEN, None, False, 200
    if kind == 2:
        return "GET", f"{NS}/pods?labelSelector=load%3D{marker}", VIEWER_TOKEN, None, False, 403
    if kind == 3:
        return "GET", f"{NS}/configmaps/{marker}-missing", AGENT_TOKEN, None, False, 404
    return "DELETE", f"{NS}/configmaps/{marker}-missing", AGENT_TOKEN, None, True, 404


async def run_clients(server_url: str, ca_file) -> dict[int, int]:
    """Every request once, spread over CLIENTS connections; returns marker -> status seen."""
    context = ssl.create_default_context(cafile=str(ca_file))
    seen: dict[int, int] = {}

    async def client(indices):
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=server_url, verify=context, limits=limits, timeout=30) as http:
            for i in indices:
                method, target, token, body, _, _ = plan(i)
                response = await http.request(method, target, json=body, headers={"Authorization": f"Bearer {token}"})
                seen[i] = response.status_code

    await asyncio.gather(*(client(range(n, REQUESTS, CLIENTS)) for n in range(CLIENTS)))
    return seen


@pytest.fixture(autouse=True)
def small_audit_queue(settings):
    """A queue smaller than the load, so requests also wait for room (back-pressure), never drop."""
    settings.AIRLOCK_AUDIT_QUEUE_SIZE = 8
    settings.AIRLOCK_AUDIT_BATCH_SIZE = 4


def marker_of(event) -> int:
    found = MARKER.findall(event.request_uri)
    assert len(found) == 1, event.request_uri
    return int(found[0])


def test_every_request_has_exactly_one_event(live_airlock, gateway_app, capsys):
    from audit.models import AuditEvent

    assert gateway_app.recorder.queue_size == 8

    seen = asyncio.run(run_clients(live_airlock.gateway.server_url(), live_airlock.gateway.ca_file))
    assert seen == {i: plan(i)[5] for i in range(REQUESTS)}
    live_airlock.stop()  # lifespan shutdown: the recorder writes everything it queued

    completed = list(AuditEvent.objects.filter(stage="ResponseComplete").order_by("seq"))
    assert len(completed) == REQUESTS
    by_marker = {marker_of(e): e for e in completed}
    assert Counter(marker_of(e) for e in completed) == Counter(range(REQUESTS))
    assert {i: e.response_code for i, e in by_marker.items()} == seen
    denied = {i for i, e in by_marker.items() if e.decision_effect == "deny"}
    assert denied == {i for i in range(REQUESTS) if plan(i)[2] == VIEWER_TOKEN}

    writes = {i for i in range(REQUESTS) if plan(i)[4]}
    received = list(AuditEvent.objects.filter(stage="RequestReceived"))
    assert len(received) == len(writes) == 160
    assert Counter(marker_of(e) for e in received) == Counter(writes)
    for event in received:
        done = by_marker[marker_of(event)]
        assert done.audit_id == event.audit_id and event.seq < done.seq

    call_command("verify_audit")
    assert f"audit chain intact: {REQUESTS + len(writes)} events" in capsys.readouterr().out
