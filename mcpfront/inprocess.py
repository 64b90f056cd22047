"""Kubernetes API requests sent through the gateway in-process: no side door for MCP tool calls.

Every request an MCP tool makes is an ASGI request to the gateway's own application
(gateway.app.GatewayApp, at ``/k8s/<connection>/...``), carrying the agent's own bearer token, so
it is parsed, authenticated, authorized, held, recorded, forwarded and masked exactly as kubectl's
would be.  What only this process can add rides on the ASGI scope key
``gateway.pipeline.IN_PROCESS`` (never on a header an outside client could send): the tool call
that caused the request (its audit record names it as parent) and "answer a review at once".

:class:`Call` is one tool call's view of the agent (token, connection, address it used);
:meth:`GatewayClient.request` sends one HTTP request and reads its answer (bounded);
:meth:`GatewayClient.exec` runs a non-interactive command over the gateway's WebSocket path with
the v5 channel protocol and collects its bounded output and exit Status.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from urllib.parse import quote

from gateway.pipeline import IN_PROCESS, InProcessCaller
from kube import channels
from runtime.timeouts import wait_at_most

USER_AGENT = "airlock-mcp/1 (MCP tool call through Airlock)"
MAX_ANSWER_BYTES = 8 * 1024 * 1024  # an answer past this is cut (and said to be)


@dataclass(frozen=True)
class Call:
    """One MCP tool call: who asks (their token, never passed to the cluster: the gateway adds its
    own credential), on which connection, from where, and the tool call's audit id."""

    token: str
    connection: str
    audit_id: str
    tool: str
    host: str = ""  # the Host the agent reached Airlock at (review links)
    scheme: str = "https"
    client_addr: str = ""
    session: str = ""  # the MCP session id, when the protocol version has one (grouping in the audit trail)

    def caller(self) -> InProcessCaller:
        return InProcessCaller(origin="mcp", parent_id=self.audit_id, detail=self.tool, at_once=True)


@dataclass
class Answer:
    """The gateway's answer to one request (body cut at MAX_ANSWER_BYTES)."""

    status: int
    headers: dict[str, str]
    body: bytes
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self):
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            return None

    def status_object(self) -> dict | None:
        """The Kubernetes ``Status`` in the body, if it is one."""
        document = self.json()
        return document if isinstance(document, dict) and document.get("kind") == "Status" else None

    def message(self) -> str:
        """The Status message words (what kubectl prints), else a short description of the answer."""
        status = self.status_object()
        if status is not None and isinstance(status.get("message"), str) and status["message"]:
            return status["message"]
        text = self.body[:300].decode("utf-8", "replace").strip()
        return text or f"HTTP {self.status}"


@dataclass
class ExecResult:
    """A finished exec: its output (bounded), and the Status the cluster ended it with."""

    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    status: dict | None = None
    refused: Answer | None = None  # the upgrade was refused: the gateway's Status
    truncated: bool = False


def _headers(call: Call, extra: dict[str, str]) -> list[tuple[bytes, bytes]]:
    headers = {
        "host": call.host or "airlock.invalid",
        "authorization": f"Bearer {call.token}",
        "user-agent": USER_AGENT,
        "accept": "application/json",
        **extra,
    }
    if call.session:
        headers["kubectl-session"] = f"mcp-{call.session}"[:128]
    return [(name.encode("latin-1"), value.encode("utf-8")) for name, value in headers.items()]


async def http_exchange(app, scope: dict, body: bytes, max_answer: int) -> Answer:
    """Run one HTTP request through the ASGI ``app`` in-process; its answer, the body cut at ``max_answer``."""
    done = asyncio.Event()
    sent_body = False
    answer = Answer(0, {}, b"")
    chunks = bytearray()

    async def receive():
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            answer.status = message["status"]
            answer.headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            data = message.get("body", b"")
            room = max_answer - len(chunks)
            if len(data) > room:
                answer.truncated = True
            chunks.extend(data[:max(room, 0)])
            if not message.get("more_body", False):
                done.set()

    try:
        await app(scope, receive, send)
    finally:
        done.set()
    answer.body = bytes(chunks)
    return answer


class GatewayClient:
    """Sends tool calls' Kubernetes API requests to ``gateway`` (the GatewayApp, whose prefix is
    ``prefix``) as in-process ASGI requests."""

    def __init__(self, gateway, prefix: str, max_answer: int = MAX_ANSWER_BYTES):
        self.gateway = gateway
        self.prefix = prefix
        self.max_answer = max_answer

    def _scope(self, call: Call, kind: str, path: str, query: str, headers: list) -> dict:
        full = self.prefix + quote(call.connection, safe="") + path
        scope = {
            "type": kind,
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "scheme": call.scheme if kind == "http" else {"https": "wss", "http": "ws"}.get(call.scheme, "wss"),
            "path": full,
            "raw_path": full.encode("ascii"),
            "query_string": query.encode("ascii"),
            "root_path": "",
            "headers": headers,
            "client": (call.client_addr, 0) if call.client_addr else None,
            "server": None,
            "extensions": {},
            IN_PROCESS: call.caller(),
        }
        return scope

    async def request(self, call: Call, method: str, path: str, query: str = "", body: bytes = b"",
                      content_type: str | None = None) -> Answer:
        """``method`` ``path`` (percent-encoded, from the connection's root: ``/api/v1/pods``) ``?query``."""
        extra = {"content-type": content_type} if content_type else {}
        if body:
            extra["content-length"] = str(len(body))
        scope = self._scope(call, "http", path, query, _headers(call, extra))
        scope["method"] = method
        return await http_exchange(self.gateway, scope, body, self.max_answer)

    async def django(self, app, call: Call, method: str, path: str, body: bytes = b"") -> Answer:
        """A request to one of Airlock's own JSON APIs (the agent lease API) on Django, with the agent's token."""
        extra = {"content-type": "application/json", "content-length": str(len(body))} if body else {}
        scope = self._scope(call, "http", "", "", _headers(call, extra))
        scope.update(method=method, path=path, raw_path=path.encode("ascii"))
        del scope[IN_PROCESS]
        return await http_exchange(app, scope, body, self.max_answer)

    async def exec(self, call: Call, path: str, query: str, *, timeout: float, max_output: int) -> ExecResult:
        """A non-interactive exec (no stdin, no tty) over the gateway's WebSocket path, v5 framing;
        the session is closed after ``timeout`` seconds or once ``max_output`` bytes arrived."""
        protocol = channels.V5
        scope = self._scope(call, "websocket", path, query, _headers(call, {}))
        scope["subprotocols"] = [protocol.name]
        scope["extensions"] = {"websocket.http.response": {}}
        result = ExecResult()
        finished, accepted = asyncio.Event(), asyncio.Event()
        connected = False
        refusal = {"status": 0, "headers": {}, "body": bytearray()}

        async def receive():
            nonlocal connected
            if not connected:
                connected = True
                return {"type": "websocket.connect"}
            await finished.wait()
            return {"type": "websocket.disconnect", "code": 1000}

        def keep(buffer: bytearray, data: bytes):
            room = max_output - len(result.stdout) - len(result.stderr)
            if len(data) > room:
                result.truncated = True
                finished.set()
            buffer.extend(data[:max(room, 0)])

        async def send(message):
            kind = message["type"]
            if kind == "websocket.send":
                data = message.get("bytes")
                if data is None:
                    data = (message.get("text") or "").encode("utf-8")
                try:
                    channel, payload = protocol.decode(data)
                except channels.ChannelError:
                    return
                if channel == channels.STDOUT:
                    keep(result.stdout, payload)
                elif channel == channels.STDERR:
                    keep(result.stderr, payload)
                elif channel == channels.ERROR:
                    try:
                        result.status = json.loads(payload or b"null")
                    except ValueError:
                        result.status = {"kind": "Status", "status": "Failure",
                                         "message": payload[:300].decode("utf-8", "replace")}
            elif kind == "websocket.http.response.start":
                refusal["status"] = message["status"]
                refusal["headers"] = {k.decode("latin-1").lower(): v.decode("latin-1")
                                      for k, v in message.get("headers", [])}
            elif kind == "websocket.http.response.body":
                refusal["body"].extend(message.get("body", b""))
                if not message.get("more_body", False):
                    finished.set()
            elif kind == "websocket.accept":
                accepted.set()
            elif kind == "websocket.close":
                if not accepted.is_set() and not refusal["status"]:  # refused without a Status body
                    refusal["status"] = 403
                    refusal["body"].extend(json.dumps({"kind": "Status", "message": message.get("reason", "")}).encode())
                finished.set()

        task = asyncio.ensure_future(self.gateway(scope, receive, send))
        try:
            await wait_at_most(finished.wait(), timeout)
        except TimeoutError:
            result.truncated = True
        finished.set()  # the client "disconnects": the gateway ends the relay and records the session
        try:
            await wait_at_most(task, 15)
        except TimeoutError:
            task.cancel()
        if refusal["status"]:
            result.refused = Answer(refusal["status"], refusal["headers"], bytes(refusal["body"]))
        return result
