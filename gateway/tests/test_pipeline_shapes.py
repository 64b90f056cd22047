"""parse_request remembers what a request's shape (method, path, query) parses to: the same result, bounded."""

import pytest

from gateway import pipeline
from gateway.pipeline import parse_request
from kube.status import GatewayError


def scope(raw_path, query=b"", method="GET", kind="http", headers=()):
    return {"type": kind, "method": method, "path": raw_path, "raw_path": raw_path.encode(), "query_string": query,
            "headers": list(headers), "client": ("10.0.0.7", 5555)}


@pytest.fixture
def counted(monkeypatch):
    calls = []
    real_canonical, real_parse = pipeline.canonical_path, pipeline.parse
    monkeypatch.setattr(pipeline, "canonical_path", lambda p: calls.append(p) or real_canonical(p))
    monkeypatch.setattr(pipeline, "parse", lambda *a: calls.append(a) or real_parse(*a))
    monkeypatch.setattr(pipeline, "_SHAPES", {})
    return calls


def test_a_repeated_shape_is_not_parsed_again(counted):
    first = parse_request(scope("/k8s/prod/api/v1/namespaces/default/pods", b"limit=500"), "/k8s/")
    assert len(counted) == 2
    second = parse_request(scope("/k8s/prod/api/v1/namespaces/default/pods", b"limit=500"), "/k8s/")
    assert len(counted) == 2
    assert second.info == first.info and second.info.verb == "list" and second.query == "limit=500"
    assert second.audit_id != first.audit_id
    # Another method, query, connection-relative path or transport is its own shape.
    watch = parse_request(scope("/k8s/prod/api/v1/namespaces/default/pods", b"watch=1"), "/k8s/")
    assert watch.info.verb == "watch"
    delete = parse_request(scope("/k8s/prod/api/v1/namespaces/default/pods", b"limit=500", method="DELETE"), "/k8s/")
    assert delete.info.verb == "deletecollection"
    other = parse_request(scope("/k8s/staging/api/v1/namespaces/default/pods", b"limit=500"), "/k8s/")
    assert other.connection == "staging" and other.info == first.info
    socket = parse_request(scope("/k8s/prod/api/v1/namespaces/default/pods", b"limit=500", kind="websocket"), "/k8s/")
    assert socket.transport == "websocket"
    spdy = parse_request(scope("/k8s/prod/api/v1/namespaces/default/pods", b"limit=500",
                               headers=[(b"connection", b"Upgrade"), (b"upgrade", b"SPDY/3.1")]), "/k8s/")
    assert spdy.transport == "spdy"


def test_refused_shapes_are_refused_every_time(counted):
    for _ in range(2):
        with pytest.raises(GatewayError) as refused:
            parse_request(scope("/k8s/prod/api/v1/namespaces/default/pods/%2e%2e"), "/k8s/")
        assert refused.value.code == 400
        with pytest.raises(GatewayError) as nul:
            parse_request(scope("/k8s/prod/api/v1/pods", b"x=%00"), "/k8s/")
        assert nul.value.code == 400
        with pytest.raises(GatewayError) as upper:
            parse_request(scope("/k8s/prod/api/v1/namespaces/default/Pods"), "/k8s/")
        assert upper.value.code == 400
    assert pipeline._SHAPES == {}


def test_the_memory_is_bounded(counted, monkeypatch):
    monkeypatch.setattr(pipeline, "SHAPES_MAX", 3)
    for n in range(10):
        parse_request(scope(f"/k8s/prod/api/v1/namespaces/default/pods/web-{n}"), "/k8s/")
    assert len(pipeline._SHAPES) == 3
    assert [key[1] for key in pipeline._SHAPES] == [f"/api/v1/namespaces/default/pods/web-{n}" for n in (7, 8, 9)]
    long_name = "a" * 600
    parse_request(scope(f"/k8s/prod/api/v1/namespaces/default/pods/{long_name}"), "/k8s/")
    assert all(long_name not in key[1] for key in pipeline._SHAPES)
