"""Parse stage: connection routing, canonical paths and RequestInfo, without sockets."""

import pytest

from gateway.pipeline import parse_request
from gateway.status import GatewayError

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
    assert info.value.code == code and info.value.stage == "parse"


def test_query_nul_and_non_ascii_refused():
    with pytest.raises(GatewayError) as info:
        parse_request(scope("/k8s/prod/api/v1/pods", b"labelSelector=a%00"), PREFIX)
    assert info.value.code == 400
    with pytest.raises(GatewayError):
        parse_request(scope("/k8s/prod/api/v1/pods", "x=\u00e9".encode()), PREFIX)
