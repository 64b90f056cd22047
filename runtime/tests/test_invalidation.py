"""runtime.invalidation: what one process changes, every other process's caches drop at once.

Real Redis on 127.0.0.1:6379 (.ci/run starts it), REDIS_URL's database (pub/sub channels are named
after it, so parallel runs do not hear each other).  The separate-process proof (two uvicorn
workers and ``manage.py shell``) is tests/e2e_workers.
"""

import asyncio
import threading
import time

import pytest
from asgiref.sync import sync_to_async

from runtime import db, invalidation
from tests.resilience_rig import REDIS_DB
from tests.tcpproxy import TcpProxy

URL = f"redis://127.0.0.1:6379/{REDIS_DB}"


class Calls:
    """Invalidators for every kind that remember what they were asked to drop."""

    def __init__(self):
        self.seen: list[tuple[str, str | None, int | None]] = []
        self.changed = asyncio.Event()

    def invalidators(self):
        def make(kind):
            def invalidate(connection, connection_id):
                self.seen.append((kind, connection, connection_id))
                self.changed.set()
            return invalidate
        return {kind: make(kind) for kind in invalidation.KINDS}

    async def until(self, predicate, timeout: float = 5.0):
        deadline = time.monotonic() + timeout
        while not predicate(self.seen):
            self.changed.clear()
            remaining = deadline - time.monotonic()
            assert remaining > 0, self.seen
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass
        return self.seen


EVERYTHING = [(kind, None, None) for kind in invalidation.KINDS]


@pytest.fixture
def redis_settings(settings):
    settings.REDIS_URL = URL
    settings.AIRLOCK_CHANNEL_LAYER_TIMEOUT_SECONDS = 2
    invalidation._publisher._skip_until = 0.0
    return settings


@pytest.fixture
async def listening(redis_settings):
    calls = Calls()
    listener = invalidation.Listener(URL, calls.invalidators(), ping_seconds=0.5, reconnect_seconds=0.1)
    listener.start()
    await asyncio.wait_for(listener.subscribed.wait(), 10)
    yield calls
    await listener.stop()


def test_messages_round_trip_and_anything_else_is_refused():
    assert invalidation.decode(invalidation.encode("connections", "prod", 7)) == {
        "kind": "connections", "connection": "prod", "id": 7}
    for data in (b"", b"not json", b"[]", b'{"kind": "secrets"}', b'{"kind": "rules", "connection": 1}',
                 b'{"kind": "rules", "id": true}', None):
        assert invalidation.decode(data) is None
    with pytest.raises(ValueError):
        invalidation.encode("secrets")
    assert invalidation.channel_name("redis://h:6379/3") == "airlock.invalidate.3"
    assert invalidation.channel_name("redis://h:6379") == "airlock.invalidate.0"


async def test_subscribing_drops_every_cache_of_the_process(listening):
    # Whatever was cached before the subscription stood may have changed unannounced.
    assert listening.seen == EVERYTHING


async def test_an_announcement_reaches_the_listener(listening):
    listening.seen.clear()
    invalidation.announce("connections", "prod", 7)  # no serving loop here: published in place
    assert await listening.until(lambda seen: seen) == [("connections", "prod", 7)]


async def test_from_the_serving_loop_it_is_published_beside_the_caller(listening):
    listening.seen.clear()
    loop_thread = threading.get_ident()
    published_from = []
    publish = invalidation._Publisher._publish_async

    async def spy(self, url, message):
        published_from.append(threading.get_ident())
        await publish(self, url, message)

    invalidation._Publisher._publish_async = spy
    try:
        # On the gateway's database pool (what a model signal's on_commit runs on): handed to the loop.
        await db.run(invalidation.announce, "leases", "prod")
        assert await listening.until(lambda seen: seen) == [("leases", "prod", None)]
    finally:
        invalidation._Publisher._publish_async = publish
    assert published_from and set(published_from) == {loop_thread}


async def test_a_message_it_cannot_read_drops_every_cache(listening):
    import redis

    listening.seen.clear()
    client = redis.Redis.from_url(URL)
    try:
        client.publish(invalidation.channel_name(URL), b"{garbage")
    finally:
        client.close()
    assert await listening.until(lambda seen: len(seen) >= 3) == EVERYTHING


@pytest.mark.django_db(transaction=True)
async def test_a_rule_saved_elsewhere_is_announced_once_committed(listening):
    from connections.models import Connection
    from policy.models import Rule

    def save():
        connection = Connection(name="announced", server_url="https://127.0.0.1:6443")
        connection.bearer_token = "t"
        connection.save()
        Rule.objects.create(connection=connection, order=1, name="r", effect="allow", groups=["g"], verbs=["get"],
                            api_groups=[""], resources=["pods"], namespaces=["*"], names=["*"])
        return connection.pk

    listening.seen.clear()
    pk = await sync_to_async(save)()
    seen = await listening.until(lambda seen: ("rules", None, None) in seen and ("connections", "announced", pk) in seen)
    assert set(seen) == {("rules", None, None), ("connections", "announced", pk)}


async def test_with_redis_away_nothing_raises_and_the_next_publishes_are_skipped(redis_settings):
    with _proxy() as proxy:
        redis_settings.REDIS_URL = f"redis://127.0.0.1:{proxy.port}/{REDIS_DB}"
        proxy.refuse()
        invalidation._publisher._sync = None
        invalidation.announce("rules")  # refused: logged, not raised
        assert invalidation._publisher._skip_until > time.monotonic()
        calls = []
        original = invalidation._publisher._sync.publish
        invalidation._publisher._sync.publish = lambda *args: calls.append(args) or original(*args)
        invalidation.announce("rules")
        assert calls == []  # skipped: a bulk import does not wait once per row
    invalidation._publisher._sync = None


class _proxy:
    def __enter__(self):
        self.proxy = TcpProxy("127.0.0.1", 6379).start()
        return self.proxy

    def __exit__(self, *exc):
        self.proxy.stop()


async def test_a_listener_that_lost_redis_drops_every_cache_when_it_is_back(redis_settings):
    with _proxy() as proxy:
        url = f"redis://127.0.0.1:{proxy.port}/{REDIS_DB}"
        calls = Calls()
        listener = invalidation.Listener(url, calls.invalidators(), ping_seconds=0.2, reconnect_seconds=0.1)
        listener.start()
        try:
            await asyncio.wait_for(listener.subscribed.wait(), 10)
            calls.seen.clear()
            proxy.partition()  # no answer to its pings: it gives up and reconnects
            deadline = time.monotonic() + 10
            while listener.subscribed.is_set():
                assert time.monotonic() < deadline, "the listener did not notice Redis was gone"
                await asyncio.sleep(0.05)
            invalidation.announce("rules", "lost")  # sent while it is away: lost
            proxy.refuse()
            proxy.resume()
            await asyncio.wait_for(listener.subscribed.wait(), 10)
            assert calls.seen == EVERYTHING
        finally:
            await listener.stop()


async def test_without_redis_there_is_no_listener_and_nothing_to_announce(settings):
    settings.REDIS_URL = ""
    listener = invalidation.Listener.from_settings(Calls().invalidators())
    assert listener.start() is None
    await listener.stop()
    invalidation.announce("rules")  # nobody to tell; no error
