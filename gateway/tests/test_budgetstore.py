"""The budget counters in Redis (gateway.budgetstore.RedisCounters) against the real server: two
instances stand for two gateway processes sharing it; a Redis that is not there fails fast."""

import os
import socket
import time
import uuid
from urllib.parse import urlsplit

import pytest

from gateway.budgetstore import RedisCounters, StoreUnavailable
from policy.budgets import Window

pytestmark = pytest.mark.asyncio


def redis_url() -> str:
    """REDIS_URL's server (CI's), else the local one; database 9, this work's own."""
    parts = urlsplit(os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
    return f"redis://{parts.netloc}/9"


@pytest.fixture
async def processes():
    """Two counters on one Redis, as two gateway processes have, and a key prefix of this test's own."""
    clock = [time.time()]
    pair = [RedisCounters(redis_url(), timeout=2.0, clock=lambda: clock[0]) for _ in range(2)]
    yield pair, clock, f"test-{uuid.uuid4().hex}"
    for counters in pair:
        await counters.aclose()


async def test_two_processes_spend_one_quota(processes):
    (a, b), _, key = processes
    quota = Window(3, 3600)
    answers = [await counters.hit(key, quota) for counters in (a, b, a, b)]
    assert [usage.allowed for usage in answers] == [True, True, True, False]
    assert time.time() + 3590 < answers[-1].reset_at <= time.time() + 3600  # the oldest leaves in an hour
    peeked = await a.peek(key, quota)
    assert not peeked.allowed and peeked.reset_at == pytest.approx(answers[-1].reset_at, abs=0.01)
    assert (await b.peek(f"{key}-other", quota)).allowed


async def test_two_processes_share_the_slots_and_a_dead_ones_expire(processes):
    (a, b), clock, key = processes
    assert (await a.acquire(key, 2, "s1", 60)).allowed
    assert (await b.acquire(key, 2, "s2", 60)).allowed
    full = await a.acquire(key, 2, "s3", 60)
    assert not full.allowed and full.reset_at == pytest.approx(clock[0] + 60)
    assert not (await b.free(key, 2)).allowed and (await b.free(key, 3)).allowed
    await b.release(key, "s2")  # a session on process b ended
    assert (await a.acquire(key, 2, "s3", 60)).allowed
    # Process a keeps s3 alive; s1's process died and renews nothing: after its expiry the slot is free.
    clock[0] += 40
    await a.renew(key, "s3", 60)
    clock[0] += 21
    assert (await b.acquire(key, 2, "s4", 60)).allowed
    assert not (await b.acquire(key, 2, "s5", 60)).allowed  # s3 (renewed) and s4


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_a_redis_that_is_not_there_fails_fast_and_is_not_asked_again_at_once():
    counters = RedisCounters(f"redis://127.0.0.1:{closed_port()}/9", timeout=0.5, cooldown=30)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await counters.hit("k", Window(1, 60))
    assert time.monotonic() - started < 2
    started = time.monotonic()
    for _ in range(20):
        with pytest.raises(StoreUnavailable):
            await counters.peek("k", Window(1, 60))
    assert time.monotonic() - started < 0.5  # the cooldown: not one more connection attempt
    await counters.aclose()

