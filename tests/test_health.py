"""airlock.health.Readiness: what each check needs, and that probes never hammer a cluster."""

import socket
from types import SimpleNamespace

import httpx
import pytest

from airlock.health import Readiness
from gateway.upstream import UpstreamPool

pytestmark = pytest.mark.django_db(transaction=True)


class Clock:
    now = 100.0

    def __call__(self):
        return self.now


class Cluster:
    """Answers for the connections' clusters (any status counts as reachable), counting requests."""

    def __init__(self):
        self.down: set[str] = set()
        self.requests: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        self.requests.append(host)
        if host in self.down:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(401)


def upstream(name):
    return SimpleNamespace(name=name, server_url=f"https://{name}.example:6443", cache_key=name, connect_timeout=1.0)


class Recorder:
    pending = 0
    stalled = 0.0

    def stalled_seconds(self):
        return self.stalled


@pytest.fixture
def cluster():
    return Cluster()


@pytest.fixture
def make(cluster):
    def make(names=("a", "b"), **options):
        gateway = SimpleNamespace(recorder=Recorder(), draining=False,
                                  pool=UpstreamPool(transport=httpx.MockTransport(cluster)))

        async def registry(name):
            return upstream(name)

        clock = Clock()
        readiness = Readiness(gateway=gateway, registry=registry, clock=clock,
                              connection_names=lambda: list(names), **options)
        return readiness, gateway, clock

    return make


async def test_each_cluster_is_asked_at_most_once_per_cache_period(make, cluster):
    readiness, _, clock = make(upstream_cache_seconds=10)
    for _ in range(5):
        assert await readiness.check() == []
    assert sorted(cluster.requests) == ["a.example", "b.example"]
    clock.now += 10
    assert await readiness.check() == []
    assert len(cluster.requests) == 4


async def test_one_cluster_down_is_ready_by_default_every_cluster_down_is_not(make, cluster):
    readiness, _, clock = make()
    cluster.down = {"a.example"}
    assert await readiness.check() == []
    cluster.down = {"a.example", "b.example"}
    clock.now += 10
    assert await readiness.check() == ["upstream"]
    cluster.down = set()
    clock.now += 10
    assert await readiness.check() == []


async def test_every_cluster_must_answer_when_asked_and_none_when_off(make, cluster):
    cluster.down = {"a.example"}
    every, _, _ = make(upstreams="every")
    assert await every.check() == ["upstream"]
    off, _, _ = make(upstreams="off")
    assert await off.check() == []
    assert cluster.requests == ["a.example", "b.example"]  # "off" asked nothing


async def test_an_audit_writer_stalled_past_the_bound_and_a_draining_process_are_not_ready(make):
    readiness, gateway, _ = make(names=(), audit_stall_seconds=30)
    gateway.recorder.stalled = 29.0
    assert await readiness.check() == []
    gateway.recorder.stalled = 31.0
    gateway.draining = True
    assert await readiness.check() == ["audit", "draining"]


async def test_redis_is_checked_when_configured(make):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once closed
    readiness, _, _ = make(names=(), redis_url=f"redis://:redis-password-x@127.0.0.1:{port}/0", check_seconds=1.0)
    assert await readiness.check() == ["redis"]


def test_an_unknown_upstream_policy_is_refused(make):
    with pytest.raises(ValueError, match="AIRLOCK_READY_UPSTREAMS"):
        make(upstreams="some")
