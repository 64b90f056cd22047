"""Leases: the command line, expiry, and cutting live sessions bound to a lease."""

import asyncio
import time
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.utils import timezone

from approvals import leases
from approvals.live import LiveStreams
from approvals.models import Lease, LeaseState
from approvals.tests.factories import AGENT, connection, reviewer


def lease_command(*args):
    from io import StringIO

    out = StringIO()
    call_command("lease", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_command_line_request_grant_list_revoke():
    connection()
    reviewer("rita")
    out = lease_command("request", "--connection", "prod", "--subject", "agent-1", "--duration", "1h30m",
                        "--reason", "INC-42", "--by", "ops")
    lease = Lease.objects.get()
    assert out.startswith(f"lease {lease.pk} requested: agent-1 on prod for 5400s")
    assert "granted" in lease_command("grant", str(lease.pk), "--by", "rita")
    assert f"lease {lease.pk} granted" in lease_command("list", "--state", "granted")
    with pytest.raises(CommandError, match="needs a reason"):
        lease_command("revoke", str(lease.pk), "--by", "rita")
    assert "revoked" in lease_command("revoke", str(lease.pk), "--by", "rita", "--reason", "closed")
    assert [e.kind for e in Lease.objects.get().events.all()] == ["requested", "granted", "revoked"]


@pytest.mark.django_db
def test_command_line_errors_are_clear():
    connection()
    with pytest.raises(CommandError, match="does not exist"):
        lease_command("request", "--connection", "nope", "--subject", "a", "--duration", "1h", "--reason", "x")
    with pytest.raises(CommandError, match="no user named"):
        lease_command("grant", "1", "--by", "ghost")
    lease_command("request", "--connection", "prod", "--group", "agents", "--duration", "1h", "--reason", "x",
                  "--by", "rita")
    reviewer("rita")
    with pytest.raises(CommandError, match="themselves"):
        lease_command("grant", str(Lease.objects.get().pk), "--by", "rita")


@pytest.mark.django_db
def test_sweeper_marks_expired_leases_once():
    connection()
    lease = leases.request_lease(connection="prod", subject="agent-1", duration="1h", reason="x", requested_by="ops")
    leases.decide(lease.pk, reviewer("rita"), grant=True)
    assert leases.expire_due() == []
    Lease.objects.filter(pk=lease.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert leases.expire_due() == [lease.pk]
    assert leases.expire_due() == []
    lease.refresh_from_db()
    assert lease.state == LeaseState.EXPIRED and lease.ended_at is not None
    assert [e.kind for e in lease.events.all()][-1] == "expired"


# -- live sessions --------------------------------------------------------------------------------------


class FakeStream:
    """Stands in for a watch or an exec relay: records why it was cut."""

    def __init__(self):
        self.cut = asyncio.Event()
        self.reasons = []

    async def cancel(self, reason):
        self.reasons.append(reason)
        self.cut.set()


@pytest.fixture
def live():
    """An application's live-stream registry."""
    return LiveStreams()


@pytest.mark.asyncio
async def test_a_stream_is_cut_when_its_lease_ends(live):
    bound, other = FakeStream(), FakeStream()
    handle = live.register(AGENT, "prod", 7, bound.cancel)
    other_handle = live.register(AGENT, "prod", 8, other.cancel)
    try:
        await live.handle_message({"type": "lease.changed", "lease": 7, "connection": "prod", "state": "granted"})
        assert not bound.cut.is_set()
        await live.handle_message({"type": "lease.changed", "lease": 7, "connection": "prod", "state": "revoked",
                                   "reason": "lease 7 was revoked: incident closed"})
        assert bound.reasons == ["lease 7 was revoked: incident closed"] and not other.cut.is_set()
        await live.handle_message({"type": "lease.changed", "lease": 7, "connection": "prod", "state": "expired"})
        assert len(bound.reasons) == 1
    finally:
        live.unregister(handle)
        live.unregister(other_handle)


@pytest.mark.asyncio
async def test_unregistered_streams_are_left_alone(live):
    stream = FakeStream()
    live.unregister(live.register(AGENT, "prod", 9, stream.cancel))
    assert await live.cut_lease(9, "gone") == 0 and not stream.cut.is_set()


@pytest.mark.asyncio
async def test_expiry_cuts_at_the_exact_time_without_any_sweeper(live):
    stream = FakeStream()
    handle = live.register(AGENT, "prod", 10, stream.cancel, expires_at=time.time() + 0.2)
    try:
        await asyncio.wait_for(stream.cut.wait(), 10)
        assert stream.reasons == ["lease 10 expired"]
    finally:
        live.unregister(handle)


@pytest.mark.asyncio
async def test_a_failing_cancel_does_not_stop_the_others(live):
    def broken(reason):
        raise RuntimeError("boom")

    stream = FakeStream()
    handles = [live.register(AGENT, "prod", 11, broken), live.register(AGENT, "prod", 11, stream.cancel)]
    try:
        assert await live.cut_lease(11, "revoked") == 2
        assert stream.reasons == ["revoked"]
    finally:
        for handle in handles:
            live.unregister(handle)


class FlakyLayer:
    """The channel layer, but its first receive fails as a reset Redis connection does."""

    def __init__(self, layer):
        self.layer = layer
        self.receives = 0

    def __getattr__(self, name):
        return getattr(self.layer, name)

    async def receive(self, channel):
        self.receives += 1
        if self.receives == 1:
            raise ConnectionError("Connection reset by peer")
        return await self.layer.receive(channel)


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_the_listener_hears_revocations_after_a_channel_layer_failure():
    """A failed receive restarts the listener, which must hear the revocations after it (issue 15's
    scale-out test found replicas deaf to them from their first Redis hiccup on)."""
    def setup():
        connection()
        lease = leases.request_lease(connection="prod", subject="agent-1", duration="1h", reason="x",
                                     requested_by="ops")
        return leases.decide(lease.pk, reviewer("rita"), grant=True)

    lease = await database_sync_to_async(setup)()
    flaky = FlakyLayer(get_channel_layer())
    live = LiveStreams(layer=lambda: flaky)
    stream = FakeStream()
    handle = live.register(AGENT, "prod", lease.pk, stream.cancel)
    try:
        await live.start_listener()
        deadline = time.monotonic() + 10
        while flaky.receives < 2:  # listening again after the restart
            assert time.monotonic() < deadline, "the listener did not listen again after the failure"
            await asyncio.sleep(0.05)
        rita = await User.objects.aget(username="rita")
        await database_sync_to_async(leases.revoke)(lease.pk, rita, reason="incident closed")
        await asyncio.wait_for(stream.cut.wait(), 10)
        assert stream.reasons == [f"lease {lease.pk} was revoked: incident closed"]
    finally:
        live.unregister(handle)
        await live.stop_listener()


class RevokedWhileAway(FlakyLayer):
    """The channel layer, but the lease is revoked (and announced) while the listener is away."""

    def __init__(self, layer, revoke):
        super().__init__(layer)
        self.revoke = revoke

    async def receive(self, channel):
        if self.receives == 0:
            await self.revoke()  # announced to the channel the listener is about to lose
        return await super().receive(channel)


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_revocation_announced_while_the_listener_was_away_still_cuts_its_streams():
    """The announcement went to a channel the listener lost; after it joins again it reads the lease from the
    database and cuts the stream (before, the stream ran on until the lease expired)."""
    def setup():
        connection()
        lease = leases.request_lease(connection="prod", subject="agent-1", duration="1h", reason="x",
                                     requested_by="ops")
        return leases.decide(lease.pk, reviewer("rita"), grant=True)

    lease = await database_sync_to_async(setup)()

    async def revoke():
        rita = await User.objects.aget(username="rita")
        await database_sync_to_async(leases.revoke)(lease.pk, rita, reason="incident closed")

    live = LiveStreams(layer=lambda: away)
    away = RevokedWhileAway(get_channel_layer(), revoke)
    stream = FakeStream()
    handle = live.register(AGENT, "prod", lease.pk, stream.cancel)
    try:
        await live.start_listener()
        await asyncio.wait_for(stream.cut.wait(), 10)
        assert stream.reasons == [f"lease {lease.pk} was revoked"]
    finally:
        live.unregister(handle)
        await live.stop_listener()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_revocation_reaches_the_listener_through_the_channel_layer(live):
    def setup():
        connection()
        lease = leases.request_lease(connection="prod", subject="agent-1", duration="1h", reason="x",
                                     requested_by="ops")
        return leases.decide(lease.pk, reviewer("rita"), grant=True)

    lease = await database_sync_to_async(setup)()
    stream = FakeStream()
    handle = live.register(AGENT, "prod", lease.pk, stream.cancel)
    try:
        await live.start_listener()
        rita = await User.objects.aget(username="rita")
        await database_sync_to_async(leases.revoke)(lease.pk, rita, reason="incident closed")
        await asyncio.wait_for(stream.cut.wait(), 10)
        assert stream.reasons == [f"lease {lease.pk} was revoked: incident closed"]
    finally:
        live.unregister(handle)
        await live.stop_listener()
