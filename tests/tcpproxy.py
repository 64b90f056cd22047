"""A TCP proxy a test controls, to put PostgreSQL or Redis out of reach and back.

* :meth:`TcpProxy.refuse`: new connections are refused and open ones are reset, as when the
  server restarts or its host is down.
* :meth:`TcpProxy.partition`: nothing is closed, but nothing is forwarded any more, in either
  direction, and new connections get no answer (packets dropped, not refused).
* :meth:`TcpProxy.resume`: traffic flows again; bytes held during a partition are delivered.

It runs its own event loop in a daemon thread, so it works from sync and async tests alike.
"""

import asyncio
import socket
import struct
import threading


class TcpProxy:
    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcpproxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> "TcpProxy":
        self._thread.start()
        self._call(self._start())
        return self

    def refuse(self) -> None:
        self._call(self._refuse())

    def partition(self) -> None:
        self._call(self._partition())

    def resume(self) -> None:
        self._call(self._resume())

    def stop(self) -> None:
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    async def _start(self):
        self._flowing = asyncio.Event()
        self._flowing.set()
        await self._listen()

    async def _listen(self):
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _refuse(self):
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            sock = writer.get_extra_info("socket")
            if sock is not None and not writer.transport.is_closing():
                # RST, not FIN: the peer sees "connection reset"
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        self._writers.clear()

    async def _stop(self):
        await self._refuse()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _partition(self):
        self._flowing.clear()

    async def _resume(self):
        self._flowing.set()
        if self._server is None:
            await self._listen()

    async def _handle(self, client_reader, client_writer):
        writers = [client_writer]
        self._writers.add(client_writer)
        try:
            await self._flowing.wait()
            server_reader, server_writer = await asyncio.open_connection(*self.target)
            writers.append(server_writer)
            self._writers.add(server_writer)
            pipes = {asyncio.ensure_future(self._pipe(client_reader, server_writer)),
                     asyncio.ensure_future(self._pipe(server_reader, client_writer))}
            # An end of stream (FIN) is passed on and the other direction goes on; a reset ends both, as
            # it would without a proxy: else the peer of a killed process (PostgreSQL, holding its locks)
            # would wait for it for ever.
            _, pending = await asyncio.wait(pipes, return_when=asyncio.FIRST_EXCEPTION)
            for pipe in pending:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
        except (OSError, asyncio.CancelledError):
            pass  # the target refused, or the proxy stops: the connection just ends
        finally:
            for writer in writers:
                self._writers.discard(writer)
                writer.transport.abort()

    async def _pipe(self, reader, writer):
        while True:
            await self._flowing.wait()
            data = await reader.read(65536)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            await self._flowing.wait()  # a partition that began while reading holds these bytes too
            writer.write(data)
            await writer.drain()
