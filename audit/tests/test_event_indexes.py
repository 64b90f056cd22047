"""The event table's indexes: each lookup the code makes has one, and no append maintains a spare.

Every append writes a row into each index of audit_auditevent, and the database's share of an
append grows with them; a unique rule still holds (position, hash, one row per stage).
"""

import json
import uuid

import pytest
from django.db import IntegrityError, connection, transaction

from audit import chain
from audit.models import AuditEvent
from audit.tests.factories import append, event

pytestmark = pytest.mark.django_db

POSTGRES = connection.vendor == "postgresql"


def index_columns() -> dict[str, list[str]]:
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, AuditEvent._meta.db_table)
    return {name: info["columns"] for name, info in constraints.items() if info["index"]}


@pytest.mark.skipif(not POSTGRES, reason="the production database's indexes")
def test_no_index_is_the_leading_part_of_another_or_a_pattern_copy():
    indexes = index_columns()
    for name, columns in indexes.items():
        assert not name.endswith("_like"), name  # nothing searches hashes with LIKE
        for other, wider in indexes.items():
            if other != name and len(wider) > len(columns):
                assert wider[: len(columns)] != columns, (name, other)


@pytest.mark.skipif(not POSTGRES, reason="jsonb_populate_record")
def test_the_unique_rules_still_hold():
    """A copy of the second event (a raw INSERT, as a database writer could try) with the first's
    hash, position, or request and stage is refused."""
    append(event(0), event(1))
    first, second = AuditEvent.objects.order_by("seq")
    copy = "INSERT INTO audit_auditevent SELECT * FROM jsonb_populate_record(NULL::audit_auditevent, " \
           "(SELECT to_jsonb(e) FROM audit_auditevent e WHERE seq = %s) || %s::jsonb)"
    fresh = {"id": second.pk + 100, "seq": second.seq + 100, "hash": "f" * 64, "audit_id": str(uuid.uuid4())}
    for clash in ({"hash": first.hash}, {"seq": first.seq}, {"audit_id": str(second.audit_id)}):
        with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(copy, [second.seq, json.dumps({**fresh, **clash})])
    with transaction.atomic(), connection.cursor() as cursor:  # the copy itself is a valid row
        cursor.execute(copy, [second.seq, json.dumps(fresh)])


@pytest.mark.skipif(not POSTGRES, reason="PostgreSQL's planner")
def test_the_append_reads_stored_events_by_index_before_the_table_is_analyzed():
    """Under the chain lock every append looks up its requests' stored events.  A young table that
    grew fast has no column statistics until autovacuum analyzes it; the lookup must still go by
    index, not read the whole table in every append (it did: 85 ms at 115,000 events)."""
    append(event(0))
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO audit_auditevent SELECT (jsonb_populate_record(NULL::audit_auditevent, to_jsonb(e)"
            " || jsonb_build_object('id', e.id + g, 'seq', e.seq + g, 'hash', md5(g::text) || md5((-g)::text),"
            " 'audit_id', gen_random_uuid()))).* FROM audit_auditevent e, generate_series(1, 3000) AS g")
        ids = "{" + ",".join(str(uuid.uuid4()) for _ in range(60)) + "}"
        cursor.execute("EXPLAIN " + chain._under_lock_sql(), [ids])
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Seq Scan on audit_auditevent" not in plan, plan
