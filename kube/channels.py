"""The channel.k8s.io framing of exec, attach and the kubelet's port-forward over WebSocket.

Each message carries one stream's bytes behind its channel id
(``k8s.io/apimachinery/pkg/util/httpstream/wsstream``): binary variants put the id in the first
byte, base64 variants send text with the id as an ASCII digit before the base64 payload.  A
text message is read as its UTF-8 bytes, as the kubelet's and kube-apiserver's wsstream read it
(the Python client writes ``str`` stdin as text, v5 included), so every reader agrees on the
channel.  The codec is sans-IO; the gateway's relay and kubesim's server both use it.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

# remotecommand's channels; a port-forward uses 2i (data) and 2i+1 (error) for its i-th port.
STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE = 255  # v5: the payload is the id of the stream the peer half-closes

# kubectl's port-forward: a SPDY/3.1 session tunnelled in WebSocket binary messages (kube.spdy).
TUNNEL_PROTOCOL = "SPDY/3.1+portforward.k8s.io"


class ChannelError(ValueError):
    """A WebSocket message that does not follow the channel framing."""


@dataclass(frozen=True)
class ChannelProtocol:
    """One channel subprotocol.

    ``v5`` adds the CLOSE channel; ``status_json`` (v4+) sends a metav1.Status on the error
    channel, older versions its message as text.
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
        """(channel, payload) of a text or binary message alike; ChannelError when it is not in this framing."""
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


V5 = ChannelProtocol("v5.channel.k8s.io", v5=True)
V4 = ChannelProtocol("v4.channel.k8s.io")
V4_BASE64 = ChannelProtocol("v4.base64.channel.k8s.io", base64=True)
V1 = ChannelProtocol("channel.k8s.io", status_json=False)
V1_BASE64 = ChannelProtocol("base64.channel.k8s.io", base64=True, status_json=False)
# exec and attach, newest first; the kubelet's WebSocket port-forward speaks the v4 framing.
REMOTECOMMAND_PROTOCOLS = {p.name: p for p in (V5, V4, V4_BASE64, V1, V1_BASE64)}
PORTFORWARD_PROTOCOLS = {p.name: p for p in (V4, V4_BASE64)}


def framing(subprotocol: str | None) -> ChannelProtocol:
    """The framing of a negotiated subprotocol; binary for any name not listed here."""
    return REMOTECOMMAND_PROTOCOLS.get(subprotocol or "") or ChannelProtocol(subprotocol or "")
