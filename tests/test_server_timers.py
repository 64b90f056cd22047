"""airlock.server keeps one timer per connection for its deadlines, uvicorn's keep-alive included.

The header, body and keep-alive deadlines used to be three timers created and cancelled for every
request on a kept-alive connection (about 3 us each with uvloop); they are now times one timer
checks.  The deadlines themselves are unchanged: tests/test_server_limits.py answers slow clients
with 408 through the real server, and an idle kept-alive connection is still closed.
"""

import asyncio

from uvicorn.config import Config
from uvicorn.server import ServerState

from airlock.server import HttpToolsProtocol
from tests.test_server_writes import REQUEST, START, BODY, Transport


class CountingLoop:
    """The running loop, counting the timers the protocol asks it for."""

    def __init__(self, loop):
        self.loop = loop
        self.timers = 0

    def call_later(self, *args):
        self.timers += 1
        return self.loop.call_later(*args)

    def call_at(self, *args):
        self.timers += 1
        return self.loop.call_at(*args)

    def __getattr__(self, name):
        return getattr(self.loop, name)


async def app(scope, receive, send):
    await send(START)
    await send({"type": "http.response.body", "body": BODY})


def connect(loop, keep_alive=5.0):
    config = Config(app=app, http=HttpToolsProtocol, lifespan="off", log_level="critical", proxy_headers=False,
                    timeout_keep_alive=keep_alive)
    config.load()
    state = ServerState()
    protocol = HttpToolsProtocol(config=config, server_state=state, app_state={}, _loop=loop)
    transport = Transport()
    protocol.connection_made(transport)
    return protocol, transport, state


async def test_requests_on_a_kept_alive_connection_create_no_timer_each():
    loop = CountingLoop(asyncio.get_running_loop())
    protocol, transport, state = connect(loop)
    for _ in range(20):
        protocol.data_received(REQUEST)
        await asyncio.gather(*state.tasks)
    assert len(transport.writes) == 20 and not transport.closing
    assert loop.timers <= 2
    protocol.connection_lost(None)


async def test_an_idle_kept_alive_connection_is_closed():
    protocol, transport, state = connect(asyncio.get_running_loop(), keep_alive=0.05)
    protocol.data_received(REQUEST)
    await asyncio.gather(*state.tasks)
    assert not transport.closing
    for _ in range(100):
        if transport.closing:
            break
        await asyncio.sleep(0.02)
    assert transport.closing and transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    protocol.connection_lost(None)
