"""Forwarding an HTTP request and relaying the cluster's answer: read whole or streamed, masked, captured.

:class:`HttpForwarder` sends the admitted request with the connection's credential (within its
first-byte timeout, or until the gateway drains for long-running requests) and passes the answer
on: small answers are read whole and masked at once, others stream through
:class:`ResponseStream` with back-pressure, the idle timeout and a final ERROR event for watches.
Every byte the agent gets is also captured for the audit trail (gateway.exchange), masked for it
even when the agent's copy is not.
"""

import asyncio
import json
import logging

import httpx

import masking
from connections.credentials import cluster_headers
from gateway.detectors import DetectorChoice
from gateway.exchange import Exchange, OpenStreams
from kube import headers as hdr
from kube.requestinfo import is_long_running
from kube.status import GatewayError
from masking import tokens
from runtime.timeouts import wait_at_most

log = logging.getLogger(__name__)

# Responses up to this size with a Content-Length are sent in one message.
SMALL_RESPONSE = 256 * 1024


class MaskingAbort(Exception):
    """The response started but cannot be completed (masking failed, or its lease ended):
    the connection is dropped, never completed."""


class UpstreamStalled(Exception):
    """No byte of the cluster's answer came for the idle timeout."""

    def __init__(self, seconds: float):
        super().__init__(f"no data for {seconds:g} s")
        self.seconds = seconds


def broken_answer(exc: Exception, connection: str) -> GatewayError:
    """The Status for an answer the cluster stopped sending (stalled) or broke off."""
    if isinstance(exc, UpstreamStalled):
        return GatewayError(504, f'connection "{connection}": the cluster stopped answering for {exc.seconds:g} s')
    return GatewayError(502, f'connection "{connection}": the connection to the cluster broke')


def masked_whole(masker, content: bytes) -> bytes:
    try:
        whole = getattr(masker, "whole", None)  # masking.jsonstream.JsonMasker: one decode for a small body
        return whole(content) if whole is not None else masker.feed(content) + masker.close()
    except masking.MaskingError as exc:
        raise GatewayError(502, str(exc)) from None


async def within(chunks, idle: float | None):
    """The items of an async iterator; UpstreamStalled when the next takes longer than ``idle`` s."""
    if idle is None:
        async for chunk in chunks:
            yield chunk
        return
    iterator = aiter(chunks)
    while True:
        try:
            async with asyncio.timeout(idle):
                chunk = await anext(iterator)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise UpstreamStalled(idle) from None
        yield chunk


async def read_whole(response, idle: float | None, limit: int | None = None) -> bytes:
    """The whole body (Content-Encoding is identity by now, so the bytes are the raw bytes);
    a 502 Status when it is longer than ``limit``; UpstreamStalled when no byte came for ``idle`` s.

    One deadline for the whole read, pushed back ``idle`` s at every chunk (nothing but the
    cluster is awaited here), rather than a generator and a timeout around each chunk as
    :func:`within` needs for a stream that waits for the agent between chunks.  A body that has
    all arrived with its head (``arrived``, gateway.http1's answers) is taken without a deadline."""
    arrived = getattr(response, "arrived", None)
    body = arrived() if arrived is not None else None
    if body is not None:
        if limit is not None and len(body) > limit:
            raise GatewayError(502, f"airlock: the cluster's answer exceeds {limit} bytes; refused")
        return body
    chunks, size = [], 0
    try:
        async with asyncio.timeout(idle) as deadline:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if limit is not None and size > limit:
                    raise GatewayError(502, f"airlock: the cluster's answer exceeds {limit} bytes; refused")
                chunks.append(chunk)
                if idle is not None:
                    deadline.reschedule(asyncio.get_running_loop().time() + idle)
    except TimeoutError:
        raise UpstreamStalled(idle) from None
    return b"".join(chunks)


class HttpForwarder:
    """Forwards admitted HTTP requests over the pooled clients (``pool``: gateway.upstream.UpstreamPool)."""

    def __init__(self, pool, detectors: DetectorChoice, streams: OpenStreams):
        self.pool = pool
        self.detectors = detectors
        self.streams = streams

    async def forward(self, exchange: Exchange, upstream, body: bytes, receive, send):
        """Send the request upstream and relay the answer, within the connection's timeouts.

        kube-apiserver's long-running requests (watch, logs, exec, proxy...) may take any time to
        start and be silent for any time; every other answer must start within the first-byte
        timeout and never stall longer than the idle timeout (504 while nothing was sent).
        """
        request = exchange.request
        headers = hdr.upstream_request_headers(request.headers)
        headers.extend(cluster_headers(upstream, request.principal))
        long_running = is_long_running(request.info)
        try:
            sending = self.pool.send(upstream, request.method, upstream.server_url + request.target, headers, body)
            if long_running:  # no time limit, but the gateway's shutdown ends the wait
                response = await self.streams.unless_drained(sending)
            else:
                async with asyncio.timeout(upstream.first_byte_timeout):
                    response = await sending
        except TimeoutError:
            raise GatewayError(504, f'connection "{request.connection}": the cluster did not answer within '
                                    f"{upstream.first_byte_timeout:g} s") from None
        except httpx.ConnectTimeout:
            raise GatewayError(504, f'connection "{request.connection}": timed out connecting to the cluster') from None
        except httpx.PoolTimeout:
            raise GatewayError(503, f'connection "{request.connection}": too many concurrent requests') from None
        except httpx.HTTPError as exc:
            log.warning("upstream %s unreachable: %s", request.connection, type(exc).__name__)
            raise GatewayError(502, f'connection "{request.connection}": the cluster is unreachable') from None
        exchange.code = response.status_code
        idle = None if long_running else upstream.idle_timeout
        try:
            await self._answer(exchange, upstream, response, idle, receive, send)
        except (httpx.HTTPError, UpstreamStalled) as exc:
            if not exchange.response_started:
                raise broken_answer(exc, request.connection) from None
            exchange.message = "the cluster broke the response stream"
            log.warning("upstream %s broke the response stream", request.connection)
        finally:
            await response.aclose()

    async def _answer(self, exchange: Exchange, upstream, response, idle, receive, send):
        request = exchange.request
        encoding = response.headers.get("content-encoding", "identity").lower()
        if encoding not in ("identity", ""):
            raise GatewayError(502, f"upstream answered with Content-Encoding {encoding}, refused")
        try:
            masker = masking.response_masker(
                request.info, response.status_code, response.headers.get("content-type"),
                mask_secrets=request.mask_secrets,
                detectors=self.detectors.for_request(upstream, request.decision),
                values=request.secret_values,
            )
        except masking.MaskingError as exc:
            raise GatewayError(502, str(exc)) from None
        exchange.record_masker = self.record_masker(exchange, upstream, response)
        start = {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": hdr.response_headers(response.headers.raw),
        }
        length = response.headers.get("content-length")
        if request.release_token or (length is not None and length.isdigit() and int(length) <= SMALL_RESPONSE):
            raw = await read_whole(response, idle, limit=SMALL_RESPONSE if request.release_token else None)
            content = raw
            if masker is not None:
                content = masked_whole(masker, raw)
                exchange.masking_counts = masker.report.counts
            shown = released(exchange, content, raw) if request.release_token else content
            exchange.response_started = True
            await send(start)
            exchange.capture(content, sent=len(shown))
            exchange.end_capture()
            await send({"type": "http.response.body", "body": shown})
            return
        stream = ResponseStream(response, masker, start, exchange.cut, watch=request.info.verb == "watch", idle=idle,
                                connection=request.connection)
        try:
            with self.streams.open(stream.cut):
                await stream.relay(receive, send, exchange)
        finally:
            if masker is not None:
                exchange.masking_counts = masker.report.counts

    def record_masker(self, exchange: Exchange, upstream, response):
        """When a rule or review unmasked the agent's copy, the masker of the audit trail's copy
        (fed what the agent gets): masked as with ``maskSecrets: true``, whatever the agent saw."""
        request = exchange.request
        if request.mask_secrets:
            return None
        try:
            return masking.response_masker(
                request.info, response.status_code, response.headers.get("content-type"), mask_secrets=True,
                detectors=self.detectors.for_request(upstream, request.decision), values=exchange.record_values)
        except masking.MaskingError:
            exchange.stop_capture("airlock: the response cannot be masked for the record; not recorded")
            return None


def released(exchange: Exchange, masked: bytes, raw: bytes) -> bytes:
    """The agent's copy of a TokenRequest response whose token was released; the audit trail keeps
    ``masked`` and a completion message naming who released it."""
    shown = tokens.release(masked, raw)
    if shown is None:
        return masked
    request = exchange.request
    if request.review is not None:
        who = f"review {request.review.review_id} (approved by {request.review.reviewer or 'the reviewers'})"
    else:
        who = f'rule "{request.decision.rule_name}" (maskSecrets: false)'
    exchange.message = f"airlock: the ServiceAccount token was released to the agent by {who}; masked here"
    return shown


class ResponseStream:
    """Relays a streamed body (watch, logs -f, large lists) through the masker.

    Watches start at once and end with an ERROR event (a ``Status``) and a proper end of the
    body if masking fails, the cluster connection breaks or the stream is cut (lease, drain);
    other bodies start with their first masked bytes, so a failure before that is still a
    502/504 Status and a failure after it aborts the connection.  A text masker's held bytes
    are released after an idle pause (``logs -f``).  ``idle`` bounds the silence between two
    chunks from the cluster (None: long-running, no bound).
    """

    IDLE_FLUSH = 0.25

    def __init__(self, response, masker, start: dict, cut, *, watch: bool, idle: float | None = None, connection=""):
        self.response = response
        self.masker = masker
        self.start = start
        self.cut = cut  # the request's (gateway.exchange.Cut): its lease ended, the gateway drains
        self.watch = watch
        self.idle = idle
        self.connection = connection

    async def relay(self, receive, send, exchange):
        chunks = asyncio.Queue(maxsize=1)
        tasks = [
            asyncio.create_task(self._read(chunks)),
            asyncio.create_task(self._write(chunks, send, exchange)),
            asyncio.create_task(_disconnected(receive)),
            asyncio.create_task(self.cut.event.wait()),
        ]
        try:
            done, _ = await asyncio.wait(tasks[1:], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        writer = tasks[1]
        if writer in done and writer.exception() is not None:
            raise writer.exception()
        if tasks[3] in done and writer not in done:
            await self._end_cut(send, exchange)

    async def _end_cut(self, send, exchange):
        """A watch gets an ERROR event with the cut's Status; any other stream is aborted, not completed."""
        exchange.message = self.cut.reason
        if not self.watch:
            raise MaskingAbort(self.cut.reason)
        await self._end_watch(self.cut.error(), send, exchange)

    async def _end_watch(self, error: GatewayError, send, exchange):
        """The watch's last event is an ERROR carrying ``error``; then the body ends properly."""
        await self._begin(send, exchange)
        event = json.dumps({"type": "ERROR", "object": json.loads(error.body())}).encode() + b"\n"
        await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def _read(self, chunks):
        """Reads ahead at most one chunk (back-pressure); hands a failure to the writer.

        Only the wait for the cluster counts towards ``idle``, not the wait for a slow agent."""
        try:
            async for chunk in within(self.response.aiter_raw(), self.idle):
                await chunks.put(chunk)
        except Exception as exc:
            await chunks.put(exc)
            return
        await chunks.put(None)

    async def _write(self, chunks, send, exchange):
        if self.watch or self.masker is None:
            await self._begin(send, exchange)
        flush = getattr(self.masker, "flush", None)
        while True:
            try:
                if flush is not None and exchange.response_started:
                    chunk = await wait_at_most(chunks.get(), self.IDLE_FLUSH)
                else:
                    chunk = await chunks.get()
            except TimeoutError:
                await self._emit(flush(), send, exchange)
                continue
            if chunk is None:
                break
            if isinstance(chunk, Exception):
                await self._broken(chunk, send, exchange)
                return
            try:
                out = self.masker.feed(chunk) if self.masker is not None else chunk
            except masking.MaskingError as exc:
                await self._fail(exc, send, exchange)
                return
            await self._emit(out, send, exchange)
        try:
            rest = self.masker.close() if self.masker is not None else b""
        except masking.MaskingError as exc:
            await self._fail(exc, send, exchange)
            return
        await self._emit(rest, send, exchange)
        exchange.end_capture()
        await self._begin(send, exchange)
        await send({"type": "http.response.body", "body": b""})

    async def _broken(self, exc: Exception, send, exchange):
        """The cluster broke the answer off, or stalled: a watch ends with an ERROR event; for any
        other answer the failure goes on to forward() (a Status, or an aborted connection)."""
        if not self.watch or not isinstance(exc, (httpx.HTTPError, UpstreamStalled)):
            raise exc
        log.warning("upstream %s broke a watch: %s", self.connection, type(exc).__name__)
        error = broken_answer(exc, self.connection)
        exchange.message = error.message
        await self._end_watch(error, send, exchange)

    async def _begin(self, send, exchange):
        if not exchange.response_started:
            exchange.response_started = True
            await send(self.start)

    async def _emit(self, out: bytes, send, exchange):
        if out:
            await self._begin(send, exchange)
            exchange.capture(out)
            await send({"type": "http.response.body", "body": out, "more_body": True})

    async def _fail(self, exc, send, exchange):
        error = GatewayError(502, str(exc))
        exchange.refused(error)
        if not exchange.response_started:
            raise error
        if self.watch:
            await self._end_watch(error, send, exchange)
            return
        raise MaskingAbort(exc)


async def _disconnected(receive):
    while (await receive())["type"] != "http.disconnect":
        pass
