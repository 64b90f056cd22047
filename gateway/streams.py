"""What the gateway does to each frame of an exec, attach or port-forward stream.

A :class:`StreamTap` sits in the relay between the agent and the cluster
(sans-IO: frames in, frames out).  It masks secrets in what the cluster
sends on the output channels (stdout, stderr, and the error/status channel)
before the agent or the recording sees them, counts bytes, and records the
session for the audit trail: exec and attach as asciicast v2 (stdin masked
in the recording only: the cluster receives what was typed), port-forward as
pod, ports and bytes each way (payloads of arbitrary TCP protocols are
neither parsed nor kept).
"""

import base64
import binascii
import time
from urllib.parse import parse_qsl, urlencode

from audit.asciicast import AsciicastWriter, PortForwardTally
from gateway import masking, spdy

BASE64_PROTOCOLS = frozenset({"base64.channel.k8s.io", "v4.base64.channel.k8s.io"})
SPDY_TUNNEL_PREFIX = "SPDY/3.1+"
STDIN, STDOUT, STDERR, ERROR = 0, 1, 2, 3
MASKED_OUTPUT = (STDOUT, STDERR)


def _size(frame) -> int:
    return len(frame) if isinstance(frame, bytes) else len(frame.encode("utf-8"))


def masked_command(params, detectors, counts: dict) -> list[str]:
    """The exec ``command=`` words with secrets masked (``mysql -pS3cret`` is in the URL)."""
    command = [v for k, v in params if k == "command"]
    if detectors.enabled:
        detectors.mask_argv(command, counts)
    return command


def masked_target(request, detectors) -> str:
    """The request URI as the audit trail may keep it: exec/attach commands masked."""
    params = parse_qsl(request.query, keep_blank_values=True)
    if not any(k == "command" for k, _ in params) or not detectors.enabled:
        return request.target
    words = iter(masked_command(params, detectors, {}))
    query = urlencode([(k, next(words) if k == "command" else v) for k, v in params])
    return request.upstream_path + "?" + query


class StreamTap:
    # A held tail (a possible secret's start) is released after this idle pause,
    # so interactive echo is never stuck waiting for more output.
    IDLE_FLUSH = 0.25

    def __init__(self, info, subprotocol: str | None, query: str, detectors):
        self.info = info
        self.subprotocol = subprotocol or ""
        self.base64 = self.subprotocol in BASE64_PROTOCOLS
        self.detectors = detectors
        self.bytes_in = 0
        self.bytes_out = 0
        self.started = time.monotonic()
        params = parse_qsl(query, keep_blank_values=True)
        self.container = next((v for k, v in params if k == "container"), "")
        self.maskers = {}
        self.argv_counts = {}
        self.tunnel = None
        if info.subresource == "portforward":
            self.tally = PortForwardTally(int(p) for k, v in params if k == "ports" for p in v.split(",") if p.isdigit())
            self.cast = None
            if self.subprotocol.startswith(SPDY_TUNNEL_PREFIX):
                # The agent's half of the tunnelled SPDY session names each forwarded port.
                self.tunnel = spdy.FrameDecoder()
        else:
            self.tally = None
            self.cast = AsciicastWriter(command=masked_command(params, detectors, self.argv_counts))

    @classmethod
    def for_request(cls, request, subprotocol, detectors):
        """Output (and the recorded stdin) is masked for ``detectors`` and the request's Secret values."""
        return cls(request.info, subprotocol, request.query, detectors.with_values(request.secret_values))

    @property
    def report(self) -> dict:
        counts = dict(self.argv_counts)
        for masker in self.maskers.values():
            for kind, count in masker.report.counts.items():
                counts[kind] = counts.get(kind, 0) + count
        return counts

    def _now(self) -> float:
        return time.monotonic() - self.started

    def _masker(self, channel: int):
        masker = self.maskers.get(channel)
        if masker is None:
            masker = self.maskers[channel] = masking.text_stream_masker(self.detectors)
        return masker

    def _split(self, frame):
        """(channel, payload bytes) of a channel.k8s.io frame, or None when it has none."""
        if isinstance(frame, str):
            if not self.base64 or not frame or not frame[0].isdigit():
                return None
            try:
                return int(frame[0]), base64.b64decode(frame[1:], validate=True)
            except binascii.Error:
                return None
        if not frame:
            return None
        return frame[0], bytes(frame[1:])

    def _join(self, channel: int, payload: bytes):
        if self.base64:
            return str(channel) + base64.b64encode(payload).decode("ascii")
        return bytes([channel]) + payload

    def from_client(self, frame):
        size = _size(frame)
        self.bytes_in += size
        if self.cast is None:
            self.tally.to_pod(size)
            if self.tunnel is not None and isinstance(frame, bytes):
                self._read_tunnel(frame)
            return frame
        parts = self._split(frame)
        if parts is not None and parts[0] == STDIN and self.detectors.enabled:
            masked = self._masker(STDIN).feed(parts[1])
            if masked:
                self.cast.channel(self._now(), self._join(STDIN, masked), base64_frames=self.base64)
        else:
            self.cast.channel(self._now(), frame, base64_frames=self.base64)
        return frame

    def _read_tunnel(self, data: bytes):
        """Ports from the tunnel's SYN_STREAM headers; a session that does not parse is refused."""
        for frame in self.tunnel.feed(data):
            if isinstance(frame, spdy.SynStream) and frame.headers.get("streamtype") == "data":
                port = frame.headers.get("port", "")
                if port.isdigit():
                    self.tally.add_port(int(port))

    def from_cluster(self, frame) -> list:
        """The frames to relay for one frame from the cluster (masked output may be held back)."""
        size = _size(frame)
        self.bytes_out += size
        if self.cast is None:
            self.tally.from_pod(size)
            return [frame]
        parts = self._split(frame)
        if parts is None or not self.detectors.enabled:
            self.cast.channel(self._now(), frame, base64_frames=self.base64)
            return [frame]
        channel, payload = parts
        if channel in MASKED_OUTPUT and payload:
            payload = self._masker(channel).feed(payload)
            if not payload:
                return []
        elif channel == ERROR and payload:
            out = []
            for held in MASKED_OUTPUT:
                out.extend(self.flush_channel(held))
            masker = masking.text_stream_masker(self.detectors)
            payload = masker.feed(payload) + masker.flush()
            self.maskers[ERROR] = masker
            out.append(self._record(self._join(channel, payload)))
            return out
        return [self._record(self._join(channel, payload))]

    def _record(self, frame):
        self.cast.channel(self._now(), frame, base64_frames=self.base64)
        return frame

    def flush_channel(self, channel: int) -> list:
        masker = self.maskers.get(channel)
        rest = masker.flush() if masker is not None else b""
        return [self._record(self._join(channel, rest))] if rest else []

    @property
    def holding(self) -> bool:
        return any(masker.held for channel, masker in self.maskers.items() if channel in MASKED_OUTPUT)

    def flush(self) -> list:
        """Release output held back by the maskers (after an idle pause, and at the end)."""
        out = []
        for channel in MASKED_OUTPUT:
            out.extend(self.flush_channel(channel))
        return out

    def recording(self, duration: float) -> dict:
        info = self.info
        if self.tally is not None:
            return self.tally.recording(namespace=info.namespace, pod=info.name, duration=duration)
        if STDIN in self.maskers:
            rest = self.maskers[STDIN].flush()
            if rest:
                self.cast.channel(self._now(), self._join(STDIN, rest), base64_frames=self.base64)
        return self.cast.recording(kind=info.subresource, namespace=info.namespace, pod=info.name,
                                   container=self.container)
