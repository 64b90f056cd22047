"""Agents ask for their own lease with their gateway token."""

import json

import pytest
from django.test import AsyncClient

from approvals.models import Lease
from approvals.tests.factories import AgentAPIClient, connection

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

URL = "/approvals/api/agent/leases/"


@pytest.fixture
def tokens(settings):
    settings.AIRLOCK_DEV_STATIC_TOKENS = "agent-tok=agent-1:agents,other-tok=agent-2:agents"


def client(raise_request_exception=False):
    """The view as the application serves it: the gateway's authenticator in the ASGI scope.  By default it
    answers what a real server would send (an unhandled error becomes Django's 500 page, not an exception)."""
    return AgentAPIClient(raise_request_exception=raise_request_exception)


async def post(body, token="agent-tok"):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await client().post(URL, data=json.dumps(body) if not isinstance(body, str) else body,
                                    content_type="application/json", headers=headers)


async def test_an_agent_requests_a_lease_for_itself_only(tokens):
    from channels.db import database_sync_to_async

    await database_sync_to_async(connection)()
    someone_else = await post({"connection": "prod", "duration": "30m", "reason": "INC-9", "subject": "someone-else"})
    assert someone_else.status_code == 400 and "a lease is always for the caller" in someone_else.json()["detail"]
    response = await post({"connection": "prod", "duration": "30m", "reason": "INC-9"})
    assert response.status_code == 201, response.content
    lease = response.json()
    assert (lease["subject"], lease["state"], lease["duration_seconds"], lease["requested_by"]) == (
        "agent-1", "requested", 1800, "agent:agent-1"
    )
    assert lease["issuer"] == "airlock-dev-static-tokens"
    mine = (await client(True).get(URL, headers={"Authorization": "Bearer agent-tok"})).json()
    theirs = (await client(True).get(URL, headers={"Authorization": "Bearer other-tok"})).json()
    assert [row["id"] for row in mine] == [lease["id"]] and theirs == []


async def test_served_without_the_applications_authenticator_it_refuses_with_a_503(tokens):
    """Only the application (airlock.app) hands the view an authenticator; nothing else may stand in for it."""
    from channels.db import database_sync_to_async

    await database_sync_to_async(connection)()
    answer = await AsyncClient(raise_request_exception=False).post(
        URL, data=json.dumps({"connection": "prod", "duration": "30m", "reason": "INC-9"}),
        content_type="application/json", headers={"Authorization": "Bearer agent-tok"})
    assert answer.status_code == 503 and answer.json() == {"detail": "the agent lease API is not available on this server"}
    assert not await Lease.objects.aexists()


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
    assert (await client(True).delete(URL, headers={"Authorization": "Bearer agent-tok"})).status_code == 405
    assert not await Lease.objects.aexists()


async def test_open_requests_are_capped(tokens):
    from channels.db import database_sync_to_async

    await database_sync_to_async(connection)()
    for _ in range(5):
        assert (await post({"connection": "prod", "duration": "1h", "reason": "x"})).status_code == 201
    refused = await post({"connection": "prod", "duration": "1h", "reason": "x"})
    assert refused.status_code == 429 and "waiting for a reviewer" in refused.json()["detail"]


VALID = {"connection": "prod", "duration": "1h", "reason": "INC-9"}
HOSTILE = {
    "superscript digit": dict(VALID, duration="\u00b2"),
    "Arabic-Indic digits": dict(VALID, duration="\u0663\u0660m"),
    "5,000 digits": dict(VALID, duration="9" * 5000),
    "5,000 digits of hours": dict(VALID, duration="9" * 5000 + "h"),
    "huge integer": dict(VALID, duration=10**30),
    "float": dict(VALID, duration=3600.0),
    "bool": dict(VALID, duration=True),
    "null duration": dict(VALID, duration=None),
    "object duration": dict(VALID, duration={"h": 1}),
    "padded duration": dict(VALID, duration=" 1h"),
    "newline duration": dict(VALID, duration="1h\n"),
    "no duration": {"connection": "prod", "reason": "x"},
    "number connection": dict(VALID, connection=7),
    "long connection": dict(VALID, connection="x" * 64),
    "newline connection": dict(VALID, connection="prod\n"),
    "number reason": dict(VALID, reason=5),
    "long reason": dict(VALID, reason="x" * 3000),
    "string rules": dict(VALID, rules="a"),
    "number rules": dict(VALID, rules=[1]),
    "long rule name": dict(VALID, rules=["x" * 64]),
    "too many rules": dict(VALID, rules=["a"] * 101),
    "unknown field": dict(VALID, issuer="https://evil.example"),
    "nested JSON": dict(VALID, reason={"a": [[[[["deep"]]]]]}),
}
RAW = {
    "deeply nested JSON": "[" * 8000 + "]" * 8000,
    "deeply nested objects": '{"a":' * 3000 + "1" + "}" * 3000,
    "a 5,000-digit number literal": '{"connection": "prod", "reason": "x", "duration": ' + "9" * 5000 + "}",
    "NaN": '{"connection": "prod", "reason": "x", "duration": NaN}',
    "Infinity": '{"connection": "prod", "reason": "x", "duration": Infinity}',
    "not JSON": "duration=1h",
    "invalid UTF-8": b'{"reason": "\xff\xfe"}',
    "a list": "[1, 2]",
    "empty body": "",
    "too large": '{"reason": "' + "x" * 20000 + '"}',
}


def assert_plain_4xx(response, case):
    assert 400 <= response.status_code < 500, (case, response.status_code, response.content[:200])
    assert response["Content-Type"] == "application/json", case
    text = response.content.decode("utf-8", "replace")
    assert set(response.json()) == {"detail"}
    assert "Traceback" not in text and "settings" not in text.lower() and "DEBUG" not in text


@pytest.mark.parametrize("debug", [False, True], ids=["DEBUG off", "DEBUG on"])
async def test_hostile_bodies_get_a_plain_4xx_json(tokens, settings, debug):
    from channels.db import database_sync_to_async

    settings.DEBUG = debug
    await database_sync_to_async(connection)()
    for name, body in HOSTILE.items():
        assert_plain_4xx(await post(body), name)
    for name, body in RAW.items():
        response = await client().post(URL, data=body, content_type="application/json",
                                       headers={"Authorization": "Bearer agent-tok"})
        assert_plain_4xx(response, name)
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"):
        response = await client().post(URL, data=json.dumps(VALID), content_type=content_type,
                                       headers={"Authorization": "Bearer agent-tok"})
        assert response.status_code == 415
        assert_plain_4xx(response, content_type)
    assert not await Lease.objects.aexists()
    assert (await post(VALID)).status_code == 201


async def test_an_internal_failure_is_a_bare_500_even_with_debug(tokens, settings, monkeypatch):
    from channels.db import database_sync_to_async

    settings.DEBUG = True
    await database_sync_to_async(connection)()

    def broken(principal, data):
        raise RuntimeError("database password is hunter2")

    monkeypatch.setattr("approvals.agent_api._request", broken)
    response = await post(VALID)
    assert response.status_code == 500 and response.json() == {"detail": "internal error"}
    assert b"hunter2" not in response.content
