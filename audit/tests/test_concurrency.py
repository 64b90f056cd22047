"""Concurrent writers (several gateway processes) still produce one gapless, valid chain."""

import threading
import time

import pytest
from django.db import connection, connections, transaction

from audit.chain import verify_chain
from audit.models import AuditEvent
from audit.tests.factories import append, event

pytestmark = pytest.mark.django_db(transaction=True)


def test_parallel_appends_are_serialized():
    start = threading.Barrier(4)
    errors = []

    def writer(n: int):
        try:
            start.wait(10)
            for i in range(15):
                append(event(n * 100 + i), event(n * 100 + i + 0.5))
        except Exception as exc:  # reported below; a thread's exception would otherwise vanish
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert list(AuditEvent.objects.values_list("seq", flat=True)) == list(range(1, 121))
    assert verify_chain().ok


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the advisory lock and its statements are PostgreSQL's")
def test_an_append_waiting_for_the_lock_reads_the_head_its_holder_committed():
    """The lock and the head are read in one round trip but two statements: an append that
    waited for the lock must see what the holder committed (a read whose snapshot predates the
    lock's grant would number its events from the old head and fork or break the chain)."""
    committed = threading.Event()
    holding = threading.Event()
    errors = []

    def holder():
        try:
            with transaction.atomic():
                append(event(0))
                holding.set()
                deadline = time.monotonic() + 10
                while not _someone_waits_for_the_chain_lock() and time.monotonic() < deadline:
                    time.sleep(0.01)
            committed.set()
        except Exception as exc:  # reported below
            errors.append(exc)
            holding.set()
        finally:
            connections.close_all()

    thread = threading.Thread(target=holder)
    thread.start()
    assert holding.wait(10)
    later = append(event(1))  # waits for the holder's lock, then reads the head it committed
    thread.join(10)
    assert errors == [] and committed.is_set()
    first = AuditEvent.objects.get(seq=1)
    assert [e.seq for e in later] == [2] and later[0].prev_hash == first.hash
    assert verify_chain().ok


def _someone_waits_for_the_chain_lock() -> bool:
    with connection.cursor() as cursor:  # pg_locks shows the locks as they are now, inside a transaction too
        cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        return cursor.fetchone()[0] > 0
