"""Each MCP tool call is an audit event: who called which tool with which (masked) arguments, and how it ended.

The API requests the tool sends carry the tool call's audit id as ``parent_id`` (set by the gateway
from the in-process caller, gateway.pipeline.InProcessCaller) and, when the protocol version has an
MCP session, the same ``Kubectl-Session`` value, so the audit trail groups them into one session
and the replay page shows the tool call with its requests beneath it (audit.views.nest_tool_calls).

The arguments are masked before they are kept: a manifest as a request body is (Secret
``data``/``stringData`` by kind, with Secret as the default kind, the detectors), every other string
by the detectors, and all of it for the connection's Secret values.  When those values are not
known the arguments are not kept at all (only their names).  The tool's result is not kept: it
is made of the requests' answers, whose masked copies are their own events.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import UTC, datetime

import masking
from audit.events import Record
from kube.requestinfo import parse
from kube.status import REASONS
from mcpfront.inprocess import Call

log = logging.getLogger(__name__)

RECEIVED, RESPONSE_COMPLETE = "RequestReceived", "ResponseComplete"
_SECRET_WRITE = parse("POST", "/api/v1/namespaces/default/secrets", "")  # a manifest without a kind: a Secret
_ANY_WRITE = parse("POST", "/api/v1/namespaces/default/configmaps", "")
KEPT_MESSAGE = 4096  # bytes of a protocol message's masked copy the trail keeps


def mask_arguments(arguments: dict, values) -> bytes:
    """The tool's arguments as the audit trail keeps them (compact JSON), masked."""
    arguments = dict(arguments)
    manifest = arguments.get("manifest")
    if manifest is not None:
        raw = manifest.encode("utf-8") if isinstance(manifest, str) else json.dumps(manifest, default=str).encode()
        content_type = "application/yaml" if isinstance(manifest, str) else "application/json"
        try:
            masked = masking.mask_request_body_for_record(_SECRET_WRITE, content_type, raw)
            arguments["manifest"] = json.loads(masked)
        except (ValueError, masking.MaskingError):
            arguments["manifest"] = masking.PLACEHOLDER
    body = json.dumps(arguments, separators=(",", ":"), default=str).encode()
    body = masking.mask_request_body_for_record(_ANY_WRITE, "application/json", body)
    return masking.mask_values_in_record(body, values)


def mask_message(body: bytes, values) -> bytes:
    """A protocol message as the trail keeps it: masked like a tool's arguments (a ``tools/call``'s
    arguments exactly so; a body that is not JSON as bytes with the detectors' hits masked), masked for
    the Secret values, then cut to KEPT_MESSAGE bytes (masked first: a cut never splits a value)."""
    if not body:
        return b""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        message = None
    if isinstance(message, dict) and isinstance(message.get("params"), dict) \
            and isinstance(message["params"].get("arguments"), dict):
        message["params"]["arguments"] = json.loads(mask_arguments(message["params"]["arguments"], None))
        body = json.dumps(message, separators=(",", ":"), default=str).encode()
    kept = masking.mask_values_in_record(masking.mask_request_body_for_record(_ANY_WRITE, "application/json", body),
                                         values)
    return kept if len(kept) <= KEPT_MESSAGE else kept[:KEPT_MESSAGE] + b"... (cut: the rest is not kept)"


class ToolCallRecord:
    """One tool call's audit events: journaled as it starts, its completion queued as it ends."""

    verb = "tools/call"

    def __init__(self, recorder, call: Call, principal, *, source_ip: str = "", user_agent: str = ""):
        self.recorder = recorder
        self.call = call
        self.principal = principal
        self.received_at = datetime.now(UTC)
        self.started = time.monotonic()
        self.source_ip = source_ip
        self.user_agent = user_agent

    def _fields(self, stage: str) -> dict:
        call, principal = self.call, self.principal
        return {
            "audit_id": uuid.UUID(call.audit_id),
            "stage": stage,
            "received_at": self.received_at,
            "transport": "http",
            "request_uri": f"/mcp/{call.connection}/tools/{call.tool}" if call.tool else f"/mcp/{call.connection}/",
            "verb": self.verb,
            "source_ips": (self.source_ip,) if self.source_ip else (),
            "user_agent": self.user_agent,
            "connection": call.connection,
            "kubectl_session": f"mcp-{call.session}"[:128] if call.session else "",
            "user_username": principal.username if principal else "",
            "user_uid": principal.subject if principal else "",
            "user_groups": tuple(principal.groups) if principal else (),
            "user_issuer": principal.issuer if principal else "",
            "mcp_tool": call.tool,
        }

    def started_record(self) -> Record:
        return Record.build(self._fields(RECEIVED))

    def begin(self) -> None:
        """Journal the arrival (a crash leaves it in the trail, closed as crashed on recovery); raises
        audit.recorder.AuditUnavailable when the journal cannot be written: the call is refused."""
        self.recorder.received(self.started_record())

    def completed_record(self, *, code: int | None, message: str, arguments: bytes, review_id: int | None = None,
                         bytes_in: int | None = None) -> Record:
        fields = self._fields(RESPONSE_COMPLETE)
        fields.update(response_code=code, response_message=message, request_body=arguments,
                      latency_ms=(time.monotonic() - self.started) * 1000.0,
                      bytes_in=len(arguments) if bytes_in is None else bytes_in)
        if code is not None and code >= 400:
            fields["response_reason"] = REASONS.get(code, "InternalError" if code >= 500 else "")
        if review_id is not None:
            fields["review_id"] = str(review_id)
        return Record.build(fields)

    async def finish(self, **outcome) -> None:
        try:
            await self.recorder.finish(self.completed_record(**outcome))
        except Exception:
            log.exception("audit event of MCP tool call %s could not be queued", self.call.audit_id)


class SessionStartRecord(ToolCallRecord):
    """The start of an MCP session (the answer that hands out its ``Mcp-Session-Id``): who opened it, on
    which connection, from where; ``call.tool`` is empty.  Its ``Kubectl-Session`` value is the one the
    session's tool calls carry, so the session in the audit trail begins with it."""

    verb = "initialize"


class ProtocolRecord(ToolCallRecord):
    """Any other request to the endpoint (mcpfront.exchange): a JSON-RPC message that is not a tool
    call or a session's start (``tools/list``, a notification, one the SDK refused before dispatch),
    the session's event stream, its end, a request refused before or at authentication (no
    principal then, as the gateway records a 401).  ``verb`` says which; ``call.tool`` is empty."""

    def __init__(self, recorder, call: Call, principal, *, verb: str, received_at: datetime | None = None,
                 started: float | None = None, **where):
        super().__init__(recorder, call, principal, **where)
        self.verb = verb
        self.received_at = received_at or self.received_at
        self.started = started if started is not None else self.started


def printable_tool_name(name) -> str:
    """A tool name as the audit trail keeps it: a name the client sent (any JSON value, any unicode, any
    length) as printable ASCII, escapes for the rest, at most 100 characters."""
    text = name if isinstance(name, str) else json.dumps(name, default=str)
    text = text.encode("ascii", "backslashreplace").decode("ascii")
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    return text if len(text) <= 100 else text[:97] + "..."
