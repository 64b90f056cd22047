"""What the gateway hands the recorder: one frozen :class:`Record` per request and stage, checked
and capped here (sans-IO).

The gateway builds the Record from what it learnt about the request (audit reads no ASGI scope
and no gateway type).  Its event dict (:meth:`Record.event`; the journal keeps it as it is, and
tests and tools may hand the recorder such dicts too) uses the :class:`audit.models.AuditEvent`
field names (``audit_id``, ``stage``, ``request_received_timestamp``, ``verb``,
``object_resource``, ... ``request_body``, ``response_body``) plus an optional ``recording`` dict
(``audit.asciicast``).

:func:`prepare` runs on the event loop when an event is handed over and never refuses one: the
database writer only ever sees rows it can store (strings without NUL or lone surrogates and of
bounded length, integers inside their column's range and the range RFC 8785 can hash, aware
timestamps, bodies cut to the configured cap), and a value that had to be clamped or replaced
is named in the event's ``clamped`` list.

Longer than 400 lines on purpose: every value the audit trail stores is checked here, in one
place, next to the record that carries it.

Long because the Record's fields and the checks and caps each gets are one contract with the
chain's document; a reader checks a field against its cap in one place.
"""

import logging
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from audit.frames import FramesError, cap_frames
from audit.models import RecordingKind, Stage, Transport
from kube.vocabulary import MUTATING_VERBS, STREAM_SUBRESOURCES

log = logging.getLogger(__name__)

MAX_SAFE_INT = 2**53 - 1
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1  # IntegerField on PostgreSQL
MAX_TERMINAL = 10000
MAX_DURATION = 1e12
TEXT_LIMIT = 16 * 1024
URI_LIMIT = 64 * 1024
LIST_LIMIT = 256

_TEXT = {
    "user_username", "user_uid", "user_issuer", "object_resource", "object_subresource",
    "object_namespace", "object_name", "object_api_group", "object_api_version", "user_agent",
    "response_reason", "response_message", "decision_rule_name", "decision_reason",
    "proxy_username", "proxy_uid", "proxy_issuer",
}
_CHAR = {"verb": 64, "connection": 63, "decision_effect": 16, "kubectl_session": 128, "mcp_tool": 128}
_COUNTS = {"bytes_in", "bytes_out"}
_IDS = {"review_id", "lease_id", "parent_id"}
_BODIES = {"request_body", "response_body"}
EVENT_KEYS = frozenset(
    _TEXT | set(_CHAR) | _COUNTS | _IDS | _BODIES | {
        "audit_id", "stage", "request_received_timestamp", "stage_timestamp", "user_groups",
        "request_uri", "source_ips", "response_code", "decision_rule_id", "masking_counts",
        "latency_ms", "transport", "recording", "dry_run",
    }
)
# Django builds a choices enum's ``values`` list anew on every access: a fifth of prepare()'s time.
_STAGES, _TRANSPORTS, _RECORDING_KINDS = (frozenset(choices.values) for choices in (Stage, Transport, RecordingKind))
RECORDING_KEYS = frozenset({
    "kind", "namespace", "pod", "container", "command", "asciicast", "frames", "width", "height",
    "exit_code", "duration_s", "truncated", "ports", "bytes_to_pod", "bytes_from_pod",
})


@dataclass(frozen=True)
class Record:
    """One request at one stage (``RequestReceived`` or ``ResponseComplete``), as the gateway
    hands it to the recorder.  Typed and frozen; checked and capped once, by :meth:`prepared`
    (on the recorder's side: the clamps depend on its limits), never re-read by hand.

    Defaults are what :func:`prepare` makes of a missing value, so a Record and the event dict
    that names only the fields it sets give the same stored row and the same hashed document.
    """

    audit_id: uuid.UUID | str
    stage: str
    received_at: datetime
    transport: str = "http"
    request_uri: str = ""
    verb: str = ""
    object_resource: str = ""
    object_subresource: str = ""
    object_namespace: str = ""
    object_name: str = ""
    object_api_group: str = ""
    object_api_version: str = ""
    source_ips: tuple[str, ...] = ()
    user_agent: str = ""
    connection: str = ""
    kubectl_session: str = ""
    dry_run: bool = False
    user_username: str = ""
    user_uid: str = ""
    user_groups: tuple[str, ...] = ()
    user_issuer: str = ""
    proxy_username: str = ""  # a trusted proxy that asserted the user above (identity.proxies)
    proxy_uid: str = ""
    proxy_issuer: str = ""
    decision_effect: str = ""
    decision_rule_id: int | None = None
    decision_rule_name: str = ""
    decision_reason: str = ""
    review_id: str | None = None
    lease_id: str | None = None
    parent_id: str | None = None  # the audit id of the MCP tool call that caused this request (mcpfront)
    mcp_tool: str = ""  # an MCP tool call's own event: the tool's name
    response_code: int | None = None
    response_reason: str = ""
    response_message: str = ""
    latency_ms: float | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    request_body: bytes = b""
    response_body: bytes = b""
    masking_counts: Mapping[str, int] = field(default_factory=dict)
    recording: Mapping | None = None

    @classmethod
    def build(cls, values: dict) -> "Record":
        """The Record of ``values`` (field names), made without the generated ``__init__``: that sets
        its fields one by one through the frozen ``__setattr__`` guard, which costs a few
        microseconds three times per request on the gateway's hot path.  Still frozen, and it
        keeps ``values`` for :meth:`event` (no comparison with the defaults needed)."""
        if not (_REQUIRED <= values.keys() <= _DEFAULTS.keys()):
            raise TypeError(f"not the fields of a Record: {sorted((values.keys() - _DEFAULTS.keys()) or _REQUIRED - values.keys())}")
        record = object.__new__(cls)
        state = record.__dict__
        state.update(_DEFAULTS)
        state.update(values)
        if "masking_counts" not in values:
            state["masking_counts"] = {}
        state["_given"] = dict(values)  # not a field: what event() copies (no defaults to leave out)
        return record

    def event(self) -> dict:
        """The event dict (AuditEvent field names) that :func:`prepare` and the journal take: the
        fields whose value is not the default (prepare makes a missing value its default)."""
        given = self.__dict__.get("_given")
        if given is not None:
            event = dict(given)
        else:
            event = {name: value for name, value in self.__dict__.items() if value != _OMITTED[name]}
        event["request_received_timestamp"] = event.pop("received_at")
        return event

    def prepared(self, *, max_body: int, max_recording: int, now: datetime | None = None) -> "PreparedEvent":
        """The stored field values: every value checked, clamped and capped, once."""
        return prepare(self.event(), max_body=max_body, max_recording=max_recording, now=now)


_REQUIRED = frozenset({"audit_id", "stage", "received_at"})
_DEFAULTS = {name: f.default for name, f in Record.__dataclass_fields__.items()} | {"masking_counts": None}
_OMITTED = _DEFAULTS | {"masking_counts": {}}  # a value equal to these is left out of the event dict


@dataclass
class PreparedEvent:
    """Model field values for one AuditEvent (and its Recording), ready to append."""

    fields: dict
    recording: dict | None = None

    @property
    def audit_id(self) -> uuid.UUID:
        return self.fields["audit_id"]

    @property
    def stage(self) -> str:
        return self.fields["stage"]


def _plain(value, limit: int | None) -> bool:
    """True for a str that clean_text() would return unchanged (the common case: checked in C, no copies)."""
    return type(value) is str and (not value or (
        value.isascii() and "\x00" not in value and (limit is None or len(value) <= limit)))


def clean_text(value, limit: int | None = TEXT_LIMIT) -> str:
    """A string any database stores and RFC 8785 hashes: no NUL, no lone surrogate, bounded."""
    if value is None:
        return ""
    if _plain(value, limit):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    text = value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    if limit is not None and len(text) > limit:
        marker = f"…[{len(text) - limit} more characters]"
        text = text[: max(0, limit - len(marker))] + marker
    return text


class Clamps:
    """The names of fields whose values were clamped or replaced; stored with the event, never the values."""

    def __init__(self, prefix: str = ""):
        self.prefix = prefix
        self.names: list[str] = []

    def add(self, name: str) -> None:
        name = self.prefix + clean_text(name, 128)
        if name not in self.names and len(self.names) < LIST_LIMIT:
            self.names.append(name)

    def nested(self, prefix: str) -> "Clamps":
        inner = Clamps(self.prefix + prefix)
        inner.names = self.names
        return inner


def _int(value, name: str, clamps: Clamps, low: int, high: int, default: int | None) -> int | None:
    """An integer in [low, high]: out-of-range values clamped, anything else the default."""
    if value is None:
        return default
    if isinstance(value, float) and math.isfinite(value):
        if not value.is_integer():
            clamps.add(name)
        value = round(value)
    if isinstance(value, bool) or not isinstance(value, int):
        clamps.add(name)
        return default
    if not low <= value <= high:
        clamps.add(name)
        return min(max(value, low), high)
    return value


def _flag(value, name: str, clamps: Clamps) -> bool:
    """True only for True; anything but a bool or None is clamped to False."""
    if value is not None and not isinstance(value, bool):
        clamps.add(name)
        return False
    return value is True


def _count(value, name: str, clamps: Clamps) -> int:
    return _int(value, name, clamps, 0, MAX_SAFE_INT, 0)


def _duration(value, name: str, clamps: Clamps, default: float | None) -> float | None:
    """A number in [0, MAX_DURATION], rounded to 3 decimals: out-of-range values clamped, anything else the default."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
        isinstance(value, float) and not math.isfinite(value)
    ):
        clamps.add(name)
        return default
    if not 0 <= value <= MAX_DURATION:
        clamps.add(name)
        value = min(max(value, 0), MAX_DURATION)
    return round(float(value), 3)


def _timestamp(value, name: str, clamps: Clamps, default: datetime) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            clamps.add(name)
            return value.replace(tzinfo=UTC)
        try:
            return value.astimezone(UTC)
        except OverflowError:
            pass
    clamps.add(name)
    return default


def _text(value, name: str, clamps: Clamps, limit: int | None = TEXT_LIMIT) -> str:
    if _plain(value, limit):
        return value
    if value is not None and not isinstance(value, str):
        clamps.add(name)
        return ""
    return clean_text(value, limit)  # a cut is marked in the text itself


def _string_list(value, name: str, clamps: Clamps) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        clamps.add(name)
        return []
    if len(value) <= LIST_LIMIT and all(_plain(v, 1024) for v in value):
        return list(value)
    if len(value) > LIST_LIMIT or not all(isinstance(v, str) for v in value):
        clamps.add(name)
    return [clean_text(v, 1024) for v in value[:LIST_LIMIT] if isinstance(v, str)]


def _choice(value, name: str, clamps: Clamps, choices: frozenset[str], default: str) -> str:
    if isinstance(value, str) and value in choices:
        return str(value)
    clamps.add(name)
    return default


def cap_body(data, limit: int) -> tuple[bytes, int]:
    """(stored bytes, original size); a cut never ends inside a UTF-8 character."""
    if data is None:
        return b"", 0
    if isinstance(data, str):
        data = data.encode("utf-8", "replace")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError("a body must be bytes")
    data = bytes(data)
    size = len(data)
    if size <= limit:
        return data, size
    head = data[:limit]
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.reason == "unexpected end of data":
            head = head[: exc.start]
    return head, size


def cap_cast(cast: str, limit: int) -> tuple[str, bool]:
    """Cut an asciicast at a line boundary if a caller handed over more than the cap."""
    encoded = cast.encode("utf-8")
    if len(encoded) <= limit:
        return cast, False
    cut = encoded[:limit].rfind(b"\n")
    return encoded[: max(cut, 0)].decode("utf-8", "ignore") + ("\n" if cut > 0 else ""), True


def _frames(value, limit: int, clamps: Clamps) -> tuple[bytes, bool]:
    """A recording's frames (audit.frames) capped to ``limit`` bytes, and whether they were cut."""
    if value is None or value == b"":
        return b"", False
    if not isinstance(value, (bytes, bytearray, memoryview)):
        clamps.add("frames")
        return b"", False
    try:
        return cap_frames(bytes(value), limit)
    except FramesError:
        clamps.add("frames")
        return b"", False


def prepare_recording(recording: dict, *, max_recording: int, clamps: Clamps) -> dict:
    for name in set(recording) - RECORDING_KEYS:
        clamps.add(f"unknown field {name}")
    kind = recording.get("kind")
    if not (isinstance(kind, str) and kind in _RECORDING_KINDS):
        clamps.add("kind")
        kind = _text(kind, "kind", clamps, 16)
    cast = _text(recording.get("asciicast"), "asciicast", clamps, None)
    cast, cut = cap_cast(cast, max_recording)
    frames, frames_cut = _frames(recording.get("frames"), max_recording, clamps)
    ports = recording.get("ports")
    if ports is not None and not isinstance(ports, (list, tuple)):
        clamps.add("ports")
        ports = []
    if ports and len(ports) > LIST_LIMIT:
        clamps.add("ports")
    return {
        "kind": kind,
        "namespace": _text(recording.get("namespace"), "namespace", clamps),
        "pod": _text(recording.get("pod"), "pod", clamps),
        "container": _text(recording.get("container"), "container", clamps),
        "command": _string_list(recording.get("command"), "command", clamps),
        "asciicast": cast,
        "frames": frames,
        "width": _int(recording.get("width"), "width", clamps, 0, MAX_TERMINAL, None),
        "height": _int(recording.get("height"), "height", clamps, 0, MAX_TERMINAL, None),
        "exit_code": _int(recording.get("exit_code"), "exit_code", clamps, INT32_MIN, INT32_MAX, None),
        "duration_s": _duration(recording.get("duration_s"), "duration_s", clamps, 0.0),
        "truncated": bool(recording.get("truncated")) or cut or frames_cut,
        "ports": [_int(p, "ports", clamps, 0, 65535, 0) for p in (ports or [])[:LIST_LIMIT]],
        "bytes_to_pod": _count(recording.get("bytes_to_pod"), "bytes_to_pod", clamps),
        "bytes_from_pod": _count(recording.get("bytes_from_pod"), "bytes_from_pod", clamps),
    }


def _body(value, name: str, limit: int, clamps: Clamps) -> tuple[bytes, int]:
    try:
        return cap_body(value, limit)
    except ValueError:
        clamps.add(name)
        return b"", 0


def prepare(event: dict, *, max_body: int, max_recording: int, now: datetime | None = None) -> PreparedEvent:
    """Normalise one event dict into storable field values; never raises on what it is given.

    The audit trail must record every request whatever its values: a value of the wrong type
    or out of the range its column and RFC 8785 can hold is clamped (or replaced by an empty or
    fresh one), and the field's name, never its value, goes into ``clamped``.  A value that
    reached the database unclamped (an exit code beyond int32 on PostgreSQL) would instead fail
    its batch on every retry and stall the writer.
    """
    clamps = Clamps()
    if not isinstance(event, dict):
        clamps.add("event")
        event = {}
    for name in set(event) - EVENT_KEYS:
        clamps.add(f"unknown field {name}")
    now = now or datetime.now(UTC)
    try:
        audit_id = event["audit_id"]
        if type(audit_id) is not uuid.UUID:  # a UUID is immutable: the gateway's own is kept as it is
            audit_id = uuid.UUID(str(audit_id))
    except (KeyError, TypeError, ValueError):
        clamps.add("audit_id")
        audit_id = uuid.uuid4()
    received = _timestamp(event.get("request_received_timestamp"), "request_received_timestamp", clamps, now)
    stage_at = event.get("stage_timestamp")
    fields = {
        "audit_id": audit_id,
        "stage": _choice(event.get("stage", Stage.RESPONSE_COMPLETE), "stage", clamps, _STAGES,
                         Stage.RESPONSE_COMPLETE),
        "transport": _choice(event.get("transport", Transport.HTTP), "transport", clamps, _TRANSPORTS,
                             Transport.HTTP),
        "request_received_timestamp": received,
        "stage_timestamp": now if stage_at is None else _timestamp(stage_at, "stage_timestamp", clamps, now),
        "user_groups": _string_list(event.get("user_groups"), "user_groups", clamps),
        "source_ips": _string_list(event.get("source_ips"), "source_ips", clamps),
        "request_uri": _text(event.get("request_uri"), "request_uri", clamps, URI_LIMIT),
        "response_code": _int(event.get("response_code"), "response_code", clamps, 100, 599, None),
        "decision_rule_id": _int(event.get("decision_rule_id"), "decision_rule_id", clamps, -MAX_SAFE_INT,
                                 MAX_SAFE_INT, None),
        "latency_ms": _duration(event.get("latency_ms"), "latency_ms", clamps, None),
        "dry_run": _flag(event.get("dry_run"), "dry_run", clamps),
    }
    for name in _TEXT:
        value = event.get(name, "")
        fields[name] = value if _plain(value, TEXT_LIMIT) else _text(value, name, clamps)
    for name, limit in _CHAR.items():
        value = event.get(name, "")
        fields[name] = value if _plain(value, limit) else _text(value, name, clamps, limit)
    for name in _COUNTS:
        fields[name] = _count(event.get(name), name, clamps)
    for name in _IDS:
        value = event.get(name)
        fields[name] = None if value is None else _text(str(value), name, clamps, 64)
    counts = event.get("masking_counts") or {}
    if not isinstance(counts, dict):
        clamps.add("masking_counts")
        counts = {}
    if len(counts) > LIST_LIMIT:
        clamps.add("masking_counts")
    fields["masking_counts"] = {}
    for kind, count in list(counts.items())[:LIST_LIMIT]:
        if isinstance(kind, str):
            fields["masking_counts"][clean_text(kind, 128)] = _count(count, "masking_counts", clamps)
        else:
            clamps.add("masking_counts")
    for name in _BODIES:
        fields[name], fields[name + "_size"] = _body(event.get(name), name, max_body, clamps)
    recording = event.get("recording")
    if recording is not None and not isinstance(recording, dict):
        clamps.add("recording")
        recording = None
    if recording is not None:
        recording = prepare_recording(recording, max_recording=max_recording, clamps=clamps.nested("recording."))
    fields["clamped"] = sorted(clamps.names)
    if clamps.names:
        log.warning("audit event %s recorded with clamped fields: %s", audit_id, ", ".join(clamps.names))
    return PreparedEvent(fields=fields, recording=recording)


READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def needs_durable_record(info, method: str) -> bool:
    """True when the request (``info``: its kube.requestinfo.RequestInfo, ``method``: its HTTP
    method) can change the cluster, so begin() must commit before forwarding.

    Writes, every exec/attach/port-forward (a WebSocket GET runs a command too) and any proxy
    or non-resource request whose method is not a read.
    """
    if info.is_resource_request:
        # Connecting to these runs something in the pod whatever the HTTP method or verb says.
        if info.resource == "pods" and info.subresource in STREAM_SUBRESOURCES:
            return True
        if info.verb in MUTATING_VERBS:
            return True
    return method.upper() not in READ_METHODS
