"""WebSocket channel framing and subprotocol negotiation shared by exec, attach, port-forward.

The remotecommand/port-forward WebSocket protocols put a stream id before each message's
payload (``k8s.io/apimachinery/pkg/util/remotecommand``, the kubelet's wsstream).  The
codec is pure; :class:`ChannelWriter` serialises the messages of several pumps onto one
WebSocket.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import web

from kubesim import errors

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE = 255  # v5: payload is the id of the stream the peer half-closes
MAX_MESSAGE = 16 * 1024 * 1024 + 64  # room for a full-size SPDY frame in one message


class ChannelError(ValueError):
    """A WebSocket message that does not follow the channel framing."""


@dataclass(frozen=True)
class ChannelProtocol:
    """One channel subprotocol.

    Binary variants put the id in the first byte; base64 variants send text with the id as
    an ASCII digit followed by the base64 payload.  ``v5`` adds the CLOSE channel;
    ``status_json`` (v4+) sends a metav1.Status on the error channel, older versions text.
    """

    name: str
    base64: bool = False
    v5: bool = False
    status_json: bool = True

    def encode(self, channel: int, payload: bytes) -> bytes | str:
        if self.base64:
            return chr(ord("0") + channel) + base64.b64encode(payload).decode("ascii")
        return bytes((channel,)) + payload

    def decode(self, message: bytes | str) -> tuple[int, bytes]:
        """Accept text or binary frames alike, as the kubelet's wsstream does."""
        raw = message.encode("utf-8") if isinstance(message, str) else bytes(message)
        if not raw:
            raise ChannelError("empty message has no channel")
        if not self.base64:
            return raw[0], raw[1:]
        channel = raw[0] - ord("0")
        if not 0 <= channel <= 9:
            raise ChannelError("base64 message must start with a channel digit")
        try:
            return channel, base64.b64decode(raw[1:], validate=True)
        except binascii.Error:
            raise ChannelError("invalid base64 payload") from None


def _by_name(*protocols: ChannelProtocol) -> dict[str, ChannelProtocol]:
    return {p.name: p for p in protocols}


V4 = ChannelProtocol("v4.channel.k8s.io")
V4_BASE64 = ChannelProtocol("v4.base64.channel.k8s.io", base64=True)
EXEC_PROTOCOLS = _by_name(
    ChannelProtocol("v5.channel.k8s.io", v5=True),
    V4,
    V4_BASE64,
    ChannelProtocol("channel.k8s.io", status_json=False),
    ChannelProtocol("base64.channel.k8s.io", base64=True, status_json=False),
)


def offered_protocols(request: web.BaseRequest) -> list[str]:
    """The client's Sec-WebSocket-Protocol values, in its order of preference."""
    return [p.strip() for h in request.headers.getall("Sec-WebSocket-Protocol", ()) for p in h.split(",") if p.strip()]


def is_websocket_upgrade(request: web.BaseRequest) -> bool:
    """A well-formed RFC 6455 opening handshake (checked here so failures get a Status).

    aiohttp's own check would log the offered subprotocols on a mismatch, and those can
    carry a bearer token.
    """
    headers = request.headers
    connection = {t.strip().lower() for t in headers.get("Connection", "").split(",")}
    try:
        key_ok = len(base64.b64decode(headers.get("Sec-WebSocket-Key", ""), validate=True)) == 16
    except binascii.Error:
        key_ok = False
    return (
        request.method == "GET"
        and headers.get("Upgrade", "").strip().lower() == "websocket"
        and "upgrade" in connection
        and headers.get("Sec-WebSocket-Version", "").strip() == "13"
        and key_ok
    )


def negotiate(request: web.BaseRequest, supported: Iterable[str]) -> str:
    """The first subprotocol the client offers that we support; ApiError(400) otherwise.

    Offered values are never echoed back: browsers smuggle bearer tokens in them.
    """
    supported = list(supported)
    if not is_websocket_upgrade(request):
        raise errors.bad_request("Upgrade request required")
    protocol = next((p for p in offered_protocols(request) if p in supported), None)
    if protocol is None:
        raise errors.bad_request(
            "unable to upgrade connection: no supported WebSocket subprotocol offered; supported: "
            + ", ".join(supported)
        )
    return protocol


async def accept(request: web.Request, protocol: str) -> web.WebSocketResponse:
    """Complete the handshake with ``protocol``; no compression (throughput, and no peer needs it)."""
    ws = web.WebSocketResponse(protocols=(protocol,), compress=False, max_msg_size=MAX_MESSAGE, decode_text=False)
    await ws.prepare(request)
    return ws


class ChannelWriter:
    """Sends channel messages on one WebSocket for several concurrent pumps."""

    def __init__(self, ws: web.WebSocketResponse, protocol: ChannelProtocol) -> None:
        self.ws = ws
        self.protocol = protocol
        self._lock = asyncio.Lock()

    async def send(self, channel: int, payload: bytes) -> None:
        message = self.protocol.encode(channel, payload)
        async with self._lock:
            if isinstance(message, str):
                await self.ws.send_str(message)
            else:
                await self.ws.send_bytes(message)

    async def status(self, status: dict) -> None:
        """Final status on the error channel: Status JSON (v4+) or its message as text."""
        if self.protocol.status_json:
            await self.send(ERROR, json.dumps(status, separators=(",", ":")).encode())
        elif status.get("status") != "Success":
            await self.send(ERROR, status.get("message", "").encode())
