"""Concurrent writers (several gateway processes) still produce one gapless, valid chain."""

import threading

import pytest
from django.db import connections

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
