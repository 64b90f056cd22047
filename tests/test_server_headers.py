"""airlock.server: a Date the application sends (the cluster's, on a proxied answer) is the only Date.

uvicorn adds its own Date (and Server) fields in front of the application's: a proxied answer
carried the cluster's Date and the gateway's.  The agent should see what kube-apiserver sent; the
gateway's own answers, which carry no Date, keep uvicorn's.  Both protocols, httptools and h11.
"""

import asyncio

import pytest
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol as UvicornH11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as UvicornHttpToolsProtocol
from uvicorn.server import ServerState

from airlock.server import H11Protocol, HttpToolsProtocol

REQUEST = b"GET /k8s/c/api/v1/namespaces/default/configmaps/x HTTP/1.1\r\nHost: gw\r\n\r\n"
BODY = b'{"kind":"ConfigMap"}'
CLUSTER_DATE = b"Sat, 05 Dec 2026 10:00:00 GMT"
SERVER_DATE = b"Sun, 06 Dec 2026 12:00:00 GMT"


class Transport:
    def __init__(self):
        self.written = b""
        self.closing = False

    def get_extra_info(self, name):
        return ("127.0.0.1", 40000) if name in ("peername", "sockname") else None

    def is_closing(self):
        return self.closing

    def write(self, data):
        self.written += bytes(data)

    def close(self):
        self.closing = True

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


def app_sending(*fields):
    async def app(scope, receive, send):
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode()), *fields]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": BODY})
    return app


async def _written(protocol_class, app, requests: int = 1) -> bytes:
    """What the server wrote for ``requests`` requests on one connection (kept alive between them).
    Served by a subclass made here: instances that went through whole responses leave their class's
    shared attribute keys unlike a fresh process's, which tests/test_server_memory.py measures."""
    protocol_class = type(protocol_class.__name__, (protocol_class,), {})
    config = Config(app=app, http=protocol_class, lifespan="off", log_level="critical", proxy_headers=False)
    config.load()
    state = ServerState()
    state.default_headers = [(b"date", SERVER_DATE), *config.encoded_headers]
    protocol = protocol_class(config=config, server_state=state, app_state={})
    transport = Transport()
    protocol.connection_made(transport)
    for _ in range(requests):
        protocol.data_received(REQUEST)
        await asyncio.sleep(0.05)
        await asyncio.gather(*state.tasks, return_exceptions=True)
    protocol.connection_lost(None)
    return transport.written


async def head_of(protocol_class, app) -> list[bytes]:
    """The response heads' fields, lower-cased names, for two requests on one connection."""
    written = await _written(protocol_class, app, requests=2)
    heads = [response.split(b"\r\n\r\n", 1)[0] for response in written.split(b"HTTP/1.1 ")[1:]]
    assert len(heads) == 2
    return [[line.lower() for line in head.split(b"\r\n")[1:]] for head in heads]


@pytest.mark.parametrize("protocol_class", [UvicornHttpToolsProtocol, UvicornH11Protocol])
async def test_uvicorns_own_protocols_send_both_dates(protocol_class):
    """Why: uvicorn alone."""
    for fields in await head_of(protocol_class, app_sending((b"Date", CLUSTER_DATE))):
        assert sorted(f for f in fields if f.startswith(b"date:")) == [b"date: " + CLUSTER_DATE.lower(),
                                                                         b"date: " + SERVER_DATE.lower()]


@pytest.mark.parametrize("protocol_class", [HttpToolsProtocol, H11Protocol])
async def test_the_applications_date_replaces_the_servers(protocol_class):
    for fields in await head_of(protocol_class, app_sending((b"Date", CLUSTER_DATE))):
        assert [f for f in fields if f.startswith(b"date:")] == [b"date: " + CLUSTER_DATE.lower()]


@pytest.mark.parametrize("protocol_class", [HttpToolsProtocol, H11Protocol])
async def test_an_answer_without_a_date_gets_the_servers(protocol_class):
    for fields in await head_of(protocol_class, app_sending()):
        assert [f for f in fields if f.startswith(b"date:")] == [b"date: " + SERVER_DATE.lower()]


HOSTILE_FIELDS = [
    ((b"DATE", CLUSTER_DATE),),
    ((b"dAtE", CLUSTER_DATE), (b"Date", b"Thu, 01 Jan 1970 00:00:00 GMT")),
    ((b"date", b""),),
    ((b"x-date", CLUSTER_DATE), (b"dates", CLUSTER_DATE), (b"dat", CLUSTER_DATE)),
    ((b"date ", CLUSTER_DATE),),
    ((b" date", CLUSTER_DATE),),
    ((b"date\r\nx-smuggled", b"1"),),
    ((b"date", CLUSTER_DATE + b"\r\nx-smuggled: 1"),),
    ((b"server", b"kube"), (b"Date", CLUSTER_DATE)),
]


@pytest.mark.parametrize("fields", HOSTILE_FIELDS)
@pytest.mark.parametrize("ours, theirs", [(HttpToolsProtocol, UvicornHttpToolsProtocol),
                                          (H11Protocol, UvicornH11Protocol)])
async def test_hostile_header_names_change_nothing_but_the_servers_date(fields, ours, theirs):
    """Red team: whatever field names a hostile cluster answer carries, the gateway's head is uvicorn's own
    byte for byte, less exactly the server's one Date line, and only when the answer has a field named
    Date (any case): no field dropped, added, duplicated or smuggled by the replacement."""
    mine, reference = await _written(ours, app_sending(*fields)), await _written(theirs, app_sending(*fields))
    server_line = b"date: " + SERVER_DATE + b"\r\n"
    has_date = any(name.lower() == b"date" for name, _ in fields)
    if server_line not in reference:  # a name or value uvicorn refuses: refused as before, nothing written
        assert mine == reference == b""
        return
    assert reference.count(server_line) == 1
    assert mine == (reference.replace(server_line, b"", 1) if has_date else reference)
