"""An agent hiding a request body from the gateway behind its Content-Type.

kube-apiserver decodes a create, update or delete body that has no Content-Type as JSON, and
ignores a charset parameter (it reads every body as UTF-8).  The gateway measured, guarded and
masked only bodies whose Content-Type said JSON or YAML without a charset other than UTF-8: the
same document with no Content-Type, or with ``charset=iso-8859-1``, reached the cluster unmeasured
(nesting beyond the gateway's limit), and its audit record was masked as opaque text, so a Pod's
``DB_PASSWORD`` env value was kept in clear.  The conftest checks after each test that nothing
planted here reached the audit trail.
"""

import json

import pytest

from kubesim import requestlog

pytestmark = pytest.mark.django_db(transaction=True)

CONFIGMAPS = "/api/v1/namespaces/shop/configmaps"
DEEP = 600  # levels; the gateway's limit is 256


def deep_configmap(name: str) -> bytes:
    return (b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"%s"},"data":{"k":' % name.encode()
            + b"[" * DEEP + b"]" * DEEP + b"}}")


def refused(response, code: int) -> str:
    status = response.status_object()
    assert response.status == code and status and status["code"] == code, (response.status, response.body[:200])
    return status["message"]


@pytest.mark.parametrize("content_type", [
    None,  # kube-apiserver: JSON
    "application/json; charset=iso-8859-1",  # the charset is ignored: JSON
    "application/json; charset=utf-16",
    "Application/JSON;charset=ebcdic",
])
def test_a_deep_body_is_measured_whatever_its_content_type_says(raw, cluster, content_type):
    cluster.mark()
    headers = [("Content-Type", content_type)] if content_type else []
    create = raw("POST", CONFIGMAPS, headers, deep_configmap("deep-create"))
    update = raw("PUT", f"{CONFIGMAPS}/web-config", headers, deep_configmap("web-config"))
    delete = raw("DELETE", f"{CONFIGMAPS}/web-config", headers,
                 b'{"propagationPolicy":' + b"[" * DEEP + b"]" * DEEP + b"}")
    for response in (create, update, delete):
        assert "nests deeper than 256 levels" in refused(response, 400)
    assert cluster.writes() == []


def test_deep_yaml_under_a_charset_is_measured(raw, cluster):
    cluster.mark()
    body = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: deep-yaml}\ndata: {k: " + b"[" * DEEP + b"]" * DEEP + b"}\n"
    response = raw("POST", CONFIGMAPS, [("Content-Type", "application/yaml; charset=latin1")], body)
    assert "nests deeper than 256 levels" in refused(response, 400)
    assert cluster.writes() == []


def test_a_body_that_is_not_utf8_is_refused_not_passed_on_unread(raw, cluster):
    """kube-apiserver would read the Latin-1 byte as UTF-8 (a replacement character); the gateway
    can neither measure nor record what the cluster would store, so it refuses."""
    cluster.mark()
    body = '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"latin"},"data":{"k":"caf\xe9"}}'.encode("latin-1")
    for content_type in ("application/json; charset=iso-8859-1", "application/json"):
        response = raw("POST", CONFIGMAPS, [("Content-Type", content_type)], body)
        assert "not valid UTF-8" in refused(response, 400)
    assert cluster.writes() == []


@pytest.mark.parametrize("method, path, content_type", [
    ("PATCH", f"{CONFIGMAPS}/web-config", None),  # kube-apiserver: 415, no default patch type
    ("PATCH", f"{CONFIGMAPS}/web-config", "application/json"),
    ("PATCH", f"{CONFIGMAPS}/web-config", "Application/Merge-Patch+JSON"),  # patch types are compared exactly
    ("POST", CONFIGMAPS, "text/plain"),
    ("POST", CONFIGMAPS, "application/x-yaml"),
])
def test_a_body_in_a_type_the_cluster_does_not_decode_is_refused_at_the_gateway(raw, cluster, method, path,
                                                                                 content_type):
    """Such bodies are answered 415 by kube-apiserver too; the gateway no longer passes them on unread."""
    cluster.mark()
    headers = [("Content-Type", content_type)] if content_type else []
    response = raw(method, path, headers, b'{"data":{"k":"v"}}')
    assert "the body of the request was in an unknown format" in refused(response, 415)
    assert cluster.writes() == []


def test_a_pod_without_a_content_type_keeps_its_password_out_of_the_audit_trail(raw, cluster, secrets):
    """Read as the JSON it is to the cluster, the body is masked as an object in the audit record:
    the env value of DB_PASSWORD, the annotation named like a password."""
    password, annotated = "S3cr3t-env-Value-42", "Zq8-annotated-plain-Text"
    secrets.update({password, annotated})
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "no-type", "annotations": {"example.com/db-password": annotated}},
           "spec": {"containers": [{"name": "app", "image": "busybox",
                                    "env": [{"name": "DB_PASSWORD", "value": password}]}]}}
    cluster.mark()
    response = raw("POST", "/api/v1/namespaces/shop/pods?dryRun=All", [], json.dumps(pod).encode())
    assert response.status == 201, response.body[:300]
    [received] = cluster.since()
    assert requestlog.header(received, "content-type") == ["application/json"]  # as the cluster reads it
