"""airlock.server's protocols cost no more memory per connection than uvicorn's own (issue 16, watch memory).

uvicorn's protocol instance keeps its attributes in the dictionary keys all connections share; the
read limits' state lives in one slotted object, so an open connection (5,000 of them for 5,000 watches)
keeps that small shared-keys dictionary instead of a table of its own (1,584 bytes against 296).
"""

import asyncio
import sys

from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol as UvicornH11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as UvicornHttpToolsProtocol
from uvicorn.server import ServerState

from airlock.server import H11Protocol, HttpToolsProtocol


class Transport:
    def get_extra_info(self, name):
        return ("127.0.0.1", 40000) if name in ("peername", "sockname") else None

    def is_closing(self):
        return False

    def write(self, data):
        pass

    def close(self):
        pass

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


async def waits(scope, receive, send):
    await asyncio.sleep(30)  # a watch: the request is being answered


async def attributes_size(protocol_class) -> int:
    """Size of a connection's attribute dictionary while its request is being answered."""
    config = Config(app=waits, http=protocol_class, lifespan="off", log_level="critical")
    config.load()
    state = ServerState()
    protocol = protocol_class(config=config, server_state=state, app_state={})
    protocol.connection_made(Transport())
    protocol.data_received(b"GET /k8s/c/api/v1/pods?watch=1 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer t\r\n\r\n")
    await asyncio.sleep(0.01)
    size = sys.getsizeof(protocol.__dict__)
    for task in state.tasks:
        task.cancel()
    await asyncio.gather(*state.tasks, return_exceptions=True)
    protocol.connection_lost(None)
    return size


async def test_a_connection_costs_what_uvicorns_own_does():
    assert await attributes_size(HttpToolsProtocol) == await attributes_size(UvicornHttpToolsProtocol)
    assert await attributes_size(H11Protocol) == await attributes_size(UvicornH11Protocol)
