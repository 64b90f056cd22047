"""Every HTTP request to ``/mcp/<connection>/`` is one audit event, as every request to ``/k8s/`` is.

:class:`Exchange` follows one request: its audit id (journaled as it arrives, before authentication,
like the gateway's arrival), the body the agent sent (kept up to the endpoint's size limit, counted
past it) and what it was answered (the status and the first bytes of the body, for the reason).
The audit id is handed out once (:meth:`Exchange.claim`): to the tool call or the session start the
message turns out to be, whose event is then the request's; otherwise the endpoint records the
request itself, named by :func:`verb_of` (a JSON-RPC method such as ``tools/list``, the session's
event stream, its end, ``batch``, ``post`` for a body that is no JSON-RPC message) with the reason
:func:`reason_of` finds in the answer, without the values the agent sent.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

from mcpfront.records import printable_tool_name

ANSWER_KEPT = 64 * 1024  # bytes of an answer read for its reason
SESSION_END, SESSION_STREAM = "session/end", "session/stream"


class Exchange:
    """One HTTP request to the endpoint, as the audit trail sees it."""

    def __init__(self, scope, max_body: int):
        self.method = scope.get("method") or "GET"
        self.audit_id = str(uuid.uuid4())
        self.received_at = datetime.now(UTC)
        self.started = time.monotonic()
        self.max_body = max_body
        self.declared = _content_length(scope)
        self.chunks: list[bytes] = []
        self.size = 0
        self.status: int | None = None
        self.answer = bytearray()
        self.principal = None  # set once the token is validated
        self.claimed = False

    def claim(self) -> str:
        """The request's audit id, for the first event that records it; a fresh id after that."""
        if self.claimed:
            return str(uuid.uuid4())
        self.claimed = True
        return self.audit_id

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    @property
    def bytes_in(self) -> int:
        """What the agent sent, or declared when the body was refused unread (too large)."""
        return max(self.size, self.declared)

    def receive(self, receive):
        async def receiving():
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                if self.size < self.max_body:
                    self.chunks.append(chunk[:self.max_body - self.size])
                self.size += len(chunk)
            return message

        return receiving

    def send(self, send):
        async def sending(message):
            if message["type"] == "http.response.start":
                self.status = message["status"]
            elif message["type"] == "http.response.body" and not self.claimed and len(self.answer) < ANSWER_KEPT:
                self.answer += message.get("body", b"")[:ANSWER_KEPT - len(self.answer)]
            await send(message)

        return sending


def _content_length(scope) -> int:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                return max(0, int(value))
            except ValueError:
                return 0
    return 0


def verb_of(method: str, body: bytes) -> str:
    """What the request was: its JSON-RPC method, ``response`` (the agent answering the server),
    ``batch`` (a JSON array), the session's event stream (GET) or end (DELETE), else the HTTP method
    (as the gateway names a request it did not understand)."""
    if method == "DELETE":
        return SESSION_END
    if method == "GET":
        return SESSION_STREAM
    try:
        message = json.loads(body) if body else None
    except (ValueError, RecursionError):
        message = None
    if isinstance(message, dict):
        name = message.get("method")
        if isinstance(name, str) and name:
            return printable_tool_name(name)[:64]
        if "id" in message and ("result" in message or "error" in message):
            return "response"
    if isinstance(message, list):
        return "batch"
    return printable_tool_name(method.lower())[:64]


def reason_of(method: str, status: int | None, answer: bytes) -> str:
    """Why the agent got what it got: the JSON-RPC error's message or the error description of the
    answer, its text for a plain one, without the values pydantic quotes; "ok" otherwise."""
    if status is None:
        return "the client went away before it was answered"
    text = answer.decode("utf-8", "replace")
    stripped = text.lstrip()
    documents = [stripped] if stripped.startswith("{") else [
        line[5:] for line in text.splitlines() if line.startswith("data:") and line[5:].strip()]
    for document in documents:
        try:
            parsed = json.loads(document)
        except (ValueError, RecursionError):
            continue
        if not isinstance(parsed, dict):
            continue
        error = parsed.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return without_values(error["message"])
        if isinstance(parsed.get("error_description"), str):
            return without_values(parsed["error_description"])
        if "result" in parsed:
            break
    if status >= 400:
        return without_values(stripped) or f"refused with {status}"
    if method == "DELETE":
        return "MCP session ended by the agent"
    if method == "GET":
        return "the session's event stream ended"
    return "accepted" if status == 202 else "ok"


def without_values(text: str) -> str:
    """An SDK error message for the audit trail: without the values the caller sent (pydantic's
    ``input_value=...``, which may be a secret): the first line, then each field and what is wrong."""
    lines = text.splitlines()
    if not lines:
        return ""
    kept = [lines[0][:500]]
    for line in lines[1:]:
        if line.startswith("    "):  # "For further information visit ..."
            continue
        if line.startswith("  "):
            words, _, tags = line.partition(" [")
            kind = tags.partition("type=")[2].partition(",")[0].partition("]")[0]
            kept.append(f"  {words.strip()[:200]}" + (f" [{kind}]" if kind.isidentifier() else ""))
        else:
            kept.append(line[:200])
    return "\n".join(kept)[:2000]

