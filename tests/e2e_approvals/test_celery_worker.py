"""The Celery parts with a real worker against Redis (not eager mode): webhooks with retries, the sweeper.

Redis runs on 127.0.0.1:6379 (.ci/run starts it); these tests use REDIS_URL's database when it is set (each
CI job, checkout and pytest-xdist worker its own: tests/parallel.py), else database 13, and a queue of their
own, so nothing else on that Redis is touched and no other run's sweeper announcement reaches them.
"""

import json
import os
import threading
import time
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone

from approvals import leases, reviews
from approvals.broadcast import LEASES_GROUP
from approvals.models import Lease, LeaseState
from approvals.tests.factories import connection, review_rule, reviewer
from approvals.tests.test_reviews import held

pytestmark = pytest.mark.django_db(transaction=True)

REDIS = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/13"


@pytest.fixture
def celery_worker(settings):
    from celery.contrib.testing.worker import start_worker

    from airlock.celery import app

    queue = f"airlock-approvals-test-{uuid.uuid4().hex[:8]}"
    saved = {key: app.conf.get(key) for key in ("broker_url", "result_backend", "task_default_queue",
                                               "task_always_eager")}
    app.conf.update(broker_url=REDIS, result_backend=REDIS, task_default_queue=queue, task_always_eager=False)
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING", queues=[queue],
                          shutdown_timeout=30):
            yield app
    finally:
        app.conf.update(saved)


class Webhook:
    """A local webhook receiver that fails the first delivery to each path with a 503."""

    def __init__(self):
        self.received = []
        self.attempts = {}
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.attempts[self.path] = hook.attempts.get(self.path, 0) + 1
                if hook.attempts[self.path] == 1:
                    self.send_response(503)
                else:
                    hook.received.append((self.path, json.loads(body)))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count, timeout=60.0):
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.received)} of {count} webhooks arrived: {self.received}")
            time.sleep(0.05)
        return sorted(self.received, key=lambda item: (item[1].get("event", ""), item[0]))

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook(settings):
    hook = Webhook()
    settings.AIRLOCK_NOTIFY_WEBHOOKS = [{"url": f"{hook.url}/slack", "format": "slack"},
                                        {"url": f"{hook.url}/json", "format": "json"}]
    settings.AIRLOCK_DASHBOARD_URL = "https://airlock.example"
    yield hook
    hook.close()


def test_new_and_decided_reviews_reach_both_webhooks_after_a_retry(celery_worker, webhook):
    review_rule(connection())
    review, _ = reviews.open_review(held())
    requested = webhook.wait_for(2)
    assert webhook.attempts == {"/slack": 2, "/json": 2}
    slack = next(body for path, body in requested if path == "/slack")
    assert slack["text"].startswith(f"Airlock review {review.pk} needs a decision: agent-1 wants to delete")
    assert slack["blocks"][1]["elements"][0]["text"] == (
        f"<https://airlock.example/approvals/reviews/{review.pk}/|Open in Airlock>"
    )
    plain = next(body for path, body in requested if path == "/json")
    assert plain["event"] == "review.requested" and plain["review"]["id"] == review.pk
    assert plain["review"]["state"] == "pending"

    reviews.decide(review.pk, reviewer("rita"), approve=False, reason="change freeze")
    decided = [body for path, body in webhook.wait_for(4) if body.get("event") == "review.decided"
               or "denied" in body.get("text", "")]
    assert len(decided) == 2
    plain = next(body for body in decided if "event" in body)
    assert (plain["review"]["state"], plain["review"]["decided_by"], plain["review"]["reason"]) == (
        "denied", "rita", "change freeze"
    )


def test_the_sweeper_expires_leases_and_announces_it(celery_worker, settings):
    from approvals.tasks import sweep
    from channels.layers import get_channel_layer

    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                                           "CONFIG": {"hosts": [REDIS]}}}
    connection()
    lease = leases.request_lease(connection="prod", subject="agent-1", duration="1h", reason="x", requested_by="ops")
    leases.decide(lease.pk, reviewer("rita"), grant=True)
    Lease.objects.filter(pk=lease.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(LEASES_GROUP, channel)
    try:
        result = sweep.delay().get(timeout=60)
        assert result == {"leases_expired": [lease.pk], "reviews_expired": 0}
        message = async_to_sync(layer.receive)(channel)
        assert message == {"type": "lease.changed", "lease": lease.pk, "connection": "prod", "state": "expired",
                           "reason": f"lease {lease.pk} expired"}
    finally:
        async_to_sync(layer.group_discard)(LEASES_GROUP, channel)
    lease.refresh_from_db()
    assert lease.state == LeaseState.EXPIRED
