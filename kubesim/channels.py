"""WebSocket subprotocol negotiation and channel writing shared by exec, attach, port-forward.

The framing itself (a stream id before each message's payload) is :mod:`kube.channels`;
:class:`ChannelWriter` serialises the messages of several pumps onto one WebSocket.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Iterable

from aiohttp import web

from kube.channels import ERROR, ChannelProtocol
from kubesim import errors

MAX_MESSAGE = 16 * 1024 * 1024 + 64  # room for a full-size SPDY frame in one message


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
