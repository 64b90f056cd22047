"""How the gateway says no: a Kubernetes ``Status`` over HTTP, or on a WebSocket upgrade.

Every part of the data path refuses the same way (parse, admission, forwarding, the relay), and so
does the router (airlock.routing) for paths outside the gateway; the refusal of an upgrade the
cluster turned down is built here too, because its message is passed on to the agent only after
masking.
"""

import json

import masking
from gateway.wsclient import UpstreamRejected
from kube.status import GatewayError

STATUS_HEADERS = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]


async def send_status(send, error: GatewayError):
    await send({"type": "http.response.start", "status": error.code, "headers": error.headers()})
    await send({"type": "http.response.body", "body": error.body()})


async def reject_websocket(scope, send, error: GatewayError):
    """Refuse an upgrade with a Status body where the server allows it (uvicorn), else close (403)."""
    if "websocket.http.response" in (scope.get("extensions") or {}):
        body = error.body()
        # With a length, not chunked: the Python client (websocket-client) reads a refusal's body only then.
        headers = [*error.headers(), (b"content-length", str(len(body)).encode())]
        await send({"type": "websocket.http.response.start", "status": error.code, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": error.message[:120]})


def upstream_refusal(exc: UpstreamRejected, request, detectors, values=None) -> GatewayError:
    """The cluster's refusal of an upgrade as the agent may see it.

    Only a ``Status`` message is passed on, after the body went through a response masker with
    Secret masking on and the connection's Secret ``values`` whatever the request's masking: the
    message is also the audit trail's, which stays masked; what cannot be masked gets a generic message.
    """
    code = exc.status if 400 <= exc.status < 600 else 502
    default = f"the cluster refused the stream ({exc.status})"
    try:
        masker = masking.response_masker(request.info, exc.status, exc.content_type,
                                         mask_secrets=True, detectors=detectors, values=values)
        body = masker.feed(exc.body) + masker.close() if masker is not None else exc.body
        status = json.loads(body or b"null")
    except (masking.MaskingError, ValueError):
        return GatewayError(code, default)
    message = status.get("message") if isinstance(status, dict) and status.get("kind") == "Status" else None
    return GatewayError(code, message if isinstance(message, str) and message else default)
