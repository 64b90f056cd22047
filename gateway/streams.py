"""What the gateway does to each frame of an exec, attach or port-forward stream.

A :class:`StreamTap` sits in the relay between the agent and the cluster (sans-IO: frames
in, frames out).  The two directions are never mixed up:

* From the cluster, exec and attach output (stdout, stderr, and the error/status channel) is
  masked before the agent or the recording sees it; a frame on any other channel, or outside
  the channel framing, is dropped.
* From the agent, exec and attach accept only stdin, resize (a well-formed terminal size)
  and (v5) close; any other channel, a malformed resize or broken framing raises
  :class:`StreamViolation` before the frame is forwarded,
  and the relay ends the stream with a ``Status``.  A port-forward agent
  may only write on streams it opened (SPDY tunnel) or on data channels (the kubelet's
  channel protocol).

Exec and attach are recorded as the frames that passed, with their times (audit/frames.py:
rendered as asciicast v2 on replay; stdin masked in the recording only: the cluster receives
what was typed), port-forward as pod, ports and bytes each way (payloads of
arbitrary TCP protocols are neither parsed nor kept).
"""

import time
from urllib.parse import parse_qsl

import masking
from audit.asciicast import PortForwardTally, terminal_size
from audit.frames import FrameRecorder
from kube import spdy
from kube.channels import CLOSE, ERROR, RESIZE, STDERR, STDIN, STDOUT, TUNNEL_PROTOCOL, ChannelError, framing
from kube.status import GatewayError
from masking.queries import masked_command

MASKED_OUTPUT = (STDOUT, STDERR)


class StreamViolation(Exception):
    """The agent wrote what it may not on this stream; ``error`` is the Status that ends it."""

    def __init__(self, message: str):
        super().__init__(message)
        self.error = GatewayError(400, message)


def _size(frame) -> int:
    return len(frame) if isinstance(frame, bytes) else len(frame.encode("utf-8"))


class StreamTap:
    # A held tail (a possible secret's start) is released after this idle pause,
    # so interactive echo is never stuck waiting for more output.
    IDLE_FLUSH = 0.25

    def __init__(self, info, subprotocol: str | None, query: str, detectors, record_detectors=None):
        """``record_detectors``: what the recording (stdin, command, output) is masked for, when the
        agent's output is masked for less (``detectors``: masking turned off by a rule or review)."""
        self.info = info
        self.subprotocol = subprotocol or ""
        self.framing = framing(self.subprotocol)
        self.v5 = self.framing.v5
        self.detectors = detectors
        self.record_detectors = record_detectors or detectors
        self.record_maskers = {} if record_detectors is not None else None
        self.bytes_in = 0
        self.bytes_out = 0
        self.started = time.monotonic()
        params = parse_qsl(query, keep_blank_values=True)
        self.container = next((v for k, v in params if k == "container"), "")
        self.maskers = {}
        self.argv_counts = {}
        self.tunnel = None
        if info.subresource == "portforward":
            ports = [p for k, v in params if k == "ports" for p in v.split(",")]
            self.tally = PortForwardTally(int(p) for p in ports if p.isdigit())
            self.cast = None
            if self.subprotocol == TUNNEL_PROTOCOL:
                # The agent's half of the tunnelled SPDY session names each forwarded port.
                self.tunnel = spdy.FrameDecoder()
                self.last_stream = 0
                # Opened by the agent for each forwarded connection: its data and its error stream.
                self.data_streams: set[int] = set()
                self.error_streams: set[int] = set()
                self.replies = spdy.ReplyTracker()  # the cluster's half: frame boundaries, answered streams
            else:
                self.data_channels = 2 * len(ports)  # data 2i, error 2i+1 (written by the cluster)
        else:
            self.tally = None
            self.cast = FrameRecorder(command=masked_command(params, self.record_detectors, self.argv_counts))

    @classmethod
    def for_request(cls, request, subprotocol, detectors, record_values=None):
        """Output is masked for ``detectors`` and the request's Secret values; the recording (and the
        recorded stdin) for ``record_values`` too, also when a rule or review showed them to the agent."""
        shown = detectors.with_values(request.secret_values)
        recorded = detectors.with_values(record_values) if request.secret_values is None and record_values else None
        return cls(request.info, subprotocol, request.query, shown, recorded)

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
            detectors = self.record_detectors if channel == STDIN else self.detectors  # stdin is only recorded
            masker = self.maskers[channel] = masking.text_stream_masker(detectors)
        return masker

    def _recorded(self, channel: int, payload: bytes, flush: bool = False) -> bytes:
        """``payload`` (what the agent got) as the recording keeps it; a second masker runs only when
        the agent's output is masked for less, and only while the recording has room."""
        if self.record_maskers is None or self.cast.truncated:
            return payload
        masker = self.record_maskers.get(channel)
        if masker is None:
            masker = self.record_maskers[channel] = masking.text_stream_masker(self.record_detectors)
        return masker.feed(payload) + (masker.flush() if flush else b"")

    def _split(self, frame) -> tuple[int, bytes] | None:
        """(channel, payload), or None when the frame is not in this stream's framing."""
        try:
            return self.framing.decode(frame)
        except ChannelError:
            return None

    # -- from the agent ---------------------------------------------------------------------

    def from_client(self, frame):
        """The frame to forward to the cluster; raises StreamViolation for one the agent may not send."""
        size = _size(frame)
        self.bytes_in += size
        if self.cast is None:
            self._check_port_forward(frame)
            self.tally.to_pod(size)
            return frame
        parts = self._split(frame)
        if parts is None:
            raise StreamViolation(f"airlock: the client sent a frame outside the {self.subprotocol} framing; "
                                  "the session was ended")
        channel, payload = parts
        if channel == STDIN:
            if self.record_detectors.enabled:
                payload = self._masker(STDIN).feed(payload)
            self.cast.client_frame(self._now(), STDIN, payload)
        elif channel == RESIZE:
            if terminal_size(payload) is None:
                raise StreamViolation('airlock: the client sent a resize that is not {"Width": W, "Height": H} '
                                      "(two integers up to 65535); the session was ended")
            self.cast.client_frame(self._now(), RESIZE, payload)
        elif not (self.v5 and channel == CLOSE and payload in (bytes([STDIN]), bytes([RESIZE]))):
            raise StreamViolation(f"airlock: the client sent a frame on channel {channel}; a client writes only "
                                  "stdin (0), resize (4) and close (255, v5); the session was ended")
        return frame

    def _check_port_forward(self, frame):
        if self.tunnel is not None:
            if not isinstance(frame, bytes):
                raise StreamViolation("airlock: the client sent a text frame in the port-forward tunnel; "
                                      "the session was ended")
            self._read_tunnel(frame)
            return
        parts = self._split(frame)
        if parts is None or parts[0] % 2 or parts[0] >= self.data_channels:
            raise StreamViolation("airlock: the client wrote outside the port-forward data channels; "
                                  "the session was ended")

    def _read_tunnel(self, data: bytes):
        """Ports from the SYN_STREAMs; the agent may write only on streams it opened, in order."""
        try:
            frames = self.tunnel.feed(data)
        except spdy.SpdyError:
            raise StreamViolation("airlock: the port-forward tunnel is not a valid SPDY/3.1 session; "
                                  "the session was ended") from None
        for frame in frames:
            if isinstance(frame, spdy.SynStream):
                if frame.stream_id % 2 == 0 or frame.stream_id <= self.last_stream:
                    raise StreamViolation(f"airlock: the client opened SPDY stream {frame.stream_id} out of order; "
                                          "the session was ended")
                self.last_stream = frame.stream_id
                port = frame.headers.get("port", "")
                if frame.headers.get("streamtype") == "data":
                    self.data_streams.add(frame.stream_id)
                    if port.isdigit():
                        self.tally.add_port(int(port))
                elif frame.headers.get("streamtype") == "error":
                    self.error_streams.add(frame.stream_id)
            elif isinstance(frame, spdy.RstStream):
                self.data_streams.discard(frame.stream_id)
                self.error_streams.discard(frame.stream_id)
            elif isinstance(frame, spdy.SynReply):
                raise StreamViolation("airlock: the client sent a SPDY SYN_REPLY; the cluster opens no streams in "
                                      "a port-forward; the session was ended")
            elif isinstance(frame, (spdy.Data, spdy.Headers)) and (
                    frame.stream_id % 2 == 0 or frame.stream_id > self.last_stream):
                raise StreamViolation(f"airlock: the client wrote on SPDY stream {frame.stream_id}, which it did "
                                      "not open; the session was ended")

    # -- from the cluster -------------------------------------------------------------------

    def from_cluster(self, frame) -> list:
        """The frames to relay for one frame from the cluster (masked output may be held back)."""
        size = _size(frame)
        self.bytes_out += size
        if self.cast is None:
            self.tally.from_pod(size)
            if self.tunnel is not None and isinstance(frame, bytes):
                self.replies.feed(frame)
            return [frame]
        parts = self._split(frame)
        if parts is None:
            return []
        channel, payload = parts
        if channel in MASKED_OUTPUT:
            if payload and self.detectors.enabled:
                payload = self._masker(channel).feed(payload)
                if not payload:
                    return []
            return [self._record(channel, payload)]  # an empty frame is v5's "ready" signal
        if channel == ERROR:
            out = self.flush()
            if self.detectors.enabled:
                masker = masking.text_stream_masker(self.detectors)
                payload = masker.feed(payload) + masker.flush()
                self.maskers[ERROR] = masker
            out.append(self._record(channel, payload))
            return out
        return []  # stdin, resize, close: channels the cluster does not write

    def _record(self, channel: int, payload: bytes, flush: bool = False):
        self.cast.cluster_frame(self._now(), channel, self._recorded(channel, payload, flush or channel == ERROR))
        return self.framing.encode(channel, payload)

    def flush_channel(self, channel: int) -> list:
        masker = self.maskers.get(channel)
        rest = masker.flush() if masker is not None else b""
        if rest:
            return [self._record(channel, rest, flush=True)]
        if self.record_maskers is not None and channel in self.record_maskers and not self.cast.truncated:
            self.cast.cluster_frame(self._now(), channel, self.record_maskers[channel].flush())
        return []

    @property
    def holding(self) -> bool:
        return any(masker.held for channel, masker in self.maskers.items() if channel in MASKED_OUTPUT)

    def flush(self) -> list:
        """Release output held back by the maskers (after an idle pause, and at the end)."""
        out = []
        for channel in MASKED_OUTPUT:
            out.extend(self.flush_channel(channel))
        return out

    def end(self, error: GatewayError) -> list:
        """The gateway ends the stream: held output, then ``error`` on the error channel.

        Exec and attach get the Status on channel 3 (the recording ends with the gateway's
        message, never with an exit status); the kubelet's port-forward channels get the
        message on every port's error channel, as the kubelet writes its errors; in a tunnelled
        port-forward every forwarded connection still open gets it on its error stream and the
        end of its data stream (then kubectl prints it and closes the tunnel itself), when the
        cluster's last frame is complete.
        """
        if self.cast is None:
            if self.tunnel is not None:
                if not self.replies.at_boundary:
                    return []
                encoder = spdy.FrameEncoder()  # DATA frames use no header compression state
                errors = [spdy.Data(stream, error.message.encode(), fin=True)
                          for stream in sorted(self.error_streams & self.replies.open)]
                ends = [spdy.Data(stream, b"", fin=True) for stream in sorted(self.data_streams & self.replies.open)]
                return [encoder.encode(frame) for frame in errors + ends]
            return [self.framing.encode(channel, error.message.encode()) for channel in range(1, self.data_channels, 2)]
        out = self.flush()
        self.cast.exit(self._now(), None, error.message)
        out.append(self.framing.encode(ERROR, error.body()))
        return out

    def recording(self, duration: float) -> dict:
        info = self.info
        if self.tally is not None:
            return self.tally.recording(namespace=info.namespace, pod=info.name, duration=duration)
        if STDIN in self.maskers:
            rest = self.maskers[STDIN].flush()
            if rest:
                self.cast.client_frame(self._now(), STDIN, rest)
        return self.cast.recording(kind=info.subresource, namespace=info.namespace, pod=info.name,
                                   container=self.container)
