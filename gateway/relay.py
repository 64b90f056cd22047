"""The WebSocket side of the data path: exec, attach and port-forward relayed frame by frame.

:class:`Handshake` is the agent's half before the relay starts (what a held stream is told, the
subprotocol accepted early, how a refusal is sent); :func:`connect` opens the cluster's half with
the connection's credential; :func:`run` pumps frames both ways through a
:class:`gateway.streams.StreamTap` (masking, direction rules, the recording) until a side closes
or the stream is cut.  The channel framing is kube.channels'.
"""

import asyncio
import logging
import time

from connections.credentials import cluster_headers
from gateway.exchange import Exchange, OpenStreams
from gateway.refusals import reject_websocket, upstream_refusal
from gateway.streams import StreamTap, StreamViolation
from gateway.upgrades import CHANNEL_PROTOCOLS
from gateway.upstream import open_websocket
from gateway.wsclient import UpstreamRejected, UpstreamTimeout
from kube import channels
from kube import headers as hdr
from kube.requestinfo import RequestInfoError, parse_query, query_bool
from kube.status import GatewayError
from runtime.timeouts import wait_at_most

log = logging.getLogger(__name__)

# How long a port-forward agent gets to read the gateway's last message and close the tunnel itself.
TUNNEL_LINGER = 1.0


class Handshake:
    """The agent's WebSocket before the relay: accepted early only to tell a held stream it waits.

    The note goes only where the client reads errors (client-go logs frames on channels it did
    not ask for as "Unknown stream" and drops them; the Python client puts them in its output or
    fails its port-forward):

    * exec/attach held open whose client asked for stderr (and no tty, which merges it): the
      WebSocket is accepted at once and the note written on stderr;
    * any other exec/attach: accepted, and answered at once with a Status on the error channel
      (kubectl prints it and exits; run it again once approved);
    * port-forward: its channels carry only port data and port errors, so a held one waits
      before the handshake without a note, and one answered at once is refused with the Status.
    """

    def __init__(self, exchange: Exchange, send):
        self.exchange = exchange
        self.send = send
        self.accepted: str | None = None  # the subprotocol accepted while the request was held

    async def on_pending(self, pending):
        protocol = channel_protocol(self.exchange.offered)
        request = self.exchange.request
        if protocol is None or request.info.subresource == "portforward":
            return pending.wait
        await self.send({"type": "websocket.accept", "subprotocol": protocol})
        self.accepted = protocol
        if not (pending.wait and wants_stderr(request)):
            return False
        note = (f"airlock: waiting for a reviewer to approve review {pending.id} "
                f"(rule {pending.rule_name}): {pending.url}; the session starts once it is approved\r\n")
        await self.send(channel_frame(protocol, channels.STDERR, note.encode()))
        return True

    async def refuse(self, error: GatewayError):
        """A Status on the error channel once accepted, else the upgrade refused."""
        if self.accepted:
            await self.send(channel_frame(self.accepted, channels.ERROR, error.body()))
            await self.send({"type": "websocket.close", "code": 1000})
        else:
            await reject_websocket(self.exchange.scope, self.send, error)


async def connect(exchange: Exchange, upstream, detectors, accepted: str | None):
    """The cluster's half of the relay, as the connection's identity; a GatewayError otherwise."""
    request = exchange.request
    headers = hdr.upstream_request_headers(request.headers, websocket=True)
    headers.extend(cluster_headers(upstream, request.principal))
    try:
        return await open_websocket(upstream, request.target, hdr.encode(headers),
                                    [accepted] if accepted else exchange.offered)
    except UpstreamRejected as exc:
        raise upstream_refusal(exc, request, detectors, exchange.record_values) from None
    except UpstreamTimeout as exc:
        raise GatewayError(504, f'connection "{request.connection}": ' + (
            "timed out connecting to the cluster" if exc.phase == "connect"
            else f"the cluster did not answer within {exc.seconds:g} s")) from None
    except (OSError, ValueError) as exc:
        log.warning("upstream %s websocket failed: %s", request.connection, type(exc).__name__)
        raise GatewayError(502, f'connection "{request.connection}": the cluster is unreachable') from None


async def run(exchange: Exchange, upstream_ws, detectors, accepted: str | None, streams: OpenStreams,
              receive, send):
    """Accept the agent's WebSocket (unless accepted while held) and relay until a side closes."""
    exchange.code = 101
    request = exchange.request
    tap = StreamTap.for_request(request, upstream_ws.subprotocol, detectors, exchange.record_values)
    cut = exchange.cut
    try:
        if not accepted:
            await send({"type": "websocket.accept", "subprotocol": upstream_ws.subprotocol})
        with streams.open(cut):
            ended = await relay(upstream_ws, receive, send, tap, cut)
        if ended is not None:
            exchange.reason, exchange.message = ended.reason, ended.message
    finally:
        await upstream_ws.close()
        exchange.bytes_in, exchange.bytes_out = tap.bytes_in, tap.bytes_out
        exchange.recording = tap.recording(time.monotonic() - exchange.started)
        exchange.masking_counts = tap.report
        if cut.event.is_set():
            exchange.message = cut.reason


def wants_stderr(request) -> bool:
    """The exec or attach client reads a stderr stream: ``stderr`` true and no ``tty`` (which merges it),
    decoded as kube-apiserver decodes PodExecOptions and PodAttachOptions."""
    try:
        params = parse_query(request.query)
    except RequestInfoError:
        return False
    return query_bool(params, "stderr") and not query_bool(params, "tty")


def channel_protocol(offered: list[str]) -> str | None:
    """The channel protocol to accept before the cluster is reached (the client's preference)."""
    return next((p for p in offered if p in CHANNEL_PROTOCOLS), None)


def channel_frame(protocol: str, channel: int, payload: bytes) -> dict:
    return ws_message(channels.framing(protocol).encode(channel, payload))


def ws_message(frame: bytes | str) -> dict:
    if isinstance(frame, bytes):
        return {"type": "websocket.send", "bytes": frame}
    return {"type": "websocket.send", "text": frame}


class UpstreamBroke(Exception):
    """The cluster's half of a relay ended without a close frame (reset, dead connection)."""

    error = GatewayError(502, "airlock: the connection to the cluster broke; the session was ended")


async def closed_by_client(receive, timeout: float) -> bool:
    """Whether the agent closes the WebSocket within ``timeout`` s (what it sends meanwhile is dropped)."""
    try:
        async with asyncio.timeout(timeout):
            while (await receive())["type"] != "websocket.disconnect":
                pass
    except TimeoutError:
        return False
    return True


def close_code(error: GatewayError, status_sent: bool) -> int:
    """The agent's close code when the gateway ends a relay: 1000 once the Status went on the error
    channel; else what the end means: 1001 going away (drain), 1011 the cluster failed, 1008 policy."""
    if status_sent:
        return 1000
    return {503: 1001, 502: 1011, 504: 1011}.get(error.code, 1008)


async def relay(upstream_ws, receive, send, tap, cut) -> GatewayError | None:
    """Pump frames both ways until either side closes; the cluster's close code is passed on.

    Every frame passes through ``tap`` (masking of what the cluster sends,
    recording) before it is relayed; output the masker holds back is released
    after an idle pause and before the close.  A frame the agent may not send,
    a broken cluster connection, or the stream being cut (its lease ended, the
    gateway drains) ends the stream with a Status on the error channel (exec,
    attach, the kubelet's port-forward channels) and a close; that error is
    returned, None when a side closed.
    """

    async def client_to_upstream():
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is None:
                data = message.get("text", "")
            await upstream_ws.send(tap.from_client(data))

    async def to_client(frames):
        for frame in frames:
            await send(ws_message(frame))

    async def upstream_to_client() -> bool:
        frames = aiter(upstream_ws)
        while True:
            try:
                if tap.holding:
                    data = await wait_at_most(anext(frames), tap.IDLE_FLUSH)
                else:
                    data = await anext(frames)
            except TimeoutError:
                await to_client(tap.flush())
                continue
            except StopAsyncIteration:
                break
            except OSError:
                raise UpstreamBroke from None
            await to_client(tap.from_cluster(data))
        if upstream_ws.close_code == 1006:  # no close frame: the connection broke
            raise UpstreamBroke
        await to_client(tap.flush())
        await send({"type": "websocket.close", "code": upstream_ws.close_code or 1000})
        return True

    tasks = [asyncio.create_task(client_to_upstream()), asyncio.create_task(upstream_to_client()),
             asyncio.create_task(cut.event.wait())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    ended = None
    if isinstance(results[0], StreamViolation):
        ended = results[0].error
    elif isinstance(results[1], UpstreamBroke):
        ended = UpstreamBroke.error
    elif tasks[2] in done:
        ended = cut.error()
    if ended is not None and results[1] is not True:
        frames = tap.end(ended)
        await to_client(frames)
        # kubectl port-forward prints an error stream's message only if it closes the tunnel itself.
        if not (frames and tap.tunnel is not None and await closed_by_client(receive, TUNNEL_LINGER)):
            # Without a Status on an error channel, the close frame carries the message (<= 123 bytes).
            reason = "" if frames else ended.message.encode()[:120].decode("utf-8", "ignore")
            await send({"type": "websocket.close", "code": close_code(ended, bool(frames)), "reason": reason})
    for result in results:
        if isinstance(result, Exception) and not isinstance(result, (StreamViolation, UpstreamBroke)):
            log.warning("stream relay ended with %s", type(result).__name__)
    return ended
