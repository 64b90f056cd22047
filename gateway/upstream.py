"""Connections to clusters: one pooled HTTP client per Connection version.

The proxy speaks httpx's request/response API (``client.build_request``,
``client.send(stream=True)``, ``aiter_raw``, httpx's exception types); the
connection pool underneath is a transport chosen here.  ``http1`` (default)
is gateway.http1's lean HTTP/1.1 client; ``httpcore`` is httpx's own.
bench/RESULTS.md has the measurements behind the default.  Tests inject an
``httpx.MockTransport`` instead.

The forwarder's own requests go through :meth:`UpstreamPool.send`: on the default transport it
hands the request to gateway.http1 directly (no httpx Request, Response, URL merge or cookie
extraction), sending the same request line and headers the httpx client would and raising the
same httpx exceptions; any other transport, a wrapped one (tracing) or a rotating credential
goes through the httpx client as before.
"""

import asyncio
import http.cookiejar
import logging
import socket

import httpx

from connections.timeouts import DEFAULT_TIMEOUTS
from gateway import wsclient
from gateway.http1 import Http1Transport
from kube.headers import encode as encode_headers
from runtime import metrics

log = logging.getLogger(__name__)


def keepalive_options(idle: float) -> list[tuple[int, int, int]]:
    """Socket options that end a cluster connection found dead (a partition, a vanished host) within
    about ``idle`` seconds, even while no byte is due (a quiet watch, an idle shell): keepalive probes
    after idle/2 s of silence, three more idle/6 s apart; unacknowledged writes give up as late."""
    probe_after, interval = max(1, round(idle / 2)), max(1, round(idle / 6))
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (("TCP_KEEPIDLE", probe_after), ("TCP_KEEPINTVL", interval), ("TCP_KEEPCNT", 3),
                        ("TCP_USER_TIMEOUT", 1000 * (probe_after + 3 * interval))):
        if hasattr(socket, name):  # Linux; elsewhere the system's keepalive timing applies
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    return options


def set_keepalive(sock, idle: float) -> None:
    for level, option, value in keepalive_options(idle):
        sock.setsockopt(level, option, value)


# Watches and `logs -f` stay open for as long as the client wants: no read timeout here (the proxy
# applies the connection's first-byte and idle timeouts to the requests they are for).
TIMEOUT = httpx.Timeout(connect=DEFAULT_TIMEOUTS.connect, read=None, write=30.0, pool=10.0)
LIMITS = httpx.Limits(max_connections=4096, max_keepalive_connections=256, keepalive_expiry=60.0)
# What the httpx client adds to a request that lacks them (its default headers: Accept,
# Accept-Encoding, Connection, User-Agent), so the direct path sends the same.
_HTTPX_DEFAULTS = tuple((name.decode("ascii"), value.decode("ascii")) for name, value in httpx.AsyncClient(
    transport=httpx.MockTransport(lambda request: httpx.Response(500)), trust_env=False).headers.raw)


class _NoCookies(http.cookiejar.CookieJar):
    """The client is shared by every agent of a connection: a cookie set for one must never reach another."""

    def __init__(self):
        super().__init__(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


class RenewOn401(httpx.AsyncBaseTransport):
    """For a connection whose credential rotates (in-cluster): a 401 from the cluster makes the
    upstream look for a new token at once, and a request refused with the token it replaced is sent
    once more with the new one.  kube-apiserver authenticates before it does anything, so a request
    answered 401 had no effect; the body was read in full before the first try (the proxy caps it)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, upstream):
        self._inner = inner
        self._upstream = upstream

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        response = await self._inner.handle_async_request(request)
        if response.status_code != 401:
            return response
        sent = request.headers.get("authorization")
        if sent is None or not self._upstream.reread_credential():
            return response
        fresh = self._upstream.auth_headers().get("Authorization")
        if not fresh or fresh == sent:
            return response
        await response.aclose()
        request.headers["Authorization"] = fresh
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def rotates(upstream) -> bool:
    """Whether the upstream's credential can change under it (an in-cluster service-account token)."""
    return getattr(upstream, "token_file", None) is not None


def client_timeout(upstream) -> httpx.Timeout:
    return httpx.Timeout(connect=upstream.connect_timeout, read=None, write=TIMEOUT.write, pool=TIMEOUT.pool)


def http1_transport(upstream) -> Http1Transport:
    idle = upstream.idle_timeout
    return Http1Transport(upstream.ssl_context(), max_connections=LIMITS.max_connections,
                          timeout=client_timeout(upstream), keepalive_expiry=LIMITS.keepalive_expiry,
                          max_idle=LIMITS.max_keepalive_connections,
                          on_socket=lambda sock: set_keepalive(sock, idle))


def httpcore_transport(upstream) -> httpx.AsyncBaseTransport:
    return httpx.AsyncHTTPTransport(verify=upstream.ssl_context(), limits=LIMITS, http1=True, http2=False,
                                    trust_env=False, socket_options=keepalive_options(upstream.idle_timeout))


TRANSPORTS = {"http1": http1_transport, "httpcore": httpcore_transport}
DEFAULT_TRANSPORT = "http1"


class CountingErrors(httpx.AsyncBaseTransport):
    """A transport that counts the requests to a connection's cluster that got no answer
    (airlock_upstream_errors, by error class); an answer of any status is not an error here."""

    def __init__(self, transport: httpx.AsyncBaseTransport, connection: str):
        self.transport = transport
        self.connection = connection

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self.transport.handle_async_request(request)
        except httpx.TransportError as exc:
            metrics.upstream_error(self.connection, exc)
            raise

    async def aclose(self) -> None:
        await self.transport.aclose()


class UpstreamPool:
    """HTTP clients keyed by the upstream's cache key, created lazily per event loop.

    ``transport`` (tests) serves every upstream; otherwise each client gets
    its own from ``new_transport(upstream)``.  ``wrap`` (optional) is applied to each client's
    transport, e.g. gateway.tracing's ``Tracing.transport`` (spans per upstream call).
    """

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None, *,
                 new_transport=TRANSPORTS[DEFAULT_TRANSPORT], wrap=None):
        self._clients: dict[object, httpx.AsyncClient] = {}
        self._direct: dict[object, Http1Transport | None] = {}
        self._loop = None
        self._transport = transport
        self._new_transport = new_transport
        self._wrap = wrap

    def client(self, upstream) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._clients, self._direct = {}, {}
            self._loop = loop
        client = self._clients.get(upstream.cache_key)
        if client is None:
            base = self._transport or self._new_transport(upstream)
            transport = counting = CountingErrors(base, getattr(upstream, "name", ""))
            if self._wrap is not None:
                transport = self._wrap(transport)
            if rotates(upstream):
                transport = RenewOn401(transport, upstream)
            client = httpx.AsyncClient(
                cookies=_NoCookies(),
                timeout=client_timeout(upstream),
                follow_redirects=False,
                trust_env=False,
                transport=transport,
            )
            self._clients[upstream.cache_key] = client
            # The direct path only where the httpx client would add nothing but the transport's work.
            self._direct[upstream.cache_key] = (
                base if transport is counting and isinstance(base, Http1Transport) else None)
        return client

    async def send(self, upstream, method: str, url: str, headers: list[tuple[str, str]], body: bytes):
        """Send a request to ``upstream``'s cluster and return its answer as soon as its head is in
        (the body streams): an httpx Response, or on the direct path an :class:`UpstreamResponse`
        with the same attributes.  ``headers`` are text pairs (kube.headers); errors are httpx's."""
        client = self.client(upstream)
        direct = self._direct.get(upstream.cache_key)
        if direct is None:
            request = client.build_request(method, url, headers=encode_headers(headers), content=body)
            return await client.send(request, stream=True)
        try:
            return await direct.send(method, url, headers, body, _HTTPX_DEFAULTS)
        except httpx.TransportError as exc:
            metrics.upstream_error(getattr(upstream, "name", ""), exc)
            raise

    async def aclose(self):
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.aclose()


def websocket_url(upstream, target: str) -> str:
    base = upstream.server_url
    if base.startswith("https://"):
        base = "wss://" + base[len("https://"):]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://"):]
    return base + target


async def open_websocket(upstream, target: str, headers, subprotocols):
    """Open the upstream half of an exec/attach/port-forward relay (``headers``: byte pairs).

    Connecting is bounded by the connect timeout and the handshake's answer by the first-byte
    timeout (wsclient.UpstreamTimeout); the open stream has keepalive probes, no read timeout.
    """
    url = websocket_url(upstream, target)

    async def connect(headers):
        return await wsclient.connect(
            url,
            ssl=upstream.ssl_context() if url.startswith("wss://") else None,
            headers=headers,
            subprotocols=subprotocols,
            connect_timeout=upstream.connect_timeout,
            answer_timeout=upstream.first_byte_timeout,
            on_socket=lambda sock: set_keepalive(sock, upstream.idle_timeout),
        )

    try:
        return await connect(headers)
    except wsclient.UpstreamRejected as exc:
        # A rotated in-cluster token: once more with the new one (RenewOn401 does this for HTTP).
        if exc.status != 401 or not rotates(upstream) or not upstream.reread_credential():
            raise
        fresh = upstream.auth_headers().get("Authorization", "").encode("latin-1")
        renewed = [(name, fresh if name.lower() == b"authorization" else value) for name, value in headers]
        if not fresh or renewed == list(headers):
            raise
        return await connect(renewed)
