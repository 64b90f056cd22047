"""Live streams are cut when their lease ends even when the announcement never reaches the process.

The airlock.leases broadcast is best effort: a send that times out under load, a listener whose
group_add reached Redis after the send, or a message a cancelled receive popped from Redis is lost.
The e2e scale-out and workers tests saw one process's watch and exec outlive a revoked lease that
way; these tests lose the announcement on purpose and expect the cut anyway, from the listener's
re-read of its streams' leases when it joins (the first time too) and from the periodic re-check
(AIRLOCK_LEASE_RECHECK_SECONDS).
"""

import asyncio
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth.models import User
from django.db import OperationalError
from django.utils import timezone

from approvals import leases
from approvals.live import LiveStreams
from approvals.models import Lease
from approvals.tests.factories import AGENT, connection, reviewer
from approvals.tests.test_leases import FakeStream

WAIT = 10.0  # seconds: generous, a cut that does not come fails the test at this bound


def granted_lease(first: bool = True) -> Lease:
    if first:
        connection()
        reviewer("rita")
    lease = leases.request_lease(connection="prod", subject="agent-1", duration="1h", reason="x", requested_by="ops")
    return leases.decide(lease.pk, User.objects.get(username="rita"), grant=True)


async def revoke(lease: Lease) -> None:
    rita = await User.objects.aget(username="rita")
    await database_sync_to_async(leases.revoke)(lease.pk, rita, reason="incident closed")


class DroppingLayer:
    """The channel layer, but every lease announcement is lost on the way to this process's listener."""

    def __init__(self, layer):
        self.layer = layer
        self.dropped = []

    def __getattr__(self, name):
        return getattr(self.layer, name)

    async def receive(self, channel):
        while True:
            message = await self.layer.receive(channel)
            self.dropped.append(message)


class JoinsLate:
    """The channel layer, but the lease is revoked (and announced to the group) after the stream that
    started the listener registered and before the listener's group_add reached the group: the race
    of a process's first leased request with a revocation."""

    def __init__(self, layer, before_join):
        self.layer = layer
        self.before_join = before_join

    def __getattr__(self, name):
        return getattr(self.layer, name)

    async def group_add(self, group, channel):
        await self.before_join()
        await self.layer.group_add(group, channel)


@pytest.mark.django_db(transaction=True)
async def test_a_revocation_whose_announcement_is_lost_still_cuts_the_stream_within_the_recheck_bound(settings):
    settings.AIRLOCK_LEASE_RECHECK_SECONDS = 0.1
    lease = await database_sync_to_async(granted_lease)()
    dropping = DroppingLayer(get_channel_layer())
    live = LiveStreams(layer=lambda: dropping)
    stream = FakeStream()
    handle = live.register(AGENT, "prod", lease.pk, stream.cancel)
    try:
        await live.start_listener()
        await revoke(lease)
        await asyncio.wait_for(stream.cut.wait(), WAIT)
        assert stream.reasons == [f"lease {lease.pk} was revoked"]
        assert any(m.get("lease") == lease.pk and m.get("state") == "revoked" for m in dropping.dropped)
    finally:
        live.unregister(handle)
        await live.stop_listener()


@pytest.mark.django_db(transaction=True)
async def test_without_a_channel_layer_the_recheck_still_cuts(settings):
    settings.AIRLOCK_LEASE_RECHECK_SECONDS = 0.1
    lease = await database_sync_to_async(granted_lease)()
    live = LiveStreams(layer=lambda: None)
    stream = FakeStream()
    handle = live.register(AGENT, "prod", lease.pk, stream.cancel)
    try:
        await revoke(lease)
        await asyncio.wait_for(stream.cut.wait(), WAIT)
        assert stream.reasons == [f"lease {lease.pk} was revoked"]
    finally:
        live.unregister(handle)
        await live.stop_listener()


@pytest.mark.django_db(transaction=True)
async def test_a_revocation_announced_before_the_listener_first_joined_cuts_the_stream(settings):
    """No periodic re-check within the test's bound: the cut must come from the first join's re-read."""
    settings.AIRLOCK_LEASE_RECHECK_SECONDS = 3600
    lease = await database_sync_to_async(granted_lease)()
    late = JoinsLate(get_channel_layer(), lambda: revoke(lease))
    live = LiveStreams(layer=lambda: late)
    stream = FakeStream()
    handle = live.register(AGENT, "prod", lease.pk, stream.cancel)  # starts the listener
    try:
        await asyncio.wait_for(stream.cut.wait(), WAIT)
        assert stream.reasons == [f"lease {lease.pk} was revoked"]
    finally:
        live.unregister(handle)
        await live.stop_listener()


@pytest.mark.django_db(transaction=True)
async def test_the_recheck_cuts_streams_of_leases_past_their_expiry_or_deleted(settings):
    """Expiry unswept and without this process's timer (registered without expires_at), or the row gone:
    neither is announced as an ended lease, both end the stream."""
    settings.AIRLOCK_LEASE_RECHECK_SECONDS = 0.1

    def setup():
        first, second = granted_lease(), granted_lease(first=False)
        return first, second

    first, second = await database_sync_to_async(setup)()
    live = LiveStreams(layer=lambda: None)
    expired, deleted = FakeStream(), FakeStream()
    handles = [live.register(AGENT, "prod", first.pk, expired.cancel),
               live.register(AGENT, "prod", second.pk, deleted.cancel)]
    try:
        await Lease.objects.filter(pk=first.pk).aupdate(expires_at=timezone.now() - timedelta(seconds=1))
        await Lease.objects.filter(pk=second.pk).adelete()
        await asyncio.wait_for(asyncio.gather(expired.cut.wait(), deleted.cut.wait()), WAIT)
        assert expired.reasons == [f"lease {first.pk} was expired"]
        assert deleted.reasons == [f"lease {second.pk} was deleted"]
    finally:
        for handle in handles:
            live.unregister(handle)
        await live.stop_listener()


class SwallowsOneCancel:
    """The channel layer, but the first cancellation that lands in ``new_channel`` is lost (as one can be
    inside a Redis client while it connects) and the call goes on."""

    def __init__(self, layer):
        self.layer = layer
        self.swallowed = 0

    def __getattr__(self, name):
        return getattr(self.layer, name)

    async def new_channel(self, prefix="specific."):
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if self.swallowed:
                    raise
                self.swallowed += 1
                asyncio.current_task().uncancel()


async def test_shutdown_stops_a_listener_that_lost_a_cancellation():
    layer = SwallowsOneCancel(get_channel_layer())
    live = LiveStreams(layer=lambda: layer)
    listener = live.ensure_listener()
    await asyncio.sleep(0.05)  # the listener is inside new_channel
    await asyncio.wait_for(live.stop_listener(), 3)
    assert layer.swallowed == 1 and listener.done()


@pytest.mark.django_db(transaction=True)
async def test_streams_whose_leases_cannot_be_read_past_the_stale_bound_are_cut(settings, monkeypatch):
    """Fail closed: with the database away, a leased stream runs at most AIRLOCK_CACHE_STALE_SECONDS
    beyond the last re-check that could read its lease, as new requests on a cached lease do."""
    settings.AIRLOCK_LEASE_RECHECK_SECONDS = 0.05
    settings.AIRLOCK_CACHE_STALE_SECONDS = 0.3
    lease = await database_sync_to_async(granted_lease)()
    live = LiveStreams(layer=lambda: None)
    stream = FakeStream()
    handle = live.register(AGENT, "prod", lease.pk, stream.cancel)

    def unavailable(lease_ids):
        raise OperationalError("connection refused")

    try:
        await asyncio.sleep(0.15)
        assert not stream.cut.is_set()  # readable: the lease is granted
        monkeypatch.setattr("approvals.live._ended_leases", unavailable)
        await asyncio.sleep(0.15)
        assert not stream.cut.is_set()  # within the stale bound
        await asyncio.wait_for(stream.cut.wait(), WAIT)
        assert stream.reasons == [f"lease {lease.pk} could not be verified for 0.3 s (the database is unavailable)"]
    finally:
        live.unregister(handle)
        await live.stop_listener()
