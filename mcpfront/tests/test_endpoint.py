"""The MCP endpoint's HTTP side without sockets: the 401 challenge, the RFC 9728 metadata, unknown
connections, and a development static token (which never expires) opening a session."""

import asyncio
import json

from identity.chain import AuthenticatorChain
from identity.oidc import Authenticator
from identity.oidc_config import AuthenticatorConfig, IssuerConfig
from identity.static import StaticTokenAuthenticator
from mcpfront.server import Endpoint

TOKEN = "agent-dev-token-51c0"
CONFIG = AuthenticatorConfig(issuers=(IssuerConfig(issuer="https://idp.test", audiences=("https://airlock.test",)),))


OTHER = "agent-dev-token-77b2"


class FakeRecorder:
    """What the endpoint journals (``started``) and queues (``finished``)."""

    def __init__(self):
        self.started, self.finished = [], []

    def received(self, record):
        self.started.append(record)

    async def finish(self, record):
        self.finished.append(record)


class FakeGateway:
    secret_values = None

    def __init__(self):
        self.recorder = FakeRecorder()

    async def connections(self, name):
        return object() if name in ("prod", "staging") else None


def endpoint(oidc=True):
    chain = AuthenticatorChain(static=StaticTokenAuthenticator(f"{TOKEN}=agent-1:agents,{OTHER}=agent-2:agents"),
                               oidc=Authenticator(CONFIG) if oidc else None)
    return Endpoint(gateway=FakeGateway(), gateway_prefix="/k8s/", authenticator=chain, policy=None)


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
    [started] = app.gateway.recorder.finished
    assert (started.verb, started.connection, started.user_username, started.response_code) == (
        "initialize", "prod", "agent-1", 200)
    assert started.kubectl_session == f"mcp-{session}" and started.mcp_tool == "" and started.source_ips == ("10.0.0.9",)
    assert [r.audit_id for r in app.gateway.recorder.started] == [started.audit_id]


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


async def raw(app, body: bytes, extra, accept=b"application/json, text/event-stream"):
    """A POST whose body is sent as is (not JSON-encoded by the helper)."""
    headers = [(b"host", b"airlock.test"), (b"content-type", b"application/json"), (b"accept", accept),
               (b"authorization", f"Bearer {TOKEN}".encode()), *extra]
    if not extra:
        headers = [h for h in headers if h[0] != b"accept"]
    scope = {"type": "http", "method": "POST", "path": "/mcp/prod/", "raw_path": b"/mcp/prod/", "query_string": b"",
             "headers": headers, "scheme": "https", "client": ("10.0.0.9", 1), "server": ("127.0.0.1", 8443),
             "asgi": {"version": "3.0"}, "http_version": "1.1", "root_path": ""}
    start, content = await exchange(app, scope, body)
    return start["status"], dict(start["headers"]), content
