"""The dashboard, the admin and the REST APIs while PostgreSQL is away: a 503, one log line, no traceback.

In the soak, every reviewer API call made while the database was refused was a 500 with a
Django traceback in the log (78 of them).  Here the database connection fails as it does when
the server refuses or has gone: ``ensure_connection`` raises ``OperationalError`` (with a
password in its message, which must reach neither the answer nor the log).
"""

import json
import logging
from contextlib import contextmanager
from unittest import mock

import pytest
from django.db import InterfaceError, OperationalError, ProgrammingError
from django.db.backends.base.base import BaseDatabaseWrapper
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from approvals.tests.factories import AgentAPIClient, reviewer
from runtime import unavailable

pytestmark = pytest.mark.django_db

REFUSED = OperationalError('connection failed: connection to server at "db" port 5432 failed: password=hunter2')


@contextmanager
def database(error=REFUSED):
    with mock.patch.object(BaseDatabaseWrapper, "ensure_connection", side_effect=error):
        yield


class Clock:
    now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(unavailable, "reports", unavailable._Reports(clock))
    return clock


@pytest.fixture
def rita():
    user = reviewer("rita")
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def warnings_of(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_the_reviewer_api_answers_503_json_and_logs_one_line_per_interval(rita, clock, caplog):
    with database():
        answers = [rita.get("/approvals/api/reviews/"), rita.post("/approvals/api/reviews/1/approve/", {}, format="json"),
                   rita.get("/approvals/api/leases/")]
        for answer in answers:
            assert answer.status_code == 503, answer.content
            assert answer["Content-Type"] == "application/json"
            assert answer.json() == {"detail": "the database is unavailable; try again shortly"}
        lines = warnings_of(caplog)
        assert [r.name for r in lines] == ["runtime.unavailable"]
        clock.now += unavailable.LOG_INTERVAL
        assert rita.get("/approvals/api/reviews/").status_code == 503
    lines = warnings_of(caplog)
    assert [r.getMessage() for r in lines] == [
        "database unavailable to the dashboard and APIs (OperationalError): 1 request(s) answered 503",
        "database unavailable to the dashboard and APIs (OperationalError): 3 request(s) answered 503 in the last 10s",
    ]
    assert not any(r.exc_info for r in caplog.records)
    assert "hunter2" not in caplog.text and all(b"hunter2" not in a.content for a in answers)
    assert rita.get("/approvals/api/reviews/").status_code == 200  # the database is back


def test_a_lost_connection_is_a_503_too(rita, clock):
    with database(InterfaceError("connection already closed")):
        assert rita.get("/approvals/api/reviews/").status_code == 503


@pytest.mark.parametrize("path", ["/approvals/", "/approvals/leases/", "/audit/", "/admin/"])
def test_dashboard_and_admin_pages_answer_a_503_page(path, clock, caplog):
    user = reviewer("rita")
    user.is_staff = user.is_superuser = True
    user.save()
    client = Client(raise_request_exception=False)
    client.force_login(user)
    with database():
        page = client.get(path)
    assert page.status_code == 503
    assert page["Content-Type"] == "text/html; charset=utf-8"
    assert b"database is unavailable" in page.content and b"hunter2" not in page.content
    assert [r.name for r in warnings_of(caplog)] == ["runtime.unavailable"]
    assert not any(r.exc_info for r in caplog.records)


@pytest.mark.django_db(transaction=True)
async def test_the_agent_lease_api_answers_503_json(settings, clock):
    settings.AIRLOCK_DEV_STATIC_TOKENS = "agent-tok=agent-1:agents"
    with database():
        answer = await AgentAPIClient(raise_request_exception=False).get(
            "/approvals/api/agent/leases/", headers={"Authorization": "Bearer agent-tok"})
    assert answer.status_code == 503
    assert json.loads(answer.content) == {"detail": "the database is unavailable; try again shortly"}


def test_other_database_errors_stay_500s_with_their_traceback(rita, clock, caplog):
    """Only a database that cannot be reached is a 503: a broken query is a bug, and must look like one."""
    client = Client(raise_request_exception=False)
    client.force_login(reviewer("vera"))
    with database(ProgrammingError("relation does not exist")):
        api = rita.get("/approvals/api/reviews/")
        page = client.get("/approvals/")
    assert api.status_code == 500 and page.status_code == 500
    errors = [r for r in caplog.records if r.name == "django.request" and r.exc_info]
    assert [r.exc_info[0] for r in errors] == [ProgrammingError, ProgrammingError]
    assert not [r for r in caplog.records if r.name == "runtime.unavailable"]
