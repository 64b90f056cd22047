"""uvicorn's HTTP protocols with the read limits uvicorn lacks, for every listener of the process.

uvicorn closes idle keep-alive connections but has no deadline while it reads a request: a
client that trickles one header byte every few seconds, or sends half a body, holds its
connection (and its buffers) for ever, and httptools buffers a header of any size.  These
subclasses add, per request on a connection:

* a header deadline, from the connection (or the first byte of the next request on a kept-alive
  one) until the headers are complete: 408 ``Status`` and close;
* a body deadline, from the end of the headers until the whole body has arrived (whether or
  not the application read it): 408 if no response has started, else close;
* a request cut off while its body is read (that 408, or uvicorn's 400 for a body that is not
  valid HTTP/1.1) is told to the application in the scope (``kube.status.SERVER_ANSWER``), so
  its audit event records the answer the client got, not a client that went away;
* a cap on request line plus headers: 431 and close;
* a cap on open connections (HTTP and WebSocket) of this process: 503 and close at once.

With httptools (production's), a response's head also leaves with its first body bytes: one TLS
record and one ``send()`` instead of two for a small response (:class:`HeadWithBody`).  With
either, a ``Date`` the application sends (the cluster's, on a proxied answer) replaces the one
uvicorn adds, so the agent sees kube-apiserver's fields once (:class:`ServerHeaders`); the
gateway's own answers keep uvicorn's.

The gateway (``/k8s/``), the dashboard, its login and the admin are one ASGI server, so one
protocol class covers them all::

    uvicorn airlock.asgi:application --http airlock.server:HttpToolsProtocol ...

(``airlock.server:H11Protocol`` for h11.)  Limits come from the environment, read once at
import; a value that is not a positive number stops the server from starting:
``AIRLOCK_HEADER_TIMEOUT_SECONDS`` (10), ``AIRLOCK_BODY_TIMEOUT_SECONDS`` (60),
``AIRLOCK_MAX_HEADER_BYTES`` (65536), ``AIRLOCK_MAX_CONNECTIONS`` (1000).  Idle time between
requests stays uvicorn's ``--timeout-keep-alive``.

Long because both protocols share one connection state (the deadlines on one timer, the caps) and
each hooks it into its own parser; split, that state would be reached across modules.
"""

from __future__ import annotations

import asyncio
import math
import os
from dataclasses import dataclass
from http import HTTPStatus

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol as UvicornH11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as UvicornHttpToolsProtocol

from kube.status import SERVER_ANSWER, status_bytes


@dataclass(frozen=True)
class Limits:
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    max_header_bytes: int = 64 * 1024
    max_connections: int = 1000

    @classmethod
    def from_env(cls, environ=os.environ) -> Limits:
        values = {}
        for field, name, kind in (
            ("header_timeout", "AIRLOCK_HEADER_TIMEOUT_SECONDS", float),
            ("body_timeout", "AIRLOCK_BODY_TIMEOUT_SECONDS", float),
            ("max_header_bytes", "AIRLOCK_MAX_HEADER_BYTES", int),
            ("max_connections", "AIRLOCK_MAX_CONNECTIONS", int),
        ):
            raw = environ.get(name, "")
            if not raw:
                continue
            try:
                value = kind(raw)
            except ValueError:
                value = 0
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number, not {raw!r}")
            values[field] = value
        return cls(**values)


def raw_status(code: int, message: str, reason: str) -> bytes:
    """A whole HTTP/1.1 response carrying a Kubernetes Status, for a connection about to close."""
    body = status_bytes(code, message, reason)
    head = (
        f"HTTP/1.1 {code} {HTTPStatus(code).phrase}\r\ncontent-type: application/json\r\n"
        f"cache-control: no-store\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class ServerHeaders(list):
    """uvicorn's own response fields (``Date``, refreshed once a second; ``Server`` unless
    ``--no-server-header``) for one response, without its ``Date`` when the application sends one.

    uvicorn writes ``default_headers + the application's``: a proxied answer carried two Date
    fields, the cluster's and the gateway's.  The cycle's ``default_headers`` is one of these, so
    that concatenation leaves the server's Date out when the application's fields have a Date."""

    __slots__ = ("without_date",)

    def __init__(self, fields) -> None:
        super().__init__(fields)
        self.without_date = [field for field in fields if field[0] != b"date"]

    def __add__(self, fields):
        for name, _ in fields:
            if len(name) == 4 and name.lower() == b"date":
                return self.without_date + fields
        return list.__add__(self, fields)


_server_headers: list = [None, None]  # uvicorn's current default headers, and them as ServerHeaders


def server_headers(fields) -> ServerHeaders:
    """``fields`` (the server state's default headers, a new list each second) as ServerHeaders, made once."""
    if isinstance(fields, ServerHeaders):
        return fields
    source, made = _server_headers
    if fields is not source:
        made = ServerHeaders(fields)
        _server_headers[:] = fields, made
    return made


class _ReadState:
    __slots__ = ("reading", "header_bytes", "due", "timer")

    def __init__(self) -> None:
        self.reading = "off"
        self.header_bytes = 0
        self.due: float | None = None  # loop time of the deadline now running, if any
        self.timer: asyncio.TimerHandle | None = None  # fires at or before ``due``


class ReadLimits:
    """The deadlines and caps, driven by the protocol subclasses below.

    ``_read_state.reading`` is what the connection waits for from the client: ``headers``, ``body``,
    ``idle`` (the request is read; the response, then the keep-alive timeout governs) or ``off``
    (refused, upgraded to WebSocket, or broken: nothing more to enforce).

    A connection has one timer, not three per request: a deadline is a time (``due``) the timer
    checks when it fires, and the timer is only moved when a deadline comes earlier than it.  A
    request on a kept-alive connection moves a time, where it used to create and cancel (and have
    libuv close) the header, body and, with httptools, keep-alive timers.
    """

    limits = Limits.from_env()

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # One attribute, set here: uvicorn's protocol has 27, and an instance's attributes stay in the
        # dictionary keys every connection shares only while they are few.  Three more, set first in
        # connection_made as they were, gave each connection a 1,584-byte dictionary of its own instead
        # of 296 bytes (1.2 KiB per open connection, 6 MiB with 5,000 watches).
        self._read_state = _ReadState()

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._admit()

    def connection_lost(self, exc) -> None:
        self._stop()
        super().connection_lost(exc)

    def _admit(self) -> None:
        if len(self.connections) > self.limits.max_connections:
            self._refuse(503, "airlock: too many open connections, retry later", "ServiceUnavailable")
        else:
            self._expect_headers()

    def _expect_headers(self) -> None:
        state = self._read_state
        state.reading = "headers"
        state.header_bytes = 0
        self._arm(self.limits.header_timeout)

    def _expect_body(self) -> None:
        self._read_state.reading = "body"
        self._arm(self.limits.body_timeout)

    def _request_read(self) -> None:
        state = self._read_state
        state.reading = "idle"
        state.due = None

    def _stop(self) -> None:
        state = self._read_state
        state.reading = "off"
        state.due = None
        if state.timer is not None:
            state.timer.cancel()  # a closed connection is not kept by its timer
            state.timer = None

    def _count_header_bytes(self, size: int) -> None:
        """Bytes received while the headers are incomplete: bounds what the parser buffers."""
        state = self._read_state
        if state.reading == "headers":
            state.header_bytes += size
            if state.header_bytes > self.limits.max_header_bytes:
                self._refuse_header_size()

    def _refuse_header_size(self) -> None:
        self._refuse(431, f"airlock: the request line and headers exceed {self.limits.max_header_bytes} bytes",
                     "RequestHeaderFieldsTooLarge")

    def _arm(self, seconds: float) -> None:
        """A deadline ``seconds`` from now for what the connection is waiting for."""
        state = self._read_state
        state.due = due = self.loop.time() + seconds
        timer = state.timer
        if timer is None or timer.when() > due:
            if timer is not None:
                timer.cancel()
            state.timer = self.loop.call_at(due, self._expired)

    def _expired(self) -> None:
        state = self._read_state
        state.timer = None
        due = state.due
        if due is None:
            return
        if due - self.loop.time() > 0.001:  # moved later since the timer was set
            state.timer = self.loop.call_at(due, self._expired)
        elif state.reading == "headers":
            seconds = self.limits.header_timeout
            self._refuse(408, f"airlock: the request headers did not arrive within {seconds:g} s", "Timeout")
        elif state.reading == "body":
            seconds = self.limits.body_timeout
            self._refuse(408, f"airlock: the request body did not arrive within {seconds:g} s", "Timeout")
        else:  # idle after a response: uvicorn's --timeout-keep-alive, a quiet close
            self._stop()
            if not self.transport.is_closing():
                self.transport.close()

    def _refuse(self, code: int, message: str, reason: str) -> None:
        """Answer with a Status where no other response is under way on the connection, then close."""
        waiting_for = self._read_state.reading
        self._stop()
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if waiting_for == "body":  # cycle is this request's: answer unless its response has begun
            answer = cycle is not None and not cycle.response_started and not self._queued()
        else:  # cycle is the previous request's, if any: answer once its response is complete
            answer = cycle is None or cycle.response_complete
        if answer and waiting_for == "body":
            self._tell_application(cycle, code, message, reason)
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the application's receive() now returns http.disconnect
            cycle.message_event.set()
            self._flush(cycle)  # a response head already sent, as far as the application knows
        if answer:
            self.transport.write(raw_status(code, message, reason))
        self.transport.close()

    def _queued(self) -> bool:
        return False

    def _flush(self, cycle) -> None:
        """Send what the cycle's writer holds (HttpToolsProtocol's :class:`HeadWithBody`)."""

    @staticmethod
    def _tell_application(cycle, code: int, message: str, reason: str) -> None:
        """The application, which sees only a client that went away, records this answer instead."""
        cycle.scope.setdefault("extensions", {})[SERVER_ANSWER] = (code, reason, message)

    def _answer_400(self, msg: str) -> None:
        """uvicorn's 400 for bytes that are not HTTP/1.1, told to the application if it is reading the body."""
        if self._read_state.reading == "body" and self.cycle is not None and not self.cycle.response_started:
            self._tell_application(self.cycle, 400, msg, "BadRequest")


class HeadWithBody:
    """The connection's transport as one response cycle sees it: the response's head waits for its body.

    uvicorn writes the status line and headers, then the body: two TLS records and two ``send()``
    calls (and two wake-ups of the client) for a small response.  The cycle's first write (its head)
    is held and leaves with the next one; a head whose body is not ready (a watch waiting for its
    first event) leaves at the end of this turn of the event loop, as it did.  Everything after the
    first write passes straight through.
    """

    __slots__ = ("transport", "loop", "held")

    def __init__(self, transport, loop) -> None:
        self.transport = transport
        self.loop = loop
        self.held: bytes | None = b""  # b"": the first write is still to come

    def write(self, data: bytes) -> None:
        held = self.held
        if held is None:
            self.transport.write(data)
        elif held:
            self.held = None
            self.transport.write(held + data)
        else:
            self.held = data
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send a held head (the loop's turn ends, or the connection is about to close)."""
        held, self.held = self.held, None
        if held and not self.transport.is_closing():
            self.transport.write(held)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()


class HttpToolsProtocol(ReadLimits, UvicornHttpToolsProtocol):
    """uvicorn's httptools protocol with :class:`ReadLimits`; the parser's callbacks mark progress.

    httptools parses pipelined bytes at once, so uvicorn answered bytes that are not HTTP/1.1 with
    its 400 and closed while an earlier request on the connection was still being answered: that
    answer was lost, and the 400 came first.  The 400 now waits for the answers owed before it.
    """

    _deferred_400: str | None = None

    def data_received(self, data: bytes) -> None:
        if self._deferred_400 is not None or (self._read_state.reading == "off" and self.transport.is_closing()):
            return
        super().data_received(data)
        self._count_header_bytes(len(data))

    def on_message_begin(self) -> None:
        if self._read_state.reading == "idle":
            self._expect_headers()
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        if self._read_state.reading != "off":
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._read_state.reading != "off":
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._read_state.reading == "off":
            return
        if len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers) > self.limits.max_header_bytes:
            self._refuse_header_size()
            return
        if self.parser.should_upgrade() and self._should_upgrade():
            self._stop()  # a WebSocket from here on: uvicorn hands the connection over
        else:
            self._expect_body()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._read_state.reading != "off":
            super().on_body(body)

    def send_400_response(self, msg: str) -> None:
        self._answer_400(msg)
        if self._answers_owed():
            self._stop()
            self._deferred_400 = msg
        else:
            super().send_400_response(msg)

    def _answers_owed(self) -> bool:
        """A response the client is owed before a 400 for what follows: one under way, or pipelined."""
        cycle = self.cycle
        if self.pipeline or (cycle is not None and cycle.response_started and not cycle.response_complete):
            return True
        # this request's own body is broken: the 400 is its answer
        return cycle is not None and not cycle.response_complete and self._read_state.reading != "body"

    def on_response_complete(self) -> None:
        """uvicorn's, with its keep-alive timeout on the connection's one timer (:meth:`ReadLimits._arm`)."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif self._read_state.reading == "idle":
            self._arm(self.timeout_keep_alive)
        if self._deferred_400 is not None and not self._answers_owed():
            super().send_400_response(self._deferred_400)

    def on_message_complete(self) -> None:
        if self._read_state.reading == "off":
            return
        self._request_read()
        super().on_message_complete()

    def _queued(self) -> bool:
        return bool(self.pipeline)

    def _start_asgi_task(self, cycle, app) -> None:
        cycle.transport = HeadWithBody(self.transport, self.loop)
        cycle.default_headers = server_headers(cycle.default_headers)
        super()._start_asgi_task(cycle, app)

    def _flush(self, cycle) -> None:
        if isinstance(cycle.transport, HeadWithBody):
            cycle.transport.flush()


class BoundedConnection(h11.Connection):
    """h11 with the request head capped exactly.

    h11's own cap (``max_incomplete_event_size``) only applies while a head is incomplete, so a
    head that arrives in one piece is measured here too; ``too_large`` tells uvicorn's 400 path
    to answer 431.
    """

    def __init__(self, max_head: int):
        super().__init__(h11.SERVER, max_incomplete_event_size=max_head)
        self.max_head = max_head
        self.too_large = False

    def next_event(self):
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as exc:
            self.too_large = exc.error_status_hint == 431
            raise
        if isinstance(event, h11.Request):
            size = len(event.method) + len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers)
            if size > self.max_head:
                self.too_large = True
                raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
        return event


class H11Protocol(ReadLimits, UvicornH11Protocol):
    """uvicorn's h11 protocol with :class:`ReadLimits`; progress is read from h11's state machine."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.conn = BoundedConnection(self.limits.max_header_bytes)

    def data_received(self, data: bytes) -> None:
        if self._read_state.reading == "off" and self.transport.is_closing():
            return
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None:  # the cycle this call may have started (its head is not written yet)
            self.cycle.default_headers = server_headers(self.cycle.default_headers)
        if self._read_state.reading == "off":
            return
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            if self._read_state.reading != "body":
                self._expect_body()
        elif state is h11.DONE:
            if self._read_state.reading != "idle":
                self._request_read()
        elif state is h11.IDLE:
            if self._read_state.reading == "idle" and self.conn.trailing_data[0]:
                self._expect_headers()  # the first bytes of the next request on a kept-alive connection
        else:
            self._stop()  # upgraded, closing or broken

    def send_400_response(self, msg: str) -> None:
        if self.conn.too_large:
            self._refuse_header_size()
        else:
            self._answer_400(msg)
            self._stop()
            super().send_400_response(msg)
