"""A serving process's end of the writer's socket gathers the records nobody waits on
(AIRLOCK_AUDIT_CHANNEL_GATHER_MS): they go in one write with the next record somebody waits on, a
full batch, a wait for the channel to empty, or when the gathering time is up; in order, each once,
also across a lost connection."""

import asyncio

import pytest

from audit.channel import WriterChannel
from audit.tests.test_channel import record, socket_dir, stand_in, until  # noqa: F401 (fixtures)


async def connected(server, socket_dir, **kwargs):
    channel = WriterChannel(server.path, socket_dir, spawn=False, idle_exit=60, on_acked=lambda entries: None,
                            on_failed=lambda entries: None, **kwargs)
    assert await channel.wait_connected(5)
    await until(lambda: server.connections)  # the stand-in has accepted it too
    writes = []
    write = channel._stream.write
    channel._stream.write = lambda data: (writes.append(data), write(data))
    return channel, writes


def numbers(received):
    return [r["e"]["n"] for r in received]


async def test_records_nobody_waits_on_are_held_and_sent_in_one_write_when_the_gathering_ends(stand_in, socket_dir):  # noqa: F811
    channel, writes = await connected(stand_in, socket_dir, gather_seconds=0.3)
    try:
        for i in range(3):  # three turns of the loop, three requests ending
            channel.send(record(i), "batch")
            await asyncio.sleep(0.02)
        assert writes == []
        await until(lambda: writes)
        assert writes == [b"".join(record(i) for i in range(3))]
        await until(lambda: len(stand_in.connections[0]) == 3)
        assert numbers(stand_in.connections[0]) == [0, 1, 2]
    finally:
        await channel.close()


async def test_a_record_somebody_waits_on_sends_the_held_ones_first_in_order(stand_in, socket_dir):  # noqa: F811
    channel, writes = await connected(stand_in, socket_dir, gather_seconds=600)
    try:
        held = [channel.send(record(i), "batch") for i in (0, 1)]
        await asyncio.sleep(0.05)
        assert writes == []
        begin = channel.send(record(2), "commit")
        await until(lambda: writes)
        assert writes == [record(0) + record(1) + record(2)]  # one write, the begin last
        await until(lambda: len(stand_in.connections[0]) == 3)
        assert numbers(stand_in.connections[0]) == [0, 1, 2]
        stand_in.ack(3)
        await asyncio.wait_for(begin.done, 5)
        await until(lambda: not channel.unacked)
        assert all(entry.n for entry in held)
    finally:
        await channel.close()


async def test_a_full_batch_and_a_wait_for_the_channel_to_empty_send_at_once(stand_in, socket_dir):  # noqa: F811
    channel, writes = await connected(stand_in, socket_dir, gather_seconds=600, batch_size=3)
    try:
        for i in range(3):
            channel.send(record(i), "batch")
            await asyncio.sleep(0.01)
        await until(lambda: len(writes) == 1)
        channel.send(record(3), "batch")
        await asyncio.sleep(0.05)
        assert len(writes) == 1  # held again
        emptied = asyncio.create_task(channel.wait_empty())  # a flush, a shutdown: nothing is held back
        await until(lambda: len(writes) == 2)
        assert writes[1] == record(3)
        await until(lambda: len(stand_in.connections[0]) == 4)
        assert not emptied.done()
        stand_in.ack(4)
        await asyncio.wait_for(emptied, 5)
        assert numbers(stand_in.connections[0]) == [0, 1, 2, 3]
    finally:
        await channel.close()


async def test_held_records_and_unacknowledged_ones_go_once_in_order_on_the_next_connection(stand_in, socket_dir):  # noqa: F811
    channel, writes = await connected(stand_in, socket_dir, gather_seconds=600)
    try:
        channel.send(record(0), "batch")
        channel.send(record(1), "commit")  # written: sent, never acknowledged
        await until(lambda: len(stand_in.connections[0]) == 2)
        channel.send(record(2), "batch")  # held when the connection breaks
        stand_in.streams[-1].close()
        await until(lambda: len(stand_in.connections) == 2 and len(stand_in.connections[1]) == 3)
        channel.send(record(3), "batch")
        await asyncio.sleep(0.1)
        assert numbers(stand_in.connections[1]) == [0, 1, 2]  # at once, not after the gathering time
        stand_in.ack(3)
        await until(lambda: len(channel.unacked) == 1)
        emptied = asyncio.create_task(channel.wait_empty())
        await until(lambda: len(stand_in.connections[1]) == 4)
        stand_in.ack(4)
        await asyncio.wait_for(emptied, 5)
        assert numbers(stand_in.connections[0]) == [0, 1]
        assert numbers(stand_in.connections[1]) == [0, 1, 2, 3]
    finally:
        await channel.close()
