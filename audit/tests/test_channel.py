"""The serving process's end of the audit writer's socket (audit.channel), against a stand-in writer
that only reads records and acknowledges them: what reaches the socket, and how often it is written."""

import asyncio
import shutil
import tempfile
from pathlib import Path

import pytest

from audit import journal
from audit.channel import WriterChannel
from audit.writer import ACK, COMMITTED, frames


class StandIn:
    """A Unix socket server that keeps every record it reads, per connection, and acknowledges on demand."""

    def __init__(self, path: Path):
        self.path = path
        self.connections: list[list[dict]] = []
        self.streams = []
        self.server = None

    async def start(self):
        self.server = await asyncio.start_unix_server(self._client, path=str(self.path))

    async def _client(self, reader, stream):
        records, buffer = [], bytearray()
        self.connections.append(records)
        self.streams.append(stream)
        while chunk := await reader.read(1 << 16):
            buffer += chunk
            got, used = frames(buffer)
            del buffer[:used]
            records.extend(got)

    def ack(self, n: int):
        self.streams[-1].write(ACK.pack(COMMITTED, n))

    async def close(self):
        self.server.close()
        for stream in self.streams:
            stream.close()


@pytest.fixture
def socket_dir():
    path = Path(tempfile.mkdtemp(prefix="ac-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def record(i: int) -> bytes:
    return journal.encode(journal.COMPLETED if i % 2 else journal.RECEIVED, {"audit_id": f"id-{i}", "n": i})


async def until(condition, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)


async def test_records_sent_in_one_turn_of_the_loop_are_one_write_and_each_is_sent_once(socket_dir):
    server = StandIn(socket_dir / "w.sock")
    await server.start()
    acked = []
    channel = WriterChannel(server.path, socket_dir, spawn=False, idle_exit=60, on_acked=acked.extend,
                            on_failed=lambda entries: None)
    assert await channel.wait_connected(5)
    await until(lambda: server.connections)  # the stand-in has accepted it too
    writes = []
    write = channel._stream.write
    channel._stream.write = lambda data: (writes.append(data), write(data))
    try:
        entries = [channel.send(record(i), "batch") for i in range(5)]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert writes == [b"".join(record(i) for i in range(5))]  # one send(2), not five
        await until(lambda: len(server.connections[0]) == 5)
        assert [r["e"]["n"] for r in server.connections[0]] == [0, 1, 2, 3, 4]
        server.ack(5)
        await until(lambda: not channel.unacked)
        assert acked == entries

        # A connection lost with records not yet written: each goes once, in order, on the next one.
        channel.send(record(5), "batch")
        server.streams[-1].close()
        channel.send(record(6), "batch")
        await until(lambda: len(server.connections) == 2 and len(server.connections[1]) == 2)
        await asyncio.sleep(0.05)
        assert [r["e"]["n"] for r in server.connections[1]] == [5, 6]
        assert [r["e"]["n"] for r in server.connections[0]] in ([0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 5])
    finally:
        await channel.close()
        await server.close()


@pytest.fixture
async def stand_in(socket_dir):
    """A StandIn writer listening in ``socket_dir`` (shared with the gathering tests)."""
    server = StandIn(socket_dir / "w.sock")
    await server.start()
    yield server
    await server.close()
