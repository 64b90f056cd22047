"""The in-process client: what the gateway's ASGI application is handed, and how its answers are read."""

import json

from gateway.pipeline import IN_PROCESS
from kube import channels
from mcpfront.inprocess import Call, GatewayClient

CALL = Call(token="agent-token", connection="prod", audit_id="0b0f7c9d-8a51-4f39-9c4e-0d0b8b6c0b0f",
            tool="delete_resource", host="airlock.test:8443", session="s-1", client_addr="10.0.0.9")


class Recording:
    def __init__(self, *messages):
        self.messages = messages
        self.scopes = []
        self.bodies = []

    async def __call__(self, scope, receive, send):
        self.scopes.append(scope)
        if scope["type"] == "http":
            self.bodies.append((await receive())["body"])
        else:
            assert (await receive())["type"] == "websocket.connect"
        for message in self.messages:
            await send(message)
        if scope["type"] == "websocket":
            assert (await receive())["type"] == "websocket.disconnect"


async def test_a_request_carries_the_agents_token_and_the_caller_only_in_the_scope_key():
    app = Recording({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]},
                    {"type": "http.response.body", "body": b"0123456789", "more_body": True},
                    {"type": "http.response.body", "body": b"abcdef"})
    answer = await GatewayClient(app, "/k8s/", max_answer=12).request(
        CALL, "PATCH", "/api/v1/namespaces/shop/pods/p", "dryRun=All", b"{}", "application/merge-patch+json")
    (scope,) = app.scopes
    assert (scope["method"], scope["raw_path"], scope["query_string"]) == (
        "PATCH", b"/k8s/prod/api/v1/namespaces/shop/pods/p", b"dryRun=All")
    headers = dict(scope["headers"])
    assert headers[b"authorization"] == b"Bearer agent-token" and headers[b"kubectl-session"] == b"mcp-s-1"
    assert headers[b"host"] == b"airlock.test:8443" and app.bodies == [b"{}"]
    caller = scope[IN_PROCESS]
    assert (caller.origin, caller.parent_id, caller.detail, caller.at_once) == (
        "mcp", CALL.audit_id, "delete_resource", True)
    assert (answer.status, answer.body, answer.truncated) == (200, b"0123456789ab", True)


async def test_exec_reads_the_channels_and_the_exit_status():
    status = {"kind": "Status", "status": "Success"}
    app = Recording({"type": "websocket.accept", "subprotocol": "v5.channel.k8s.io"},
                    {"type": "websocket.send", "bytes": channels.V5.encode(channels.STDOUT, b"out\n")},
                    {"type": "websocket.send", "bytes": channels.V5.encode(channels.STDERR, b"err\n")},
                    {"type": "websocket.send", "bytes": channels.V5.encode(channels.ERROR, json.dumps(status).encode())},
                    {"type": "websocket.close", "code": 1000})
    result = await GatewayClient(app, "/k8s/").exec(CALL, "/api/v1/namespaces/shop/pods/p/exec", "command=ls",
                                                    timeout=5, max_output=1024)
    assert (bytes(result.stdout), bytes(result.stderr), result.status, result.refused) == (
        b"out\n", b"err\n", status, None)
    scope = app.scopes[0]
    assert scope["subprotocols"] == ["v5.channel.k8s.io"] and "websocket.http.response" in scope["extensions"]


async def test_a_refused_upgrade_is_read_as_its_status():
    body = json.dumps({"kind": "Status", "code": 403, "message": 'airlock: denied by rule "no-exec"'}).encode()
    app = Recording({"type": "websocket.http.response.start", "status": 403, "headers": []},
                    {"type": "websocket.http.response.body", "body": body})
    result = await GatewayClient(app, "/k8s/").exec(CALL, "/api/v1/namespaces/shop/pods/p/exec", "command=ls",
                                                    timeout=5, max_output=1024)
    assert result.refused.status == 403 and result.refused.message() == 'airlock: denied by rule "no-exec"'
