"""What the gateway does to each frame of an exec, attach or port-forward stream.

A :class:`StreamTap` sits in the relay between the agent and the cluster
(sans-IO: frames in, frames out).  It counts bytes and records the session
for the audit trail: exec and attach as asciicast v2, port-forward as pod,
ports and bytes each way (payloads of arbitrary TCP protocols are not kept).
"""

import time
from urllib.parse import parse_qsl

from audit.asciicast import AsciicastWriter, PortForwardTally

BASE64_PROTOCOLS = frozenset({"base64.channel.k8s.io", "v4.base64.channel.k8s.io"})


def _size(frame) -> int:
    return len(frame) if isinstance(frame, bytes) else len(frame.encode("utf-8"))


class StreamTap:
    def __init__(self, info, subprotocol: str | None, query: str):
        self.info = info
        self.subprotocol = subprotocol or ""
        self.base64 = self.subprotocol in BASE64_PROTOCOLS
        self.bytes_in = 0
        self.bytes_out = 0
        self.started = time.monotonic()
        params = parse_qsl(query, keep_blank_values=True)
        self.container = next((v for k, v in params if k == "container"), "")
        if info.subresource == "portforward":
            self.tally = PortForwardTally(int(p) for k, v in params if k == "ports" for p in v.split(",") if p.isdigit())
            self.cast = None
        else:
            self.tally = None
            self.cast = AsciicastWriter(command=[v for k, v in params if k == "command"])

    @classmethod
    def for_request(cls, request, subprotocol):
        return cls(request.info, subprotocol, request.query)

    def _now(self) -> float:
        return time.monotonic() - self.started

    def from_client(self, frame):
        size = _size(frame)
        self.bytes_in += size
        if self.cast is not None:
            self.cast.channel(self._now(), frame, base64_frames=self.base64)
        else:
            self.tally.to_pod(size)
        return frame

    def from_cluster(self, frame):
        size = _size(frame)
        self.bytes_out += size
        if self.cast is not None:
            self.cast.channel(self._now(), frame, base64_frames=self.base64)
        else:
            self.tally.from_pod(size)
        return frame

    def recording(self, duration: float) -> dict:
        info = self.info
        if self.tally is not None:
            return self.tally.recording(namespace=info.namespace, pod=info.name, duration=duration)
        return self.cast.recording(kind=info.subresource, namespace=info.namespace, pod=info.name,
                                   container=self.container)
