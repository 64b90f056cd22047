"""verify_audit reports requests that were received but never completed, apart from tampering."""

import io
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command

from audit import journal
from audit.management.commands.verify_audit import INCOMPLETE
from audit.tests.factories import append, event

pytestmark = pytest.mark.django_db(transaction=True)


def received(offset_s: float = 0.0, **fields) -> dict:
    return event(offset_s, stage="RequestReceived", verb="delete", response_code=None, response_body=None, **fields)


def verify(*args) -> str:
    out = io.StringIO()
    call_command("verify_audit", *args, stdout=out)
    return out.getvalue()


def test_a_request_received_but_never_completed_is_named():
    lost, done = received(0), received(1)
    append(lost, done, dict(done, stage="ResponseComplete", response_code=200), event(2))
    with pytest.raises(CommandError) as failure:
        verify()
    assert failure.value.returncode == INCOMPLETE
    message = str(failure.value)
    assert "INCOMPLETE: 1 requests have a RequestReceived event but no completion" in message
    assert f"#1 {lost['audit_id']}" in message
    assert str(done["audit_id"]) not in message
    assert "tamper" not in message and "NOT VERIFIED" not in message


def test_a_crashed_completion_closes_it():
    lost = received(0)
    append(lost, dict(lost, stage="ResponseComplete", response_code=None, response_reason=journal.CRASHED_REASON))
    assert "every request received over 60 minutes ago has its completion event" in verify()


def test_recent_requests_and_those_in_flight_in_a_live_journal_are_not_reported(settings):
    now = datetime.now(UTC)
    recent = received(0, request_received_timestamp=now - timedelta(minutes=5))
    long_exec = received(0, request_received_timestamp=now - timedelta(hours=5))
    append(recent, long_exec)
    live = journal.Journal(settings.AIRLOCK_AUDIT_JOURNAL_DIR, segment_bytes=1 << 20)
    live.received(long_exec["audit_id"], long_exec)
    try:
        assert "has its completion event" in verify("--in-flight-minutes", "10")
    finally:
        live.close()
    with pytest.raises(CommandError, match=str(recent["audit_id"])):
        verify("--in-flight-minutes", "1")
