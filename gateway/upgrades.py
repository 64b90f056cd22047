"""Which WebSocket upgrades exist: one sans-IO decision, made from the parsed request.

kube-apiserver answers a WebSocket upgrade on far more than exec: a watch (one JSON text
message per event), ``pods/log``, ``*/proxy``, and a plain GET that ignores the upgrade and
answers with the object.  The gateway relays only the streams it masks and records frame by
frame: ``pods/exec`` and ``pods/attach`` (remotecommand channel protocols) and
``pods/portforward`` (SPDY tunnelled in WebSocket, or the kubelet's channel protocol).
Everything else is refused with a 400 ``Status`` before policy, a hold or the cluster sees it.

Watches over WebSocket are refused rather than relayed: no kubectl or client-go release asks
for one, and the same data comes masked and recorded over an HTTP watch.  kubectl's SPDY
fallback is unaffected: exec, attach and port-forward keep their WebSocket path.
"""

from kube import channels
from kube.status import GatewayError

CHANNEL_PROTOCOLS = tuple(channels.REMOTECOMMAND_PROTOCOLS)
# The kubelet's WebSocket port-forward (the Python client) speaks the v4 channel framing.
PORTFORWARD_PROTOCOLS = (channels.TUNNEL_PROTOCOL, *channels.PORTFORWARD_PROTOCOLS)
STREAM_PROTOCOLS = {"exec": CHANNEL_PROTOCOLS, "attach": CHANNEL_PROTOCOLS, "portforward": PORTFORWARD_PROTOCOLS}


def stream_kind(info) -> str | None:
    """``exec``, ``attach`` or ``portforward`` when a WebSocket upgrade of this request is relayed."""
    if (info.is_resource_request and info.verb == "get" and info.api_group == "" and info.resource == "pods"
            and info.namespace and info.name and len(info.parts) == 3 and info.subresource in STREAM_PROTOCOLS):
        return info.subresource
    return None


def relayed_protocols(info, offered) -> list[str]:
    """The offered subprotocols the gateway understands for this upgrade, in the client's order.

    Raises a 400 GatewayError when the request is not one the gateway relays over WebSocket,
    or offers no subprotocol the relay can read.
    """
    kind = stream_kind(info)
    if kind is None:
        raise GatewayError(
            400, f"airlock: WebSocket upgrades are relayed only for pods/exec, pods/attach and pods/portforward, "
                 f"not for {describe(info)}")
    known = [p for p in offered if p in STREAM_PROTOCOLS[kind]]
    if not known:
        raise GatewayError(
            400, f"airlock: pods/{kind} over WebSocket needs one of the subprotocols "
                 f"{', '.join(STREAM_PROTOCOLS[kind])}")
    return known


def describe(info) -> str:
    if not info.is_resource_request:
        return f"{info.verb} {info.path[:100]}"
    resource = info.resource + (f"/{info.subresource}" if info.subresource else "")
    return f"{info.verb} {resource[:100]}"


SPDY_REFUSED = (
    "airlock: this gateway relays exec, attach, cp and port-forward over WebSockets only; "
    "SPDY is not supported. Use kubectl >= 1.31 (or unset KUBECTL_REMOTE_COMMAND_WEBSOCKETS="
    "false / KUBECTL_PORT_FORWARD_WEBSOCKETS=false)"
)


def upgrade_refusal(request, subprotocols) -> tuple[GatewayError | None, list[str]]:
    """(the refusal of an upgrade the gateway does not relay: SPDY, or a WebSocket other than
    exec/attach/port-forward; the subprotocols it may offer the cluster for one it relays)."""
    if request.transport == "spdy":
        return GatewayError(400, SPDY_REFUSED), []
    if request.transport == "websocket":
        try:
            return None, relayed_protocols(request.info, subprotocols or ())
        except GatewayError as exc:
            return exc, []
    return None, []
