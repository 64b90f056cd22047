"""The proxy's ASGI behaviour without sockets: fake agent, fake cluster (httpx.MockTransport)."""

import asyncio
import base64
import json
from dataclasses import dataclass

import httpx
import pytest

from policy.compile import compile_rule
from gateway.app import GatewayApp
from identity.chain import AuthenticatorChain
from identity.static import StaticTokenAuthenticator
from masking import Detectors
from policy.compile import compile_rule

pytestmark = pytest.mark.asyncio


@dataclass(frozen=True)
class FakeUpstream:
    name: str = "prod"
    server_url: str = "https://cluster.test"
    cache_key: str = "prod:1"
    impersonates: bool = False
    impersonation_user_prefix: str = "airlock:"
    detectors: str = ""
    connect_timeout: float = 10.0
    first_byte_timeout: float = 65.0
    idle_timeout: float = 30.0
    trusted_proxies: tuple = ()

    def auth_headers(self):
        return {"Authorization": "Bearer cluster-credential"}

    def ssl_context(self):
        return None


def as_event(record) -> dict:
    """Every field of an audit Record by its AuditEvent name, defaults included."""
    event = {name: getattr(record, name) for name in record.__dataclass_fields__}
    event["request_received_timestamp"] = event.pop("received_at")
    return event


class FakeRecorder:
    """Keeps events in memory (journal records apart), as dicts of the Records it is handed
    (:func:`as_event`); ``fail_begin`` simulates an unavailable audit database, ``fail_journal`` an audit
    journal that cannot be written."""

    max_body = 1000

    def __init__(self, fail_begin=False, fail_journal=False):
        self.events = []
        self.journaled = []
        self.fail_begin = fail_begin
        self.fail_journal = fail_journal

    def received(self, event):
        from audit.recorder import AuditUnavailable

        if self.fail_journal:
            raise AuditUnavailable("the audit journal is unavailable; the request was not forwarded")
        self.journaled.append(as_event(event))

    async def begin(self, event):
        from audit.recorder import AuditUnavailable

        if self.fail_begin:
            raise AuditUnavailable("the audit trail is unavailable; the request was not forwarded")
        self.events.append(as_event(event))

    async def finish(self, event):
        self.events.append(as_event(event))

    async def aclose(self):
        pass


class FakePolicy:
    def __init__(self, *rules):
        self.rules = tuple(rules)

    async def rules_for(self, name):
        return self.rules


ALLOW_AGENTS = compile_rule(
    {"name": "agents", "effect": "allow", "groups": ["agents"], "verbs": ["*"], "api_groups": ["*"],
     "resources": ["*"], "namespaces": ["*"], "names": ["*"], "order": 1},
    id=1,
)


def make_app(handler, *, upstream=FakeUpstream(), max_body=1024, impersonate=False, recorder=None, secret_values=None,
             policy=None, detectors=None, holder=None, addons=()):
    async def connections(name):
        if name != "prod":
            return None
        return FakeUpstream(impersonates=impersonate) if impersonate else upstream

    return GatewayApp(
        prefix="/k8s/",
        connections=connections,
        authenticator=AuthenticatorChain(static=StaticTokenAuthenticator("agent-tok=agent-1:agents,other-tok=bob:nobody")),
        policy=policy or FakePolicy(ALLOW_AGENTS),
        recorder=recorder or FakeRecorder(),
        max_body=max_body,
        transport=httpx.MockTransport(handler),
        secret_values=secret_values,
        detectors=detectors,
        holder=holder,
        addons=addons,
    )


async def call(app, path, *, method="GET", token="agent-tok", body=b"", headers=(), query=b"", chunks=None):
    hdrs = [(k.encode(), v.encode()) for k, v in headers]
    if token:
        hdrs.append((b"authorization", f"Bearer {token}".encode()))
    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": query,
             "headers": hdrs, "client": ("127.0.0.1", 1)}
    messages = [{"type": "http.request", "body": c, "more_body": True} for c in (chunks or [])]
    messages.append({"type": "http.request", "body": body, "more_body": False})
    sent = []

    async def receive():
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    status = sent[0]["status"]
    response_headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    content = b"".join(m.get("body", b"") for m in sent[1:])
    return status, response_headers, content


def status_of(content):
    body = json.loads(content)
    assert body["kind"] == "Status" and body["apiVersion"] == "v1" and body["status"] == "Failure"
    return body


async def test_forwards_with_gateway_credentials_only():
    seen = {}

    def handler(request):
        seen["url"] = str(request.url)
        seen["headers"] = dict(request.headers)
        return httpx.Response(200, json={"kind": "PodList", "items": []})

    app = make_app(handler)
    status, headers, content = await call(
        app, "/k8s/prod/api/v1/namespaces/shop/pods", query=b"limit=500",
        headers=[("accept", "application/vnd.kubernetes.protobuf,application/json"), ("x-remote-user", "admin"),
                 ("accept-encoding", "gzip")],
    )
    assert status == 200 and json.loads(content)["kind"] == "PodList"
    assert seen["url"] == "https://cluster.test/api/v1/namespaces/shop/pods?limit=500"
    assert seen["headers"]["authorization"] == "Bearer cluster-credential"
    assert seen["headers"]["accept"] == "application/json"
    assert "x-remote-user" not in seen["headers"]
    assert seen["headers"].get("accept-encoding", "identity") != "gzip"


async def test_impersonation_mode_sends_the_agent_identity():
    seen = {}

    def handler(request):
        seen["headers"] = request.headers
        return httpx.Response(200, json={})

    await call(make_app(handler, impersonate=True), "/k8s/prod/api/v1/pods")
    assert seen["headers"].get_list("impersonate-user") == ["airlock:agent-1"]
    assert seen["headers"].get_list("impersonate-group") == ["agents"]


@pytest.mark.parametrize("impersonate", [False, True])
@pytest.mark.parametrize("asked, named", [
    ([("Impersonate-User", "bob")], "Impersonate-User"),
    ([("impersonate-group", "system:masters")], "Impersonate-Group"),
    ([("IMPERSONATE-UID", "0")], "Impersonate-Uid"),
    ([("Impersonate-Extra-Scopes", "all"), ("Impersonate-User", "bob")], "Impersonate-Extra-Scopes, Impersonate-User"),
])
async def test_an_agent_asking_for_another_identity_is_refused_with_a_403_naming_impersonation(
        impersonate, asked, named):
    """kubectl --as/--as-group/--as-uid: refused, never stripped and run as the agent; recorded like any request."""

    def handler(request):
        raise AssertionError("must not reach the cluster")

    recorder = FakeRecorder()
    app = make_app(handler, impersonate=impersonate, recorder=recorder)
    status, headers, content = await call(app, "/k8s/prod/api/v1/namespaces/shop/pods", headers=asked)
    body = status_of(content)
    assert status == body["code"] == 403 and body["reason"] == "Forbidden"
    assert body["message"].startswith("airlock: impersonation is not allowed")
    assert f"(the request carries {named})" in body["message"] and '"agent-1"' in body["message"]
    # kubectl's first request is discovery, whose refusals client-go prints only as warnings
    assert headers["warning"] == '299 - "' + body["message"].replace('"', '\\"') + '"'
    [event] = recorder.events
    assert event["response_code"] == 403 and event["user_username"] == "agent-1"
    assert event["response_message"] == body["message"]
    # authentication comes first, as in kube-apiserver
    status, _, content = await call(app, "/k8s/prod/api/v1/pods", headers=asked, token=None)
    assert status == 401


@pytest.mark.parametrize(
    "token, path, code, words",
    [
        (None, "/k8s/prod/api/v1/pods", 401, "bearer token is required"),
        ("wrong", "/k8s/prod/api/v1/pods", 401, "token not recognised"),
        ("other-tok", "/k8s/prod/api/v1/pods", 403, 'denied by rule "default-deny"'),
        ("agent-tok", "/k8s/nope/api/v1/pods", 404, 'connection "nope" not found'),
        ("agent-tok", "/k8s/prod/api/v1/namespaces/../secrets", 400, "request path rejected"),
    ],
)
async def test_refusals_are_status_objects(token, path, code, words):
    def handler(request):
        raise AssertionError("must not reach the cluster")

    status, headers, content = await call(make_app(handler), path, token=token)
    assert status == code and headers["content-type"] == "application/json"
    body = status_of(content)
    assert body["code"] == code and words in body["message"]
    assert "cluster-credential" not in content.decode()


async def test_request_body_limit_413():
    def handler(request):
        raise AssertionError("must not reach the cluster")

    app = make_app(handler, max_body=100)
    status, _, content = await call(app, "/k8s/prod/api/v1/namespaces/d/configmaps", method="POST",
                                    chunks=[b"x" * 60], body=b"y" * 60)
    assert status == 413 and status_of(content)["reason"] == "RequestEntityTooLarge"
    status, _, _ = await call(app, "/k8s/prod/api/v1/namespaces/d/configmaps", method="POST",
                              headers=[("content-length", "5000")], body=b"")
    assert status == 413


async def test_spdy_upgrade_refused_with_a_helpful_status():
    def handler(request):
        raise AssertionError("must not reach the cluster")

    status, _, content = await call(make_app(handler), "/k8s/prod/api/v1/namespaces/d/pods/web/exec", method="POST",
                                    query=b"command=ls", headers=[("upgrade", "SPDY/3.1"), ("connection", "Upgrade")])
    assert status == 400 and "kubectl >= 1.31" in status_of(content)["message"]


@pytest.mark.parametrize(
    "error, code, words",
    [
        (httpx.ConnectError("refused"), 502, "the cluster is unreachable"),
        (httpx.ConnectTimeout("slow"), 504, "timed out connecting"),
        (httpx.PoolTimeout("busy"), 503, "too many concurrent requests"),
    ],
)
async def test_upstream_failures(error, code, words):
    def handler(request):
        raise error

    status, _, content = await call(make_app(handler), "/k8s/prod/api/v1/pods")
    assert status == code and words in status_of(content)["message"]


async def test_an_unexpected_failure_is_a_500_status_and_recorded_as_such():
    def handler(request):
        raise RuntimeError("a bug in the gateway or a library")

    recorder = FakeRecorder()
    status, _, content = await call(make_app(handler, recorder=recorder), "/k8s/prod/api/v1/pods")
    assert status == 500 and "internal error" in status_of(content)["message"]
    assert [e["response_code"] for e in recorder.events if e["stage"] == "ResponseComplete"] == [500]


async def test_compressed_upstream_response_refused():
    async def gzipped():
        yield b"\x1f\x8b..."

    def handler(request):
        return httpx.Response(200, headers={"content-encoding": "gzip"}, content=gzipped())

    status, _, content = await call(make_app(handler), "/k8s/prod/api/v1/pods")
    assert status == 502 and "Content-Encoding" in status_of(content)["message"]


async def test_streaming_response_relayed_chunk_by_chunk():
    events = [b'{"type":"ADDED","object":{}}\n', b'{"type":"MODIFIED","object":{}}\n']

    async def stream():
        for event in events:
            yield event

    def handler(request):
        return httpx.Response(200, headers={"content-type": "application/json"}, content=stream())

    app = make_app(handler)
    status, headers, content = await call(app, "/k8s/prod/api/v1/pods", query=b"watch=1")
    assert status == 200 and content == b"".join(events)
    assert "content-length" not in headers


async def test_client_disconnect_ends_an_idle_watch():
    closed = asyncio.Event()

    async def endless():
        try:
            yield b'{"type":"ADDED","object":{}}\n'
            await asyncio.sleep(3600)
            yield b""
        finally:
            closed.set()

    def handler(request):
        return httpx.Response(200, headers={"content-type": "application/json"}, content=endless())

    app = make_app(handler)
    scope = {"type": "http", "method": "GET", "path": "/k8s/prod/api/v1/pods", "raw_path": b"/k8s/prod/api/v1/pods",
             "query_string": b"watch=1", "headers": [(b"authorization", b"Bearer agent-tok")], "client": ("127.0.0.1", 1)}
    inbox = asyncio.Queue()
    inbox.put_nowait({"type": "http.request", "body": b"", "more_body": False})
    sent = []

    async def send(message):
        sent.append(message)
        if message.get("body"):
            inbox.put_nowait({"type": "http.disconnect"})

    await asyncio.wait_for(app(scope, inbox.get, send), timeout=5)
    await asyncio.wait_for(closed.wait(), timeout=5)
    assert sent[0]["status"] == 200 and sent[1]["body"].startswith(b'{"type":"ADDED"')


async def test_every_request_is_recorded_and_writes_are_recorded_first():
    order = []

    def handler(request):
        order.append("forwarded")
        return httpx.Response(201, json={"kind": "ConfigMap"})

    recorder = FakeRecorder()
    app = make_app(handler, recorder=recorder)
    await call(app, "/k8s/prod/api/v1/namespaces/d/configmaps", method="POST", body=b'{"kind":"ConfigMap"}')
    await call(app, "/k8s/prod/api/v1/pods", token="wrong")
    await call(app, "/k8s/prod/api//v1/pods")
    stages = [(e["stage"], e.get("verb"), e.get("response_code")) for e in recorder.events]
    assert stages == [
        ("RequestReceived", "create", None),
        ("ResponseComplete", "create", 201),
        ("ResponseComplete", "list", 401),
        ("ResponseComplete", "get", 400),
    ]
    created = recorder.events[1]
    assert created["decision_rule_name"] == "agents" and created["user_username"] == "agent-1"
    assert created["request_body"] == b'{"kind":"ConfigMap"}' and created["bytes_out"] > 0
    assert recorder.events[2]["response_message"].startswith("Unauthorized")


async def test_a_read_is_journaled_with_its_identity_before_it_is_forwarded():
    """Issue 12: a read the cluster saw must survive a crash of the gateway in the audit trail."""
    recorder = FakeRecorder()
    journaled_when_forwarded = []

    def handler(request):
        journaled_when_forwarded.extend(recorder.journaled)
        return httpx.Response(200, json={"kind": "PodList", "items": []})

    app = make_app(handler, recorder=recorder)
    status, _, _ = await call(app, "/k8s/prod/api/v1/namespaces/d/pods", query=b"labelSelector=app%3Dweb")
    assert status == 200
    arrived, forwarding = journaled_when_forwarded
    assert arrived["stage"] == forwarding["stage"] == "RequestReceived"
    assert arrived["request_uri"] == "/k8s/prod/api/v1/namespaces/d/pods"  # before parsing: the path only
    assert forwarding["user_username"] == "agent-1" and forwarding["decision_rule_name"] == "agents"
    assert forwarding["request_uri"] == "/api/v1/namespaces/d/pods?labelSelector=app%3Dweb"
    assert arrived["audit_id"] == forwarding["audit_id"] == recorder.events[0]["audit_id"]


async def test_requests_refused_when_the_audit_journal_cannot_be_written():
    def handler(request):
        raise AssertionError("a request that is not journaled must never reach the cluster")

    recorder = FakeRecorder(fail_journal=True)
    app = make_app(handler, recorder=recorder)
    status, _, content = await call(app, "/k8s/prod/api/v1/pods")
    assert status == 503 and "audit journal is unavailable" in status_of(content)["message"]
    assert [(e["stage"], e["response_code"]) for e in recorder.events] == [("ResponseComplete", 503)]


async def test_write_refused_when_the_audit_trail_is_down():
    def handler(request):
        raise AssertionError("an unrecorded write must never reach the cluster")

    app = make_app(handler, recorder=FakeRecorder(fail_begin=True))
    status, _, content = await call(app, "/k8s/prod/api/v1/namespaces/d/configmaps", method="POST", body=b"{}")
    assert status == 503 and "audit trail is unavailable" in status_of(content)["message"]


async def test_without_the_database_a_tokenless_request_is_a_401_and_others_a_503():
    from runtime.db import DatabaseUnavailable

    def handler(request):
        raise AssertionError("must not reach the cluster")

    async def unreachable(name):
        raise DatabaseUnavailable("the database did not answer within 3s")

    app = make_app(handler)
    app.connections = unreachable
    status, _, content = await call(app, "/k8s/prod/api/v1/pods", token=None)
    assert status == 401 and "bearer token is required" in status_of(content)["message"]
    status, _, content = await call(app, "/k8s/unknown/api/v1/pods", token="wrong")
    assert status == 401  # and nothing about which connections exist
    status, _, content = await call(app, "/k8s/prod/api/v1/pods")
    assert status == 503 and status_of(content)["message"] == (
        "airlock: the gateway's database is unavailable; the request was not forwarded"
    )


CONFIGMAP = {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "c", "namespace": "d"},
             "data": {"notes": "ticket TCK-12345678; db password=hunter2-secret-value"}}


async def test_detectors_configured_per_connection_and_per_rule():
    from masking.config import detectors_key

    def handler(request):
        return httpx.Response(200, json=CONFIGMAP)

    path = "/k8s/prod/api/v1/namespaces/d/configmaps/c"
    _, _, default = await call(make_app(handler), path)
    assert b"hunter2-secret-value" not in default and b"TCK-12345678" in default

    ticket = detectors_key({"extra": [{"name": "ticket", "pattern": "TCK-[0-9]{8}"}]})
    _, _, custom = await call(make_app(handler, upstream=FakeUpstream(detectors=ticket)), path)
    assert b"TCK-12345678" not in custom and b"hunter2-secret-value" not in custom

    app = make_app(handler, upstream=FakeUpstream(detectors=ticket), policy=FakePolicy(compile_rule(
        {"name": "plain-configmaps", "effect": "allow", "groups": ["agents"], "verbs": ["get"], "api_groups": [""],
         "resources": ["configmaps"], "namespaces": ["*"], "names": ["*"], "order": 1,
         "masking_detectors": {"enabled": []}},
        id=2,
    )))
    _, _, by_rule = await call(app, path)
    assert b"TCK-12345678" in by_rule and b"hunter2-secret-value" in by_rule


@pytest.mark.parametrize("size", ["small", "streamed"])
async def test_a_response_nested_too_deeply_is_a_502_status(size):
    """A hostile cluster (or object) nested thousands of levels deep: a clean Status, no RecursionError."""
    deep = b'{"kind":"ConfigMap","apiVersion":"v1","data":' + b"[" * 50_000 + b"]" * 50_000 + b"}"

    async def chunks():
        yield deep[:1000]
        yield deep[1000:]

    def handler(request):
        content = deep if size == "small" else chunks()
        return httpx.Response(200, content=content, headers={"content-type": "application/json"})

    status, _, content = await call(make_app(handler), "/k8s/prod/api/v1/namespaces/shop/configmaps/deep")
    assert status == 502 and "nested too deeply" in status_of(content)["message"]


COPIED = "Copied-v4lue-8Jw2"


def cluster_with_secret(seen, secrets_status=200):
    import base64

    def handler(request):
        seen.append(request.url.path + ("?watch" if request.url.params.get("watch") else ""))
        if request.url.path == "/api/v1/secrets":
            if secrets_status != 200:
                return httpx.Response(secrets_status, json={"kind": "Status", "code": secrets_status})
            if request.url.params.get("watch"):
                return httpx.Response(200, content=b"")
            item = {"metadata": {"name": "db", "namespace": "shop", "uid": "u1"},
                    "data": {"password": base64.b64encode(COPIED.encode()).decode()}}
            return httpx.Response(200, json={"kind": "SecretList", "metadata": {"resourceVersion": "5"},
                                             "items": [item]})
        return httpx.Response(200, json={"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "c"},
                                         "data": {"greeting": COPIED}})
    return handler


async def test_secret_values_learned_with_the_gateway_credential_are_masked():
    from gateway.secretvalues import SecretValueStores

    seen = []
    stores = SecretValueStores()
    app = make_app(cluster_with_secret(seen), secret_values=stores)
    try:
        status, _, content = await call(app, "/k8s/prod/api/v1/namespaces/shop/configmaps/c")
        assert status == 200 and json.loads(content)["data"] == {"greeting": "**AIRLOCK-MASKED**"}
        assert seen[0] == "/api/v1/secrets"
    finally:
        await app.aclose()


async def test_unknown_secret_values_refuse_before_forwarding():
    from gateway.secretvalues import SecretValueStores

    seen = []
    app = make_app(cluster_with_secret(seen, secrets_status=403), secret_values=SecretValueStores())
    try:
        status, _, content = await call(app, "/k8s/prod/api/v1/namespaces/shop/configmaps", method="POST",
                                        body=b'{"kind":"ConfigMap","metadata":{"name":"x"}}',
                                        headers=[("content-type", "application/json")])
        assert status == 503 and "may not list and watch Secrets (403)" in status_of(content)["message"]
        assert seen == ["/api/v1/secrets"]  # the write never reached the cluster
    finally:
        await app.aclose()


# -- upstream timeouts, broken streams and draining (issue 12, findings 5 and 6) ----------------

SHORT = FakeUpstream(first_byte_timeout=0.2, idle_timeout=0.2)


async def test_an_answer_that_does_not_start_within_the_first_byte_timeout_is_a_504_status_unless_long_running():
    async def quiet():
        await asyncio.sleep(0.6)
        yield b'{"type":"ADDED","object":{}}\n'

    async def handler(request):
        await asyncio.sleep(0.6)  # kube-apiserver may start a watch late (sendInitialEvents); then it is quiet
        return httpx.Response(200, headers={"content-type": "application/json"}, content=quiet())

    recorder = FakeRecorder()
    app = make_app(handler, upstream=SHORT, recorder=recorder)
    status, _, content = await asyncio.wait_for(call(app, "/k8s/prod/api/v1/pods"), 10)
    assert status == 504 and "did not answer within 0.2 s" in status_of(content)["message"]
    assert recorder.events[-1]["response_code"] == 504
    status, _, content = await asyncio.wait_for(call(app, "/k8s/prod/api/v1/pods", query=b"watch=1"), 10)
    assert status == 200 and content == b'{"type":"ADDED","object":{}}\n'


async def test_an_answer_that_stalls_before_it_is_sent_is_a_504_status():
    async def stalling():
        yield b'{"kind":"PodList",'
        await asyncio.sleep(30)
        yield b'"items":[]}'

    def handler(request):
        return httpx.Response(200, headers={"content-type": "application/json", "content-length": "30"},
                              content=stalling())

    status, _, content = await asyncio.wait_for(
        call(make_app(handler, upstream=SHORT), "/k8s/prod/api/v1/pods"), 10)
    assert status == 504 and "stopped answering for 0.2 s" in status_of(content)["message"]


async def test_a_streamed_answer_that_stalls_after_it_started_is_aborted_not_completed():
    async def stalling():
        yield b'{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[' + b'{"metadata":{"name":"a"}},' * 64
        await asyncio.sleep(30)
        yield b'{"metadata":{"name":"b"}}]}'

    def handler(request):
        return httpx.Response(200, headers={"content-type": "application/json"}, content=stalling())

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/k8s/prod/api/v1/pods", "raw_path": b"/k8s/prod/api/v1/pods",
             "query_string": b"", "headers": [(b"authorization", b"Bearer agent-tok")], "client": ("127.0.0.1", 1)}
    inbox = asyncio.Queue()
    inbox.put_nowait({"type": "http.request", "body": b"", "more_body": False})
    recorder = FakeRecorder()
    await asyncio.wait_for(make_app(handler, upstream=SHORT, recorder=recorder)(scope, inbox.get, send), 10)
    assert sent[0]["status"] == 200 and sent[1]["body"].startswith(b'{"kind":"PodList"')
    assert all(m.get("more_body") for m in sent[1:]), "a stalled answer must not look complete"
    assert recorder.events[-1]["response_message"] == "the cluster broke the response stream"


def watch_events(content: bytes) -> list[dict]:
    return [json.loads(line) for line in content.splitlines()]


async def test_a_watch_whose_cluster_connection_breaks_ends_with_an_error_event_and_a_proper_end():
    async def breaking():
        yield b'{"type":"ADDED","object":{}}\n'
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")

    def handler(request):
        return httpx.Response(200, headers={"content-type": "application/json"}, content=breaking())

    app = make_app(handler)
    scope = {"type": "http", "method": "GET", "path": "/k8s/prod/api/v1/pods", "raw_path": b"/k8s/prod/api/v1/pods",
             "query_string": b"watch=1", "headers": [(b"authorization", b"Bearer agent-tok")],
             "client": ("127.0.0.1", 1)}
    inbox = asyncio.Queue()
    inbox.put_nowait({"type": "http.request", "body": b"", "more_body": False})
    sent = []

    async def send(message):
        sent.append(message)

    await asyncio.wait_for(app(scope, inbox.get, send), 5)
    assert sent[0]["status"] == 200
    assert sent[-1] == {"type": "http.response.body", "body": b""}, "the body must end properly"
    events = watch_events(b"".join(m.get("body", b"") for m in sent[1:]))
    assert [e["type"] for e in events] == ["ADDED", "ERROR"]
    assert events[1]["object"]["kind"] == "Status" and events[1]["object"]["code"] == 502
    assert "connection to the cluster broke" in events[1]["object"]["message"]


async def test_drain_ends_open_watches_with_an_error_event_and_new_ones_at_once():
    async def endless():
        yield b'{"type":"ADDED","object":{}}\n'
        await asyncio.sleep(3600)
        yield b""

    def handler(request):
        return httpx.Response(200, headers={"content-type": "application/json"}, content=endless())

    recorder = FakeRecorder()
    app = make_app(handler, recorder=recorder)
    first = asyncio.create_task(call(app, "/k8s/prod/api/v1/pods", query=b"watch=1"))
    while not app.streams.open_count:
        await asyncio.sleep(0.01)
    assert await app.drain(5) == 1
    assert not app.streams.open_count
    later = await asyncio.wait_for(call(app, "/k8s/prod/api/v1/pods", query=b"watch=1"), 5)
    for status, _, content in (await asyncio.wait_for(first, 5), later):
        assert status == 200
        error = watch_events(content)[-1]
        assert error["type"] == "ERROR" and error["object"]["code"] == 503
        assert "the gateway is shutting down" in error["object"]["message"]
    assert [e["response_message"] for e in recorder.events] == ["the gateway is shutting down"] * 2


async def test_drain_ends_a_watch_still_waiting_for_the_cluster_to_answer_with_a_503_status():
    cancelled = asyncio.Event()

    async def handler(request):
        try:
            await asyncio.sleep(3600)  # a frozen cluster: the watch's answer never starts
        finally:
            cancelled.set()

    recorder = FakeRecorder()
    app = make_app(handler, recorder=recorder)
    waiting = asyncio.create_task(call(app, "/k8s/prod/api/v1/pods", query=b"watch=1"))
    while not app.streams.open_count:
        await asyncio.sleep(0.01)
    assert await app.drain(5) == 1
    status, _, content = await asyncio.wait_for(waiting, 5)
    assert status == 503 and "the gateway is shutting down" in status_of(content)["message"]
    assert cancelled.is_set() and recorder.events[-1]["response_code"] == 503


SA_TOKEN = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6c2hvcDpkZXBsb3llciJ9.c2lnbmF0dXJl"
TOKEN_ANSWER = json.dumps({"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
                           "metadata": {"name": "deployer", "namespace": "shop"}, "spec": {},
                           "status": {"token": SA_TOKEN, "expirationTimestamp": "2030-01-01T00:00:00Z"}}).encode()


@pytest.mark.parametrize("size", ["small", "streamed"])
async def test_a_released_token_reaches_the_agent_and_the_record_keeps_it_masked(size):
    """Released by a rule with maskSecrets false; the cluster may answer without a Content-Length (chunked)."""
    async def chunks():
        yield TOKEN_ANSWER[:50]
        yield TOKEN_ANSWER[50:]

    def handler(request):
        content = TOKEN_ANSWER if size == "small" else chunks()
        return httpx.Response(201, content=content, headers={"content-type": "application/json"})

    recorder = FakeRecorder()
    recorder.max_body = 10_000
    tokens = FakePolicy(compile_rule(
        {"name": "tokens", "effect": "allow", "groups": ["agents"], "verbs": ["create"], "api_groups": [""],
         "resources": ["serviceaccounts/token"], "namespaces": ["*"], "names": ["*"], "order": 1,
         "mask_secrets": False},
        id=3,
    ))
    app = make_app(handler, recorder=recorder, policy=tokens)
    path = "/k8s/prod/api/v1/namespaces/shop/serviceaccounts/deployer/token"
    status, _, content = await call(app, path, method="POST", body=b'{"spec":{}}',
                                    headers=[("content-type", "application/json")])
    assert status == 201 and json.loads(content)["status"]["token"] == SA_TOKEN
    [done] = [e for e in recorder.events if e["stage"] == "ResponseComplete"]
    assert SA_TOKEN.encode() not in done["response_body"] and b"**AIRLOCK-MASKED**" in done["response_body"]
    assert done["bytes_out"] == len(content)
    assert done["response_message"].startswith('airlock: the ServiceAccount token was released to the agent by rule')

    def huge(request):
        return httpx.Response(201, content=chunks_of(TOKEN_ANSWER + b" " * 300_000),
                              headers={"content-type": "application/json"})

    app = make_app(huge, recorder=recorder, policy=tokens)
    status, _, content = await call(app, path, method="POST", body=b'{"spec":{}}',
                                    headers=[("content-type", "application/json")])
    assert status == 502 and "exceeds" in status_of(content)["message"]


async def chunks_of(data, size=65536):
    for start in range(0, len(data), size):
        yield data[start:start + size]


# -- the audit trail's copy is masked whatever a rule or review shows the agent -------------------

UNMASKED = compile_rule(
    {"name": "unmasked", "effect": "allow", "groups": ["agents"], "verbs": ["*"], "api_groups": ["*"],
     "resources": ["*"], "namespaces": ["*"], "names": ["*"], "order": 1, "mask_secrets": False},
    id=4,
)
UNMASKED_B64 = base64.b64encode(COPIED.encode())


def secret_object(i=0) -> dict:
    # The value in a Secret's data (structural) and in an annotation (by value only).
    return {"metadata": {"name": f"db{i}", "namespace": "shop", "annotations": {"note": COPIED}},
            "data": {"password": UNMASKED_B64.decode()}}


def unmasked_cluster(shape):
    inner = cluster_with_secret([])

    def handler(request):
        if request.url.path == "/api/v1/secrets":
            return inner(request)
        if shape == "small":
            return httpx.Response(200, json={"kind": "Secret", "apiVersion": "v1", **secret_object()})
        if shape == "list":  # past SMALL_RESPONSE, streamed without a Content-Length
            items = [secret_object(i) for i in range(2000)]
            body = json.dumps({"kind": "SecretList", "apiVersion": "v1", "metadata": {}, "items": items}).encode()
            assert len(body) > 256 * 1024
            return httpx.Response(200, content=chunks_of(body, 4096), headers={"content-type": "application/json"})
        events = b"".join(json.dumps({"type": "ADDED", "object": {"kind": "Secret", "apiVersion": "v1",
                                                                   **secret_object(i)}}).encode() + b"\n"
                          for i in range(3))
        return httpx.Response(200, content=chunks_of(events, 7), headers={"content-type": "application/json"})
    return handler


@pytest.mark.parametrize("shape", ["small", "list", "watch"])
async def test_an_unmasked_secret_reaches_the_agent_and_the_record_keeps_it_masked(shape):
    from gateway.secretvalues import SecretValueStores

    recorder = FakeRecorder()
    recorder.max_body = 5000
    app = make_app(unmasked_cluster(shape), recorder=recorder, secret_values=SecretValueStores(),
                   policy=FakePolicy(UNMASKED))
    path, query = ("/k8s/prod/api/v1/namespaces/shop/secrets", b"watch=1") if shape == "watch" else \
        ("/k8s/prod/api/v1/namespaces/shop/secrets" + ("/db0" if shape == "small" else ""), b"")
    try:
        status, _, content = await call(app, path, query=query)
    finally:
        await app.aclose()
    assert status == 200 and UNMASKED_B64 in content and COPIED.encode() in content
    [done] = [e for e in recorder.events if e["stage"] == "ResponseComplete"]
    recorded = done["response_body"]
    assert b"**AIRLOCK-MASKED**" in recorded and b"KipBSVJMT0NLLU1BU0tFRCoq" in recorded
    assert COPIED.encode() not in recorded and UNMASKED_B64 not in recorded
    assert done["bytes_out"] == len(content) and done["response_message"] == ""
    assert len(recorded) == (recorder.max_body if shape == "list" else len(recorded))


async def test_a_record_that_cannot_be_masked_is_not_kept_raw():
    """The agent's masker is off (no detectors, no values); the record's refuses what it cannot parse."""
    def handler(request):
        body = b'{"kind":"Secret","data":{"password":"' + UNMASKED_B64 + b'"}'  # truncated JSON
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})

    recorder = FakeRecorder()
    app = make_app(handler, recorder=recorder, detectors=Detectors.none(), policy=FakePolicy(UNMASKED))
    status, _, content = await call(app, "/k8s/prod/api/v1/namespaces/shop/secrets/db")
    assert status == 200 and UNMASKED_B64 in content
    [done] = [e for e in recorder.events if e["stage"] == "ResponseComplete"]
    assert done["response_body"] == b""
    assert "could not be masked" in done["response_message"]
