"""Event dicts and chain helpers shared by the audit tests."""

import io
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from audit import chain
from audit.document import GENESIS_HASH, chain_hash
from audit.events import prepare
from audit.models import AuditEvent

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
GAP = timedelta(minutes=15)


def event(offset_s: float = 0.0, **fields) -> dict:
    """A completed 'kubectl get pods' by agent-1 on connection prod, ``offset_s`` after T0."""
    received = T0 + timedelta(seconds=offset_s)
    base = {
        "audit_id": uuid.uuid4(),
        "stage": "ResponseComplete",
        "request_received_timestamp": received,
        "stage_timestamp": received + timedelta(milliseconds=12),
        "user_username": "agent-1",
        "user_uid": "agent-1-sub",
        "user_issuer": "https://idp.example.test",
        "user_groups": ["agents", "dev"],
        "verb": "list",
        "object_resource": "pods",
        "object_namespace": "default",
        "object_api_version": "v1",
        "request_uri": "/api/v1/namespaces/default/pods?limit=500",
        "source_ips": ["127.0.0.1"],
        "user_agent": "kubectl/v1.37.1 (linux/amd64) kubernetes/abcdef",
        "response_code": 200,
        "connection": "prod",
        "decision_effect": "allow",
        "decision_rule_id": 7,
        "decision_rule_name": "read-only",
        "decision_reason": 'rule "read-only" allows',
        "latency_ms": 12.5,
        "bytes_in": 0,
        "bytes_out": 2048,
        "response_body": b'{"kind":"PodList","items":[]}',
    }
    base.update(fields)
    return base


def append(*events: dict, gap: timedelta = GAP, max_body: int = 65536, max_recording: int = 1 << 20):
    prepared = [prepare(e, max_body=max_body, max_recording=max_recording) for e in events]
    return chain.append(prepared, session_gap=gap)


@contextmanager
def tampering(*tables: str):
    """A raw cursor that can change audit rows, as a database superuser could.

    On PostgreSQL the append-only triggers are disabled first (as the table owner), exactly
    what an attacker with that privilege would do; the test's transaction restores them.
    """
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # ALTER TABLE needs the foreign-key checks queued by this test's inserts done first.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            for table in tables:
                cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        yield cursor
        if connection.vendor == "postgresql":
            for table in tables:
                cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")


def rehash(from_seq: int) -> None:
    """Recompute every hash from ``from_seq`` on, as an attacker who knows the algorithm but no key would."""
    rows = list(AuditEvent.objects.filter(seq__gte=from_seq).order_by("seq"))
    previous = AuditEvent.objects.filter(seq__lt=from_seq).order_by("-seq").values_list("hash", flat=True).first()
    prev_hash = previous or GENESIS_HASH
    with tampering("audit_auditevent") as cursor:
        for row in rows:
            row.prev_hash = prev_hash
            prev_hash = chain_hash(prev_hash, chain.document_of(row))
            cursor.execute("UPDATE audit_auditevent SET prev_hash = %s, hash = %s WHERE id = %s",
                           [row.prev_hash, prev_hash, row.id])


def verify(*args) -> str:
    """``manage.py verify_audit`` output of an intact chain."""
    out = io.StringIO()
    call_command("verify_audit", *args, stdout=out)
    return out.getvalue()


def broken(*args) -> str:
    """The message ``manage.py verify_audit`` fails with."""
    with pytest.raises(CommandError) as exc:
        verify(*args)
    return str(exc.value)
