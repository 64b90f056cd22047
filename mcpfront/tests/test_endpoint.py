"""The MCP endpoint's HTTP side without sockets: the 401 challenge, the RFC 9728 metadata, unknown
connections, and a development static token (which never expires) opening a session."""

import asyncio
import json

import pytest

from audit.recorder import AuditUnavailable
from identity.chain import AuthenticatorChain
from identity.oidc import Authenticator
from identity.oidc_config import AuthenticatorConfig, IssuerConfig
from identity.static import StaticTokenAuthenticator
from mcpfront.server import Endpoint

TOKEN = "agent-dev-token-51c0"
CONFIG = AuthenticatorConfig(issuers=(IssuerConfig(issuer="https://idp.test", audiences=("https://airlock.test",)),))


OTHER = "agent-dev-token-77b2"


class FakeRecorder:
    """What the endpoint journals (``started``) and queues (``finished``); ``broken``: the journal refuses."""

    def __init__(self):
        self.started, self.finished = [], []
        self.broken = False

    def received(self, record):
        if self.broken:
            raise AuditUnavailable("the audit journal is unavailable; the request was not forwarded")
        self.started.append(record)

    async def finish(self, record):
        self.finished.append(record)


class FakeGateway:
    secret_values = None

    def __init__(self):
        self.recorder = FakeRecorder()

    async def connections(self, name):
        return object() if name in ("prod", "staging") else None


def endpoint(oidc=True, **options):
    chain = AuthenticatorChain(static=StaticTokenAuthenticator(f"{TOKEN}=agent-1:agents,{OTHER}=agent-2:agents"),
                               oidc=Authenticator(CONFIG) if oidc else None)
    return Endpoint(gateway=FakeGateway(), gateway_prefix="/k8s/", authenticator=chain, policy=None, **options)


async def exchange(app, scope, body: bytes) -> tuple[dict, bytes]:
    """One ASGI request carrying ``body``: the response's start message and its whole body."""
    sent, done, delivered = [], asyncio.Event(), False

    async def receive():
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    await asyncio.wait_for(app(scope, receive, send), 10)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


async def call(app, path, *, method="POST", token=None, body=None, host=b"airlock.test:8443", extra=()):
    headers = [(b"host", host), (b"content-type", b"application/json"),
               (b"accept", b"application/json, text/event-stream"), *extra]
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": headers, "scheme": "https", "client": ("10.0.0.9", 1), "server": ("127.0.0.1", 8443),
             "asgi": {"version": "3.0"}, "http_version": "1.1", "root_path": ""}
    start, content = await exchange(app, scope, json.dumps(body).encode() if body is not None else b"")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, content


async def test_without_a_valid_token_the_answer_points_at_the_protected_resource_metadata():
    app = endpoint()
    for token in (None, "not-a-known-token"):
        status, headers, body = await call(app, "/mcp/prod/", token=token)
        assert status == 401 and json.loads(body)["error"] == "invalid_token"
        assert headers["www-authenticate"].startswith('Bearer error="invalid_token"')
        assert ('resource_metadata="https://airlock.test:8443/.well-known/oauth-protected-resource/mcp/prod/"'
                in headers["www-authenticate"])
    status, _, body = await call(app, "/.well-known/oauth-protected-resource/mcp/prod/", method="GET")
    document = json.loads(body)
    assert status == 200 and document["resource"] == "https://airlock.test:8443/mcp/prod/"
    assert [u.rstrip("/") for u in document["authorization_servers"]] == ["https://idp.test"]
    assert document["bearer_methods_supported"] == ["header"]


async def test_no_metadata_without_an_issuer_and_no_endpoint_for_an_unknown_connection():
    assert (await call(endpoint(oidc=False), "/.well-known/oauth-protected-resource/mcp/prod/", method="GET"))[0] == 404
    assert (await call(endpoint(), "/mcp/nope/", token=TOKEN))[0] == 404
    assert (await call(endpoint(), "/mcp/Bad_Name/", token=TOKEN))[0] == 404


async def test_bad_headers_are_a_json_400_never_a_500():
    for options in ({"host": b"evil.test/path?x"}, {"extra": [(b"x-note", b"\xff\xfe")]},
                    {"extra": [(b"bad name", b"v")]}):
        status, headers, body = await call(endpoint(), "/.well-known/oauth-protected-resource/mcp/prod/",
                                           method="GET", **options)
        assert status == 400 and headers["content-type"] == "application/json", body


async def test_a_static_token_that_never_expires_opens_a_session():
    app = endpoint()
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    async with app.serving():
        status, headers, body = await call(app, "/mcp/prod/", token=TOKEN, body=initialize)
    assert status == 200 and headers.get("mcp-session-id"), body
    assert b'"serverInfo"' in body and b"airlock" in body


INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


def answers(body: bytes) -> list[dict]:
    """The JSON-RPC messages of an answer, whether plain JSON or an event stream."""
    text = body.decode()
    if text.lstrip().startswith(("{", "[")):
        document = json.loads(text)
        return document if isinstance(document, list) else [document]
    return [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:") and line[5:].strip()]


async def open_session(app, token=TOKEN, path="/mcp/prod/"):
    status, headers, body = await call(app, path, token=token, body=INITIALIZE)
    assert status == 200, body
    session = headers["mcp-session-id"]
    extra = [(b"mcp-session-id", session.encode()), (b"mcp-protocol-version", b"2025-06-18")]
    await call(app, path, token=token, body={"jsonrpc": "2.0", "method": "notifications/initialized"}, extra=extra)
    return session, extra


async def test_the_start_of_a_session_is_recorded_with_its_agent_and_connection():
    app = endpoint()
    async with app.serving():
        session, _ = await open_session(app)
    [started] = [r for r in app.gateway.recorder.finished if r.verb == "initialize"]
    assert (started.verb, started.connection, started.user_username, started.response_code) == (
        "initialize", "prod", "agent-1", 200)
    assert started.kubectl_session == f"mcp-{session}" and started.mcp_tool == "" and started.source_ips == ("10.0.0.9",)
    assert started.audit_id in [r.audit_id for r in app.gateway.recorder.started]


async def test_tool_calls_the_sdk_refuses_before_any_tool_runs_are_audit_events():
    app = endpoint()
    secret = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"  # a GitHub token shape: the detectors mask it
    calls = [
        ("list_resources", {"resource": 123, "namespace": secret}, 422, "resource"),  # a wrong type
        ("list_resources", {"namespace": "shop"}, 422, "resource"),  # a required field missing
        ("get_resource", {"resource": "secrets", "name": [secret], "extra": 1}, 422, "name\n  Input should be"),
        ("review_status", {"review_id": "x" * 200_000}, 422, "review_id"),  # a huge string for a number
        ("delete_everything", {"token": secret}, 404, "unknown tool: delete_everything"),
        ("get_resource\u202e\u0000\U0001f4a3\u200b" + "x" * 500, {}, 404, "unknown tool"),
    ]
    async with app.serving():
        _, extra = await open_session(app)
        for number, (name, arguments, _, _) in enumerate(calls, 2):
            status, _, body = await call(app, "/mcp/prod/", token=TOKEN, extra=extra, body={
                "jsonrpc": "2.0", "id": number, "method": "tools/call", "params": {"name": name, "arguments": arguments}})
            [answer] = answers(body)
            assert status == 200 and answer["result"]["isError"] is True, body
    records = [r for r in app.gateway.recorder.finished if r.verb == "tools/call"]
    assert len(records) == len(calls)
    for record, (name, arguments, code, words) in zip(records, calls):
        assert record.response_code == code and words in record.response_message, record.response_message
        assert record.user_username == "agent-1" and record.kubectl_session.startswith("mcp-")
        assert record.mcp_tool.isascii() and record.mcp_tool.isprintable() and len(record.mcp_tool) <= 100
        assert record.request_uri == f"/mcp/prod/tools/{record.mcp_tool}"
        kept = json.loads(record.request_body)
        assert secret not in record.request_body.decode() and set(kept) == set(arguments)
        assert secret not in record.response_message and "input_value" not in record.response_message
        assert record.audit_id in {r.audit_id for r in app.gateway.recorder.started}
    assert records[0].mcp_tool == "list_resources" and records[4].mcp_tool == "delete_everything"
    assert records[5].mcp_tool.startswith("get_resource\\u202e\\x00\\U0001f4a3\\u200bxxx")


async def test_params_that_are_not_a_tool_call_are_refused_as_invalid_and_recorded():
    app = endpoint()
    async with app.serving():
        _, extra = await open_session(app)
        for number, params in enumerate(({"name": ["list_resources"]}, {"name": "scale", "arguments": [1, 2]},
                                         {"arguments": {}}), 2):
            status, _, body = await call(app, "/mcp/prod/", token=TOKEN, extra=extra, body={
                "jsonrpc": "2.0", "id": number, "method": "tools/call", "params": params})
            [answer] = answers(body)
            assert status == 200 and answer["error"]["code"] == -32602, body
    records = [r for r in app.gateway.recorder.finished if r.verb == "tools/call"]
    assert [r.response_code for r in records] == [404, 422, 404]
    assert json.loads(records[1].request_body) == {"(arguments that are not an object)": [1, 2]}


async def test_a_session_is_usable_only_by_its_agent_on_its_connection_and_bad_requests_get_a_4xx():
    app = endpoint()
    listing = {"jsonrpc": "2.0", "id": 7, "method": "tools/list"}
    async with app.serving():
        _, extra = await open_session(app, TOKEN)
        status, _, body = await call(app, "/mcp/prod/", token=TOKEN, extra=extra, body=listing)
        assert status == 200 and "list_resources" in body.decode()
        for token, path in ((OTHER, "/mcp/prod/"), (TOKEN, "/mcp/staging/")):
            for method in ("POST", "GET", "DELETE"):
                status, headers, body = await call(app, path, method=method, token=token, extra=extra,
                                                   body=listing if method == "POST" else None)
                assert status == 404 and headers["content-type"].startswith("application/json"), (method, body)
                assert b"Session not found" in body
        status, _, body = await call(app, "/mcp/prod/", token=TOKEN, extra=extra, body=listing)
        assert status == 200 and "list_resources" in body.decode()  # the owner's session survived
        await malformed_and_unauthenticated_requests_get_a_clear_4xx(app)


async def malformed_and_unauthenticated_requests_get_a_clear_4xx(app):
    """Unauthenticated (401 naming the metadata), not JSON, a batch, not a request, over the size limit, a
    lone surrogate: a 4xx (a JSON-RPC error inside when it is JSON-RPC), never a 500 or a traceback."""
    for token in (None, "forged"):
        for method in ("POST", "GET", "DELETE"):
            status, headers, _ = await call(app, "/mcp/prod/", method=method, token=token, body=INITIALIZE)
            assert status == 401 and "resource_metadata=" in headers["www-authenticate"]
    _, extra = await open_session(app)
    bad = [b"{not json", b"[]", b"\xff\xfe", b'{"jsonrpc": "2.0"}', b'"a string"',
           json.dumps([{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}] * 2).encode(),
           json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": "x"}).encode(),
           b"x" * (2 * 1024 * 1024),  # past the body limit
           b'{"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "\\ud800"}}']
    for body in bad:
        status, headers, answer = await raw(app, body, extra)
        assert 400 <= status < 500, (body[:40], status, answer)
        assert b"Traceback" not in answer
    status, _, answer = await raw(app, json.dumps(INITIALIZE).encode(), [])  # no Accept for a stream
    assert 400 <= status < 500 and b"Traceback" not in answer


async def raw(app, body: bytes, extra, accept=b"application/json, text/event-stream", content_type=b"application/json"):
    """A POST whose body is sent as is (not JSON-encoded by the helper)."""
    headers = [(b"host", b"airlock.test"), (b"content-type", content_type), (b"accept", accept),
               (b"authorization", f"Bearer {TOKEN}".encode()), *extra]
    if not extra:
        headers = [h for h in headers if h[0] != b"accept"]
    scope = {"type": "http", "method": "POST", "path": "/mcp/prod/", "raw_path": b"/mcp/prod/", "query_string": b"",
             "headers": headers, "scheme": "https", "client": ("10.0.0.9", 1), "server": ("127.0.0.1", 8443),
             "asgi": {"version": "3.0"}, "http_version": "1.1", "root_path": ""}
    start, content = await exchange(app, scope, body)
    return start["status"], dict(start["headers"]), content


SECRET = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"  # a GitHub token shape: the detectors mask it


def events(app, verb=None) -> list:
    return [r for r in app.gateway.recorder.finished if verb is None or r.verb == verb]


async def test_every_request_to_the_endpoint_is_one_audit_event_with_who_what_and_the_code():
    app = endpoint()
    listing = {"jsonrpc": "2.0", "id": 7, "method": "tools/list"}
    malformed = f'{{"jsonrpc": "2.0", "note": "{SECRET}", oops'.encode()
    oversized = b'{"pad": "' + SECRET.encode() + b"x" * (2 * 1024 * 1024) + b'"}'
    async with app.serving():
        session, extra = await open_session(app)
        before = len(events(app))
        assert (await call(app, "/mcp/prod/", token=TOKEN, extra=extra, body=listing))[0] == 200
        assert (await raw(app, malformed, extra))[0] == 400
        assert (await raw(app, json.dumps([listing, listing]).encode(), extra))[0] == 400
        assert (await raw(app, oversized, extra))[0] == 413
        assert (await raw(app, json.dumps(listing).encode(), extra, content_type=b"text/plain"))[0] == 400
        assert (await call(app, "/mcp/prod/", token=OTHER, extra=extra, body=listing))[0] == 404
        assert (await call(app, "/mcp/prod/", method="DELETE", token=OTHER, extra=extra))[0] == 404
        assert (await call(app, "/mcp/prod/", method="DELETE", token=TOKEN, extra=extra))[0] == 200
        recorded = events(app)[before:]
    assert [(r.verb, r.response_code, r.user_username) for r in recorded] == [
        ("tools/list", 200, "agent-1"), ("post", 400, "agent-1"), ("batch", 400, "agent-1"),
        ("post", 413, "agent-1"), ("tools/list", 400, "agent-1"), ("tools/list", 404, "agent-2"),
        ("session/end", 404, "agent-2"), ("session/end", 200, "agent-1")]
    journaled = {r.audit_id for r in app.gateway.recorder.started}
    for record in recorded:
        assert record.connection == "prod" and record.kubectl_session == f"mcp-{session}"
        assert record.request_uri == "/mcp/prod/" and record.mcp_tool == "" and record.audit_id in journaled
        assert SECRET not in record.request_body.decode("utf-8", "replace")
        assert "input_value" not in record.response_message
    listed, bad, batch, large, plain, stolen, refused_end, ended = recorded
    assert listed.response_message == "ok" and json.loads(listed.request_body) == listing
    assert bad.response_message.startswith("Parse error") and bad.bytes_in == len(malformed)
    assert b'"note": "**AIRLOCK-MASKED**", oops' in bad.request_body
    assert batch.response_message.startswith("Validation error") and batch.response_reason == "BadRequest"
    assert large.response_reason == "RequestEntityTooLarge" and large.bytes_in > 2 * 1024 * 1024
    assert large.request_body.startswith(b'{"pad": "**AIRLOCK-MASKED**') and len(large.request_body) < 4200  # cut
    assert plain.response_message == "Invalid Content-Type header"
    assert stolen.response_message == refused_end.response_message == "Session not found"
    assert ended.response_message == "MCP session ended by the agent"
    assert len(events(app, "session/end")) == 2  # the DELETE's end, not one more when the session's transport closed


async def test_unauthenticated_requests_are_recorded_as_the_gateway_records_them():
    app = endpoint()
    async with app.serving():
        for token, method in ((None, "POST"), ("forged", "GET"), (None, "DELETE")):
            assert (await call(app, "/mcp/prod/", method=method, token=token, body=INITIALIZE))[0] == 401
        assert (await call(app, "/mcp/nope/", token=TOKEN, body=INITIALIZE))[0] == 404
    recorded = events(app)
    assert [(r.verb, r.response_code, r.response_reason, r.user_username) for r in recorded] == [
        ("post", 401, "Unauthorized", ""), ("session/stream", 401, "Unauthorized", ""),
        ("session/end", 401, "Unauthorized", ""), ("post", 404, "NotFound", "agent-1")]
    assert recorded[0].response_message == "Unauthorized: a bearer token is required"
    assert recorded[1].response_message.startswith("Unauthorized: ") and recorded[1].user_uid == ""
    assert all(r.connection == "prod" for r in recorded[:3]) and recorded[3].connection == "nope"
    assert all(r.request_body == b"" for r in recorded)  # an unauthenticated body is never read
    assert [r.audit_id for r in app.gateway.recorder.started] == [r.audit_id for r in recorded]


async def test_a_tool_call_is_its_requests_one_event_under_the_arrivals_audit_id():
    app = endpoint()
    async with app.serving():
        _, extra = await open_session(app)
        before = len(events(app))
        status, _, _ = await call(app, "/mcp/prod/", token=TOKEN, extra=extra, body={
            "jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "nope", "arguments": {}}})
        assert status == 200
    [tool_call] = events(app)[before:before + 1]
    assert tool_call.verb == "tools/call" and tool_call.response_code == 404
    arrivals = [r for r in app.gateway.recorder.started if r.audit_id == tool_call.audit_id]
    assert [r.verb for r in arrivals] == ["post", "tools/call"]  # journaled as it arrived, then as a tool call
    assert [r.verb for r in events(app)[before + 1:]] == ["session/end"]  # Airlock stopped


async def test_a_session_airlock_closes_is_recorded_once_with_its_agent():
    app = endpoint(session_idle_timeout=0.2)
    async with app.serving():
        session, extra = await open_session(app)
        for _ in range(100):
            if events(app, "session/end"):
                break
            await asyncio.sleep(0.05)
        assert (await call(app, "/mcp/prod/", token=TOKEN, extra=extra, body={
            "jsonrpc": "2.0", "id": 2, "method": "tools/list"}))[0] == 404  # it is gone
        other, _ = await open_session(app)
    idle, stopped = events(app, "session/end")
    assert (idle.kubectl_session, idle.user_username, idle.connection) == (f"mcp-{session}", "agent-1", "prod")
    assert idle.response_code is None and idle.response_message == (
        "MCP session closed by Airlock: idle for longer than 0.2 s, or its transport failed")
    assert stopped.kubectl_session == f"mcp-{other}" and stopped.response_message.endswith("Airlock stopped")


async def test_a_request_the_audit_journal_cannot_take_is_refused_with_503_and_recorded():
    app = endpoint()
    app.gateway.recorder.broken = True
    async with app.serving():
        status, _, body = await call(app, "/mcp/prod/", token=TOKEN, body=INITIALIZE)
    assert status == 503 and b"audit journal is unavailable" in body
    [refused] = events(app)
    assert (refused.verb, refused.response_code, refused.user_username) == ("post", 503, "")  # no session opened


async def test_a_request_the_sdk_fails_on_is_recorded_with_the_500_the_server_answers():
    app = endpoint()

    async def broken(scope, receive, send):
        raise RuntimeError("a bug in the SDK")

    app.sessions.handle_request = broken
    with pytest.raises(RuntimeError):
        await call(app, "/mcp/prod/", token=TOKEN, body=INITIALIZE)
    [failed] = events(app)
    assert (failed.verb, failed.response_code, failed.response_reason, failed.user_username) == (
        "post", 500, "InternalError", "agent-1")  # its body was never read
