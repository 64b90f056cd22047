"""Red team of the serving side's gathering (AIRLOCK_AUDIT_CHANNEL_GATHER_MS): random interleavings of
held completions, waited begins, partial acknowledgements and broken connections, against the
promises the recorder rests on: on every connection records arrive in the order they were sent, each
once; a waited record is reported committed only after an acknowledgement that covers it on the
connection it was read from; nothing is lost (all of them end up acknowledged); a full batch or a
waited record is written at the next turn of the loop (the held buffer is a batch, plus what one
turn of the loop sends)."""

import asyncio
import random

import pytest

from audit.channel import WriterChannel
from audit.tests.test_channel import record, socket_dir, stand_in, until  # noqa: F401 (fixtures)


@pytest.mark.parametrize("seed", range(6))
async def test_random_interleavings_keep_order_and_lose_nothing(stand_in, socket_dir, seed):  # noqa: F811
    rng = random.Random(seed)
    channel = WriterChannel(stand_in.path, socket_dir, spawn=False, idle_exit=60, on_acked=lambda entries: None,
                            on_failed=lambda entries: None, gather_seconds=rng.choice([0.001, 0.005, 600]),
                            batch_size=rng.choice([2, 3, 1000]))
    assert await channel.wait_connected(5)
    await until(lambda: stand_in.connections)  # the stand-in has accepted it too
    acked: set[int] = set()
    waited: dict[int, asyncio.Future] = {}

    def ack_received():
        connection = stand_in.connections[-1]
        acked.update(r["e"]["n"] for r in connection)
        stand_in.ack(len(connection))

    try:
        for i in range(80):
            step = rng.random()
            kind = "commit" if step < 0.3 else "batch"
            entry = channel.send(record(i), kind)
            if entry.done is not None:
                waited[i] = entry.done
            if len(channel._outgoing) >= channel.batch_size or kind == "commit":
                assert channel._flush_soon or not channel.connected  # written at the next turn of the loop
            if rng.random() < 0.3:
                await asyncio.sleep(rng.choice([0, 0, 0.002, 0.01]))
            if rng.random() < 0.15 and stand_in.connections:
                ack_received()
            if rng.random() < 0.05:
                count = len(stand_in.connections)
                stand_in.streams[-1].close()
                await until(lambda: len(stand_in.connections) > count and channel.connected)
            for n, done in waited.items():  # never reported committed without an acknowledgement covering it
                assert not done.done() or n in acked
        emptied = asyncio.create_task(channel.wait_empty())
        for _ in range(500):
            if emptied.done():
                break
            await asyncio.sleep(0.01)
            ack_received()
        await asyncio.wait_for(emptied, 5)
        assert acked == set(range(80))  # nothing lost
        assert all(done.result() is True for done in waited.values())
        for connection in stand_in.connections:
            ids = [r["e"]["n"] for r in connection]
            assert ids == sorted(set(ids))  # in order, each once per connection
    finally:
        await channel.close()
