"""Append-only enforcement in the database.

On PostgreSQL (CI) triggers refuse UPDATE, DELETE and TRUNCATE on every audit table.  SQLite
has no such triggers (documented in migration 0002): there the same raw statements go through
and verify_audit is what catches them, which these tests assert instead.
"""

import io
import uuid

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from audit.chain import make_anchor, prune_through
from audit.models import AuditEvent
from audit.tests.factories import append, event

pytestmark = pytest.mark.django_db

POSTGRES = connection.vendor == "postgresql"
TABLES = ("audit_auditevent", "audit_session", "audit_recording", "audit_checkpoint", "audit_anchor")


@pytest.fixture
def trail():
    """Five events (one with a recording) of which the first is pruned behind a checkpoint, and an anchor."""
    append(event(0), event(1), event(2, recording={"kind": "exec", "pod": "web", "asciicast": "x\n"}), event(3),
           event(4))
    prune_through(1, archive_sha256="0" * 64, now=timezone.now())
    make_anchor("schedule")


def verification_error() -> str:
    with pytest.raises(CommandError) as exc:
        call_command("verify_audit", stdout=io.StringIO())
    return str(exc.value)


def refused(sql: str, params=()) -> str:
    with pytest.raises(DatabaseError) as exc:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, params)
    return str(exc.value)


STATEMENTS = {
    "event update": "UPDATE audit_auditevent SET verb = 'delete' WHERE seq = 3",
    "event delete": "DELETE FROM audit_auditevent WHERE seq = 4",
    "recording update": "UPDATE audit_recording SET asciicast = 'y\n'",
    "recording delete": "DELETE FROM audit_recording",
    "session update": f"UPDATE audit_session SET session_id = '{uuid.uuid4().hex}'",
    "checkpoint update": "UPDATE audit_checkpoint SET through_seq = 2",
    "checkpoint delete": "DELETE FROM audit_checkpoint",
    "anchor update": "UPDATE audit_anchor SET seq = 2",
}


@pytest.mark.parametrize("statement", STATEMENTS.values(), ids=STATEMENTS.keys())
def test_changes_are_refused_on_postgresql_and_caught_on_sqlite(trail, statement):
    if POSTGRES:
        assert "append-only" in refused(statement)
        call_command("verify_audit", stdout=io.StringIO())
    else:
        with connection.cursor() as cursor:
            cursor.execute(statement)
        assert "BROKEN" in verification_error()


def test_truncate_is_refused_on_postgresql_and_sqlite_has_no_truncate(trail):
    if POSTGRES:
        name = connection.ops.quote_name(connection.settings_dict["NAME"])
        with connection.cursor() as cursor:
            # The test database allows TRUNCATE for Django's flush (audit.testing); a real one does not.
            cursor.execute(f"ALTER DATABASE {name} RESET airlock.audit_truncate")
            # TRUNCATE needs the foreign-key checks queued by this test's inserts done first.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        for table in TABLES:
            assert "append-only: TRUNCATE refused" in refused(f"TRUNCATE {table} CASCADE")
        assert AuditEvent.objects.count() == 4
    else:
        head = AuditEvent.objects.get(seq=5).hash
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM audit_recording")
            cursor.execute("DELETE FROM audit_auditevent")
            cursor.execute("DELETE FROM audit_anchor")
        # Emptied after a prune, the chain alone looks like "everything pruned"; an anchor kept
        # elsewhere (the anchor file, an export) is what catches it.
        call_command("verify_audit", stdout=io.StringIO())
        with pytest.raises(CommandError, match="truncated: the chain has no events after #1 .* says it reached #5"):
            call_command("verify_audit", "--anchor", f"5:{head}", stdout=io.StringIO())


def test_anchor_delete_is_refused_on_postgresql_and_the_anchor_file_outlives_it_on_sqlite(settings, tmp_path):
    settings.AIRLOCK_AUDIT_ANCHOR_FILE = str(tmp_path / "anchors.jsonl")
    append(event(0), event(1))
    make_anchor("schedule")
    if POSTGRES:
        assert "append-only" in refused("DELETE FROM audit_anchor")
    else:
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM audit_anchor")
            cursor.execute("DELETE FROM audit_auditevent WHERE seq = 2")
        assert "truncated: the chain ends at #1" in verification_error()


def test_prune_mode_deletes_only_what_a_checkpoint_covers(trail):
    if POSTGRES:
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL airlock.audit_prune = 'on'")
        assert "append-only" in refused("DELETE FROM audit_auditevent WHERE seq = 2")
        assert "append-only" in refused("DELETE FROM audit_recording")
        assert "append-only" in refused("DELETE FROM audit_checkpoint")
    else:
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM audit_auditevent WHERE seq = 2")
        assert "event #3 " in verification_error()


def test_triggers_exist_only_on_postgresql():
    with connection.cursor() as cursor:
        if POSTGRES:
            cursor.execute(
                "SELECT tgrelid::regclass::text, tgname FROM pg_trigger WHERE NOT tgisinternal "
                "AND tgrelid::regclass::text LIKE 'audit_%%'"
            )
            found = set(cursor.fetchall())
            expected = {(t, f"{t}_{kind}") for t in TABLES for kind in ("no_update", "no_delete", "no_truncate")}
            assert found == expected
        else:
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
            assert cursor.fetchall() == []
