"""A lean HTTP/1.1 client for the cluster calls: one keep-alive pool per upstream, httptools' parser.

Why not aiohttp's ClientSession: on a small GET its request machinery (auto headers, timeouts,
tracing hooks, a stream writer) cost about as much of the event loop as the rest of the upstream
call together (bench/hotpath.py).  This client does only what a kube-apiserver call needs: the
request line, headers and body in one ``transport.write``, the answer parsed by httptools (C,
llhttp; uvicorn's parser too) as it arrives, the body handed over as it comes with back-pressure
(reading pauses while the consumer lags; watches and ``logs -f`` have no read timeout), and the
connection reused only after a response read to its end that the server did not mark ``close``.

Failures are httpx's exception types (the proxy maps them to 502/503/504): ConnectError,
ConnectTimeout, PoolTimeout, WriteTimeout, ReadError, RemoteProtocolError, LocalProtocolError.
A hostile or broken cluster cannot make it hang or grow: connecting (TCP and TLS) is bounded by
the connect timeout, a stuck write by the write timeout, a response head by MAX_HEAD bytes.

Long because the protocol, the response and the pool share one connection's state (whether it is
complete, reusable, failed); apart, each would reach into the others' internals.
"""

import asyncio
import socket
import ssl
from urllib.parse import urlsplit

import httptools
import httpx

# A response head (status line and fields) longer than this is refused: kube-apiserver's are < 1 KiB.
MAX_HEAD = 64 * 1024
# Body bytes buffered for a lagging consumer before the socket is no longer read.
HIGH_WATER = 256 * 1024
# Requests longer than this are written in pieces of this size (see _Connection.request).
WRITE_CHUNK = 64 * 1024
# Methods that may be sent again on a fresh connection when a reused one was closed under them
# before any byte of the answer: the safe ones only (RFC 9110 9.2.1).  A PUT or DELETE may have been
# applied before the connection went; sent again, the cluster could answer differently (a 404 for a
# delete that happened) and the audit trail would record that answer instead of what was done.
SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
# Methods sent without Content-Length when they have no body (as aiohttp did).
_NO_LENGTH = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "CONNECT"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


class _Stale(Exception):
    """A reused connection closed before the answer began: the request may go out again."""


class _Origin:
    """Where one scheme://host:port leads: address, TLS, the Host field, its idle connections."""

    __slots__ = ("host", "port", "ssl", "server_hostname", "host_field", "idle")

    def __init__(self, origin: str, ssl_context):
        parts = urlsplit(origin)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise httpx.UnsupportedProtocol(f"unsupported upstream URL scheme {parts.scheme!r}")
        self.host = parts.hostname
        self.port = parts.port or _DEFAULT_PORTS[parts.scheme]
        secure = parts.scheme == "https"
        self.ssl = (ssl_context if ssl_context is not None else ssl.create_default_context()) if secure else None
        self.server_hostname = self.host if secure else None
        name = f"[{self.host}]" if ":" in self.host else self.host
        self.host_field = name if self.port == _DEFAULT_PORTS[parts.scheme] else f"{name}:{self.port}"
        self.idle: list[_Connection] = []


def split_url(url: str) -> tuple[str, str]:
    """``https://host:port/path?query`` as (origin, target); the target is sent as it is."""
    start = url.find("/", url.find("//") + 2)
    if start < 0:
        return url, "/"
    return url[:start], url[start:]


def request_head(method: str, target: str, host: str, headers, body: bytes, defaults=()) -> bytes:
    """The request's line and fields as aiohttp sent them: Host first, then ``defaults`` (text
    pairs) the caller did not give, the caller's ``headers`` in their order, Content-Length last
    (when there is a body or the method has one); text as UTF-8.  A caller's Host replaces ours;
    its framing fields never go out (the length is computed here).  CR or LF inside a field is
    refused (header injection) as httpx.LocalProtocolError."""
    given = {name.lower() for name, _ in headers}
    host = f"Host: {host}"
    if "host" in given or "content-length" in given or "transfer-encoding" in given:
        host = next((f"{name}: {value}" for name, value in headers if name.lower() == "host"), host)
        headers = [(name, value) for name, value in headers
                   if name.lower() not in ("host", "content-length", "transfer-encoding")]
    lines = [f"{method} {target} HTTP/1.1\r\n{host}\r\n"]
    lines.extend(f"{name}: {value}\r\n" for name, value in defaults if name.lower() not in given)
    lines.extend(f"{name}: {value}\r\n" for name, value in headers)
    if body or method not in _NO_LENGTH:
        lines.append(f"Content-Length: {len(body)}\r\n")
    lines.append("\r\n")
    text = "".join(lines)
    breaks = len(lines) + 1  # the first entry holds two lines
    if text.count("\n") != breaks or text.count("\r") != breaks:
        raise httpx.LocalProtocolError("illegal line break in a request field")
    return text.encode("utf-8")


def raw_request_head(method: str, target: str, raw, body: bytes) -> bytes:
    """An httpx Request's line and fields (byte pairs, Host set by httpx) as they are, but framed
    by Content-Length (the body was read whole), added last when missing as aiohttp did."""
    lines = [f"{method} {target} HTTP/1.1\r\n".encode("ascii")]
    length = None
    for name, value in raw:
        if name.lower() in (b"content-length", b"transfer-encoding"):
            if length is None:
                length = len(lines)
                lines.append(b"Content-Length: %d\r\n" % len(body))
            continue
        lines.append(name + b": " + value + b"\r\n")
    if length is None and (body or method not in _NO_LENGTH):
        lines.append(b"Content-Length: %d\r\n" % len(body))
    lines.append(b"\r\n")
    head = b"".join(lines)
    if head.count(b"\n") != len(lines) or head.count(b"\r") != len(lines):
        raise httpx.LocalProtocolError("illegal line break in a request field")
    return head


class _Headers:
    """A response's headers as the forwarder reads them from an httpx Response: ``get`` (any case;
    repeated fields joined with ", ", as httpx does) and ``raw`` (the byte pairs as received)."""

    __slots__ = ("_fields", "raw")

    def __init__(self, raw):
        self._fields = None
        self.raw = raw

    def get(self, name: str, default=None):
        fields = self._fields
        if fields is None:
            fields = self._fields = {}
            for key, value in self.raw:
                key, value = key.decode("latin-1").lower(), value.decode("utf-8", "surrogateescape")
                seen = fields.get(key)
                fields[key] = value if seen is None else f"{seen}, {value}"
        return fields.get(name.lower(), default)


class _Connection(asyncio.Protocol):
    """One keep-alive connection: the protocol httptools parses into, one request at a time."""

    def __init__(self, loop):
        self._loop = loop
        self.transport = None
        self.origin = None
        self.closed = False
        self.idle_since = 0.0
        self._write_paused = False
        self._reused = False
        self._parser = httptools.HttpResponseParser(self)
        self._reset()

    def _reset(self):
        self._head_waiter = None
        self._body_waiter = None
        self._drain_waiter = None
        self._head_size = 0
        self._head_done = False
        self._informational = False
        self._head_only = False
        self._framed = False
        self._received = False
        self._raw = []
        self._reason = b""
        self.status = 0
        self.chunks = []
        self._buffered = 0
        self._reading_paused = False
        self.complete = False
        self.keep_alive = False
        self.error = None
        self.in_use = False

    # -- the transport's side ------------------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if not self.in_use or self.complete:  # nothing was asked: a broken server
            self.keep_alive = False
            self._close()
            return
        self._received = True
        try:
            self._parser.feed_data(data)
        except Exception as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed answer ({type(exc).__name__})"))
            return
        if not self._head_done:
            self._head_size += len(data)
            if self._head_size > MAX_HEAD:
                self._fail(httpx.RemoteProtocolError(f"answer head longer than {MAX_HEAD} bytes"))

    def eof_received(self):
        return None  # the transport closes itself; connection_lost tells the rest

    def connection_lost(self, exc):
        self.closed = True
        if not self.in_use or self.complete:
            return
        if self._head_done and not self._framed and exc is None:  # a body delimited by the connection's end
            self.complete = True
            self.keep_alive = False
            self._wake()
            return
        if not self._received and self._head_waiter is not None and self._reused:
            self._fail(_Stale())
        elif exc is None:
            self._fail(httpx.RemoteProtocolError("the cluster closed the connection mid-answer"))
        else:
            self._fail(httpx.ReadError(type(exc).__name__))

    def pause_writing(self):
        self._write_paused = True

    def resume_writing(self):
        self._write_paused = False
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- httptools' callbacks ------------------------------------------------------------------

    def on_message_begin(self):
        if self._head_done:  # a second answer to one request
            raise httpx.RemoteProtocolError("unexpected answer")
        self._raw = []
        self._reason = b""

    def on_status(self, reason: bytes):
        self._reason += reason

    def on_header(self, name: bytes, value: bytes):
        self._raw.append((name, value))
        if not self._framed and len(name) in (14, 17) and name.lower() in (b"content-length", b"transfer-encoding"):
            self._framed = True

    def on_headers_complete(self):
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # 100 Continue, 103 Early Hints: the answer follows
            self._informational = True
            self._framed = False
            return
        self.status = status
        self._head_done = True
        if self._head_only:
            self.complete = True
            self.keep_alive = False  # the parser expects a body that will not come: start afresh
        elif status in (204, 304):
            self._framed = True  # no body, whatever the fields say (llhttp ends the message)
        waiter, self._head_waiter = self._head_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_body(self, body: bytes):
        if self._head_only:
            return
        self.chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self):
        if self._informational:
            self._informational = False
            return
        if not self._head_only:
            self.complete = True
            self.keep_alive = self._parser.should_keep_alive()
        self._wake()

    # -- the client's side ---------------------------------------------------------------------

    async def request(self, data: bytes, head_only: bool, reused: bool, write_timeout: float | None):
        """Send one request (``data``: head and body) and wait for the answer's head.

        A small request is one write.  A larger one goes in WRITE_CHUNK pieces, so that a cluster
        that stops reading shows as the TLS layer's pause_writing (it passes on one write whole to
        the socket's buffer) and waiting longer than ``write_timeout`` for it is a WriteTimeout."""
        self.in_use = True
        self._head_only = head_only
        self._reused = reused
        self._head_waiter = waiter = self._loop.create_future()
        try:
            if len(data) <= WRITE_CHUNK:
                self.transport.write(data)
                if self._write_paused:
                    await self._drained(write_timeout)
            else:
                view = memoryview(data)
                for start in range(0, len(data), WRITE_CHUNK):
                    if self.error is not None:
                        break
                    self.transport.write(view[start:start + WRITE_CHUNK])
                    if self._write_paused:
                        await self._drained(write_timeout)
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                waiter.exception()  # retrieved: the write's failure is the one raised
            raise
        if not self._head_done:
            await waiter
        if self.error is not None and not self._head_done:
            raise self.error

    async def _drained(self, timeout: float | None) -> None:
        self._drain_waiter = self._loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                await self._drain_waiter
        except TimeoutError:
            raise httpx.WriteTimeout("writing the request timed out") from None

    def take_chunks(self) -> bytes:
        chunks, self.chunks, self._buffered = self.chunks, [], 0
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def more(self) -> None:
        """Wait until body bytes, the end or an error arrive."""
        self._body_waiter = waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            self._body_waiter = None

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and self.error is None

    def recycle(self, now: float) -> None:
        self._reset()
        self.idle_since = now

    def _wake(self):
        waiter = self._body_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: Exception):
        self.error = error
        self.keep_alive = False
        for waiter in (self._head_waiter, self._drain_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_exception(error)
        self._head_waiter = self._drain_waiter = None
        self._wake()
        self._close()

    def _close(self):
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abandon(self):
        self.keep_alive = False
        self._close()


class UpstreamResponse:
    """The cluster's answer, with the part of httpx's Response the forwarder uses: ``status_code``,
    ``headers``, ``aiter_raw``/``aiter_bytes`` (the forwarder refuses any Content-Encoding but
    identity, so both are the raw bytes) and ``aclose`` (frees the slot; the connection goes back
    to the pool only if the answer was read to its end and the server keeps it open)."""

    __slots__ = ("status_code", "headers", "reason", "_connection", "_release")

    def __init__(self, connection: _Connection, release):
        self.status_code = connection.status
        self.headers = _Headers(connection._raw)
        self.reason = connection._reason
        self._connection = connection
        self._release = release

    async def aiter_raw(self):
        connection = self._connection
        while connection is not None and self._connection is connection:  # never after aclose
            if connection.chunks:
                yield connection.take_chunks()
            elif connection.complete:
                return
            elif connection.error is not None:
                raise connection.error
            else:
                await connection.more()

    aiter_bytes = aiter_raw

    def arrived(self) -> bytes | None:
        """The whole body if all of it is in already (a small answer comes with its head), else None.

        Reading it needs no wait, so no deadline: gateway.responses.read_whole skips its timer."""
        connection = self._connection
        if connection is None or not connection.complete or connection.error is not None:
            return None
        return connection.take_chunks()

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self._release(connection)


class _Body(httpx.AsyncByteStream):
    """An UpstreamResponse's body as an httpx stream (the httpx client's path)."""

    def __init__(self, response: UpstreamResponse):
        self._response = response

    async def __aiter__(self):
        async for chunk in self._response.aiter_raw():
            yield chunk

    async def aclose(self) -> None:
        await self._response.aclose()


class Http1Transport(httpx.AsyncBaseTransport):
    """httpx's transport API (and :meth:`send`, without an httpx Request) on this client's pool.

    At most ``max_connections`` requests are in flight (HTTP/1.1: one connection each); waiting
    longer than the pool timeout for a slot is an ``httpx.PoolTimeout``; at most ``max_idle``
    connections are kept open between requests, none longer than ``keepalive_expiry``.  New connections get
    ``on_socket(sock)`` (keepalive options) and TCP_NODELAY before they connect.
    """

    def __init__(self, ssl_context, *, max_connections: int, timeout: httpx.Timeout, keepalive_expiry: float,
                 max_idle: int = 256, on_socket=None):
        self._ssl = ssl_context
        self._max_idle = max_idle
        self._slots = asyncio.Semaphore(max_connections)
        self._timeout = timeout
        self._keepalive_expiry = keepalive_expiry
        self._on_socket = on_socket
        self._origins: dict[str, _Origin] = {}
        self._sweeping = None

    async def send(self, method: str, url: str, headers, body: bytes, defaults=()) -> UpstreamResponse:
        """Send a request (``headers``: text pairs; ``defaults`` added unless given, see
        :func:`request_head`) and return the answer once its head is in."""
        origin_url, target = split_url(url)
        origin = self._origin(origin_url)
        head = request_head(method, target, origin.host_field, headers, body, defaults)
        return await self._exchange(origin, method, head + body if body else head, None)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        url = request.url
        origin = self._origin(f"{url.scheme}://{url.netloc.decode('ascii')}")
        head = raw_request_head(request.method, url.raw_path.decode("ascii"), request.headers.raw, body)
        response = await self._exchange(origin, request.method, head + body if body else head, request)
        return httpx.Response(status_code=response.status_code, headers=response.headers.raw, stream=_Body(response),
                              extensions={"http_version": b"HTTP/1.1", "reason_phrase": response.reason},
                              request=request)

    def _origin(self, origin_url: str) -> _Origin:
        origin = self._origins.get(origin_url)
        if origin is None:
            origin = self._origins[origin_url] = _Origin(origin_url, self._ssl)
        return origin

    async def _exchange(self, origin: _Origin, method: str, data: bytes, request) -> UpstreamResponse:
        await self._acquire(request)
        head_only = method == "HEAD"
        connection = self._idle(origin)
        try:
            if connection is not None:
                try:
                    await connection.request(data, head_only, method in SAFE, self._timeout.write)
                    return UpstreamResponse(connection, self._release)
                except _Stale:  # closed by the server while idle: once more on a new connection
                    connection = None
            connection = await self._connect(origin, request)
            await connection.request(data, head_only, False, self._timeout.write)
        except BaseException as exc:
            if connection is not None:
                connection.abandon()
            self._slots.release()
            if isinstance(exc, httpx.TransportError) and request is not None:
                exc.request = request
            raise
        return UpstreamResponse(connection, self._release)

    async def _acquire(self, request) -> None:
        if not self._slots.locked():
            await self._slots.acquire()
            return
        try:
            async with asyncio.timeout(self._timeout.pool):
                await self._slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout("no free upstream connection", request=request) from None

    def _idle(self, origin: _Origin) -> _Connection | None:
        idle = origin.idle
        if not idle:
            return None
        oldest = asyncio.get_running_loop().time() - self._keepalive_expiry
        while idle:
            connection = idle.pop()
            if not connection.closed and connection.idle_since > oldest:
                return connection
            connection.abandon()
        return None

    async def _connect(self, origin: _Origin, request) -> _Connection:
        loop = asyncio.get_running_loop()
        sock = None
        try:
            async with asyncio.timeout(self._timeout.connect):
                sock = await self._socket(loop, origin)
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop), sock=sock, ssl=origin.ssl, server_hostname=origin.server_hostname,
                    ssl_handshake_timeout=None if origin.ssl is None else self._timeout.connect)
        except BaseException as exc:
            if sock is not None:
                sock.close()
            if isinstance(exc, TimeoutError):
                raise httpx.ConnectTimeout("connecting to the cluster timed out", request=request) from None
            if isinstance(exc, (OSError, ssl.SSLError, ssl.CertificateError)):
                raise httpx.ConnectError(type(exc).__name__, request=request) from None
            raise
        connection.origin = origin
        return connection

    async def _socket(self, loop, origin: _Origin) -> socket.socket:
        """A connected socket to the first address that answers (keepalive options set before)."""
        infos = await loop.getaddrinfo(origin.host, origin.port, type=socket.SOCK_STREAM)
        error = OSError("no address")
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                if self._on_socket is not None:
                    self._on_socket(sock)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await loop.sock_connect(sock, address)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
            except BaseException:
                sock.close()
                raise
        raise error

    def _release(self, connection: _Connection) -> None:
        """The slot back; the connection to the idle pool if it can carry another request."""
        self._slots.release()
        if not connection.reusable():
            connection.abandon()
            return
        origin = connection.origin
        if len(origin.idle) >= self._max_idle:
            connection.abandon()
            return
        loop = asyncio.get_running_loop()
        connection.recycle(loop.time())
        origin.idle.append(connection)
        if self._sweeping is None:
            self._sweeping = loop.call_later(self._keepalive_expiry, self._sweep)

    def _sweep(self) -> None:
        """Close the connections idle longer than the keepalive expiry (oldest first)."""
        self._sweeping = None
        loop = asyncio.get_running_loop()
        oldest = loop.time() - self._keepalive_expiry
        waiting = False
        for origin in self._origins.values():
            idle = origin.idle
            while idle and (idle[0].closed or idle[0].idle_since <= oldest):
                idle.pop(0).abandon()
            waiting = waiting or bool(idle)
        if waiting:
            self._sweeping = loop.call_later(self._keepalive_expiry, self._sweep)

    async def aclose(self) -> None:
        if self._sweeping is not None:
            self._sweeping.cancel()
            self._sweeping = None
        for origin in self._origins.values():
            while origin.idle:
                origin.idle.pop().abandon()
