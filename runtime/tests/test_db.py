"""runtime.db: the serving path's database calls never queue behind one stuck thread."""

import asyncio
import functools
import threading

import pytest
from django.db import OperationalError

from connections.models import Connection
from runtime import db

pytestmark = pytest.mark.asyncio


@pytest.fixture
def stuck():
    """A call that blocks its thread, as a query to a partitioned database does, until released."""
    release = threading.Event()
    started = []

    def call(name):
        started.append(name)
        release.wait(30)
        return name

    call.release = release.set
    call.started = started
    yield call
    release.set()


async def test_a_stuck_call_is_abandoned_and_the_others_fail_at_once(settings, stuck, monkeypatch):
    settings.AIRLOCK_DB_WAIT_SECONDS = 0.3
    monkeypatch.setattr(db, "PROBE_INTERVAL", 0.05)
    monkeypatch.setattr(db, "_ping", functools.partial(stuck, "probe"))  # the database is still away
    with pytest.raises(db.DatabaseUnavailable, match="did not answer within 0.3s"):
        await db.run(stuck, "first")
    assert not db.available()
    for _ in range(20):
        with pytest.raises(db.DatabaseUnavailable, match="is unavailable"):
            await db.run(stuck, "refused at once")
    await asyncio.sleep(0.2)
    assert stuck.started == ["first", "probe"]  # one probe, in the background; nothing queued behind it
    stuck.release()  # the database is back: the probe notices by itself
    for _ in range(100):
        if db.available():
            break
        await asyncio.sleep(0.02)
    assert db.available()
    assert await db.run(lambda: "answered") == "answered"


async def test_calls_do_not_share_one_thread(settings, stuck):
    settings.AIRLOCK_DB_WAIT_SECONDS = 5
    blocked = asyncio.ensure_future(db.run(stuck, "blocked"))
    await asyncio.sleep(0.05)
    assert await db.run(threading.get_ident) != threading.get_ident()  # answered beside the stuck call
    stuck.release()
    assert await blocked == "blocked"


async def test_errors_that_are_not_about_reaching_the_database_pass_through(transactional_db):
    def conflict():
        Connection.objects.count()  # the connection works...
        raise OperationalError("could not serialize access")  # ...and the transaction lost a conflict

    with pytest.raises(OperationalError) as error:
        await db.run(conflict)
    assert not isinstance(error.value, db.DatabaseUnavailable) and db.available()


async def test_a_caller_cancelled_as_its_call_finishes_is_cancelled(settings, stuck):
    """A held agent going away in the loop turn its poll of the database returns: the hold ends.
    (asyncio.wait_for on Python 3.11 returned the result instead, and the hold ran to its timeout.)"""
    settings.AIRLOCK_DB_WAIT_SECONDS = 5
    caller = asyncio.ensure_future(db.run(stuck, "polled"))
    while not stuck.started:
        await asyncio.sleep(0.01)
    stuck.release()
    threading.Event().wait(0.2)  # the loop is busy: the finished call's result is queued behind this turn
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
