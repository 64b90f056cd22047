"""ASGI glue for ``/k8s/<connection>/...``: thin, streaming, fail closed.

The stages themselves live in :mod:`gateway.pipeline`, :mod:`gateway.authn`
and :mod:`gateway.authz`; this module only moves bytes between the agent,
those stages and the cluster.  It is a plain ASGI application (not a Django
view) so request bodies are bounded while they arrive and responses stream
with the server's back-pressure.
"""

import asyncio
import json
import logging

import httpx

from gateway import headers as hdr
from gateway.authn import authenticate
from gateway.authz import authorize
from gateway.pipeline import GatewayRequest, parse_request, transcode_body
from gateway.status import GatewayError
from gateway.upstream import UpstreamPool, open_websocket
from gateway.wsclient import UpstreamRejected

log = logging.getLogger(__name__)

STATUS_HEADERS = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
SPDY_REFUSED = (
    "airlock: this gateway relays exec, attach, cp and port-forward over WebSockets only; "
    "SPDY is not supported. Use kubectl >= 1.31 (or unset KUBECTL_REMOTE_COMMAND_WEBSOCKETS="
    "false / KUBECTL_PORT_FORWARD_WEBSOCKETS=false)"
)
# Responses up to this size with a Content-Length are sent in one message.
SMALL_RESPONSE = 256 * 1024


class GatewayApp:
    def __init__(self, *, prefix: str, connections, authenticator, policy, max_body: int, transport=None, holder=None):
        self.prefix = prefix
        self.connections = connections
        self.authenticator = authenticator
        self.policy = policy
        self.holder = holder
        self.max_body = max_body
        self.pool = UpstreamPool(transport)

    async def aclose(self):
        await self.pool.aclose()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            await self.http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self.websocket(scope, receive, send)

    async def admit(self, scope) -> tuple[GatewayRequest, object]:
        """parse -> connection -> authenticate -> authorize; raises GatewayError."""
        request = parse_request(scope, self.prefix)
        try:
            upstream = await self.connections(request.connection)
        except Exception:
            log.exception("connection %s cannot be loaded", request.connection)
            raise GatewayError(503, f'connection "{request.connection}" is misconfigured on the gateway', stage="parse") from None
        if upstream is None:
            raise GatewayError(404, f'connection "{request.connection}" not found', stage="parse")
        await authenticate(request, self.authenticator)
        await authorize(request, self.policy, self.holder)
        return request, upstream

    # -- HTTP ---------------------------------------------------------------

    async def http(self, scope, receive, send):
        try:
            request, upstream = await self.admit(scope)
            if request.transport == "spdy":
                raise GatewayError(400, SPDY_REFUSED, stage="forward")
            body = transcode_body(request, await self.read_body(scope, receive))
            await self.forward(request, upstream, body, receive, send)
        except GatewayError as exc:
            await send_status(send, exc)

    async def read_body(self, scope, receive) -> bytes:
        for name, value in scope.get("headers", []):
            if name.lower() == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise GatewayError(400, "invalid Content-Length", stage="parse") from None
                if declared > self.max_body:
                    raise GatewayError(413, f"request body exceeds {self.max_body} bytes", stage="parse")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise asyncio.CancelledError
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise GatewayError(413, f"request body exceeds {self.max_body} bytes", stage="parse")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def forward(self, request: GatewayRequest, upstream, body: bytes, receive, send):
        client = self.pool.client(upstream)
        headers = hdr.upstream_request_headers(request.headers)
        headers.extend(cluster_headers(upstream, request.principal))
        try:
            up_request = client.build_request(
                request.method, upstream.server_url + request.target, headers=headers, content=body
            )
            response = await client.send(up_request, stream=True)
        except httpx.ConnectTimeout:
            raise GatewayError(504, f'connection "{request.connection}": timed out connecting to the cluster', stage="forward") from None
        except httpx.PoolTimeout:
            raise GatewayError(503, f'connection "{request.connection}": too many concurrent requests', stage="forward") from None
        except httpx.HTTPError as exc:
            log.warning("upstream %s unreachable: %s", request.connection, type(exc).__name__)
            raise GatewayError(502, f'connection "{request.connection}": the cluster is unreachable', stage="forward") from None
        try:
            encoding = response.headers.get("content-encoding", "identity").lower()
            if encoding not in ("identity", ""):
                raise GatewayError(502, f"upstream answered with Content-Encoding {encoding}, refused", stage="forward")
            out_headers = hdr.response_headers(response.headers.multi_items())
            length = response.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) <= SMALL_RESPONSE:
                content = await response.aread()
                await send({"type": "http.response.start", "status": response.status_code, "headers": out_headers})
                await send({"type": "http.response.body", "body": content})
            else:
                await send({"type": "http.response.start", "status": response.status_code, "headers": out_headers})
                await stream_until_disconnect(response, receive, send)
        except httpx.HTTPError:
            log.warning("upstream %s broke the response stream", request.connection)
        finally:
            await response.aclose()

    # -- WebSocket ----------------------------------------------------------

    async def websocket(self, scope, receive, send):
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        try:
            request, upstream = await self.admit(scope)
            offered = list(scope.get("subprotocols") or ()) or hdr.offered_subprotocols(request.headers)
            headers = hdr.upstream_request_headers(request.headers, websocket=True)
            headers.extend(cluster_headers(upstream, request.principal))
            try:
                upstream_ws = await open_websocket(upstream, request.target, headers, offered)
            except UpstreamRejected as exc:
                raise GatewayError(
                    exc.status if 400 <= exc.status < 600 else 502,
                    _upstream_message(exc.body, f"the cluster refused the stream ({exc.status})"),
                    stage="forward",
                ) from None
            except (OSError, asyncio.TimeoutError, ValueError) as exc:
                log.warning("upstream %s websocket failed: %s", request.connection, type(exc).__name__)
                raise GatewayError(502, f'connection "{request.connection}": the cluster is unreachable', stage="forward") from None
        except GatewayError as exc:
            await reject_websocket(scope, send, exc)
            return
        try:
            await send({"type": "websocket.accept", "subprotocol": upstream_ws.subprotocol})
            await relay(upstream_ws, receive, send)
        finally:
            await upstream_ws.close()


def cluster_headers(upstream, principal) -> list[tuple[str, str]]:
    """The gateway's own credentials, and the agent's identity in impersonation mode."""
    headers = list(upstream.auth_headers().items())
    if upstream.impersonates:
        headers.append(("Impersonate-User", upstream.impersonation_user_prefix + principal.username))
        headers.extend(("Impersonate-Group", group) for group in principal.groups)
    return headers


def _upstream_message(body: bytes | None, default: str) -> str:
    try:
        message = json.loads(body or b"").get("message")
    except (ValueError, AttributeError):
        message = None
    return message if isinstance(message, str) and message else default


async def relay(upstream_ws, receive, send):
    """Pump frames both ways until either side closes; the cluster's close code is passed on."""

    async def client_to_upstream():
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            await upstream_ws.send(data if data is not None else message.get("text", ""))

    async def upstream_to_client():
        async for data in upstream_ws:
            if isinstance(data, bytes):
                await send({"type": "websocket.send", "bytes": data})
            else:
                await send({"type": "websocket.send", "text": data})
        await send({"type": "websocket.close", "code": upstream_ws.close_code or 1000})

    tasks = [asyncio.create_task(client_to_upstream()), asyncio.create_task(upstream_to_client())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, Exception):
            log.warning("stream relay ended with %s", type(result).__name__)


async def stream_until_disconnect(response, receive, send):
    """Stream the body event by event; stop as soon as the client goes away."""

    async def pump():
        async for chunk in response.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def disconnected():
        while (await receive())["type"] != "http.disconnect":
            pass

    tasks = [asyncio.create_task(pump()), asyncio.create_task(disconnected())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if task is tasks[0] and task.exception() is not None:
            raise task.exception()


async def send_status(send, error: GatewayError):
    await send({"type": "http.response.start", "status": error.code, "headers": STATUS_HEADERS})
    await send({"type": "http.response.body", "body": error.body()})


async def reject_websocket(scope, send, error: GatewayError):
    """Refuse an upgrade with a Status body where the server allows it (uvicorn), else close (403)."""
    if "websocket.http.response" in (scope.get("extensions") or {}):
        await send({"type": "websocket.http.response.start", "status": error.code, "headers": STATUS_HEADERS})
        await send({"type": "websocket.http.response.body", "body": error.body()})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": error.message[:120]})

