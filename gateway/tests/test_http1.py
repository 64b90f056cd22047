"""gateway.http1, the lean upstream client, against a raw TLS server scripted byte by byte: framing
(Content-Length, chunked, close-delimited, HEAD, 204/304, 1xx), keep-alive reuse, back-pressure,
and a broken or hostile cluster (dies mid-body, garbage, endless heads, never reads) raising the
httpx errors the proxy maps to 502/503/504 instead of hanging."""

import asyncio
import ssl

import httpx
import pytest
import uvloop

from gateway import http1, responses
from gateway.http1 import Http1Transport
from kubesim.certs import generate_tls


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    files = generate_tls(tmp_path_factory.mktemp("tls"))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(files.cert_file, files.key_file)
    return server, ssl.create_default_context(cafile=str(files.ca_file))


class Server:
    """``respond(reader, writer, head)`` answers each request head (body bytes follow in reader);
    it returns False to end the connection.  ``connections`` counts the connections accepted."""

    def __init__(self, respond):
        self.respond = respond
        self.connections = 0
        self.heads = []

    async def handle(self, reader, writer):
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                if await self.respond(reader, writer, head) is False:
                    break
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def serve(tls):
    servers = []

    async def start(respond):
        server = Server(respond)
        listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=tls[0])
        servers.append(listener)
        server.url = f"https://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
        return server

    yield start
    for listener in servers:
        listener.close()


def transport(tls, **timeouts):
    timeout = httpx.Timeout(**{"connect": 5.0, "read": None, "write": 5.0, "pool": 5.0, **timeouts})
    return Http1Transport(tls[1], max_connections=10, timeout=timeout, keepalive_expiry=60.0)


async def fetch(client, method, url, body=b""):
    response = await client.send(method, url, [("accept", "application/json")], body)
    try:
        return response.status_code, b"".join([chunk async for chunk in response.aiter_raw()])
    finally:
        await response.aclose()


def answer(data: bytes):
    async def respond(reader, writer, head):
        writer.write(data)
    return respond


async def test_keep_alive_connections_are_reused(tls, serve):
    server = await serve(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}"))
    client = transport(tls)
    try:
        assert await fetch(client, "GET", server.url + "/api") == (200, b"{}")
        assert await fetch(client, "GET", server.url + "/api/v1") == (200, b"{}")
    finally:
        await client.aclose()
    assert server.connections == 1
    assert server.heads[1].startswith(b"GET /api/v1 HTTP/1.1\r\nHost: 127.0.0.1:")


async def test_connections_idle_longer_than_the_keepalive_expiry_are_closed_not_reused(tls, serve):
    closed = asyncio.Event()

    async def respond(reader, writer, head):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        if b"/first" in head:
            await reader.read()  # the client's end of this connection
            closed.set()
            return False

    server = await serve(respond)
    client = Http1Transport(tls[1], max_connections=10, timeout=httpx.Timeout(5.0, read=None), keepalive_expiry=0.05)
    try:
        assert await fetch(client, "GET", server.url + "/first") == (200, b"{}")
        await asyncio.wait_for(closed.wait(), 5)  # closed by the client once idle too long
        assert await fetch(client, "GET", server.url + "/second") == (200, b"{}")
    finally:
        await client.aclose()
    assert server.connections == 2


async def test_a_connection_the_server_closes_is_not_reused(tls, serve):
    server = await serve(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"))
    client = transport(tls)
    try:
        assert await fetch(client, "GET", server.url + "/a") == (200, b"{}")
        assert await fetch(client, "GET", server.url + "/b") == (200, b"{}")
    finally:
        await client.aclose()
    assert server.connections == 2


async def test_chunked_bodies_arrive_whole_and_the_connection_is_reused(tls, serve):
    async def respond(reader, writer, head):
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        writer.write(b"6\r\n world\r\n0\r\n\r\n")

    server = await serve(respond)
    client = transport(tls)
    try:
        assert await fetch(client, "GET", server.url + "/a") == (200, b"hello world")
        assert await fetch(client, "GET", server.url + "/b") == (200, b"hello world")
    finally:
        await client.aclose()
    assert server.connections == 1


async def test_a_body_delimited_by_the_end_of_the_connection(tls, serve):
    async def respond(reader, writer, head):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of ")
        await writer.drain()
        writer.write(b"it")
        return False

    server = await serve(respond)
    client = transport(tls)
    try:
        assert await fetch(client, "GET", server.url + "/a") == (200, b"all of it")
        assert await fetch(client, "GET", server.url + "/b") == (200, b"all of it")
    finally:
        await client.aclose()
    assert server.connections == 2


async def test_head_204_and_304_have_no_body_and_informational_answers_are_skipped(tls, serve):
    async def respond(reader, writer, head):
        if head.startswith(b"HEAD"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
        elif b"/gone" in head:
            writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n")
        elif b"/same" in head:
            writer.write(b"HTTP/1.1 304 Not Modified\r\nETag: \"1\"\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
                         b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")

    server = await serve(respond)
    client = transport(tls)
    try:
        assert await asyncio.wait_for(fetch(client, "HEAD", server.url + "/a"), 5) == (200, b"")
        assert await fetch(client, "GET", server.url + "/gone") == (204, b"")
        assert await fetch(client, "GET", server.url + "/same") == (304, b"")
        assert await fetch(client, "POST", server.url + "/new", b"{}") == (201, b"ok")
        response = await client.send("GET", server.url + "/x", [], b"")
        assert response.headers.get("link") is None and response.headers.get("content-length") == "2"
        await response.aclose()
    finally:
        await client.aclose()
    assert server.connections == 2  # 204, 304 and the 1xx kept the second one; HEAD's was closed


async def test_a_lagging_consumer_pauses_the_socket_and_loses_nothing(tls, serve):
    total, written = 64 * 1024 * 1024, []  # more than the kernel buffers of both ends hold

    async def respond(reader, writer, head):
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(total // 65536):
            writer.write(b"10000\r\n" + b"x" * 65536 + b"\r\n")
            await writer.drain()
            written.append(65536)
        writer.write(b"0\r\n\r\n")

    server = await serve(respond)
    client = transport(tls)
    try:
        response = await client.send("GET", server.url + "/api/v1/pods?watch=1", [], b"")
        connection = response._connection
        for _ in range(500):  # the server fills the buffers until the client stops reading
            if connection._reading_paused:
                break
            await asyncio.sleep(0.01)
        assert connection._reading_paused
        stalled = sum(written)
        await asyncio.sleep(0.2)
        assert sum(written) < total and connection._buffered < http1.HIGH_WATER + 512 * 1024
        received = 0
        async for chunk in response.aiter_raw():
            received += len(chunk)
        await response.aclose()
    finally:
        await client.aclose()
    assert stalled < total and received == total


async def test_the_cluster_dying_mid_body_cuts_the_answer_with_an_error(tls, serve):
    async def respond(reader, writer, head):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        return False

    server = await serve(respond)
    client = transport(tls)
    got = []
    try:
        response = await client.send("GET", server.url + "/a", [], b"")
        with pytest.raises(httpx.RemoteProtocolError):
            async for chunk in response.aiter_raw():
                got.append(chunk)
        await response.aclose()
    finally:
        await client.aclose()
    assert b"".join(got) == b"0123456789"


@pytest.mark.parametrize("garbage", [
    b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    b"HTTP/1.1 2OO OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
])
async def test_garbage_is_a_remote_protocol_error(tls, serve, garbage):
    server = await serve(answer(garbage))
    client = transport(tls)
    try:
        with pytest.raises(httpx.RemoteProtocolError):
            await asyncio.wait_for(fetch(client, "GET", server.url + "/a"), 5)
    finally:
        await client.aclose()


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 200 OK\r\n" + b"X-Many: 0123456789abcdef\r\n" * 4000,  # many fields
    b"HTTP/1.1 200 OK\r\nX-Endless: " + b"a" * 300_000,  # one field that never ends
])
async def test_an_oversized_head_is_refused_without_waiting_for_its_end(tls, serve, head):
    async def respond(reader, writer, _):
        writer.write(head)
        await writer.drain()
        await asyncio.sleep(30)  # and never finish it

    server = await serve(respond)
    client = transport(tls)
    try:
        with pytest.raises(httpx.RemoteProtocolError):
            await asyncio.wait_for(client.send("GET", server.url + "/a", [], b""), 5)
    finally:
        await client.aclose()


async def test_a_cluster_that_never_reads_is_a_write_timeout(tls, serve):
    async def respond(reader, writer, head):
        await asyncio.sleep(30)

    server = await serve(respond)
    client = transport(tls, write=0.3)
    try:
        with pytest.raises(httpx.WriteTimeout):
            await asyncio.wait_for(client.send("PUT", server.url + "/a", [], b"x" * (64 * 1024 * 1024)), 10)
    finally:
        await client.aclose()


async def test_a_kept_connection_closed_before_the_answer_is_retried_only_when_safe(tls, serve):
    async def respond(reader, writer, head):
        if b"/second" in head:
            return False  # read, then closed without a byte of answer (an idle timeout racing us)
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0]) if b"Content-Length" in head else 0
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    server = await serve(respond)
    client = transport(tls)
    try:
        assert await fetch(client, "GET", server.url + "/first") == (200, b"ok")
        with pytest.raises(httpx.RemoteProtocolError):  # the connection was lost, so was the request
            await fetch(client, "GET", server.url + "/second")
        assert await fetch(client, "POST", server.url + "/first", b"{}") == (200, b"ok")
        with pytest.raises(httpx.RemoteProtocolError):
            await fetch(client, "POST", server.url + "/second", b"{}")
        assert await fetch(client, "GET", server.url + "/first") == (200, b"ok")
        with pytest.raises(httpx.RemoteProtocolError):  # may have been applied: never sent twice
            await fetch(client, "DELETE", server.url + "/second")
    finally:
        await client.aclose()
    # GET /second went out twice (kept connection, then a new one), POST and DELETE /second once each.
    assert [h.split(b" ")[1] for h in server.heads].count(b"/second") == 4


async def test_a_line_break_in_a_field_is_refused_before_anything_is_sent(tls, serve):
    server = await serve(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
    client = transport(tls)
    try:
        with pytest.raises(httpx.LocalProtocolError):
            await client.send("GET", server.url + "/a", [("x-note", "a\r\nImpersonate-User: admin")], b"")
    finally:
        await client.aclose()
    assert server.connections == 0


async def test_no_free_slot_within_the_pool_timeout_is_a_pool_timeout(tls, serve):
    server = await serve(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    client = Http1Transport(tls[1], max_connections=1, timeout=httpx.Timeout(5.0, read=None, pool=0.2),
                            keepalive_expiry=60.0)
    try:
        held = await client.send("GET", server.url + "/a", [], b"")
        with pytest.raises(httpx.PoolTimeout):
            await client.send("GET", server.url + "/b", [], b"")
        await held.aclose()
        assert await fetch(client, "GET", server.url + "/c") == (200, b"ok")
    finally:
        await client.aclose()


async def test_a_body_is_not_read_through_a_closed_response(tls, serve):
    server = await serve(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret"))
    client = transport(tls)
    try:
        first = await client.send("GET", server.url + "/a", [], b"")
        chunks = first.aiter_raw()
        await first.aclose()
        second = await client.send("GET", server.url + "/b", [], b"")  # on the same connection
        assert [chunk async for chunk in chunks] == []
        assert b"".join([chunk async for chunk in second.aiter_raw()]) == b"secret"
        await second.aclose()
    finally:
        await client.aclose()
    assert server.connections == 1


def test_the_client_works_on_uvloop(tls):
    """Production runs uvicorn on uvloop, whose TLS transport is its own."""
    async def main():
        async def respond(reader, writer, head):
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")

        server = Server(respond)
        listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=tls[0])
        url = f"https://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
        client = transport(tls)
        try:
            results = [await fetch(client, "GET", url + "/a"), await fetch(client, "GET", url + "/b")]
        finally:
            await client.aclose()
            listener.close()
        return results, server.connections

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(main()) == ([(200, b"{}"), (200, b"{}")], 1)


async def test_a_body_that_came_with_its_head_is_read_whole_without_a_timer(tls, serve, monkeypatch):
    """A small answer's body is in once its head is: gateway.responses.read_whole takes it at once,
    with no deadline set and cancelled around a read that cannot wait."""
    server = await serve(answer(b'HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n{"a":1}'))
    client = transport(tls)
    loop = asyncio.get_running_loop()
    timers, call_at = [], loop.call_at

    def counted(when, callback, *args, **kwargs):
        timers.append(callback)
        return call_at(when, callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_at", counted)
    try:
        response = await client.send("GET", server.url + "/a", [], b"")
        timers.clear()
        assert await responses.read_whole(response, idle=5.0) == b'{"a":1}'
        assert timers == []
        await response.aclose()
        assert await fetch(client, "GET", server.url + "/b") == (200, b'{"a":1}')
    finally:
        await client.aclose()
    assert server.connections == 1


async def test_a_body_that_stalls_after_its_head_is_still_bounded_by_the_idle_timeout(tls, serve):
    async def respond(reader, writer, head):
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n{"a"')
        await writer.drain()
        await reader.read()  # the rest never comes; the client gives up and closes
        return False

    server = await serve(respond)
    client = transport(tls)
    try:
        response = await client.send("GET", server.url + "/a", [], b"")
        with pytest.raises(responses.UpstreamStalled):
            await asyncio.wait_for(responses.read_whole(response, idle=0.2), 10)
        await response.aclose()
    finally:
        await client.aclose()


class _WithoutArrived:
    """The same answer read the long way (chunk by chunk, under the deadline): the reference."""

    def __init__(self, response):
        self.aiter_bytes = response.aiter_raw


def _closing(data: bytes):
    async def respond(reader, writer, head):
        writer.write(data)
        await writer.drain()
        return False
    return respond


HOSTILE_ANSWERS = [  # (what the cluster writes with the head, whether it then closes, limit)
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Trailer: s3cr3t\r\n\r\n", False, None),
    (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"close\":\"delimited\"}", True, None),
    (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + b"x" * 5000, True, 4096),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"y" * 5000, False, 4096),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 4096\r\n\r\n" + b"z" * 4096, False, 4096),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n" + b"short", True, None),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]", True, None),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", False, None),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"400\r\n" + b"c" * 1024 + b"\r\n" * 1 + b"0\r\n\r\n", False,
     1000),
]


async def _outcome(read):
    try:
        return await asyncio.wait_for(read, 10)
    except Exception as exc:  # noqa: BLE001 (the kind of failure is the outcome compared)
        return type(exc), getattr(exc, "status", None)


@pytest.mark.parametrize("data, closes, limit", HOSTILE_ANSWERS)
async def test_hostile_answers_with_their_head_read_whole_as_the_long_way_does(tls, serve, data, closes, limit):
    """Red team of read_whole's ``arrived`` shortcut: an answer that came whole with its head (chunked
    with trailers, close-delimited, past the limit, exactly at it, truncated, two answers in one packet,
    after a 100 Continue) gives what the chunk-by-chunk read under the deadline gives: the same body,
    or the same refusal; never a longer or truncated body, never trailers in it."""
    outcomes = []
    for shortcut in (True, False):
        server = await serve(_closing(data) if closes else answer(data))
        client = transport(tls)
        try:
            response = await client.send("GET", server.url + "/a", [], b"")
            await asyncio.sleep(0.2)  # all of it in (and the close, if any) before the read
            outcomes.append(await _outcome(responses.read_whole(response if shortcut else _WithoutArrived(response),
                                                                idle=2.0, limit=limit)))
            await response.aclose()
        finally:
            await client.aclose()
    assert outcomes[0] == outcomes[1]
    if isinstance(outcomes[0], bytes):
        assert b"s3cr3t" not in outcomes[0] and b"HTTP/1.1" not in outcomes[0]
        assert limit is None or len(outcomes[0]) <= limit
