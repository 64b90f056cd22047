"""The MCP endpoint: ``/mcp/<connection>/`` (Streamable HTTP, the official ``mcp`` SDK) in Airlock's own ASGI app.

Authentication follows the MCP authorization specification as a resource server: Airlock is an
OAuth 2.1 protected resource.  ``/.well-known/oauth-protected-resource/mcp/<connection>/`` is its
RFC 9728 metadata, naming the issuers Airlock trusts (identity.oidc's configuration) as
authorization servers; a request without a valid bearer token gets a 401 whose
``WWW-Authenticate`` points there.  Tokens are validated by the same authenticator as the kubectl
path (identity.chain, handed in by airlock.app), so the same issuers, algorithms and audiences
(Airlock's, never another resource's) apply.  The token is never passed to the cluster: tool calls
send it only to the gateway in-process, which authenticates it again and forwards with the
connection's own credential.

Each tool call is recorded (mcpfront.records) and runs through :class:`Endpoint.run`, which turns
the tools' outcomes into MCP results: text; a tool error carrying the gateway Status message words
(403, 429 with its Retry-After, 5xx); or, for a held request, at once, what is pending, the
review's absolute URL and how to wait (``wait_for_review``) and retry.  A tool call the SDK refuses
before any tool runs (unknown tool, arguments its schema validation rejects) is recorded too, by
protocol middleware (:meth:`Endpoint.audit_tool_calls`), and so are the start and the end of each
session.  Every other request to the endpoint is an audit event of its own (mcpfront.exchange,
:meth:`Endpoint.record_exchange`): ``tools/list`` and the other methods, what the SDK refuses before
dispatch (not JSON, a batch, too large, another agent's session), a DELETE, a 401.  The request's
arrival is journaled before anything else, as the gateway's is, or it is refused with a 503.

Long because the endpoint's HTTP side (authentication, metadata, sessions, their audit events) and
its fifteen tool registrations belong together: each tool's signature is its schema and its call into the tools.
"""

import asyncio
import contextlib
import contextvars
import dataclasses
import json
import logging
import math
import uuid
from collections.abc import Mapping
from typing import Annotated, Any

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.context import CallNext, ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.auth import ProtectedResourceMetadata
from mcp_types import ToolAnnotations
from pydantic import Field
from starlette.authentication import AuthCredentials

from approvals.hold import review_url
from audit.recorder import AuditUnavailable
from connections.validation import CONNECTION_NAME
from gateway.pipeline import base_url
from identity.principal import AuthenticationError
from kube import headers as hdr
from kube.status import GatewayError
from mcpfront import agentside
from mcpfront.exchange import SESSION_END, Exchange, reason_of, verb_of, without_values
from mcpfront.inprocess import Call, GatewayClient
from mcpfront.kubeapi import ToolInputError
from mcpfront.records import (ProtocolRecord, SessionStartRecord, ToolCallRecord, mask_arguments, mask_message,
                              printable_tool_name)
from mcpfront.tools import Pending, ToolFailure, Tools
from runtime import db

log = logging.getLogger(__name__)

PREFIX = "/mcp/"
METADATA_PREFIX = "/.well-known/oauth-protected-resource" + PREFIX
PRINCIPAL = "airlock.mcp.principal"  # ASGI scope keys set here, after authentication
CONNECTION = "airlock.mcp.connection"
EXCHANGE = "airlock.mcp.exchange"  # the request's mcpfront.exchange.Exchange
MAX_BODY = 1024 * 1024
IGNORED = "(sent, not in the tool's schema: ignored)"


@dataclasses.dataclass
class _Inbound:
    """One tools/call as it arrived (set by the protocol middleware); Endpoint.run marks it recorded."""

    arguments: Any
    recorded: bool = False


@dataclasses.dataclass
class _Session:
    """An open MCP session: who opened it (its end is recorded with them) and whether its owner is deleting it."""

    owner: tuple[str, str, str]  # issuer, subject, connection
    call: Call
    principal: Any
    user_agent: str
    deleting: bool = False


_INBOUND: contextvars.ContextVar[_Inbound | None] = contextvars.ContextVar("airlock_mcp_inbound", default=None)

# Tool parameter types (module level: the SDK reads the tools' signatures to build their schemas).
Ns = Annotated[str, Field(description="namespace (empty: all namespaces, or cluster-scoped)")]
Res = Annotated[str, Field(description="resource: pods, deployments, deploy, deployments.apps, ... or a kind")]
Manifest = Annotated[str, Field(description="one object as YAML or JSON")]
Duration = Annotated[str, Field(description="how long, e.g. 30m or 2h")]

INSTRUCTIONS = """Kubernetes through Airlock. Every tool call becomes Kubernetes API requests that Airlock's
rules allow, deny or hold for a human reviewer, exactly like kubectl traffic; Secret values come back masked.
Start with explain_policy to see what you may do here. Changes: apply_manifest shows a dry-run diff first
(confirm=true to apply). A held change answers at once with a review URL: tell the user, call
wait_for_review, then repeat the same tool call with the same arguments once approved."""


def _json(status: int, document: dict, extra: list | None = None):
    body = json.dumps(document).encode()
    return status, [(b"content-type", b"application/json"), (b"cache-control", b"no-store"),
                    (b"content-length", str(len(body)).encode()), *(extra or [])], body


async def _send(send, answer):
    status, headers, body = answer
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def issuers_of(authenticator) -> list[str]:
    oidc = getattr(authenticator, "oidc", None)
    config = getattr(oidc, "config", None)
    return [i.issuer for i in getattr(config, "issuers", ())]


class Endpoint:
    """The MCP endpoint's ASGI application and its tools, wired by airlock.app.make_application."""

    def __init__(self, *, gateway, gateway_prefix: str, authenticator, policy, django=None,
                 session_idle_timeout: float = 30 * 60):
        self.gateway = gateway
        self.authenticator = authenticator
        self.policy = policy
        self.django = django
        self.client = GatewayClient(gateway, gateway_prefix)
        self.tools = Tools(self.client)
        self.tool_names: set[str] = set()
        self._sessions: dict[str, _Session] = {}
        self.session_idle_timeout = session_idle_timeout
        self.stopping = False
        # log_level: MCPServer calls logging.basicConfig with it, which only acts when nothing configured
        # logging yet (Django's LOGGING has, in the server); WARNING keeps session ids out of the log then.
        self.server = MCPServer("airlock", instructions=INSTRUCTIONS, version="1", log_level="WARNING")
        self._register()
        self.server.middleware.append(self.audit_tool_calls)
        # Bearer tokens, not cookies, authenticate every request, so a rebound DNS name gains a page
        # nothing; Airlock's own host checks (AIRLOCK_ALLOWED_HOSTS) stay where they are.
        self.server.streamable_http_app(
            streamable_http_path="/", transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
            max_request_body_size=MAX_BODY, session_idle_timeout=session_idle_timeout)
        self.sessions = self.server.session_manager

    @contextlib.asynccontextmanager
    async def serving(self):
        """The session manager's task group: the application's lifespan enters it (sessions still open
        when it ends are closed, and their ends recorded, before the recorder is)."""
        async with self.sessions.run():
            try:
                yield
            finally:
                self.stopping = True

    # -- HTTP -----------------------------------------------------------------------------

    @staticmethod
    def routes(path: str) -> bool:
        return path.startswith(PREFIX) or path.startswith(METADATA_PREFIX)

    def resource_url(self, scope, connection: str) -> str:
        base = base_url(scope, hdr.request_headers(scope.get("headers", [])))
        return f"{base}{PREFIX}{connection}/"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            if scope["type"] == "websocket" and (await receive())["type"] == "websocket.connect":
                await send({"type": "websocket.close", "code": 1008, "reason": "the MCP endpoint speaks HTTP"})
            return
        if scope["path"].startswith(METADATA_PREFIX):  # the public metadata document: not an agent's request
            _, document = await self.answer_outside(scope, None)
            await _send(send, document)
            return
        exchange = Exchange(scope, MAX_BODY)
        inner, refusal = await self.answer_outside(scope, exchange)
        if refusal is not None:
            await _send(exchange.send(send), refusal)
            await self.record_exchange(exchange, scope)
            return
        deleting = self.deleting(inner, exchange)
        try:
            await self.sessions.handle_request(inner, exchange.receive(receive),
                                               self.watch_session_start(inner, exchange.send(send)))
        except Exception:
            if exchange.status is None:  # the server answers 500 for it
                exchange.status, exchange.answer = 500, bytearray(b"airlock: internal error")
            raise
        finally:
            if deleting is not None and exchange.status != 200:
                deleting.deleting = False
            await asyncio.shield(self.record_exchange(exchange, inner))  # also when the request is cancelled

    async def answer_outside(self, scope, exchange: "Exchange | None"):
        """Before the SDK: the request's arrival journaled (else a 503, as on the gateway; none for the
        metadata, ``exchange`` None), then admission: (the scope the SDK gets, None) or (None, the answer)."""
        try:
            if exchange is not None:
                self.gateway.recorder.received(self.protocol_record(exchange, scope).started_record())
            inner, refusal = await self.admit(scope, exchange)
        except AuditUnavailable as exc:
            inner, refusal = None, _json(503, {"error": "temporarily_unavailable",
                                               "error_description": f"airlock: {exc}"})
        except GatewayError as exc:  # headers that are not UTF-8 or not tokens: 400, as on the gateway
            inner, refusal = None, _json(exc.code, {"error": "invalid_request", "error_description": exc.message})
        except Exception:  # a bug, not a refusal: still a JSON answer, never a plain-text 500
            log.exception("MCP request failed before its session")
            inner, refusal = None, _json(500, {"error": "server_error", "error_description": "airlock: internal error"})
        return inner, refusal

    def protocol_record(self, exchange: Exchange, scope, *, verb: str = "") -> ProtocolRecord:
        """The request's own event (mcpfront.exchange): who asked, if known yet, and where from."""
        headers = _headers(scope)
        client = scope.get("client") or ("", 0)
        connection = self._connection(scope["path"][len(PREFIX):]) if scope["path"].startswith(PREFIX) else None
        call = Call(token="", connection=connection or "", audit_id=exchange.audit_id, tool="",
                    client_addr=client[0] or "", session=_session_id(headers))
        return ProtocolRecord(self.gateway.recorder, call, exchange.principal, verb=verb or exchange.method.lower(),
                              received_at=exchange.received_at, started=exchange.started, source_ip=call.client_addr,
                              user_agent=next((v for n, v in headers if n == "user-agent"), ""))

    async def record_exchange(self, exchange: Exchange, scope):
        """The request's event, unless a tool call or the session's start recorded it (never raises)."""
        if exchange.claimed:
            return
        exchange.claim()
        try:
            body = exchange.body
            record = self.protocol_record(exchange, scope, verb=verb_of(exchange.method, body))
            kept = await self.message_for_record(record.call, body) if body else b""
            why = reason_of(exchange.method, exchange.status, exchange.answer)
            await record.finish(code=exchange.status, message=why, arguments=kept, bytes_in=exchange.bytes_in)
        except Exception:
            log.exception("MCP request %s could not be recorded", exchange.audit_id)

    def deleting(self, scope, exchange: Exchange) -> "_Session | None":
        """A DELETE of one of the agent's own sessions: its end is this request's event, not the close's."""
        if exchange.method != "DELETE":
            return None
        session = self._sessions.get(_session_id(_headers(scope)))
        principal = scope[PRINCIPAL]
        if session is None or session.owner != (principal.issuer, principal.subject, scope[CONNECTION]):
            return None
        session.deleting = True
        return session

    def watch_session_start(self, scope, send):
        """``send``, recording the start of a session: the answer to a request without an
        ``Mcp-Session-Id`` that hands one out (the SDK picks the id; it is first seen here)."""
        asked = hdr.request_headers(scope.get("headers", []))
        if scope.get("method") != "POST" or any(n == "mcp-session-id" for n, _ in asked):
            return send

        async def watching(message):
            if message["type"] == "http.response.start" and message.get("status") == 200:
                given = next((v.decode("latin-1") for n, v in message.get("headers", [])
                              if n.lower() == b"mcp-session-id"), "")
                if given:
                    try:
                        await self.record_session_start(scope, given)
                    except Exception:  # the session is open either way; its tool calls are recorded
                        log.exception("the start of an MCP session could not be recorded")
            await send(message)

        return watching

    async def record_session_start(self, scope, session: str):
        call, principal, extra = self.call_from_scope(scope, "")
        call = dataclasses.replace(call, session=_session_id([("mcp-session-id", session)]))
        record = SessionStartRecord(self.gateway.recorder, call, principal, source_ip=call.client_addr, **extra)
        try:
            record.begin()
        except AuditUnavailable as exc:
            log.warning("the start of an MCP session was not journaled: %s", exc)
        await record.finish(code=200, message=f"MCP session opened on connection {call.connection}", arguments=b"")

    async def admit(self, scope, exchange: "Exchange | None" = None):
        """(the scope the SDK's session manager gets, None), or (None, the answer to send instead)."""
        path = scope["path"]
        headers = hdr.request_headers(scope.get("headers", []))
        if not base_url(scope, headers):
            return None, _json(400, {"error": "invalid_request", "error_description": "the Host header is not a host"})
        if path.startswith(METADATA_PREFIX):
            return None, self.metadata(scope, path[len(METADATA_PREFIX):])
        connection = self._connection(path[len(PREFIX):])
        if connection is None:
            return None, _json(404, {"error": "not_found", "error_description":
                                     "the MCP endpoint of a connection is /mcp/<connection>/"})
        return await self.connect(scope, connection, exchange)

    async def connect(self, scope, connection: str, exchange: "Exchange | None" = None):
        """The agent's token, then the connection: the scope for the SDK with who asks, or a refusal."""
        principal, token, refusal = await self.authenticate(scope, connection)
        if refusal is not None:
            return None, refusal
        if exchange is not None:
            exchange.principal = principal
        try:
            upstream = await self.gateway.connections(connection)
        except db.DatabaseUnavailable:
            return None, _json(503, {"error": "temporarily_unavailable", "error_description": db.DOWN_MESSAGE})
        if upstream is None:
            return None, _json(404, {"error": "not_found", "error_description": f'connection "{connection}" not found'})
        expires = principal.expires_at  # development static tokens never expire (infinity)
        # The SDK lets only the (client_id, issuer, subject) that opened a session use it (404 otherwise);
        # the connection is part of client_id so a session is also bound to the connection it was opened on.
        access = AccessToken(token=token, client_id=f"{connection}/{principal.subject}", scopes=[],
                             subject=principal.subject,
                             expires_at=int(expires) if math.isfinite(expires) else None,
                             claims={"iss": principal.issuer})
        return {**scope, "user": AuthenticatedUser(access), "auth": AuthCredentials([]),
                PRINCIPAL: principal, CONNECTION: connection, EXCHANGE: exchange}, None

    @staticmethod
    def _connection(rest: str) -> str | None:
        name = rest[:-1] if rest.endswith("/") else rest
        return name if CONNECTION_NAME.fullmatch(name or "-invalid-") else None

    def metadata(self, scope, rest: str):
        connection = self._connection(rest)
        issuers = issuers_of(self.authenticator)
        if connection is None or not issuers:
            return _json(404, {"error": "not_found", "error_description": "no protected resource here"
                               + ("" if issuers else " (no OIDC issuer is configured)")})
        metadata = ProtectedResourceMetadata(
            resource=self.resource_url(scope, connection), authorization_servers=issuers,
            resource_name=f"Airlock: Kubernetes connection {connection} over MCP")
        return _json(200, json.loads(metadata.model_dump_json(exclude_none=True)))

    async def authenticate(self, scope, connection: str):
        """(principal, token, None), or (None, None, the 401 with WWW-Authenticate resource_metadata)."""
        headers = hdr.request_headers(scope.get("headers", []))
        token = hdr.bearer_token(headers)
        reason = "a bearer token is required"
        if token is not None:
            try:
                return await self.authenticator.authenticate(token), token, None
            except AuthenticationError as exc:
                reason = str(exc)
        resource = self.resource_url(scope, connection)
        base, _, tail = resource.partition(PREFIX)
        metadata = f"{base}{METADATA_PREFIX}{tail}"
        words = reason.replace('"', "'")
        challenge = f'Bearer error="invalid_token", error_description="{words}", resource_metadata="{metadata}"'
        return None, None, _json(401, {"error": "invalid_token", "error_description": f"Unauthorized: {reason}"},
                                 [(b"www-authenticate", challenge.encode())])

    # -- tools ----------------------------------------------------------------------------

    def call_of(self, ctx: Context, tool: str) -> "tuple[Call, Any, dict]":
        return self.call_from_scope(ctx.request_context.request.scope, tool)

    def call_from_scope(self, scope, tool: str, *, claim: bool = True) -> "tuple[Call, Any, dict]":
        """Who asks and from where; with ``claim``, the event made of it records the request (its audit id)."""
        headers = hdr.request_headers(scope.get("headers", []))
        host = next((v for n, v in headers if n == "host"), "")
        client = scope.get("client") or ("", 0)
        exchange = scope.get(EXCHANGE)
        audit_id = exchange.claim() if claim and exchange is not None else str(uuid.uuid4())
        call = Call(token=scope["user"].access_token.token, connection=scope[CONNECTION],
                    audit_id=audit_id, tool=tool, host=host, scheme=scope.get("scheme") or "https",
                    client_addr=client[0] or "", session=_session_id(headers))
        return call, scope[PRINCIPAL], {"user_agent": next((v for n, v in headers if n == "user-agent"), "")}

    async def arguments_for_record(self, call: Call, arguments: dict) -> bytes:
        try:
            return mask_arguments(arguments, await self.secret_values(call))
        except Exception as exc:  # never keep arguments that could not be masked for the values
            log.warning("arguments of MCP tool call %s not kept: %s", call.audit_id, type(exc).__name__)
            return json.dumps({"airlock": "arguments not kept: they could not be masked",
                               "names": sorted(arguments)}).encode()

    async def message_for_record(self, call: Call, body: bytes) -> bytes:
        """A protocol message's masked, cut copy (mcpfront.records.mask_message), or only its size."""
        try:
            values = await self.secret_values(call)
            return mask_message(body, values)
        except Exception as exc:  # never keep a message that could not be masked for the values
            log.warning("message of MCP request %s not kept: %s", call.audit_id, type(exc).__name__)
            return json.dumps({"airlock": "message not kept: it could not be masked", "bytes": len(body)}).encode()

    async def secret_values(self, call: Call):
        """The connection's Secret values, what the trail's copies are masked for (raises when unknown)."""
        stores = getattr(self.gateway, "secret_values", None)
        if stores is None:
            return None
        upstream = await self.gateway.connections(call.connection)
        if upstream is None:
            raise LookupError(f"connection {call.connection} is gone")
        return await stores.current(upstream, self.gateway.pool.client(upstream))

    def watch_session_end(self, ctx: ServerRequestContext):
        """At a session's ``initialize``: its end is recorded when its connection closes (the SDK unwinds
        the connection's exit stack then, on DELETE, idle timeout or shutdown).  The SDK documents that
        exit stack for middleware but hands middleware the connection only on its ServerSession."""
        connection = getattr(ctx.session, "_connection", None)
        session_id = getattr(connection, "session_id", None)
        if not session_id or session_id in self._sessions:
            return
        call, principal, extra = self.call_from_scope(ctx.request.scope, "", claim=False)
        call = dataclasses.replace(call, session=_session_id([("mcp-session-id", session_id)]), token="")
        self._sessions[session_id] = _Session((principal.issuer, principal.subject, call.connection), call, principal,
                                              extra["user_agent"])
        connection.exit_stack.push_async_callback(self.session_closed, session_id)

    async def session_closed(self, session_id: str):
        """A session's connection closed: its end is an event, unless its owner's DELETE records it."""
        session = self._sessions.pop(session_id, None)
        if session is None or session.deleting:
            return
        call = dataclasses.replace(session.call, audit_id=str(uuid.uuid4()))
        why = ("Airlock stopped" if self.stopping else
               f"idle for longer than {self.session_idle_timeout:g} s, or its transport failed")
        record = ProtocolRecord(self.gateway.recorder, call, session.principal, verb=SESSION_END,
                                source_ip=call.client_addr, user_agent=session.user_agent)
        await record.finish(code=None, message=f"MCP session closed by Airlock: {why}", arguments=b"")

    async def audit_tool_calls(self, ctx: ServerRequestContext, call_next: CallNext):
        """Protocol middleware (it wraps every inbound message): a ``tools/call`` that never reached
        :meth:`run` (an unknown tool, arguments the SDK's schema validation refused, params that are
        not a tool call's) is still an audit event, with the reason and the arguments masked."""
        if ctx.request is None or PRINCIPAL not in ctx.request.scope:
            return await call_next(ctx)
        if ctx.method == "initialize":
            self.watch_session_end(ctx)
        if ctx.method != "tools/call":
            return await call_next(ctx)
        params = ctx.params if isinstance(ctx.params, Mapping) else {}
        inbound = _Inbound(params.get("arguments"))
        token = _INBOUND.set(inbound)
        try:
            result = await call_next(ctx)
        except Exception as exc:  # MCPError or pydantic's ValidationError: a JSON-RPC error answer
            if not inbound.recorded:
                await self.record_refused(ctx, getattr(getattr(exc, "error", None), "message", None) or
                                          f"the tools/call params are invalid: {type(exc).__name__}")
            raise
        finally:
            _INBOUND.reset(token)
        if not inbound.recorded:
            await self.record_refused(ctx, _refusal_words(result))
        return result

    async def record_refused(self, ctx: ServerRequestContext, reason: str):
        params = ctx.params if isinstance(ctx.params, Mapping) else {}
        name = params.get("name")
        known = isinstance(name, str) and name in self.tool_names
        call, principal, extra = self.call_from_scope(ctx.request.scope, printable_tool_name(name))
        arguments = params.get("arguments")
        if not isinstance(arguments, dict):
            arguments = {} if arguments is None else {"(arguments that are not an object)": arguments}
        record = ToolCallRecord(self.gateway.recorder, call, principal, source_ip=call.client_addr, **extra)
        try:
            record.begin()
        except AuditUnavailable as exc:
            log.warning("refused MCP tool call %s not journaled: %s", call.audit_id, exc)
        message = (reason if known else f"unknown tool: {call.tool}")[:2000]
        await record.finish(code=422 if known else 404, message=message,
                            arguments=await self.arguments_for_record(call, arguments))

    async def run(self, ctx: Context, tool: str, arguments: dict, work) -> str:
        inbound = _INBOUND.get()
        if inbound is not None:
            inbound.recorded = True
            sent = inbound.arguments if isinstance(inbound.arguments, dict) else {}
            ignored = {name: value for name, value in sent.items() if name not in arguments}
            if ignored:  # the record keeps what the agent sent, not only what the tool took
                arguments = {**arguments, IGNORED: ignored}
        call, principal, extra = self.call_of(ctx, tool)
        record = ToolCallRecord(self.gateway.recorder, call, principal, source_ip=call.client_addr, **extra)
        try:
            record.begin()
        except AuditUnavailable as exc:
            raise ToolError(f"airlock: {exc}") from None
        code, message, review_id = 200, "ok", None
        try:
            result = await work(call, principal)
            return result
        except Pending as pending:
            code, message, review_id = 202, pending.message, pending.review_id
            return pending_result(call, pending)
        except ToolFailure as exc:
            code, message = exc.code or 502, str(exc)
            raise ToolError(str(exc)) from None
        except ToolInputError as exc:
            code, message = 400, str(exc)
            raise ToolError(str(exc)) from None
        except db.DatabaseUnavailable:
            code, message = 503, db.DOWN_MESSAGE
            raise ToolError(db.DOWN_MESSAGE) from None
        except Exception:
            log.exception("MCP tool call %s (%s) failed inside Airlock", call.audit_id, tool)
            code, message = 500, "airlock: internal error; the tool call was not completed"
            raise ToolError(message) from None
        finally:
            await record.finish(code=code, message=message[:2000],
                                arguments=await self.arguments_for_record(call, arguments), review_id=review_id)

    def _register(self):
        tools, server = self.tools, self.server
        read = ToolAnnotations(read_only_hint=True, destructive_hint=False, open_world_hint=False)
        change = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True,
                                 open_world_hint=False)
        destroy = ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=False)

        async def list_resources(ctx: Context, resource: Res, namespace: Ns = "", label_selector: str = "",
                                 field_selector: str = "", limit: int = 100, continue_token: str = "",
                                 api_version: str = "") -> str:
            """List objects of a resource, one line each (name, state, age); selectors narrow it."""
            args = dict(resource=resource, namespace=namespace, label_selector=label_selector,
                        field_selector=field_selector, limit=limit, continue_token=continue_token,
                        api_version=api_version)
            return await self.run(ctx, "list_resources", args, lambda c, p: tools.list(c, **args))

        async def get_resource(ctx: Context, resource: Res, name: str, namespace: Ns = "",
                               api_version: str = "") -> str:
            """Get one object as YAML (managedFields left out; Secret values masked)."""
            args = dict(resource=resource, name=name, namespace=namespace, api_version=api_version)
            return await self.run(ctx, "get_resource", args, lambda c, p: tools.get(c, **args))

        async def describe_resource(ctx: Context, resource: Res, name: str, namespace: Ns = "",
                                    api_version: str = "") -> str:
            """A describe-like summary of one object: state, containers, conditions, recent events."""
            args = dict(resource=resource, name=name, namespace=namespace, api_version=api_version)
            return await self.run(ctx, "describe_resource", args, lambda c, p: tools.describe(c, **args))

        async def list_events(ctx: Context, namespace: Ns = "", object_name: str = "", limit: int = 50) -> str:
            """Recent events, oldest first; object_name narrows them to one object."""
            args = dict(namespace=namespace, object_name=object_name, limit=limit)
            return await self.run(ctx, "list_events", args, lambda c, p: tools.events(c, **args))

        async def pod_logs(ctx: Context, pod: str, namespace: str, container: str = "", tail_lines: int = 200,
                           limit_bytes: int = 65536, previous: bool = False) -> str:
            """The last lines of a pod's log (bounded; secrets masked)."""
            args = dict(pod=pod, namespace=namespace, container=container, tail_lines=tail_lines,
                        limit_bytes=limit_bytes, previous=previous)
            return await self.run(ctx, "pod_logs", args, lambda c, p: tools.logs(c, **args))

        async def apply_manifest(ctx: Context, manifest: Manifest, namespace: Ns = "", confirm: bool = False) -> str:
            """Server-side apply. Always runs a dry run first and shows its diff; the change is made only
            with confirm=true (it may then be held for a reviewer)."""
            args = dict(manifest=manifest, namespace=namespace, confirm=confirm)
            return await self.run(ctx, "apply_manifest", args, lambda c, p: tools.apply(c, **args))

        async def delete_resource(ctx: Context, resource: Res, name: str, namespace: Ns = "",
                                  api_version: str = "") -> str:
            """Delete one object (often held for a reviewer)."""
            args = dict(resource=resource, name=name, namespace=namespace, api_version=api_version)
            return await self.run(ctx, "delete_resource", args, lambda c, p: tools.delete(c, **args))

        async def scale(ctx: Context, resource: Res, name: str, namespace: str, replicas: int) -> str:
            """Set the replicas of a deployment, statefulset or replicaset (its scale subresource)."""
            args = dict(resource=resource, name=name, namespace=namespace, replicas=replicas)
            return await self.run(ctx, "scale", args, lambda c, p: tools.scale(c, **args))

        async def rollout_restart(ctx: Context, resource: Res, name: str, namespace: str,
                                  restarted_at: str = "") -> str:
            """Restart a deployment's, statefulset's or daemonset's pods (kubectl rollout restart). When a review
            holds it, repeat with the restarted_at the answer gives so the approved request is the same."""
            args = dict(resource=resource, name=name, namespace=namespace, restarted_at=restarted_at)
            return await self.run(ctx, "rollout_restart", args, lambda c, p: tools.rollout_restart(c, **args))

        async def exec_command(ctx: Context, pod: str, namespace: str, command: list[str], container: str = "",
                               timeout_seconds: int = 30) -> str:
            """Run a non-interactive command in a pod's container; output and time are bounded."""
            args = dict(pod=pod, namespace=namespace, command=command, container=container,
                        timeout_seconds=timeout_seconds)
            return await self.run(ctx, "exec_command", args, lambda c, p: tools.exec(c, **args))

        async def can_i(ctx: Context, verb: str, resource: Res, namespace: Ns = "", name: str = "",
                        subresource: str = "") -> str:
            """Whether you may do something here now (Airlock's rules and the cluster's, like kubectl auth can-i).
            A request that needs a reviewer's approval is a no, naming the rule."""
            args = dict(verb=verb, resource=resource, namespace=namespace, name=name, subresource=subresource)
            return await self.run(ctx, "can_i", args, lambda c, p: tools.can_i(c, **args))

        async def explain_policy(ctx: Context) -> str:
            """The rules that apply to you on this connection: allowed, denied, needing review or a lease."""
            return await self.run(ctx, "explain_policy", {},
                                  lambda c, p: agentside.explain_policy(self.policy, c, p))

        async def request_lease(ctx: Context, duration: Duration, reason: str, rules: list[str] | None = None) -> str:
            """Ask a reviewer for a time-limited lease (rules that require one apply only under it)."""
            args = dict(duration=duration, reason=reason, rules=rules or [])
            return await self.run(ctx, "request_lease", args, lambda c, p: agentside.request_lease(
                self.client, self.django, c, duration, reason, rules))

        async def review_status(ctx: Context, review_id: int) -> str:
            """The state of one of your reviews (pending, approved, denied, expired, used)."""
            return await self.run(ctx, "review_status", {"review_id": review_id},
                                  lambda c, p: agentside.review_status(c, p, review_id))

        async def wait_for_review(ctx: Context, review_id: int, timeout_seconds: int = 60) -> str:
            """Wait until a reviewer decides one of your reviews (progress notifications while waiting), at most
            timeout_seconds (300); then repeat the held tool call with the same arguments if it was approved."""

            async def progress(done, total, message):
                try:
                    await ctx.report_progress(done, total, message)
                except Exception:  # a client that cannot take notifications still gets the answer
                    pass

            return await self.run(ctx, "wait_for_review", {"review_id": review_id, "timeout_seconds": timeout_seconds},
                                  lambda c, p: agentside.wait_for_review(c, p, review_id, timeout_seconds, progress))

        for fn, annotations in ((list_resources, read), (get_resource, read), (describe_resource, read),
                                (list_events, read), (pod_logs, read), (apply_manifest, change),
                                (delete_resource, destroy), (scale, change), (rollout_restart, change),
                                (exec_command, destroy), (can_i, read), (explain_policy, read),
                                (request_lease, change), (review_status, read), (wait_for_review, read)):
            server.add_tool(fn, annotations=annotations, structured_output=False)
            self.tool_names.add(fn.__name__)


def _refusal_words(result) -> str:
    """Why the SDK refused a tool call, for the audit trail: its text without the values the caller sent."""
    content = result.get("content") if isinstance(result, dict) else getattr(result, "content", None)
    first = content[0] if isinstance(content, list) and content else {}
    text = first.get("text") if isinstance(first, dict) else getattr(first, "text", None)
    if not isinstance(text, str) or not text:
        return "the tool call was refused"
    return without_values(text)


def _headers(scope) -> list[tuple[str, str]]:
    """Request headers as the audit record reads them: whatever bytes they hold (latin-1), never refused."""
    return [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope.get("headers", [])]


def _session_id(headers) -> str:
    value = next((v for n, v in headers if n == "mcp-session-id"), "")
    return value if value.isascii() and value.isprintable() and len(value) <= 100 else ""


def pending_result(call: Call, pending: Pending) -> str:
    url = review_url(pending.review_id, f"{call.scheme}://{call.host}" if call.host else "")
    lines = [
        f"PENDING REVIEW {pending.review_id}: nothing was done yet. {pending.message}",
        f"review_url: {url}",
        f"next: tell the user a reviewer must approve it at {url}; call wait_for_review with review_id="
        f"{pending.review_id} (or review_status to check); once approved, call {call.tool} again with exactly "
        "the same arguments (the approval covers that identical request).",
    ]
    if pending.done:
        lines.insert(1, pending.done)
    return "\n".join(lines)
