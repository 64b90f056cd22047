"""What the gateway hands the recorder: plain dicts, checked and capped here (sans-IO).

An event dict uses the :class:`audit.models.AuditEvent` field names (``audit_id``, ``stage``,
``request_received_timestamp``, ``verb``, ``object_resource``, ... ``request_body``,
``response_body``) plus an optional ``recording`` dict (``audit.asciicast``).  :func:`from_request`
fills the request-derived fields from a :class:`gateway.pipeline.GatewayRequest`.

:func:`prepare` runs on the event loop when an event is handed over, so a malformed event fails
in the caller (a programming error shows up in tests) and the database writer only ever sees
rows it can store: strings without NUL or lone surrogates and of bounded length, integers inside
the range RFC 8785 can hash, aware timestamps, bodies cut to the configured cap.
"""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from audit.models import RecordingKind, Stage, Transport

MAX_SAFE_INT = 2**53 - 1
TEXT_LIMIT = 16 * 1024
URI_LIMIT = 64 * 1024
LIST_LIMIT = 256

_TEXT = {
    "user_username", "user_uid", "user_issuer", "object_resource", "object_subresource",
    "object_namespace", "object_name", "object_api_group", "object_api_version", "user_agent",
    "response_reason", "response_message", "decision_rule_name", "decision_reason",
}
_CHAR = {"verb": 64, "connection": 63, "decision_effect": 16, "kubectl_session": 128}
_COUNTS = {"bytes_in", "bytes_out"}
_IDS = {"review_id", "lease_id"}
_BODIES = {"request_body", "response_body"}
EVENT_KEYS = frozenset(
    _TEXT | set(_CHAR) | _COUNTS | _IDS | _BODIES | {
        "audit_id", "stage", "request_received_timestamp", "stage_timestamp", "user_groups",
        "request_uri", "source_ips", "response_code", "decision_rule_id", "masking_counts",
        "latency_ms", "transport", "recording",
    }
)
RECORDING_KEYS = frozenset({
    "kind", "namespace", "pod", "container", "command", "asciicast", "width", "height", "exit_code",
    "duration_s", "truncated", "ports", "bytes_to_pod", "bytes_from_pod",
})


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


def clean_text(value, limit: int | None = TEXT_LIMIT) -> str:
    """A string any database stores and RFC 8785 hashes: no NUL, no lone surrogate, bounded."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    text = value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    if limit is not None and len(text) > limit:
        marker = f"…[{len(text) - limit} more characters]"
        text = text[: max(0, limit - len(marker))] + marker
    return text


def _count(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SAFE_INT:
        raise ValueError(f"{what} must be an integer between 0 and 2**53-1")
    return value


def _optional_int(value, what: str, low: int = -MAX_SAFE_INT, high: int = MAX_SAFE_INT) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{what} must be an integer between {low} and {high}")
    return value


def _timestamp(value, what: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError(f"{what} must be a timezone-aware datetime")
    return value.astimezone(UTC)


def _string_list(value, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ValueError(f"{what} must be a list of strings")
    if len(value) > LIST_LIMIT:
        raise ValueError(f"{what} has more than {LIST_LIMIT} entries")
    return [clean_text(v, 1024) for v in value]


def _duration(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e12:
        raise ValueError(f"{what} must be a non-negative number")
    return round(float(value), 3)


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


def prepare_recording(recording: dict, *, max_recording: int) -> dict:
    unknown = set(recording) - RECORDING_KEYS
    if unknown:
        raise ValueError(f"unknown recording fields: {', '.join(sorted(unknown))}")
    kind = recording.get("kind")
    if kind not in RecordingKind.values:
        raise ValueError(f"recording kind must be one of {', '.join(RecordingKind.values)}")
    cast, cut = cap_cast(clean_text(recording.get("asciicast") or "", limit=None), max_recording)
    return {
        "kind": kind,
        "namespace": clean_text(recording.get("namespace")),
        "pod": clean_text(recording.get("pod")),
        "container": clean_text(recording.get("container")),
        "command": _string_list(recording.get("command"), "recording command"),
        "asciicast": cast,
        "width": _optional_int(recording.get("width"), "recording width", 0, 10000),
        "height": _optional_int(recording.get("height"), "recording height", 0, 10000),
        "exit_code": _optional_int(recording.get("exit_code"), "recording exit_code"),
        "duration_s": _duration(recording.get("duration_s", 0), "recording duration_s"),
        "truncated": bool(recording.get("truncated")) or cut,
        "ports": [_optional_int(p, "port", 0, 65535) for p in recording.get("ports") or []],
        "bytes_to_pod": _count(recording.get("bytes_to_pod", 0), "bytes_to_pod"),
        "bytes_from_pod": _count(recording.get("bytes_from_pod", 0), "bytes_from_pod"),
    }


def prepare(event: dict, *, max_body: int, max_recording: int, now: datetime | None = None) -> PreparedEvent:
    """Check and normalise one event dict; raises ValueError naming the bad field (never its value)."""
    unknown = set(event) - EVENT_KEYS
    if unknown:
        raise ValueError(f"unknown audit event fields: {', '.join(sorted(unknown))}")
    if "audit_id" not in event or "request_received_timestamp" not in event:
        raise ValueError("an audit event needs audit_id and request_received_timestamp")
    try:
        audit_id = uuid.UUID(str(event["audit_id"]))
    except ValueError:
        raise ValueError("audit_id must be a UUID") from None
    stage = event.get("stage", Stage.RESPONSE_COMPLETE)
    if stage not in Stage.values:
        raise ValueError(f"stage must be one of {', '.join(Stage.values)}")
    transport = event.get("transport", Transport.HTTP)
    if transport not in Transport.values:
        raise ValueError(f"transport must be one of {', '.join(Transport.values)}")
    fields = {
        "audit_id": audit_id,
        "stage": str(stage),
        "transport": str(transport),
        "request_received_timestamp": _timestamp(event["request_received_timestamp"], "request_received_timestamp"),
        "stage_timestamp": _timestamp(event.get("stage_timestamp") or now or datetime.now(UTC), "stage_timestamp"),
        "user_groups": _string_list(event.get("user_groups"), "user_groups"),
        "source_ips": _string_list(event.get("source_ips"), "source_ips"),
        "request_uri": clean_text(event.get("request_uri"), URI_LIMIT),
        "response_code": _optional_int(event.get("response_code"), "response_code", 100, 599),
        "decision_rule_id": _optional_int(event.get("decision_rule_id"), "decision_rule_id"),
        "latency_ms": None if event.get("latency_ms") is None else _duration(event["latency_ms"], "latency_ms"),
    }
    for name in _TEXT:
        fields[name] = clean_text(event.get(name))
    for name, limit in _CHAR.items():
        fields[name] = clean_text(event.get(name), limit)
    for name in _COUNTS:
        fields[name] = _count(event.get(name, 0), name)
    for name in _IDS:
        value = event.get(name)
        fields[name] = None if value is None else clean_text(str(value), 64)
    counts = event.get("masking_counts") or {}
    if not isinstance(counts, dict) or len(counts) > LIST_LIMIT:
        raise ValueError("masking_counts must be a mapping of kind to count")
    fields["masking_counts"] = {clean_text(k, 128): _count(v, "a masking count") for k, v in counts.items()}
    for name in _BODIES:
        fields[name], fields[name + "_size"] = cap_body(event.get(name), max_body)
        if fields[name + "_size"] > MAX_SAFE_INT:
            raise ValueError(f"{name} is too large")
    recording = event.get("recording")
    if recording is not None:
        if not isinstance(recording, dict):
            raise ValueError("recording must be a dict")
        recording = prepare_recording(recording, max_recording=max_recording)
    return PreparedEvent(fields=fields, recording=recording)


MUTATING_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
# Connecting to these runs something in the pod whatever the HTTP method or verb says.
STREAMING_SUBRESOURCES = frozenset({"exec", "attach", "portforward"})
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def needs_durable_record(request) -> bool:
    """True when the request can change the cluster, so begin() must commit before forwarding.

    Writes, every exec/attach/port-forward (a WebSocket GET runs a command too) and any proxy
    or non-resource request whose method is not a read.
    """
    info = request.info
    if info.is_resource_request:
        if info.resource == "pods" and info.subresource in STREAMING_SUBRESOURCES:
            return True
        if info.verb in MUTATING_VERBS:
            return True
    return request.method.upper() not in READ_METHODS


def _header(headers, name: str) -> str:
    for key, value in headers:
        if key == name:
            return value
    return ""


def from_request(request, *, stage: str, received_at: datetime, **fields) -> dict:
    """The request-derived part of an event for a GatewayRequest; ``fields`` add or override."""
    info = request.info
    event = {
        "audit_id": request.audit_id,
        "stage": stage,
        "request_received_timestamp": received_at,
        "verb": info.verb,
        "object_resource": info.resource,
        "object_subresource": info.subresource,
        "object_namespace": info.namespace,
        "object_name": info.name,
        "object_api_group": info.api_group,
        "object_api_version": info.api_version,
        "request_uri": request.target,
        "source_ips": [request.client_addr] if request.client_addr else [],
        "user_agent": _header(request.headers, "user-agent"),
        "connection": request.connection,
        "transport": request.transport,
        "kubectl_session": _header(request.headers, "kubectl-session"),
    }
    principal = request.principal
    if principal is not None:
        event.update(
            user_username=principal.username,
            user_uid=principal.subject,
            user_groups=list(principal.groups),
            user_issuer=principal.issuer,
        )
    decision = request.decision
    if decision is not None:
        event.update(
            decision_effect=decision.effect,
            decision_rule_id=decision.rule_id,
            decision_rule_name=decision.rule_name,
            decision_reason=decision.reason,
        )
    event.update(fields)
    return event


def from_scope(scope: dict, *, audit_id, stage: str, received_at: datetime, **fields) -> dict:
    """An event for a request refused before it could be parsed (no GatewayRequest exists).

    ``request_uri`` is then the path as the gateway received it, connection prefix included,
    without the query: it was not understood, so it cannot be masked (exec commands, tokens).
    """
    raw = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "replace")
    uri = raw.decode("latin-1")
    headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope.get("headers", [])]
    client = scope.get("client") or ("", 0)
    event = {
        "audit_id": audit_id,
        "stage": stage,
        "request_received_timestamp": received_at,
        "verb": (scope.get("method") or "GET").lower() if scope.get("type") == "http" else "get",
        "request_uri": uri,
        "source_ips": [client[0]] if client[0] else [],
        "user_agent": _header(headers, "user-agent"),
        "transport": "websocket" if scope.get("type") == "websocket" else "http",
        "kubectl_session": _header(headers, "kubectl-session"),
    }
    event.update(fields)
    return event
