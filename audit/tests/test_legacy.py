"""Upgrading a chain written before audit keys (migrations 0003 and 0004)."""

import io

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from audit.document import GENESIS_HASH, chain_hash, event_document
from audit.events import prepare
from audit.models import Anchor, AuditEvent
from audit.tests.factories import append, event, rehash, tampering

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE_KEYS = ("audit", "0002_append_only_triggers")


def verify() -> str:
    out = io.StringIO()
    call_command("verify_audit", stdout=out)
    return out.getvalue()


def broken() -> str:
    with pytest.raises(CommandError) as exc:
        verify()
    return str(exc.value)


@pytest.fixture
def legacy_chain():
    """Three events written by the schema (and hashing) of before audit keys, then ``migrate``."""
    call_command("migrate", *BEFORE_KEYS, verbosity=0)
    try:
        old = MigrationExecutor(connection).loader.project_state(BEFORE_KEYS).apps.get_model("audit", "AuditEvent")
        prev_hash = GENESIS_HASH
        for i in range(3):
            fields = prepare(event(i), max_body=1024, max_recording=1024).fields
            fields.pop("clamped")
            fields.pop("dry_run")
            proxy = {name: fields.pop(name) for name in ("proxy_username", "proxy_uid", "proxy_issuer")}
            fields.pop("parent_id")
            fields.pop("mcp_tool")
            row = old(**fields, seq=i + 1, prev_hash=prev_hash)
            row.clamped = []  # not a column yet; the document of an unclamped event has no such key
            row.dry_run = False  # likewise (migration 0005)
            row.__dict__.update(proxy)  # likewise (migration 0006: empty, so no impersonatedUser in the document)
            row.parent_id, row.mcp_tool = None, ""  # likewise (migration 0007)
            row.hash = prev_hash = chain_hash(prev_hash, event_document(row, None))
            row.save()
    finally:
        call_command("migrate", "audit", verbosity=0)
    return prev_hash


def test_the_upgrade_anchors_the_legacy_head_and_the_chain_verifies(legacy_chain):
    anchor = Anchor.objects.get()
    assert (anchor.seq, anchor.hash, anchor.reason) == (3, legacy_chain, "legacy")
    assert list(AuditEvent.objects.values_list("key_id", "mac")) == [("", "")] * 3
    assert "events #1..#3 predate audit keys" in verify()
    (keyed,) = append(event(10))
    assert keyed.prev_hash == legacy_chain and keyed.key_id
    assert "intact: 4 events #1..#4" in verify()


def test_legacy_events_rewritten_after_the_upgrade_are_caught_by_the_first_keyed_event(legacy_chain):
    (keyed,) = append(event(10))
    with tampering("audit_auditevent", "audit_anchor") as cursor:
        cursor.execute("UPDATE audit_auditevent SET verb = 'delete' WHERE seq = 2")
        cursor.execute("DELETE FROM audit_anchor")
    rehash(2)
    assert f"event #4 (audit ID {keyed.audit_id}): re-hashed: HMAC mismatch" in broken()


def test_legacy_events_rewritten_before_any_keyed_event_are_caught_by_the_legacy_anchor(legacy_chain):
    with tampering("audit_auditevent") as cursor:
        cursor.execute("UPDATE audit_auditevent SET verb = 'delete' WHERE seq = 2")
    rehash(2)
    assert "event #3 " in broken() and "rewritten: its hash differs from the anchor of" in broken()


def test_a_legacy_chain_whose_anchor_was_deleted_does_not_verify(legacy_chain):
    with tampering("audit_anchor") as cursor:
        cursor.execute("DELETE FROM audit_anchor")
    assert "unkeyed: events #1..#3 are without HMAC" in broken()
