"""The recorder's own measures: queue depth, append latency and failures, and how long it has been stalled
(airlock.health reads that for /readyz)."""

import asyncio
import time

import pytest
from django.db import OperationalError
from prometheus_client import REGISTRY

from audit import chain
from audit.recorder import Recorder
from audit.tests.factories import event

pytestmark = pytest.mark.django_db(transaction=True)


def sample(name, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_writer_that_cannot_commit_is_stalled_until_a_batch_commits(monkeypatch):
    append = chain.append
    database = {"up": False}

    def flaky(batch, session_gap=None):
        if not database["up"]:
            raise OperationalError("database away")
        return append(batch, session_gap=session_gap)

    monkeypatch.setattr(chain, "append", flaky)
    recorder = Recorder(retry_delay=0.01, max_retry_delay=0.02)
    assert recorder.stalled_seconds() == 0.0
    depth, failures = sample("airlock_audit_queue_depth"), sample("airlock_audit_write_failures_total", kind="batch")
    committed = sample("airlock_audit_events_committed_total")
    batches = sample("airlock_audit_append_seconds_count", kind="batch")

    await recorder.finish(event(1))
    await recorder.finish(event(2))
    for _ in range(200):
        if sample("airlock_audit_write_failures_total", kind="batch") > failures:
            break
        await asyncio.sleep(0.01)
    assert recorder.stalled_seconds(time.monotonic() + 60) >= 60
    assert sample("airlock_audit_queue_depth") == depth + 2
    assert sample("airlock_audit_write_failures_total", kind="batch") > failures

    database["up"] = True
    await asyncio.wait_for(recorder.flush(), 30)
    assert recorder.stalled_seconds() == 0.0
    assert sample("airlock_audit_queue_depth") == depth
    assert sample("airlock_audit_events_committed_total") == committed + 2
    assert sample("airlock_audit_append_seconds_count", kind="batch") > batches
    await recorder.aclose()


async def test_a_commit_before_forwarding_is_timed_as_a_commit():
    recorder = Recorder()
    commits = sample("airlock_audit_append_seconds_count", kind="commit")
    await recorder.begin(event(3, stage="RequestReceived", verb="create"))
    assert sample("airlock_audit_append_seconds_count", kind="commit") == commits + 1
    await recorder.aclose()
