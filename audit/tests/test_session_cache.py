"""The audit writer's SessionCache: sessions resolved from memory, exactly as the database query would."""

import random
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit import chain
from audit.events import prepare
from audit.models import AuditEvent, Session
from audit.tests.factories import GAP, event

pytestmark = pytest.mark.django_db(transaction=True)


def append(events, cache):
    prepared = [prepare(e, max_body=65536, max_recording=1 << 20) for e in events]
    return chain.append(prepared, session_gap=GAP, sessions=cache)


def session_queries(queries) -> list[str]:
    table = Session._meta.db_table
    return [q["sql"] for q in queries if f'FROM "{table}"' in q["sql"] or f"FROM {table}" in q["sql"]]


def test_known_agents_are_resolved_without_session_queries():
    cache = chain.SessionCache()
    agents = [f"agent-{n}" for n in range(20)]
    append([event(0, user_uid=a) for a in agents], cache)
    with CaptureQueriesContext(connection) as second:
        rows = append([event(60, user_uid=a) for a in agents], cache)
    assert session_queries(second.captured_queries) == []
    assert len({r.session_id for r in rows}) == 20
    assert Session.objects.count() == 20


def test_another_writers_new_session_and_activity_are_seen():
    mine, theirs = chain.SessionCache(), chain.SessionCache()
    first = append([event(0)], mine)
    # The other writer keeps the session alive past what this writer last saw, then this writer's
    # next event is within the gap of that activity only.
    middle = append([event(10 * 60)], theirs)
    late = append([event(20 * 60)], mine)
    assert first[0].session_id == middle[0].session_id == late[0].session_id
    # The other writer opens a new session after a pause; this writer must join it, not start a third.
    opened = append([event(60 * 60)], theirs)
    joined = append([event(61 * 60)], mine)
    assert opened[0].session_id != late[0].session_id
    assert joined[0].session_id == opened[0].session_id
    assert Session.objects.count() == 2


def test_a_failed_append_forgets_what_it_resolved(monkeypatch):
    cache = chain.SessionCache()
    append([event(0)], cache)

    def fail(self, *args):
        raise RuntimeError("signing failed")

    with monkeypatch.context() as patched:
        patched.setattr(chain._Staged, "chain_hash", fail)
        with pytest.raises(RuntimeError):
            append([event(60 * 60)], cache)  # opened a new session, then rolled back
    assert cache.entries == {} and cache.token is None
    rows = append([event(61 * 60)], cache)
    assert Session.objects.filter(pk=rows[0].session_id).exists()
    assert Session.objects.count() == 2


def test_pruned_sessions_are_not_reused():
    cache = chain.SessionCache()
    rows = append([event(0, kubectl_session="run")], cache)
    chain.prune_through(rows[-1].seq, archive_sha256="0" * 64, now=timezone.now())
    assert not Session.objects.exists()
    again = append([event(1, kubectl_session="run")], cache)
    assert Session.objects.filter(pk=again[0].session_id).exists()


def test_interleaved_writers_group_exactly_as_the_database_query():
    """Random batches from two caching writers and an uncached one (a journal replay) against the same
    batches resolved without any cache under other connection names: the same grouping."""
    rng = random.Random(16)
    caches = [chain.SessionCache(size=3), chain.SessionCache(), None]
    clock, pending, cached_ids, reference_ids = 0.0, [], [], []
    for _ in range(60):
        batch = []
        for _ in range(rng.randint(1, 5)):
            clock += rng.choice([1, 30, 5 * 60, 14 * 60, 16 * 60, 40 * 60])
            offset = clock - rng.choice([0, 0, 0, 20 * 60])  # now and then an old request replayed late
            fields = dict(user_uid=rng.choice(["a", "b", "c"]), connection=rng.choice(["p", "q"]),
                          kubectl_session=rng.choice(["", "", "", "k"]))
            if pending and rng.random() < 0.3:
                received = pending.pop(0)
                done = dict(received, stage="ResponseComplete", response_code=200,
                            stage_timestamp=received["stage_timestamp"] + timedelta(minutes=rng.choice([1, 30])))
                batch.append(done)
            elif rng.random() < 0.3:
                received = event(offset, stage="RequestReceived", verb="create", response_code=None, **fields)
                pending.append(received)
                batch.append(received)
            else:
                batch.append(event(offset, **fields))
        cache = rng.choice(caches)
        cached_ids += [r.session_id for r in append(batch, cache)]
        reference = [dict(e, connection="ref-" + e["connection"], audit_id=uuid.uuid5(uuid.NAMESPACE_OID, str(e["audit_id"])))
                     for e in batch]
        reference_ids += [r.session_id for r in append(reference, None)]
    assert len(cached_ids) == len(reference_ids)
    assert _partition(cached_ids) == _partition(reference_ids)
    assert len(set(cached_ids)) > 10
    assert AuditEvent.objects.count() == 2 * len(cached_ids)


def _partition(ids):
    first = {}
    return [first.setdefault(pk, i) for i, pk in enumerate(ids)]


def test_appends_inside_remembering_use_the_cache():
    """The recorder's writer thread goes through chain.append unchanged: its cache is set around it."""
    cache = chain.SessionCache()
    prepared = [prepare(event(0, user_uid=f"agent-{n}"), max_body=65536, max_recording=1 << 20) for n in range(5)]
    with chain.remembering(cache):
        chain.append(prepared, session_gap=GAP)
        later = [prepare(event(60, user_uid=f"agent-{n}"), max_body=65536, max_recording=1 << 20) for n in range(5)]
        with CaptureQueriesContext(connection) as queries:
            chain.append(later, session_gap=GAP)
    assert session_queries(queries.captured_queries) == []
    assert Session.objects.count() == 5


def test_an_append_of_known_agents_reads_the_head_and_newest_checkpoint_in_one_statement():
    """Under the chain lock an append reads the head, the newest checkpoint (for the cache's token)
    and the events already stored: one statement for the first two (for all three on PostgreSQL)."""
    cache = chain.SessionCache()
    append([event(0)], cache)
    with CaptureQueriesContext(connection) as second:
        chain.append([prepare(event(60), max_body=65536, max_recording=1 << 20)], session_gap=GAP, sessions=cache,
                     rows=False)
    reads = [q["sql"] for q in second.captured_queries if q["sql"].lstrip().upper().startswith("SELECT")
             and "advisory" not in q["sql"]]
    checkpoint = [sql for sql in reads if "audit_checkpoint" in sql]
    assert len(checkpoint) == 1 and "audit_auditevent" in checkpoint[0]
    # With the (audit id, stage) pairs already stored: in the same statement on PostgreSQL, in another elsewhere.
    assert len(reads) == (1 if connection.vendor == "postgresql" else 2)
