"""Expiry without Celery beat: the gateway's own sweeper, and the demo's fresh start."""

import asyncio
import logging
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.db import connection as db_connection
from django.utils import timezone

from approvals import reviews
from approvals.models import Review, ReviewState
from approvals.sweeper import Sweeper
from approvals.tests.factories import connection, review_rule
from approvals.tests.test_reviews import held

pytestmark = pytest.mark.django_db(transaction=True)


def stale_review():
    review_rule(connection())
    review, _ = reviews.open_review(held())
    Review.objects.filter(pk=review.pk).update(created_at=timezone.now() - timedelta(hours=2))
    return review


async def in_thread(fn):
    """``fn()`` in asgiref's thread, whose database connection is closed after (the test database is dropped)."""
    def run():
        try:
            return fn()
        finally:
            db_connection.close()

    return await sync_to_async(run)()


async def until(condition, timeout=10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not await in_thread(condition):
        assert asyncio.get_running_loop().time() < deadline, "not within the timeout"
        await asyncio.sleep(0.02)


async def test_the_gateways_sweeper_expires_a_forgotten_review():
    review = await in_thread(stale_review)
    sweeper = Sweeper(interval=0.05)
    sweeper.start()
    try:
        await until(lambda: Review.objects.get(pk=review.pk).state == ReviewState.EXPIRED)
        runs = sweeper.runs
        await until(lambda: sweeper.runs > runs)  # it keeps going
    finally:
        await sweeper.stop()
    assert sweeper.task is None
    event = await in_thread(lambda: Review.objects.get(pk=review.pk).events.last())
    assert (event.kind, event.actor, event.reason) == ("expired", "airlock", "nobody decided in time")


async def test_a_failing_sweep_is_logged_and_retried(monkeypatch, caplog):
    calls = []

    def failing():
        calls.append(1)
        raise OSError("database away")

    monkeypatch.setattr("approvals.sweeper.sweep", failing)
    sweeper = Sweeper(interval=0.05)
    with caplog.at_level(logging.WARNING, logger="approvals.sweeper"):
        sweeper.start()
        try:
            await until(lambda: len(calls) >= 2)
        finally:
            await sweeper.stop()
    assert "approvals sweep failed: OSError" in caplog.text and "database away" not in caplog.text


def test_off_where_beat_runs(settings):
    settings.AIRLOCK_APPROVALS_SWEEP_IN_GATEWAY = False
    assert Sweeper.from_settings() is None
    settings.AIRLOCK_APPROVALS_SWEEP_IN_GATEWAY, settings.AIRLOCK_APPROVALS_SWEEP_SECONDS = True, 7
    assert Sweeper.from_settings().interval == 7


def test_expire_pending_clears_the_queue():
    review_rule(connection())
    pending, _ = reviews.open_review(held())
    decided, _ = reviews.open_review(held("/k8s/prod/apis/apps/v1/namespaces/shop/deployments/api"))
    Review.objects.filter(pk=decided.pk).update(state=ReviewState.DENIED)
    assert reviews.expire_pending("left from an earlier demo run") == 1
    assert Review.objects.get(pk=pending.pk).events.last().reason == "left from an earlier demo run"
    assert Review.objects.get(pk=decided.pk).state == ReviewState.DENIED
    assert not Review.objects.filter(state=ReviewState.PENDING).exists()
