"""Parse stage: connection routing, canonical paths and RequestInfo, without sockets."""

import pytest

from gateway.pipeline import parse_body, parse_request
from identity.principal import Principal
from kube.status import GatewayError
from policy.compile import compile_rule
from policy.evaluate import evaluate

PREFIX = "/k8s/"


def scope(raw_path, query=b"", method="GET", headers=(), kind="http"):
    return {
        "type": kind,
        "method": method,
        "path": raw_path,
        "raw_path": raw_path.encode(),
        "query_string": query,
        "headers": [(k.encode(), v.encode()) for k, v in headers],
        "client": ("10.0.0.7", 5555),
    }


def test_routes_connection_and_parses_like_apiserver():
    req = parse_request(scope("/k8s/prod/api/v1/namespaces/shop/pods/web/exec", b"command=ls&stdout=true"), PREFIX)
    assert req.connection == "prod"
    assert req.upstream_path == "/api/v1/namespaces/shop/pods/web/exec"
    assert req.target == "/api/v1/namespaces/shop/pods/web/exec?command=ls&stdout=true"
    assert (req.info.verb, req.info.namespace, req.info.resource, req.info.subresource, req.info.name) == (
        "get",
        "shop",
        "pods",
        "exec",
        "web",
    )
    assert req.transport == "http" and req.client_addr == "10.0.0.7"


def test_watch_and_field_selector_name():
    req = parse_request(scope("/k8s/prod/api/v1/namespaces/shop/pods", b"fieldSelector=metadata.name%3Dweb&watch=true"), PREFIX)
    assert (req.info.verb, req.info.name) == ("watch", "web")


def test_websocket_and_spdy_transports():
    ws = parse_request(scope("/k8s/prod/api/v1/namespaces/d/pods/web/exec", kind="websocket"), PREFIX)
    assert (ws.transport, ws.method, ws.info.verb) == ("websocket", "GET", "get")
    spdy = parse_request(
        scope("/k8s/prod/api/v1/namespaces/d/pods/web/exec", method="POST", headers=[("Upgrade", "SPDY/3.1")]), PREFIX
    )
    assert (spdy.transport, spdy.info.verb, spdy.info.subresource) == ("spdy", "create", "exec")


def test_connection_root_is_non_resource():
    req = parse_request(scope("/k8s/prod"), PREFIX)
    assert req.upstream_path == "/" and not req.info.is_resource_request


@pytest.mark.parametrize(
    "raw_path, code",
    [
        ("/k8s/prod/api//v1/pods", 400),
        ("/k8s/prod/api/v1/namespaces/../secrets", 400),
        ("/k8s/prod/api/v1/namespaces/%2e%2e/secrets", 400),
        ("/k8s/prod/api/v1/namespaces/a%2Fb/pods", 400),
        ("/k8s/prod/api/v1/pods%00", 400),
        ("/k8s/Prod!/api", 404),
        ("/k8s//api", 404),
        ("/other/prod/api", 404),
    ],
)
def test_refused_before_any_policy(raw_path, code):
    with pytest.raises(GatewayError) as info:
        parse_request(scope(raw_path), PREFIX)
    assert info.value.code == code


def test_query_nul_and_non_ascii_refused():
    with pytest.raises(GatewayError) as info:
        parse_request(scope("/k8s/prod/api/v1/pods", b"labelSelector=a%00"), PREFIX)
    assert info.value.code == 400
    with pytest.raises(GatewayError):
        parse_request(scope("/k8s/prod/api/v1/pods", "x=\u00e9".encode()), PREFIX)


def protobuf_body(api_version: bytes, kind: bytes, raw: bytes) -> bytes:
    def field(number, payload):
        return bytes([number << 3 | 2, len(payload)]) + payload

    type_meta = field(1, api_version) + field(2, kind)
    return b"k8s\x00" + field(1, type_meta) + field(2, raw)


def test_protobuf_body_transcoded_to_json():
    import json

    req = parse_request(
        scope("/k8s/prod/api/v1/namespaces/shop/serviceaccounts/deployer/token", method="POST",
              headers=[("Content-Type", "application/vnd.kubernetes.protobuf")]),
        PREFIX,
    )
    spec = bytes([1 << 3 | 2, 3]) + b"api" + bytes([4 << 3, 60])  # audiences ["api"], expirationSeconds 60
    body = protobuf_body(b"authentication.k8s.io/v1", b"TokenRequest", bytes([2 << 3 | 2, len(spec)]) + spec)
    out = parse_body(req, body)
    assert json.loads(out.content) == {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                               "spec": {"audiences": ["api"], "expirationSeconds": 60}}
    assert ("content-type", "application/json") in out.headers


@pytest.mark.parametrize(
    "body",
    [
        protobuf_body(b"apps/v1", b"Deployment", b""),  # a kind the gateway cannot read exactly
        protobuf_body(b"v1", b"Secret", bytes([9 << 3 | 2, 2]) + b"xx"),  # a field it does not know
        b"k8s\x00\xff\xff",
        b"not protobuf",
    ],
)
def test_unreadable_protobuf_refused(body):
    req = parse_request(
        scope("/k8s/prod/api/v1/namespaces/shop/secrets", method="POST",
              headers=[("content-type", "application/vnd.kubernetes.protobuf")]),
        PREFIX,
    )
    with pytest.raises(GatewayError) as info:
        parse_body(req, body)
    assert info.value.code == 415


def test_json_body_untouched():
    req = parse_request(scope("/k8s/prod/api/v1/namespaces/shop/configmaps", method="POST",
                              headers=[("content-type", "application/json")]), PREFIX)
    assert parse_body(req, b'{"a":1}').content == b'{"a":1}'


@pytest.mark.parametrize(
    "content_type, body, code",
    [
        ("application/merge-patch+json", b"[" * 3000 + b"]" * 3000, 400),
        ("application/strategic-merge-patch+json; charset=utf-8", b'{"a":' * 600 + b"1" + b"}" * 600, 400),
        ("application/apply-patch+yaml", b"a: " + b"[" * 100_000, 400),
        ("application/apply-patch+yaml", b"a: [" + b"x," * 30_000 + b"]", 413),
    ],
)
def test_bodies_beyond_the_limits_are_refused_at_parse(content_type, body, code):
    req = parse_request(scope("/k8s/prod/api/v1/namespaces/shop/configmaps/c", method="PATCH",
                              headers=[("content-type", content_type)]), PREFIX)
    with pytest.raises(GatewayError) as info:
        parse_body(req, body)
    assert info.value.code == code


def test_deeply_nested_unknown_protobuf_field_is_refused_without_recursion():
    nested = bytes([2 << 3, 1])
    for _ in range(50_000):
        nested = bytes([1 << 3 | 2]) + varint(len(nested)) + nested
    raw = bytes([9 << 3 | 2]) + varint(len(nested)) + nested
    body = protobuf_body(b"v1", b"Secret", b"")[:-1] + varint(len(raw)) + raw  # the raw field's length as a varint
    req = parse_request(scope("/k8s/prod/api/v1/namespaces/shop/secrets", method="POST",
                              headers=[("content-type", "application/vnd.kubernetes.protobuf")]), PREFIX)
    with pytest.raises(GatewayError) as info:
        parse_body(req, body)
    assert info.value.code == 415 and "field 9 is not understood" in info.value.message


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def test_a_lower_case_method_is_one_method_for_policy_and_upstream():
    """Servers that accept ``get`` (uvicorn with httptools answers 400 first) hand it on as GET."""
    request = parse_request({
        "type": "http", "method": "delete", "path": "/k8s/prod/apis/apps/v1/namespaces/shop/deployments",
        "raw_path": b"/k8s/prod/apis/apps/v1/namespaces/shop/deployments", "query_string": b"", "headers": [],
    }, "/k8s/")
    assert (request.method, request.info.verb) == ("DELETE", "deletecollection")
    keep_web = compile_rule({
        "name": "keep-web", "order": 10, "effect": "deny", "subjects": ["*"], "verbs": ["delete"],
        "api_groups": ["apps"], "resources": ["deployments"], "namespaces": ["shop"], "names": ["web"],
    }, id=10)
    agent = Principal(subject="a", username="agent", groups=("agents",), issuer="https://idp.example",
                      expires_at=0.0, token_id="t")
    decision = evaluate([keep_web], agent, request.info)
    assert (decision.effect, decision.rule_name) == ("deny", "keep-web")


def test_evolve_folds_changes_into_a_copy_and_keeps_a_request_that_learnt_nothing_new():
    req = parse_request(scope("/k8s/prod/api/v1/pods", headers=[("authorization", "Bearer t")]), PREFIX)
    agent = Principal(subject="s", username="agent", groups=(), issuer="i", expires_at=0.0, token_id="t")
    evolved = req.evolve(principal=agent, body=b"")
    assert evolved is not req and (evolved.principal, evolved.body) == (agent, b"")
    assert (req.principal, req.body) == (None, None)  # frozen: the original is unchanged
    assert evolved.evolve(principal=agent, mask_secrets=True, dry_run=req.dry_run) is evolved
    assert evolved.evolve(mask_secrets=False).mask_secrets is False
    with pytest.raises(TypeError):
        req.evolve(no_such_field=1)


def test_a_parsed_request_is_what_the_dataclass_would_build():
    from dataclasses import fields, replace

    req = parse_request(scope("/k8s/prod/api/v1/namespaces/shop/pods", b"limit=1",
                              headers=[("host", "gw.example:8443"), ("user-agent", "kubectl")]), PREFIX, "id-1")
    built = replace(req)  # through __init__: every field, defaults included
    assert req == built and set(vars(req)) == {f.name for f in fields(built)}
    assert (req.principal, req.body, req.decision, req.mask_secrets, req.release_token) == (None, None, None, True, False)
