"""PolicyCache: no query on a warm hit, invalidation by signals, staleness bound, loads off the loop."""

import asyncio
import threading

import pytest
from asgiref.sync import async_to_sync
from django.db import OperationalError

from connections.models import Connection
from identity.principal import Principal
from kube.requestinfo import parse
from policy.cache import PolicyCache, invalidate_all
from policy.evaluate import evaluate
from policy.models import Rule
from runtime import db
from runtime.db import DatabaseUnavailable

AGENT = Principal(
    subject="a", username="agent@example.com", groups=(), issuer="https://idp.example", expires_at=0.0,
    token_id="t",
)


def add_rule(conn, name, order=10, **fields):
    base = dict(
        effect="allow", subjects=["*"], verbs=["get"], api_groups=[""], resources=["pods"],
        namespaces=["*"], names=["*"],
    )
    rule = Rule(connection=conn, name=name, order=order, **(base | fields))
    rule.save()
    return rule


@pytest.fixture
def prod(db):
    conn = Connection(name="prod", server_url="https://k8s.example", bearer_token="not-a-real-token")
    conn.save()
    add_rule(conn, "read-pods")
    return conn


def rule_names(cache, name):
    return [r.name for r in async_to_sync(cache.rules_for)(name)]


def test_warm_cache_runs_no_query(prod, django_assert_num_queries):
    cache = PolicyCache(max_age=60)
    with django_assert_num_queries(1):
        first = async_to_sync(cache.rules_for)("prod")
    info = parse("GET", "/api/v1/namespaces/shop/pods/web", "")
    with django_assert_num_queries(0):
        for _ in range(3):
            rules = async_to_sync(cache.rules_for)("prod")
            assert rules is first
            assert evaluate(rules, AGENT, info).rule_name == "read-pods"


def test_rule_changes_invalidate(prod):
    cache = PolicyCache(max_age=60)
    assert rule_names(cache, "prod") == ["read-pods"]
    deny = add_rule(prod, "no-pods", order=5, effect="deny")
    assert rule_names(cache, "prod") == ["no-pods", "read-pods"]
    deny.enabled = False
    deny.save()
    assert [r.enabled for r in async_to_sync(cache.rules_for)("prod")] == [False, True]
    deny.delete()
    assert rule_names(cache, "prod") == ["read-pods"]


def test_connection_changes_invalidate(prod):
    cache = PolicyCache(max_age=60)
    assert rule_names(cache, "prod") == ["read-pods"]
    assert rule_names(cache, "live") == []
    prod.name = "live"
    prod.save()
    assert rule_names(cache, "prod") == []
    assert rule_names(cache, "live") == ["read-pods"]
    prod.delete()
    assert rule_names(cache, "live") == []


def test_every_cache_instance_is_invalidated(prod):
    caches = [PolicyCache(max_age=60), PolicyCache(max_age=60)]
    for cache in caches:
        assert rule_names(cache, "prod") == ["read-pods"]
    add_rule(prod, "read-nodes", order=20, resources=["nodes"])
    for cache in caches:
        assert rule_names(cache, "prod") == ["read-pods", "read-nodes"]


class CountingLoader:
    def __init__(self):
        self.calls = 0
        self.threads = set()
        self.during_load = None

    def __call__(self, name):
        self.calls += 1
        self.threads.add(threading.get_ident())
        if self.during_load:
            self.during_load()
        return (f"{name}-{self.calls}",)


def test_staleness_bound_for_other_processes():
    now = [100.0]
    loader = CountingLoader()
    cache = PolicyCache(max_age=5, loader=loader, clock=lambda: now[0])
    assert async_to_sync(cache.rules_for)("prod") == ("prod-1",)
    now[0] += 5
    assert async_to_sync(cache.rules_for)("prod") == ("prod-1",)
    now[0] += 0.5
    assert async_to_sync(cache.rules_for)("prod") == ("prod-2",)
    assert loader.calls == 2


def test_max_age_comes_from_settings(settings):
    settings.AIRLOCK_POLICY_CACHE_SECONDS = 0
    now = [0.0]
    loader = CountingLoader()
    cache = PolicyCache(loader=loader, clock=lambda: now[0])
    async_to_sync(cache.rules_for)("prod")
    now[0] += 0.001
    async_to_sync(cache.rules_for)("prod")
    assert loader.calls == 2


def test_load_racing_an_invalidation_is_not_kept():
    loader = CountingLoader()
    cache = PolicyCache(max_age=60, loader=loader)
    loader.during_load = invalidate_all
    assert async_to_sync(cache.rules_for)("prod") == ("prod-1",)
    loader.during_load = None
    assert async_to_sync(cache.rules_for)("prod") == ("prod-2",)
    assert async_to_sync(cache.rules_for)("prod") == ("prod-2",)


def test_invalidate_one_connection():
    loader = CountingLoader()
    cache = PolicyCache(max_age=60, loader=loader)
    async_to_sync(cache.rules_for)("a")
    async_to_sync(cache.rules_for)("b")
    cache.invalidate("a")
    assert async_to_sync(cache.rules_for)("a") == ("a-3",)
    assert async_to_sync(cache.rules_for)("b") == ("b-2",)


async def test_miss_loads_off_the_event_loop():
    loader = CountingLoader()
    cache = PolicyCache(max_age=60, loader=loader)
    assert await cache.rules_for("prod") == ("prod-1",)
    assert await cache.rules_for("prod") == ("prod-1",)
    assert loader.calls == 1
    assert threading.get_ident() not in loader.threads


class LostDatabase(CountingLoader):
    """Loads like CountingLoader until ``lost``; then fails as a refused connection does."""

    lost = False

    def __call__(self, name):
        self.ping()
        return super().__call__(name)

    def ping(self):
        if self.lost:
            raise OperationalError("connection refused")


async def test_while_the_database_is_away_entries_serve_for_the_stated_bound_only(settings, monkeypatch):
    settings.AIRLOCK_CACHE_STALE_SECONDS = 10
    now = [100.0]
    loader = LostDatabase()
    monkeypatch.setattr(db, "PROBE_INTERVAL", 0.01)
    monkeypatch.setattr(db, "_ping", loader.ping)
    cache = PolicyCache(max_age=5, loader=loader, clock=lambda: now[0])
    assert await cache.rules_for("prod") == ("prod-1",)
    loader.lost = True
    now[0] += 6
    assert await cache.rules_for("prod") == ("prod-1",)  # the refresh failed: served from the cache
    now[0] += 8.9
    assert await cache.rules_for("prod") == ("prod-1",)  # 14.9 s: within max_age + AIRLOCK_CACHE_STALE_SECONDS
    now[0] += 0.2
    with pytest.raises(DatabaseUnavailable):
        await cache.rules_for("prod")
    with pytest.raises(DatabaseUnavailable):
        await cache.rules_for("never-loaded")
    loader.lost = False  # the database is back: the probe notices, the next request reloads
    while not db.available():
        await asyncio.sleep(0.01)
    assert await cache.rules_for("prod") == ("prod-2",)
