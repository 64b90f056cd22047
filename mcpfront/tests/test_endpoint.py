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


class FakeGateway:
    recorder = secret_values = None

    async def connections(self, name):
        return object() if name == "prod" else None


def endpoint(oidc=True):
    chain = AuthenticatorChain(static=StaticTokenAuthenticator(f"{TOKEN}=agent-1:agents"),
                               oidc=Authenticator(CONFIG) if oidc else None)
    return Endpoint(gateway=FakeGateway(), gateway_prefix="/k8s/", authenticator=chain, policy=None)


async def call(app, path, *, method="POST", token=None, body=None, host=b"airlock.test:8443", extra=()):
    headers = [(b"host", host), (b"content-type", b"application/json"),
               (b"accept", b"application/json, text/event-stream"), *extra]
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": headers, "scheme": "https", "client": ("10.0.0.9", 1), "server": ("127.0.0.1", 8443),
             "asgi": {"version": "3.0"}, "http_version": "1.1", "root_path": ""}
    sent, body = [], json.dumps(body).encode() if body is not None else b""
    delivered, done = False, asyncio.Event()

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
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, b"".join(
        m.get("body", b"") for m in sent if m["type"] == "http.response.body")


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
