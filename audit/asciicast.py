"""Recordings of exec/attach streams (asciicast v2) and port-forwards (byte counts), sans-IO.

:class:`AsciicastWriter` turns events (times in seconds since the stream opened) into asciicast
text.  The relay no longer drives it while a stream runs: it keeps the frames
(:mod:`audit.frames`), and the writer renders them when a recording is replayed or exported, so
a recording reads exactly as when the writer was fed live.  The data must already be masked.  asciicast v2 (docs.asciinema.org/manual/asciicast/v2) is a JSON header
line followed by ``[time, code, data]`` lines: ``"o"`` output, ``"i"`` input, ``"r"`` resize
(``"COLSxROWS"``), ``"m"`` marker.  v2 has no exit event, so the exit status is a marker
(``"exit status 3"``) and ``exit_code`` of the recording.

Channels of the Kubernetes remotecommand protocols, by direction (the relay parses the framing
and refuses a client writing elsewhere): from the client, 0 stdin -> "i" and 4 resize
``{"Width","Height"}`` -> "r"; from the cluster, 1 stdout and 2 stderr -> "o" and 3 status (a
``metav1.Status`` whose ``NonZeroExitCode`` cause carries the exit code) -> exit.  Nothing the
client sends can become output or an exit status.
"""

import codecs
import json
import re
import time

from kube.channels import ERROR, RESIZE, STDERR, STDIN, STDOUT

# Room kept below the cap for the truncation marker and the exit status.
_RESERVE = 512
# The header is not counted against the cap; its free-text fields are bounded instead.
_HEADER_TEXT = 1024
# An exit code is a process's int32 status; anything else in the cause is not one.
_EXIT_CODE = re.compile(r"-?[0-9]{1,10}")
_INT32 = range(-(2**31), 2**31)
# client-go's TerminalSize is two uint16 (``{"Width":65535,"Height":65535}`` is 30 bytes).
MAX_RESIZE_BYTES = 256
_UINT16 = range(0, 2**16)


def terminal_size(payload: bytes) -> tuple[int, int] | None:
    """(cols, rows) of a resize message ``{"Width": W, "Height": H}``; None for anything else.

    Bounded before it is parsed, so an oversized or deeply nested frame costs nothing.
    """
    if len(payload) > MAX_RESIZE_BYTES:
        return None
    try:
        size = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if not isinstance(size, dict):
        return None
    cols, rows = size.get("Width"), size.get("Height")
    if type(cols) is not int or type(rows) is not int or cols not in _UINT16 or rows not in _UINT16:
        return None
    return cols, rows


def exit_status(payload: bytes) -> tuple[int | None, str]:
    """(exit code, message) from the status channel; code None when the command did not exit normally."""
    try:
        status = json.loads(payload)
    except ValueError:
        return None, payload.decode("utf-8", "replace").strip()[:1024]
    if not isinstance(status, dict):
        return None, ""
    if status.get("status") == "Success":
        return 0, ""
    message = status.get("message") if isinstance(status.get("message"), str) else ""
    if status.get("reason") == "NonZeroExitCode":
        details = status.get("details") if isinstance(status.get("details"), dict) else {}
        causes = details.get("causes") if isinstance(details.get("causes"), list) else []
        for cause in causes:
            if isinstance(cause, dict) and cause.get("reason") == "ExitCode":
                code = cause.get("message")
                if isinstance(code, str) and _EXIT_CODE.fullmatch(code) and int(code) in _INT32:
                    return int(code), message[:1024]
                break
    return None, message[:1024]


class AsciicastWriter:
    def __init__(self, width: int | None = None, height: int | None = None, command=(), *,
                 title: str = "", started_at: float | None = None, max_bytes: int = 8 * 1024 * 1024):
        self.width, self.height = width, height
        self.command = list(command)
        self.title = title
        self.started_at = time.time() if started_at is None else started_at
        self.max_bytes = max_bytes
        self.exit_code: int | None = None
        self.truncated = False
        self.duration = 0.0
        self._lines: list[str] = []
        self._size = 0
        self._decoders = {}

    # -- events -------------------------------------------------------------------------

    def input(self, t: float, data: bytes | str) -> None:
        self._text(t, "i", "stdin", data)

    def output(self, t: float, data: bytes | str, stream: str = "stdout") -> None:
        self._text(t, "o", stream, data)

    def resize(self, t: float, cols: int, rows: int) -> None:
        if self.width is None and not self._lines:
            self.width, self.height = cols, rows
        self._event(t, "r", f"{cols}x{rows}")

    def marker(self, t: float, label: str) -> None:
        self._event(t, "m", label)

    def exit(self, t: float, code: int | None, message: str = "") -> None:
        """The command's end: its exit code, or None with the server's message when it failed."""
        self._drain(t)
        self.exit_code = code
        label = f"exit status {code}" if code is not None else f"terminated: {message}".rstrip(": ")
        self._event(t, "m", label, final=True)

    def truncate(self, t: float) -> None:
        """The recording stops here (its frames reached their size limit): later events but the exit are dropped."""
        t = max(float(t), self.duration)
        self.duration = t
        if not self.truncated:
            self._truncate_at(t)

    def client_frame(self, t: float, channel: int, payload: bytes) -> None:
        """A frame the client sent: stdin is input, a resize is a resize; nothing else is recorded."""
        if not payload:
            return
        if channel == STDIN:
            self.input(t, payload)
        elif channel == RESIZE:
            size = terminal_size(payload)
            if size is not None and 0 < size[0] <= 10000 and 0 < size[1] <= 10000:
                self.resize(t, *size)

    def cluster_frame(self, t: float, channel: int, payload: bytes) -> None:
        """A frame the cluster sent: stdout and stderr are output, the status channel is the exit."""
        if not payload:
            return
        if channel in (STDOUT, STDERR):
            self.output(t, payload, "stdout" if channel == STDOUT else "stderr")
        elif channel == ERROR:
            self.exit(t, *exit_status(payload))

    # -- output -------------------------------------------------------------------------

    def header(self) -> dict:
        header = {
            "version": 2,
            "width": self.width or 80,
            "height": self.height or 24,
            "timestamp": int(self.started_at),
            "duration": round(self.duration, 6),
        }
        if self.command:
            header["command"] = " ".join(self.command)[:_HEADER_TEXT]
        if self.title:
            header["title"] = self.title[:_HEADER_TEXT]
        return header

    def text(self) -> str:
        self._drain(self.duration)
        return "\n".join([json.dumps(self.header(), ensure_ascii=False), *self._lines]) + "\n"

    def recording(self, *, kind: str, namespace: str = "", pod: str = "", container: str = "") -> dict:
        """The ``recording`` dict of the completion event (audit.events.prepare_recording)."""
        cast = self.text()
        return {
            "kind": kind,
            "namespace": namespace,
            "pod": pod,
            "container": container,
            "command": self.command,
            "asciicast": cast,
            "width": self.width or 80,
            "height": self.height or 24,
            "exit_code": self.exit_code,
            "duration_s": round(self.duration, 3),
            "truncated": self.truncated,
        }

    # -- internals ----------------------------------------------------------------------

    def _decoder(self, stream: str):
        if stream not in self._decoders:
            self._decoders[stream] = codecs.getincrementaldecoder("utf-8")("replace")
        return self._decoders[stream]

    def _text(self, t: float, code: str, stream: str, data: bytes | str) -> None:
        text = data if isinstance(data, str) else self._decoder(stream).decode(bytes(data))
        if text:
            self._event(t, code, text)

    def _drain(self, t: float) -> None:
        """Emit characters still held by the incremental decoders (a cut-off multi-byte tail)."""
        for stream, decoder in self._decoders.items():
            rest = decoder.decode(b"", final=True)
            if rest:
                self._event(t, "i" if stream == "stdin" else "o", rest)

    def _event(self, t: float, code: str, data: str, *, final: bool = False) -> None:
        t = max(float(t), self.duration)
        self.duration = t
        if self.truncated and not final:
            return
        line = json.dumps([round(t, 6), code, data], ensure_ascii=False)
        size = len(line.encode("utf-8")) + 1
        if not final and self._size + size > self.max_bytes - _RESERVE:
            self._truncate_at(t)
            return
        if final and self._size + size > self.max_bytes:
            line = json.dumps([round(t, 6), code, data[:200]], ensure_ascii=False)
            size = len(line.encode("utf-8")) + 1
        self._lines.append(line)
        self._size += size


    def _truncate_at(self, t: float) -> None:
        self.truncated = True
        line = json.dumps([round(t, 6), "m", "recording truncated: size limit reached"])
        self._lines.append(line)
        self._size += len(line) + 1


class PortForwardTally:
    """A port-forward's recording: pod, ports and bytes each way (payloads are not kept)."""

    def __init__(self, ports=()):
        self.ports: list[int] = []
        self.bytes_to_pod = 0
        self.bytes_from_pod = 0
        for port in ports:
            self.add_port(port)

    def add_port(self, port: int) -> None:
        if 0 < port <= 65535 and port not in self.ports:
            self.ports.append(port)

    def to_pod(self, size: int) -> None:
        self.bytes_to_pod += size

    def from_pod(self, size: int) -> None:
        self.bytes_from_pod += size

    def recording(self, *, namespace: str, pod: str, duration: float) -> dict:
        return {
            "kind": "portforward",
            "namespace": namespace,
            "pod": pod,
            "ports": list(self.ports),
            "bytes_to_pod": self.bytes_to_pod,
            "bytes_from_pod": self.bytes_from_pod,
            "duration_s": round(max(duration, 0.0), 3),
        }
