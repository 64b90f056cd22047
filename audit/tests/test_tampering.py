"""verify_audit against someone who can write the database but holds no audit key.

Each test tampers the way such an attacker would: raw SQL, with PostgreSQL's append-only
triggers disabled first (audit.tests.factories.tampering), hashes recomputed with the public
algorithm where that is the point.  verify_audit must fail and say which event and what was done.
"""

import json

import pytest
from django.core.management import CommandError

from audit import chain
from audit.document import chain_hash, timestamp
from audit.events import prepare
from audit.keys import keyring
from audit.models import Anchor, AuditEvent
from audit.tests.factories import append, broken, event, rehash, tampering, verify

pytestmark = pytest.mark.django_db

EVENTS = "audit_auditevent"


@pytest.fixture
def events():
    return append(*(event(i) for i in range(5)))


@pytest.fixture
def anchor_file(tmp_path, settings):
    path = tmp_path / "anchors.jsonl"
    settings.AIRLOCK_AUDIT_ANCHOR_FILE = str(path)
    return path


def at(events, seq: int) -> str:
    return f"event #{seq} (audit ID {events[seq - 1].audit_id}): "


def test_an_untouched_chain_verifies(events):
    assert "audit chain intact: 5 events #1..#5" in verify()


def test_edit_is_named(events):
    with tampering(EVENTS) as cursor:
        cursor.execute(f"UPDATE {EVENTS} SET verb = 'delete' WHERE seq = 3")
    assert at(events, 3) + "edited: its content does not match its hash (hash mismatch)" in broken()


def test_edit_of_a_body_is_named(events):
    with tampering(EVENTS) as cursor:
        cursor.execute(f"UPDATE {EVENTS} SET response_body = %s WHERE seq = 4", [b'{"kind":"PodList"}'])
    assert at(events, 4) + "edited" in broken()


def test_edit_of_a_link_is_named(events):
    with tampering(EVENTS) as cursor:
        cursor.execute(f"UPDATE {EVENTS} SET prev_hash = %s WHERE seq = 3", ["ab" * 32])
    assert at(events, 3) + "edited: its prev_hash was changed (hash mismatch)" in broken()


def test_edit_rehashed_through_the_rest_of_the_chain_is_named(events):
    with tampering(EVENTS) as cursor:
        cursor.execute(f"UPDATE {EVENTS} SET verb = 'delete' WHERE seq = 3")
    rehash(3)
    rows = list(AuditEvent.objects.order_by("seq"))
    assert all(chain_hash(r.prev_hash, chain.document_of(r)) == r.hash for r in rows)  # the bare chain is whole
    assert at(events, 3) + "re-hashed: HMAC mismatch" in broken()


def test_edit_with_only_its_own_hash_recomputed_is_named(events):
    row = AuditEvent.objects.get(seq=2)
    row.verb = "delete"
    with tampering(EVENTS) as cursor:
        cursor.execute(f"UPDATE {EVENTS} SET verb = 'delete', hash = %s WHERE seq = 2",
                       [chain_hash(row.prev_hash, chain.document_of(row))])
    assert at(events, 2) + "re-hashed: HMAC mismatch" in broken()


def test_deletion_is_named_by_the_gap(events):
    with tampering(EVENTS) as cursor:
        cursor.execute(f"DELETE FROM {EVENTS} WHERE seq = 3")
    assert at(events, 4) + "deleted: gap in seq: event #3 is missing" in broken()


def test_deletion_with_the_rest_renumbered_is_named(events):
    with tampering(EVENTS) as cursor:
        cursor.execute(f"DELETE FROM {EVENTS} WHERE seq = 3")
        cursor.execute(f"UPDATE {EVENTS} SET seq = seq - 1 WHERE seq > 3")
    message = broken()
    assert f"event #3 (audit ID {events[3].audit_id}): deleted: the event it was written after is no longer" in message
    assert "renumbered" in message


def test_deletion_renumbered_and_rehashed_is_named(events):
    with tampering(EVENTS) as cursor:
        cursor.execute(f"DELETE FROM {EVENTS} WHERE seq = 3")
        cursor.execute(f"UPDATE {EVENTS} SET seq = seq - 1 WHERE seq > 3")
    rehash(3)
    assert f"event #3 (audit ID {events[3].audit_id}): re-hashed: HMAC mismatch" in broken()


def swap(a: int, b: int) -> None:
    with tampering(EVENTS) as cursor:
        cursor.execute(f"UPDATE {EVENTS} SET seq = -1 WHERE seq = %s", [a])
        cursor.execute(f"UPDATE {EVENTS} SET seq = %s WHERE seq = %s", [a, b])
        cursor.execute(f"UPDATE {EVENTS} SET seq = %s WHERE seq = -1", [b])


def test_reordering_is_named(events):
    swap(2, 3)
    assert (
        f"event #2 (audit ID {events[2].audit_id}): reordered: seq order broken at #2: "
        "it was written right after the event now at #3, not after #1"
    ) in broken()


def test_reordering_rehashed_is_named(events):
    swap(2, 3)
    rehash(2)
    assert f"event #2 (audit ID {events[2].audit_id}): re-hashed: HMAC mismatch" in broken()


def test_deleted_first_events_are_named(events):
    with tampering(EVENTS) as cursor:
        cursor.execute(f"DELETE FROM {EVENTS} WHERE seq <= 2")
    assert at(events, 3) + "deleted: events #1..#2 are missing and no checkpoint covers them" in broken()


def forge(seq: int, prev_hash: str, **fields) -> AuditEvent:
    """A new event row inserted at the end, chained correctly, with whatever MAC the attacker can make."""
    row = AuditEvent(**prepare(event(seq), max_body=1024, max_recording=1024).fields, seq=seq, prev_hash=prev_hash,
                     **fields)
    row.hash = chain_hash(prev_hash, chain.document_of(row))
    row.save()
    return row


def test_a_forged_event_is_named(events):
    forged = forge(6, events[-1].hash, key_id=keyring().active.key_id, mac="0" * 64)
    assert f"event #6 (audit ID {forged.audit_id}): re-hashed: HMAC mismatch" in broken()


def test_a_forged_event_without_an_hmac_is_named(events):
    forged = forge(6, events[-1].hash)
    assert f"event #6 (audit ID {forged.audit_id}): HMAC removed" in broken()


def test_stripped_hmacs_are_named(events):
    with tampering(EVENTS) as cursor:
        cursor.execute(f"UPDATE {EVENTS} SET key_id = '', mac = '' WHERE seq >= 4")
    assert at(events, 4) + "HMAC removed: it has no HMAC, but the events before it have one" in broken()


def test_a_chain_stripped_of_every_hmac_and_rewritten_is_named(events):
    with tampering(EVENTS) as cursor:
        cursor.execute(f"UPDATE {EVENTS} SET key_id = '', mac = ''")
        cursor.execute(f"UPDATE {EVENTS} SET verb = 'delete' WHERE seq = 2")
    rehash(2)
    assert "unkeyed: events #1..#5 are without HMAC" in broken()


def test_an_unknown_key_id_is_named(events):
    with tampering(EVENTS) as cursor:
        cursor.execute(f"UPDATE {EVENTS} SET key_id = 'ffffffffffffffff' WHERE seq = 2")
    assert at(events, 2) + "unknown key: it is signed with key id 'ffffffffffffffff'" in broken()


# -- truncation and anchors ----------------------------------------------------------------------


def delete_from(seq: int, *, anchors_too: bool) -> None:
    tables = (EVENTS, "audit_anchor") if anchors_too else (EVENTS,)
    with tampering(*tables) as cursor:
        cursor.execute(f"DELETE FROM {EVENTS} WHERE seq >= %s", [seq])
        if anchors_too:
            cursor.execute("DELETE FROM audit_anchor")


def test_truncation_after_an_anchor_is_named_by_the_anchor_file(events, anchor_file):
    anchor = chain.make_anchor("schedule")
    assert "newest anchor outside the database: #5" in verify()
    delete_from(4, anchors_too=True)
    assert (
        f"truncated: the chain ends at #3 but the anchor of {timestamp(anchor.created_at)} "
        f"({anchor_file} line 1) says it reached #5 (hash {events[4].hash}): events #4..#5 are missing (deleted)"
    ) in broken()


def test_truncation_is_named_by_an_anchor_left_in_the_database(events):
    chain.make_anchor("schedule")
    delete_from(4, anchors_too=False)
    assert "truncated: the chain ends at #3 but the anchor of" in broken()
    assert "(the database) says it reached #5" in broken()


def test_without_an_anchor_file_truncation_is_invisible_and_verify_says_so(events):
    chain.make_anchor("schedule")
    delete_from(4, anchors_too=True)
    output = verify()
    assert "intact: 3 events" in output
    assert "no anchor file was checked, so deleting the newest events would not show" in output


def test_events_after_the_newest_anchor_are_reported_as_unanchored(events, anchor_file):
    chain.make_anchor("schedule")
    append(event(10), event(11))
    assert "newest anchor outside the database: #5" in verify()
    assert "(events #6..#7 are not anchored outside the database yet)" in verify()


def test_truncation_hidden_by_new_appends_is_named(events, anchor_file):
    chain.make_anchor("schedule")
    delete_from(4, anchors_too=True)
    later = append(event(20), event(21))
    assert [e.seq for e in later] == [4, 5]
    message = broken()
    assert f"event #5 (audit ID {later[1].audit_id}): rewritten: its hash differs from the anchor of" in message
    assert f"({anchor_file} line 1)" in message


def test_an_anchor_pinned_on_the_command_line_still_works(events):
    delete_from(4, anchors_too=False)
    assert "says it reached #5" in broken("--anchor", f"5:{events[4].hash}")
    assert at(events, 2) + "rewritten" in broken("--anchor", "2:" + "ab" * 32)


def test_a_forged_anchor_line_is_named(events, anchor_file):
    chain.make_anchor("schedule")
    line = json.loads(anchor_file.read_text())
    with open(anchor_file, "a") as stream:
        stream.write(json.dumps(dict(line, seq=3)) + "\n")
    assert f"forged anchor: the anchor of {line['createdAt']} ({anchor_file} line 2) at #3 has an invalid signature" in broken()


def test_an_edited_anchor_row_is_named(events):
    chain.make_anchor("schedule")
    with tampering("audit_anchor") as cursor:
        cursor.execute("UPDATE audit_anchor SET seq = 3")
    assert "forged anchor: the anchor of" in broken()
    assert "(the database) at #3 has an invalid signature" in broken()


def test_an_anchor_file_that_is_not_anchors_is_refused(events, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kind":"airlock.audit/anchor","seq":1}\n')
    with pytest.raises(CommandError, match=r"NOT VERIFIED: .*bad.jsonl line 1 is not a valid anchor"):
        verify("--anchors", str(bad))
    with pytest.raises(CommandError, match="cannot read the anchor file"):
        verify("--anchors", str(tmp_path / "missing.jsonl"))


def test_the_anchor_file_is_append_only_and_private(events, anchor_file):
    chain.make_anchor("schedule")
    append(event(10))
    chain.make_anchor("shutdown")
    lines = [json.loads(line) for line in anchor_file.read_text().splitlines()]
    assert [(line["seq"], line["reason"]) for line in lines] == [(5, "schedule"), (6, "shutdown")]
    assert anchor_file.stat().st_mode & 0o777 == 0o600
    assert chain.make_anchor("schedule") is None  # nothing new: no line
    assert len(anchor_file.read_text().splitlines()) == 2
    assert Anchor.objects.count() == 2


def test_a_tampered_head_is_not_anchored(events, anchor_file, caplog):
    with tampering(EVENTS) as cursor:
        cursor.execute(f"UPDATE {EVENTS} SET mac = %s WHERE seq = 5", ["0" * 64])
    assert chain.make_anchor("schedule") is None
    assert "no valid HMAC" in caplog.text
    assert not anchor_file.exists()


def test_an_empty_anchor_file_is_reported_as_such(events, anchor_file):
    chain.make_anchor("schedule")  # the database has one; the file check is about the file
    anchor_file.write_text("")
    assert "intact: 5 events" in verify() and "the anchor files hold no anchor yet" in verify()
