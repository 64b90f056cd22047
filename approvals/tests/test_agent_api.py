"""Agents ask for their own lease with their gateway token."""

import json

import pytest
from django.test import AsyncClient

from approvals.models import Lease
from approvals.tests.factories import connection

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

URL = "/approvals/api/agent/leases/"


@pytest.fixture
def tokens(settings):
    settings.AIRLOCK_DEV_STATIC_TOKENS = "agent-tok=agent-1:agents,other-tok=agent-2:agents"


async def post(body, token="agent-tok"):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await AsyncClient().post(URL, data=json.dumps(body) if not isinstance(body, str) else body,
                                    content_type="application/json", headers=headers)


async def test_an_agent_requests_a_lease_for_itself_only(tokens):
    from channels.db import database_sync_to_async

    await database_sync_to_async(connection)()
    response = await post({"connection": "prod", "duration": "30m", "reason": "INC-9", "subject": "someone-else"})
    assert response.status_code == 201, response.content
    lease = response.json()
    assert (lease["subject"], lease["state"], lease["duration_seconds"], lease["requested_by"]) == (
        "agent-1", "requested", 1800, "agent:agent-1"
    )
    assert lease["issuer"] == "airlock-dev-static-tokens"
    mine = (await AsyncClient().get(URL, headers={"Authorization": "Bearer agent-tok"})).json()
    theirs = (await AsyncClient().get(URL, headers={"Authorization": "Bearer other-tok"})).json()
    assert [row["id"] for row in mine] == [lease["id"]] and theirs == []


async def test_refusals_are_clear_4xx(tokens):
    from channels.db import database_sync_to_async

    await database_sync_to_async(connection)()
    assert (await post({}, token=None)).status_code == 401
    assert (await post({}, token="wrong")).status_code == 401
    assert (await post("not json")).status_code == 400
    assert (await post(["a list"])).status_code == 400
    for body in ({"connection": "prod", "duration": "forever", "reason": "x"},
                 {"connection": "prod", "duration": "1h", "reason": 7},
                 {"connection": "nope", "duration": "1h", "reason": "x"}):
        assert (await post(body)).status_code == 400, body
    assert (await AsyncClient().delete(URL, headers={"Authorization": "Bearer agent-tok"})).status_code == 405
    assert not await Lease.objects.aexists()


async def test_open_requests_are_capped(tokens):
    from channels.db import database_sync_to_async

    await database_sync_to_async(connection)()
    for _ in range(5):
        assert (await post({"connection": "prod", "duration": "1h", "reason": "x"})).status_code == 201
    refused = await post({"connection": "prod", "duration": "1h", "reason": "x"})
    assert refused.status_code == 429 and "waiting for a reviewer" in refused.json()["detail"]
