"""gateway.upstream's default transport (gateway.http1) against real local servers: what goes out, what comes back, and
every failure raised as the httpx exception the proxy maps to 502/503/504 (see test_proxy.py)."""

import asyncio
import socket
import ssl
from dataclasses import dataclass

import httpx
import pytest
from aiohttp import web

from gateway.http1 import Http1Transport
from gateway.upstream import LIMITS, TIMEOUT, UpstreamPool, set_keepalive
from kubesim.certs import generate_tls

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def serve():
    """Start an aiohttp application on 127.0.0.1; returns its base URL."""
    runners = []

    async def start(handler, *, ssl_context=None):
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1, handler_cancellation=True)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        return f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


def Transport(ssl_context, *, max_connections=LIMITS.max_connections, timeout=TIMEOUT, dead_after=30.0):
    """The transport as gateway.upstream.http1_transport builds it for a connection."""
    return Http1Transport(ssl_context, max_connections=max_connections, timeout=timeout,
                          keepalive_expiry=LIMITS.keepalive_expiry, on_socket=lambda sock: set_keepalive(sock, dead_after))


def client(transport):
    return httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5.0, read=None))


async def test_request_goes_out_exactly_as_built(serve):
    seen = {}

    async def handler(request):
        seen["method"] = request.method
        seen["target"] = request.raw_path
        seen["headers"] = list(request.raw_headers)
        seen["body"] = await request.read()
        return web.Response(status=201, body=b'{"kind":"ConfigMap"}', headers={"Audit-Id": "a-1"},
                            content_type="application/json")

    base = await serve(handler)
    async with client(Transport(None)) as http:
        response = await http.post(
            base + "/api/v1/namespaces/shop/configmaps?fieldManager=kubectl%2Fclient&dryRun=All",
            content=b'{"metadata":{"name":"x"}}',
            headers={"Accept": "application/json", "Accept-Encoding": "identity", "User-Agent": "kubectl/v1.37.1"},
        )
    assert response.status_code == 201 and response.json() == {"kind": "ConfigMap"}
    assert response.headers["audit-id"] == "a-1"
    assert seen["method"] == "POST" and seen["body"] == b'{"metadata":{"name":"x"}}'
    assert seen["target"] == "/api/v1/namespaces/shop/configmaps?fieldManager=kubectl%2Fclient&dryRun=All"
    headers = {k.decode().lower(): v.decode() for k, v in seen["headers"]}
    assert headers["accept-encoding"] == "identity"  # as built, nothing offered on top
    assert headers["user-agent"] == "kubectl/v1.37.1"
    assert len([k for k, _ in seen["headers"] if k.lower() == b"user-agent"]) == 1
    assert "content-type" not in headers  # none invented


async def test_stream_arrives_event_by_event(serve):
    first_read = asyncio.Event()

    async def handler(request):
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b'{"type":"ADDED"}\n')
        await asyncio.wait_for(first_read.wait(), 5)
        await response.write(b'{"type":"MODIFIED"}\n')
        await response.write_eof()
        return response

    base = await serve(handler)
    async with client(Transport(None)) as http:
        response = await http.send(http.build_request("GET", base + "/api/v1/pods?watch=1"), stream=True)
        chunks = response.aiter_raw()
        assert await anext(chunks) == b'{"type":"ADDED"}\n'  # before the server may send the next event
        first_read.set()
        assert b"".join([chunk async for chunk in chunks]) == b'{"type":"MODIFIED"}\n'
        await response.aclose()


async def test_closing_an_unfinished_stream_frees_its_slot_and_the_connection(serve):
    gone = asyncio.Event()

    async def handler(request):
        if request.path == "/small":
            return web.Response(text="ok")
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"event\n")
        try:
            await asyncio.sleep(30)
        finally:
            gone.set()
        return response

    base = await serve(handler)
    transport = Transport(None, max_connections=1, timeout=httpx.Timeout(5.0, read=None, pool=0.2))
    async with client(transport) as http:
        response = await http.send(http.build_request("GET", base + "/watch"), stream=True)
        assert await anext(response.aiter_raw()) == b"event\n"
        await response.aclose()
        await asyncio.wait_for(gone.wait(), 5)  # the upstream saw the disconnect
        assert (await http.get(base + "/small")).text == "ok"  # the only slot is free again


async def test_no_free_slot_is_a_pool_timeout(serve):
    async def handler(request):
        response = web.StreamResponse()
        await response.prepare(request)
        await asyncio.sleep(30)
        return response

    base = await serve(handler)
    transport = Transport(None, max_connections=1, timeout=httpx.Timeout(5.0, read=None, pool=0.2))
    async with client(transport) as http:
        held = await http.send(http.build_request("GET", base + "/watch"), stream=True)
        with pytest.raises(httpx.PoolTimeout):
            await http.get(base + "/other")
        await held.aclose()


async def test_refused_connection_is_a_connect_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    async with client(Transport(None)) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{port}/version")


async def test_silent_tls_server_is_a_connect_timeout():
    async def accept_and_say_nothing(reader, writer):
        await asyncio.sleep(30)

    server = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = Transport(ssl.create_default_context(), timeout=httpx.Timeout(5.0, connect=0.3, read=None))
    try:
        async with client(transport) as http:
            with pytest.raises(httpx.ConnectTimeout):
                await http.get(f"https://127.0.0.1:{port}/version")
    finally:
        server.close()


async def test_tls_is_verified_against_the_connection_ca(serve, tmp_path):
    tls = generate_tls(tmp_path / "tls")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(tls.cert_file, tls.key_file)

    async def handler(request):
        return web.Response(text="ok")

    base = await serve(handler, ssl_context=server_context)
    async with client(Transport(ssl.create_default_context())) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(base + "/version")
    trusted = ssl.create_default_context(cafile=str(tls.ca_file))
    async with client(Transport(trusted)) as http:
        assert (await http.get(base + "/version")).text == "ok"


async def test_upstream_dying_mid_body_is_a_transport_error(serve):
    async def handler(request):
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b'{"type":"ADDED"}\n')
        request.transport.close()  # no final chunk
        return response

    base = await serve(handler)
    async with client(Transport(None)) as http:
        response = await http.send(http.build_request("GET", base + "/api/v1/pods?watch=1"), stream=True)
        with pytest.raises(httpx.TransportError):
            async for _ in response.aiter_raw():
                pass
        await response.aclose()


@dataclass(frozen=True)
class PlainUpstream:
    cache_key: str = "c:1"
    name: str = ""
    connect_timeout: float = 10.0
    first_byte_timeout: float = 65.0
    idle_timeout: float = 30.0

    def ssl_context(self):
        return None


async def test_pooled_client_keeps_no_cookies_between_agents(serve):
    cookies = []

    async def handler(request):
        cookies.append(request.headers.get("Cookie"))
        response = web.Response(text="ok")
        response.set_cookie("session", "agent-1-secret")
        return response

    base = await serve(handler)
    pool = UpstreamPool()
    try:
        http = pool.client(PlainUpstream())
        assert isinstance(http._transport.transport, Http1Transport)  # the default transport, errors counted
        await http.get(base + "/api/v1/pods")
        await http.get(base + "/api/v1/pods")
    finally:
        await pool.aclose()
    assert cookies == [None, None]


async def test_cluster_connections_probe_for_a_dead_peer_within_the_idle_timeout(serve):
    """A silent watch on a dead connection (partition, vanished host) must not stay open forever."""
    async def handler(request):
        response = web.StreamResponse()
        await response.prepare(request)
        await asyncio.sleep(30)
        return response

    base = await serve(handler)
    transport = Transport(None, dead_after=12)
    async with client(transport) as http:
        response = await transport.handle_async_request(http.build_request("GET", base + "/api/v1/pods?watch=1"))
        sock = response.stream._response._connection.transport.get_extra_info("socket")  # the client's, for the test
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        probe_after = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
        interval = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL)
        count = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT)
        assert (probe_after, interval, count) == (6, 2, 3) and probe_after + count * interval <= 12
        await response.aclose()


async def test_a_websocket_handshake_the_cluster_never_answers_times_out_and_keepalive_applies_to_its_socket():
    from gateway import wsclient

    async def accept_and_say_nothing(reader, writer):
        await asyncio.sleep(30)

    server = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    seen = []
    try:
        with pytest.raises(wsclient.UpstreamTimeout) as timed_out:
            await wsclient.connect(f"ws://127.0.0.1:{port}/api/v1/namespaces/d/pods/p/exec", ssl=None, headers=[],
                                   subprotocols=["v5.channel.k8s.io"], answer_timeout=0.2,
                                   on_socket=lambda sock: seen.append(set_keepalive(sock, 12) or sock.getsockopt(
                                       socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)))
    finally:
        server.close()
    assert timed_out.value.phase == "answer" and seen == [6]


@pytest.mark.parametrize("phase", ["connect", "answer"])
async def test_an_exec_cancelled_as_the_cluster_connects_or_answers_is_cancelled(serve, monkeypatch, phase):
    """The agent goes away (or its lease is cut) in the loop turn the cluster's connection opens, or its 101
    arrives: connect() raises CancelledError, and a connection just opened sends no upgrade.  (asyncio.wait_for
    on Python 3.11 returned the connection instead: the exec was opened, or went on, for nobody.)"""
    from gateway import wsclient

    upgrades = []

    async def exec_endpoint(request):
        upgrades.append(request.path)
        ws = web.WebSocketResponse(protocols=["v5.channel.k8s.io"])
        await ws.prepare(request)
        await ws.receive()
        return ws

    url = (await serve(exec_endpoint)).replace("http", "ws", 1) + "/api/v1/namespaces/d/pods/p/exec"
    open_connection, opened = asyncio.open_connection, []
    up = asyncio.get_running_loop().create_future()

    async def connecting(*args, **kwargs):
        reader, writer = await open_connection(*args, **kwargs)
        opened.append(writer)
        if phase == "connect":
            await up  # the connection is up in the turn the test resolves this
        else:
            feed = reader.feed_data

            def answered(data):
                feed(data)
                if b"\r\n\r\n" in data:  # the whole 101 arrived...
                    caller.cancel()  # ...and the caller is cancelled in that turn

            reader.feed_data = answered
        return reader, writer

    monkeypatch.setattr(wsclient.asyncio, "open_connection", connecting)
    caller = asyncio.ensure_future(wsclient.connect(url, ssl=None, headers=[], subprotocols=["v5.channel.k8s.io"]))
    try:
        if phase == "connect":
            while not opened:
                await asyncio.sleep(0.01)
            up.set_result(None)
            caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        await asyncio.sleep(0.05)
        assert upgrades == ([] if phase == "connect" else ["/api/v1/namespaces/d/pods/p/exec"])
        if phase == "answer":  # connect() had the connection: it closed it
            assert opened[0].is_closing()
    finally:
        for writer in opened:
            writer.close()


@pytest.fixture
async def recorder_server():
    """A plain HTTP/1.1 server that keeps each request's bytes as they arrived and answers 200."""
    seen = []

    async def handle(reader, writer):
        while True:
            head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
            if not head:
                break
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            seen.append(head + (await reader.readexactly(length) if length else b""))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n"
                         b"Warning: 299 - \"one\"\r\nwarning: 299 - \"two\"\r\n\r\n{}")
            await writer.drain()

    async def guarded(reader, writer):
        try:
            await handle(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(guarded, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", seen
    server.close()


def _request_shape(raw: bytes):
    head, _, body = raw.partition(b"\r\n\r\n")
    line, *fields = head.split(b"\r\n")
    return line, sorted(field.lower() for field in fields), body


@pytest.mark.parametrize("method, headers, body", [
    ("GET", [("user-agent", "kubectl/v1.37.1"), ("accept", "application/json"), ("accept-encoding", "identity"),
             ("Authorization", "Bearer cluster-token")], b""),
    ("GET", [("accept", "application/json;as=Table;v=v1;g=meta.k8s.io"), ("accept-encoding", "identity")], b""),
    ("POST", [("content-type", "application/json"), ("accept-encoding", "identity"), ("x-note", "caf\u00e9")],
     b'{"kind":"ConfigMap"}'),
    ("POST", [("accept-encoding", "identity")], b""),
    ("DELETE", [("accept-encoding", "identity")], b""),
])
async def test_the_direct_path_sends_what_the_httpx_client_sends(recorder_server, method, headers, body):
    base, seen = recorder_server
    target = "/api/v1/namespaces/shop/configmaps?labelSelector=app%3Dweb&fieldSelector=a%21%3Db"
    pool = UpstreamPool()
    try:
        upstream = PlainUpstream()
        http = pool.client(upstream)
        through_httpx = await http.send(http.build_request(method, base + target, headers=[
            (n.encode(), v.encode()) for n, v in headers], content=body), stream=True)
        await through_httpx.aread()
        await through_httpx.aclose()
        direct = await pool.send(upstream, method, base + target, headers, body)
        assert not isinstance(direct, httpx.Response)  # the default transport is called directly
        assert b"".join([chunk async for chunk in direct.aiter_raw()]) == b"{}"
        await direct.aclose()
    finally:
        await pool.aclose()
    assert len(seen) == 2
    assert _request_shape(seen[1]) == _request_shape(seen[0])
    assert direct.status_code == 200
    assert direct.headers.get("content-type") == through_httpx.headers.get("content-type") == "application/json"
    assert direct.headers.get("WARNING") == through_httpx.headers.get("warning") == '299 - "one", 299 - "two"'
    assert direct.headers.get("etag") is None and direct.headers.get("etag", "x") == "x"
    assert list(direct.headers.raw) == list(through_httpx.headers.raw)


async def test_the_direct_path_raises_and_counts_httpx_errors():
    from prometheus_client import REGISTRY

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    labels = {"connection": "refused-cluster", "error": "ConnectError"}
    before = REGISTRY.get_sample_value("airlock_upstream_errors_total", labels) or 0
    pool = UpstreamPool()
    try:
        upstream = PlainUpstream(cache_key="refused:1", name="refused-cluster")
        with pytest.raises(httpx.ConnectError):
            await pool.send(upstream, "GET", f"http://127.0.0.1:{port}/version", [("accept", "application/json")],
                            b"")
    finally:
        await pool.aclose()
    assert REGISTRY.get_sample_value("airlock_upstream_errors_total", labels) == before + 1


async def test_a_wrapped_transport_or_another_client_keeps_the_httpx_path(recorder_server):
    base, seen = recorder_server
    wrapped = []

    class Wrapped(httpx.AsyncBaseTransport):  # e.g. gateway.tracing's spans around each call
        def __init__(self, inner):
            self.inner = inner

        async def handle_async_request(self, request):
            wrapped.append(request.method)
            return await self.inner.handle_async_request(request)

        async def aclose(self):
            await self.inner.aclose()

    pools = (UpstreamPool(wrap=Wrapped), UpstreamPool(httpx.MockTransport(lambda request: httpx.Response(200))))
    for pool in pools:
        try:
            response = await pool.send(PlainUpstream(), "GET", base + "/version", [("accept", "application/json")], b"")
            assert isinstance(response, httpx.Response) and response.status_code == 200
            await response.aclose()
        finally:
            await pool.aclose()
    assert wrapped == ["GET"] and len(seen) == 1
