"""airlock.server's httptools protocol sends a small response in one write: one TLS record, one send().

uvicorn wrote the status line and headers, then the body: two records and two wake-ups of the client
for every small GET.  The head now waits for the body within the event loop's turn; a head whose body
is not ready (a watch waiting for its first event) still leaves at once, and one the application
abandons after starting its response still reaches the client before the connection closes.
"""

import asyncio

from uvicorn.config import Config
from uvicorn.server import ServerState

from airlock.server import HttpToolsProtocol

REQUEST = b"GET /k8s/c/api/v1/namespaces/default/configmaps/x HTTP/1.1\r\nHost: gw\r\n\r\n"
BODY = b'{"kind":"ConfigMap"}'
START = {"type": "http.response.start", "status": 200,
         "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]}


class Transport:
    """Records what the protocol does with the connection."""

    def __init__(self):
        self.events = []
        self.closing = False

    def get_extra_info(self, name):
        return ("127.0.0.1", 40000) if name in ("peername", "sockname") else None

    def is_closing(self):
        return self.closing

    def write(self, data):
        self.events.append(("write", bytes(data)))

    def close(self):
        self.closing = True
        self.events.append(("close", b""))

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    @property
    def writes(self):
        return [data for kind, data in self.events if kind == "write"]


async def serve(app, transport=None):
    """One request on a connection to ``app``; the connection's transport once the response is done."""
    config = Config(app=app, http=HttpToolsProtocol, lifespan="off", log_level="critical", proxy_headers=False)
    config.load()
    state = ServerState()
    protocol = HttpToolsProtocol(config=config, server_state=state, app_state={})
    transport = transport if transport is not None else Transport()
    protocol.connection_made(transport)
    protocol.data_received(REQUEST)
    await asyncio.sleep(0.05)
    await asyncio.gather(*state.tasks, return_exceptions=True)
    protocol.connection_lost(None)
    return transport


async def test_a_small_response_leaves_in_one_write():
    async def app(scope, receive, send):
        await send(START)
        await send({"type": "http.response.body", "body": BODY})

    transport = await serve(app)
    [written] = transport.writes
    assert written.startswith(b"HTTP/1.1 200 OK\r\n") and written.endswith(b"\r\n\r\n" + BODY)


async def test_a_head_whose_body_is_not_ready_leaves_at_once():
    seen = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")]})
        await asyncio.sleep(0.01)  # a watch: no event yet
        seen.extend(transport.writes)
        await send({"type": "http.response.body", "body": b"{}\n", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    transport = Transport()
    await serve(app, transport)
    [head] = seen
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n")
    assert transport.writes[1:] == [b"3\r\n{}\n\r\n", b"0\r\n\r\n"]


async def test_a_held_head_is_sent_before_the_connection_closes():
    async def app(scope, receive, send):
        await send(START)
        raise RuntimeError("the application failed after starting its response")

    transport = await serve(app)
    assert [kind for kind, _ in transport.events[:2]] == ["write", "close"]
    assert transport.events[0][1].startswith(b"HTTP/1.1 200 OK\r\n")
