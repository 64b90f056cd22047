"""Live sessions bound to a lease: cut them when the lease expires or is revoked.

One :class:`LiveStreams` per application (airlock.app builds it and hands it to the gateway).
The gateway (gateway.addons.LeaseBinding) registers every request admitted under a lease
while it is forwarded, so its stream (watch, exec, attach, port-forward) is cut::

    handle = streams.register(request.principal, request.connection, request.lease.id, cancel,
                              expires_at=request.lease.expires_at)
    try:
        ...forward, relay...
    finally:
        streams.unregister(handle)

``cancel(reason)`` may be a plain function or a coroutine function; it must
end the stream (for exec: a Status on channel 3, then close).  A stream is cut

* at ``expires_at`` by a timer in this process (exact, even if no sweeper runs),
* when the ``airlock.leases`` group announces the lease revoked or expired
  (the per-event-loop listener started by :meth:`LiveStreams.ensure_listener`, which
  ``register`` and the application's lease cache call), whichever process did it,
* at the latest ``AIRLOCK_LEASE_RECHECK_SECONDS`` after the lease ended, by the per-event-loop
  re-check (started with the listener, with or without a channel layer): while streams are
  registered it reads their leases from the database and cuts those revoked, expired, denied or
  gone.  Announcements are best effort (a group_send that times out, a listener that joined the
  group after the send, a message popped from Redis by a receive that was then cancelled): the
  re-check is what bounds a lost one.

The listener also drops this process's cached leases on every lease change.  Each time it has
joined the group (the first time too: the streams that started it registered before it could
hear anything), it drops the cached leases and re-reads its streams' leases from the database,
so a revocation announced while it was not (yet) listening is not missed.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import time
import weakref
from dataclasses import dataclass, field

from channels.layers import get_channel_layer
from django.conf import settings
from django.utils import timezone

from approvals import lease_check
from approvals.broadcast import LEASES_GROUP
from approvals.models import Lease
from runtime import db
from runtime.timeouts import wait_at_most

log = logging.getLogger(__name__)

ENDED_STATES = frozenset({"revoked", "expired", "denied"})
# channels-redis forgets group members after a day; re-join well before.
STOP_SECONDS = 5.0  # shutdown waits at most this for the listener and the re-check to end
REJOIN_SECONDS = 3600.0


@dataclass
class LiveStream:
    handle: int
    subject: str
    connection: str
    lease_id: int
    cancel: object = field(repr=False)
    loop: asyncio.AbstractEventLoop = field(repr=False)
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    cut: bool = False


class LiveStreams:
    """The live streams of one application bound to leases, and its airlock.leases listener (one per event loop)."""

    def __init__(self, layer=get_channel_layer):
        self._layer = layer  # returns the channel layer, or None
        self._streams: dict[int, LiveStream] = {}
        self._handles = itertools.count(1)
        self._listeners: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._joined: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._rechecks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._unverified_since: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def register(self, principal, connection: str, lease_id: int, cancel, *, expires_at: float | None = None) -> int:
        """Track a live stream; call from the event loop that runs it.  Returns a handle for unregister."""
        loop = asyncio.get_running_loop()
        handle = next(self._handles)
        stream = LiveStream(handle, principal.subject, connection, int(lease_id), cancel, loop)
        self._streams[handle] = stream
        if expires_at is not None:
            delay = max(0.0, expires_at - time.time())
            stream.timer = loop.call_later(delay, self._schedule_cut, stream, f"lease {lease_id} expired")
        self.ensure_listener()
        return handle

    def unregister(self, handle: int) -> None:
        stream = self._streams.pop(handle, None)
        if stream is not None and stream.timer is not None:
            stream.timer.cancel()

    def streams_for(self, lease_id: int) -> list[LiveStream]:
        return [s for s in self._streams.values() if s.lease_id == lease_id]

    def _schedule_cut(self, stream: LiveStream, reason: str) -> None:
        stream.loop.create_task(self._cut(stream, reason))

    async def _cut(self, stream: LiveStream, reason: str) -> bool:
        if stream.cut or self._streams.get(stream.handle) is not stream:
            return False
        stream.cut = True
        if stream.timer is not None:
            stream.timer.cancel()
        try:
            result = stream.cancel(reason)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            log.error("cutting a live stream of lease %d failed: %s", stream.lease_id, type(exc).__name__)
        return True

    async def cut_lease(self, lease_id: int, reason: str) -> int:
        """Cut every stream of this registry bound to the lease; returns how many were cut."""
        count = 0
        for stream in self.streams_for(lease_id):
            if stream.loop is asyncio.get_running_loop():
                count += await self._cut(stream, reason)
            else:
                stream.loop.call_soon_threadsafe(self._schedule_cut, stream, reason)
                count += 1
        return count

    async def handle_message(self, message: dict) -> None:
        """One ``lease.changed`` message from the airlock.leases group."""
        if message.get("type") != "lease.changed":
            return
        connection = message.get("connection")
        lease_check.invalidate_all(connection if isinstance(connection, str) else None)
        lease_id = message.get("lease")
        if message.get("state") in ENDED_STATES and isinstance(lease_id, int):
            reason = message.get("reason") if isinstance(message.get("reason"), str) else ""
            await self.cut_lease(lease_id, reason or f"lease {lease_id} ended")

    async def recheck(self) -> int:
        """Cut this loop's streams whose lease ended (revoked, expired, denied, or no longer in the
        database) whether or not it was announced; returns how many."""
        loop = asyncio.get_running_loop()
        lease_ids = {stream.lease_id for stream in self._streams.values() if stream.loop is loop}
        if not lease_ids:
            return 0
        try:
            ended = await db.run(_ended_leases, lease_ids)
        except Exception as exc:  # the timers, the next announcement and the next re-check still cut them
            log.warning("could not re-read the live streams' leases (%s)", type(exc).__name__)
            return await self._cut_unverified(loop, lease_ids)
        self._unverified_since.pop(loop, None)
        count, leases_cut = 0, []
        for lease_id, state in ended:
            cut = await self.cut_lease(lease_id, f"lease {lease_id} was {state}")
            if cut:
                count += cut
                leases_cut.append(str(lease_id))
        if count:  # the announcement did not reach this process, or had not yet
            log.warning("cut %d live stream(s) on re-reading their leases: %s", count, ", ".join(leases_cut))
        return count

    async def _cut_unverified(self, loop, lease_ids: set[int]) -> int:
        """Fail closed: leases that could not be read for longer than AIRLOCK_CACHE_STALE_SECONDS (the
        bound new requests get on cached leases) no longer carry their streams; a revocation committed
        just before the database went away must not keep a session open until the lease expires."""
        since = self._unverified_since.setdefault(loop, loop.time())
        stale = float(settings.AIRLOCK_CACHE_STALE_SECONDS)
        if loop.time() - since <= stale:
            return 0
        count = 0
        for lease_id in sorted(lease_ids):
            count += await self.cut_lease(lease_id, f"lease {lease_id} could not be verified for {stale:g} s "
                                                    "(the database is unavailable)")
        if count:
            log.warning("cut %d live stream(s) whose leases could not be verified", count)
        return count

    async def _recheck_periodically(self) -> None:
        """The safety net under the announcements: every AIRLOCK_LEASE_RECHECK_SECONDS, while this loop
        has streams, read their leases from the database; and restart a listener that ended."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(float(settings.AIRLOCK_LEASE_RECHECK_SECONDS))
            if not any(stream.loop is loop for stream in self._streams.values()):
                continue
            try:
                self.ensure_listener()
                await self.recheck()
            except Exception as exc:  # never let the safety net die
                _raise_if_cancelling()
                log.error("re-checking the live streams' leases failed: %s", type(exc).__name__)

    def _ensure_recheck(self, loop: asyncio.AbstractEventLoop) -> None:
        task = self._rechecks.get(loop)
        if task is None or task.done():
            self._rechecks[loop] = loop.create_task(self._recheck_periodically(), name="airlock-lease-recheck")

    def ensure_listener(self) -> asyncio.Task | None:
        """Start this event loop's airlock.leases listener (no-op without a channel layer) and its
        periodic re-check of the live streams' leases, once."""
        loop = asyncio.get_running_loop()
        self._ensure_recheck(loop)
        task = self._listeners.get(loop)
        if task is not None and not task.done():
            return task
        layer = self._layer()
        if layer is None:
            return None
        self._joined[loop] = asyncio.Event()
        task = loop.create_task(self._listen(layer, self._joined[loop]), name="airlock-lease-listener")
        self._listeners[loop] = task
        return task

    async def start_listener(self, timeout: float = 10.0) -> None:
        """Start this loop's listener and wait until it has joined the group."""
        if self.ensure_listener() is not None:
            await wait_at_most(self._joined[asyncio.get_running_loop()].wait(), timeout)

    async def stop_listener(self) -> None:
        """Stop this loop's listener (ASGI lifespan shutdown)."""
        loop = asyncio.get_running_loop()
        tasks = [task for task in (self._listeners.pop(loop, None), self._rechecks.pop(loop, None)) if task is not None]
        # Cancelled again until done: a cancellation that lands while channels-redis connects can be
        # swallowed below us, and the listener would then carry on and hold the shutdown for ever.
        deadline = loop.time() + STOP_SECONDS
        while (pending := [task for task in tasks if not task.done()]) and loop.time() < deadline:
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=0.1)
        if pending:
            log.warning("the lease listener did not stop within %s s", STOP_SECONDS)
        for task in tasks:
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: it ended as it should

    async def _listen(self, layer, joined: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                channel = await layer.new_channel("airlock.leases.")
                await layer.group_add(LEASES_GROUP, channel)
                # Anything granted or revoked while we were not listening: before a restart, and before
                # the first join too (the lookup or stream that started us may have cached or bound a
                # lease whose revocation was announced before group_add reached Redis).
                lease_check.invalidate_all()
                await self.recheck()
                joined.set()
                joined_at = loop.time()  # not ``joined``: a restart after a failure sets that Event again
                while True:
                    if loop.time() - joined_at > REJOIN_SECONDS:
                        await layer.group_add(LEASES_GROUP, channel)
                        joined_at = loop.time()
                    try:
                        message = await wait_at_most(layer.receive(channel), REJOIN_SECONDS)
                    except asyncio.TimeoutError:
                        _raise_if_cancelling()
                        continue
                    await self.handle_message(message)
            except Exception as exc:
                _raise_if_cancelling()
                log.warning("lease listener failed (%s); restarting", type(exc).__name__)
                await asyncio.sleep(1.0)


def _ended_leases(lease_ids: set[int]) -> list[tuple[int, str]]:
    """(id, state) of the leases among ``lease_ids`` that no longer let a stream run: ended, past their
    expiry though not yet swept ("expired"), or no longer in the database ("deleted")."""
    now = timezone.now()
    rows = Lease.objects.filter(pk__in=lease_ids).values_list("pk", "state", "expires_at")
    found = {pk: state if state in ENDED_STATES else "expired"
             for pk, state, expires_at in rows
             if state in ENDED_STATES or (expires_at is not None and expires_at <= now)}
    present = {pk for pk, _, _ in rows}
    found.update({pk: "deleted" for pk in lease_ids - present})
    return sorted(found.items())


def _raise_if_cancelling() -> None:
    """Some layers can turn a cancellation into another error; never swallow it."""
    if asyncio.current_task().cancelling():
        raise asyncio.CancelledError
