"""Appending to the hash chain and catching every kind of tampering with verify_audit."""

import hmac
from datetime import timedelta

import pytest
from django.core.management import CommandError

from audit import chain
from audit.document import GENESIS_HASH, chain_hash
from audit.keys import keyring
from audit.models import AppendOnlyError, AuditEvent, Recording, Session
from audit.tests.factories import append, broken, event, tampering, verify

pytestmark = pytest.mark.django_db

EVENTS = "audit_auditevent"


def five_events():
    return append(*(event(i) for i in range(5)))


def test_append_assigns_gapless_seq_and_links_hashes():
    first = append(event(0), event(1))
    second = append(event(2))
    rows = list(AuditEvent.objects.order_by("seq"))
    assert [r.seq for r in rows] == [1, 2, 3]
    assert rows[0].prev_hash == GENESIS_HASH
    assert [r.prev_hash for r in rows[1:]] == [r.hash for r in rows[:-1]]
    assert [r.hash for r in rows] == [e.hash for e in first + second]
    key = keyring().active
    for row in rows:
        assert chain_hash(row.prev_hash, chain.document_of(row)) == row.hash
        assert row.key_id == key.key_id
        assert row.mac == hmac.new(key.secret, b"airlock audit event v1\n" + bytes.fromhex(row.hash), "sha256").hexdigest()


def test_intact_chain_verifies_with_a_summary():
    events = five_events()
    output = verify()
    assert "audit chain intact: 5 events #1..#5" in output
    assert events[-1].hash in output


def test_empty_chain_verifies():
    assert "no events" in verify()


def test_bad_anchor_syntax_is_a_usage_error():
    with pytest.raises(CommandError, match="SEQ:HASH"):
        verify("--anchor", "2:nothex")


def test_recording_is_covered_by_its_event_hash():
    cast = '{"version": 2, "width": 80, "height": 24}\n[0.1, "o", "hello\\r\\n"]\n'
    append(event(0), event(1, verb="get", object_subresource="exec", transport="websocket",
                           recording={"kind": "exec", "pod": "web", "namespace": "default", "asciicast": cast}))
    assert "intact" in verify()
    with tampering("audit_recording") as cursor:
        cursor.execute("UPDATE audit_recording SET asciicast = %s", [cast.replace("hello", "HELLO")])
    assert "event #2 " in broken()


def test_deleted_recording_is_detected():
    append(event(0, recording={"kind": "portforward", "pod": "db", "ports": [5432], "bytes_to_pod": 10}))
    with tampering("audit_recording") as cursor:
        cursor.execute("DELETE FROM audit_recording")
    assert "event #1 " in broken()


def test_moving_an_event_to_another_session_is_detected():
    append(event(0), event(1, kubectl_session="other"))
    first, second = AuditEvent.objects.order_by("seq")
    with tampering(EVENTS) as cursor:
        cursor.execute(f"UPDATE {EVENTS} SET session_id = %s WHERE seq = 1", [second.session_id])
    assert "event #1 " in broken()


def test_duplicate_audit_id_and_stage_is_stored_once():
    original = event(0)
    append(original)
    assert append(dict(original)) == []
    append(dict(original, stage="RequestReceived"))
    assert AuditEvent.objects.filter(audit_id=original["audit_id"]).count() == 2


def test_orm_refuses_changes_and_deletes():
    (row,) = append(event(0))
    row.verb = "delete"
    with pytest.raises(AppendOnlyError):
        row.save()
    with pytest.raises(AppendOnlyError):
        row.delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(seq=1).update(verb="delete")
    with pytest.raises(AppendOnlyError):
        Session.objects.all().delete()
    with pytest.raises(AppendOnlyError):
        Recording.objects.all().delete()


# -- sessions -----------------------------------------------------------------------------------


def sessions_of(rows):
    return [r.session_id for r in rows]


def test_requests_within_the_gap_share_a_session():
    rows = append(event(0), event(60), event(14 * 60))
    assert len(set(sessions_of(rows))) == 1
    session = Session.objects.with_activity().get()
    assert session.event_count == 3
    assert session.ended_at == rows[-1].stage_timestamp
    assert session.started_at == rows[0].request_received_timestamp


def test_a_pause_longer_than_the_gap_starts_a_new_session():
    rows = append(event(0), event(16 * 60))
    assert len(set(sessions_of(rows))) == 2


def test_gap_is_measured_from_the_stored_session_across_appends():
    first = append(event(0))
    second = append(event(10 * 60))
    third = append(event(40 * 60))
    assert first[0].session_id == second[0].session_id != third[0].session_id


def test_gap_is_configurable():
    rows = append(event(0), event(120), gap=timedelta(minutes=1))
    assert len(set(sessions_of(rows))) == 2


def test_kubectl_session_header_groups_regardless_of_gap():
    rows = append(
        event(0, kubectl_session="a"), event(1, kubectl_session="b"), event(3600, kubectl_session="a")
    )
    assert rows[0].session_id == rows[2].session_id != rows[1].session_id
    assert Session.objects.get(pk=rows[0].session_id).kubectl_session == "a"


def test_principal_and_connection_split_sessions():
    rows = append(event(0), event(1, connection="staging"), event(2, user_uid="agent-2-sub"),
                  event(3, user_issuer="https://other-idp.example.test"))
    assert len(set(sessions_of(rows))) == 4


def test_unauthenticated_requests_have_no_session():
    rows = append(event(0, user_username="", user_uid="", user_issuer="", user_groups=[], response_code=401))
    assert rows[0].session_id is None
    assert "intact" in verify()


def test_completion_joins_the_session_of_its_request_received_row():
    received = event(0, stage="RequestReceived", verb="create", response_code=None)
    append(received)
    done = append(dict(received, stage="ResponseComplete", response_code=201,
                       stage_timestamp=received["request_received_timestamp"] + timedelta(hours=1)))
    later = append(event(3600 + 30))
    first = AuditEvent.objects.get(seq=1)
    assert done[0].session_id == first.session_id
    assert later[0].session_id == first.session_id  # the completion an hour later kept it alive
