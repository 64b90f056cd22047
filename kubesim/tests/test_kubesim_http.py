"""The HTTP layer in-process: Status shapes, negotiation, discovery, watch framing, auth, request log."""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric import ec

from kubesim import requestlog
from kubesim.auth import Auth, StaticToken
from kubesim.controllers import Controllers
from kubesim.discovery import AGGREGATED_MEDIA_TYPE, Discovery
from kubesim.requestlog import RequestLog
from kubesim.server import KubeSim, request_info
from kubesim.store import Cluster

ADMIN = {"Authorization": "Bearer admin-token-0123"}
VIEWER = {"Authorization": "Bearer viewer-token-4567"}
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"


@pytest.fixture
async def api(tmp_path):
    discovery = Discovery()
    cluster = Cluster(discovery, tmp_path, history_size=20)
    Controllers(cluster)
    cluster.create(discovery.lookup("", "v1", "namespaces"), "", {"metadata": {"name": "default"}})
    cluster.create(discovery.lookup("", "v1", "pods"), "default", {
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}})
    auth = Auth([StaticToken("admin-token-0123", "root", ("system:masters",), True),
                 StaticToken("viewer-token-4567", "vera", ("dev",), False)],
                ec.generate_private_key(ec.SECP256R1()))
    auth.cluster = cluster
    log = RequestLog(tmp_path / "requests.jsonl")
    sim = KubeSim(cluster, auth, log, bookmark_interval=0.05)
    client = TestClient(TestServer(sim.app()))
    await client.start_server()
    client.sim = sim
    client.log_path = tmp_path / "requests.jsonl"
    yield client
    await client.close()
    log.close()


def status(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason}
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


async def test_bad_token_is_401_status(api):
    resp = await api.get("/api/v1/namespaces/default/pods", headers={"Authorization": "Bearer wrong"})
    assert resp.status == 401
    assert await resp.json() == status(401, "Unauthorized", "Unauthorized")


async def test_anonymous_reads_version_but_not_discovery(api):
    assert (await api.get("/version")).status == 200
    resp = await api.get("/api")
    assert resp.status == 403
    assert await resp.json() == status(403, "Forbidden", 'forbidden: User "system:anonymous" cannot get path "/api"', {})


async def test_viewer_forbidden_status(api):
    resp = await api.delete("/api/v1/namespaces/default/pods/web", headers=VIEWER)
    assert resp.status == 403
    assert await resp.json() == status(
        403, "Forbidden",
        'pods "web" is forbidden: User "vera" cannot delete resource "pods" in API group "" in the namespace "default"',
        {"name": "web", "kind": "pods"})
    secrets = await api.get("/api/v1/secrets", headers=VIEWER)
    assert (await secrets.json())["message"] == ('secrets is forbidden: User "vera" cannot list resource "secrets" '
                                                 'in API group "" at the cluster scope')


async def test_not_found_statuses(api):
    resp = await api.get("/apis/apps/v1/namespaces/default/deployments/nope", headers=ADMIN)
    assert resp.status == 404
    assert await resp.json() == status(404, "NotFound", 'deployments.apps "nope" not found',
                                       {"name": "nope", "group": "apps", "kind": "deployments"})
    unknown = await api.get("/apis/example.com/v1/widgets", headers=ADMIN)
    assert await unknown.json() == status(404, "NotFound", "the server could not find the requested resource", {})


async def test_conflict_and_invalid_statuses(api):
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}
    assert (await api.post("/api/v1/namespaces/default/configmaps", json=body, headers=ADMIN)).status == 201
    again = await api.post("/api/v1/namespaces/default/configmaps", json=body, headers=ADMIN)
    assert again.status == 409
    assert await again.json() == status(409, "AlreadyExists", 'configmaps "c" already exists',
                                        {"name": "c", "kind": "configmaps"})
    stale = {**body, "metadata": {"name": "c", "resourceVersion": "1"}, "data": {"a": "b"}}
    conflict = await api.put("/api/v1/namespaces/default/configmaps/c", json=stale, headers=ADMIN)
    assert conflict.status == 409 and (await conflict.json())["reason"] == "Conflict"
    bad = await api.post("/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "Bad!"}}, headers=ADMIN)
    assert bad.status == 422
    invalid = await bad.json()
    assert invalid["reason"] == "Invalid" and invalid["details"]["causes"][0]["field"] == "metadata.name"


async def test_method_not_allowed_and_media_type_errors(api):
    resp = await api.delete("/api/v1/namespaces", headers=ADMIN)
    assert resp.status == 405
    assert await resp.json() == status(405, "MethodNotAllowed",
                                       "the server does not allow this method on the requested resource", {})
    for media_type in ("text/plain", "*/*", "application/x-yaml", "text/yaml"):  # kube-apiserver: 415 for each
        resp = await api.post("/api/v1/namespaces/default/configmaps", data=b"a: b",
                              headers={**ADMIN, "Content-Type": media_type})
        assert resp.status == 415 and (await resp.json())["reason"] == "UnsupportedMediaType", media_type
    resp = await api.patch("/api/v1/namespaces/default/pods/web", data=b"{}",
                           headers={**ADMIN, "Content-Type": "application/json"})
    assert resp.status == 415


@pytest.mark.parametrize("body", [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"deep"},"data":' + b'{"a":' * 5000 + b'"x"'
    + b"}" * 5001,
    b"a: " + b"[" * 5000 + b"]" * 5000,
    b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"deep"},"extra":' + b"[" * 600 + b"]" * 600 + b"}",
], ids=["json-array", "json-object", "yaml", "decodable-but-deeper-than-the-store-copies"])
async def test_a_body_nested_too_deep_for_the_decoder_is_a_400_status(api, body):
    """kube-apiserver refuses such a body with a 400 (its JSON decoder stops at 10,000 levels; a
    typed object does not nest this deep); Python's decoders recurse and give up earlier."""
    content_type = "application/yaml" if body.startswith(b"a:") else "application/json"
    resp = await api.post("/api/v1/namespaces/default/configmaps", data=body,
                          headers={**ADMIN, "Content-Type": content_type})
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["reason"] == "BadRequest"


@pytest.mark.parametrize("body, go_type", [
    ({"apiVersion": 1, "kind": "ConfigMap", "metadata": {"name": "a"}}, "number"),
    ({"apiVersion": "v1", "kind": [], "metadata": {"name": "a"}}, "array"),
    ({"apiVersion": {}, "kind": True, "metadata": {"name": "a"}}, "object"),
])
async def test_api_version_and_kind_that_are_not_strings_are_a_400_status(api, body, go_type):
    """kube-apiserver decodes them into strings first: "cannot unmarshal ... of type string", a 400."""
    resp = await api.post("/api/v1/namespaces/default/configmaps", json=body, headers=ADMIN)
    assert resp.status == 400, await resp.text()
    status = await resp.json()
    assert status["reason"] == "BadRequest" and f"cannot unmarshal {go_type}" in status["message"]


async def test_content_negotiation(api):
    only_proto = await api.get("/api/v1/namespaces/default/pods/web",
                               headers={**ADMIN, "Accept": "application/vnd.kubernetes.protobuf"})
    assert only_proto.status == 406
    assert (await only_proto.json())["message"] == "only the following media types are accepted: application/json"
    both = await api.get("/api/v1/namespaces/default/pods/web",
                         headers={**ADMIN, "Accept": "application/vnd.kubernetes.protobuf,application/json"})
    assert both.status == 200 and both.content_type == "application/json"
    assert (await both.json())["kind"] == "Pod"
    table = await api.get("/api/v1/namespaces/default/pods", headers={**ADMIN, "Accept": TABLE})
    body = await table.json()
    assert body["kind"] == "Table" and body["rows"][0]["cells"][0] == "web"
    assert body["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    pom = await api.get("/api/v1/namespaces/default/pods", headers={
        **ADMIN, "Accept": "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"})
    assert (await pom.json())["kind"] == "PartialObjectMetadataList"


async def test_discovery_documents(api):
    legacy = await api.get("/apis", headers=ADMIN)
    assert (await legacy.json())["kind"] == "APIGroupList"
    aggregated = await api.get("/apis", headers={**ADMIN, "Accept": AGGREGATED_MEDIA_TYPE + ",application/json"})
    assert aggregated.headers["Content-Type"] == AGGREGATED_MEDIA_TYPE
    assert (await aggregated.json())["kind"] == "APIGroupDiscoveryList"
    core = await api.get("/api", headers={**ADMIN, "Accept": AGGREGATED_MEDIA_TYPE})
    resources = (await core.json())["items"][0]["versions"][0]["resources"]
    pods = next(r for r in resources if r["resource"] == "pods")
    assert {s["subresource"] for s in pods["subresources"]} >= {"exec", "log", "portforward", "status"}
    derived = await (await api.get("/apis/networking.k8s.io/v1", headers=ADMIN)).json()
    ingress = next(r for r in derived["resources"] if r["name"] == "ingresses")
    assert ingress["namespaced"] and ingress["kind"] == "Ingress" and ingress["shortNames"] == ["ing"]
    assert any(r["name"] == "ingresses/status" for r in derived["resources"])


async def test_openapi_v3_advertises_server_side_field_validation(api):
    root = await (await api.get("/openapi/v3", headers=ADMIN)).json()
    url = root["paths"]["apis/apps/v1"]["serverRelativeURL"]
    doc = await (await api.get(url, headers=ADMIN)).json()
    op = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert op["x-kubernetes-group-version-kind"] == {"group": "apps", "version": "v1", "kind": "Deployment"}
    assert any(p["name"] == "fieldValidation" and p["in"] == "query" for p in op["parameters"])
    assert "application/strategic-merge-patch+json" in op["requestBody"]["content"]
    v2 = await api.get("/openapi/v2", headers={
        **ADMIN, "Accept": "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"})
    assert v2.status == 200
    assert v2.headers["Content-Type"] == "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
    body = await v2.read()
    assert body.startswith(b"\n\x032.0") and b"io.k8s.api.apps.v1.Deployment" in body


async def test_strict_field_validation(api):
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "bogus": 1}, "dta": {}}
    strict = await api.post("/api/v1/namespaces/default/configmaps?fieldValidation=Strict", json=body, headers=ADMIN)
    assert strict.status == 400
    assert (await strict.json())["message"] == ('ConfigMap in version "v1" cannot be handled as a ConfigMap: strict '
                                                'decoding error: unknown field "metadata.bogus", unknown field "dta"')
    warn = await api.post("/api/v1/namespaces/default/configmaps", json=body, headers=ADMIN)
    assert warn.status == 201
    assert warn.headers.getall("Warning") == ['299 - "unknown field \\"metadata.bogus\\""',
                                              '299 - "unknown field \\"dta\\""']
    stored = await warn.json()
    assert "dta" not in stored and "bogus" not in stored["metadata"]


async def test_watch_stream_with_initial_events_and_bookmark(api):
    resp = await api.get("/api/v1/namespaces/default/pods?watch=1&sendInitialEvents=true&allowWatchBookmarks=true"
                         "&resourceVersionMatch=NotOlderThan&timeoutSeconds=1", headers=ADMIN)
    assert resp.status == 200
    lines = (await resp.read()).decode().splitlines()
    events = [json.loads(line) for line in lines]
    assert events[0]["type"] == "ADDED" and events[0]["object"]["metadata"]["name"] == "web"
    assert events[1]["type"] == "BOOKMARK"
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert api.sim.cluster.watcher_count() == 0


async def test_watch_delivers_live_events_and_uses_tables(api):
    pod = await (await api.get("/api/v1/namespaces/default/pods/web", headers=ADMIN)).json()
    rv = pod["metadata"]["resourceVersion"]
    resp = await api.get(f"/api/v1/watch/namespaces/default/pods?resourceVersion={rv}&timeoutSeconds=2",
                         headers={**ADMIN, "Accept": TABLE})
    patch = await api.patch("/api/v1/namespaces/default/pods/web", json={"metadata": {"labels": {"x": "y"}}},
                            headers={**ADMIN, "Content-Type": "application/merge-patch+json"})
    assert patch.status == 200
    first = json.loads(await resp.content.readline())
    assert first["type"] == "MODIFIED" and first["object"]["kind"] == "Table"
    assert first["object"]["rows"][0]["object"]["metadata"]["labels"] == {"app": "web", "x": "y"}
    resp.close()


async def test_watch_too_old_resource_version_is_an_error_event(api):
    for i in range(30):
        await api.post("/api/v1/namespaces/default/configmaps", json={"metadata": {"name": f"c{i}"}}, headers=ADMIN)
    resp = await api.get("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=2", headers=ADMIN)
    event = json.loads(await resp.read())
    assert event["type"] == "ERROR"
    assert event["object"]["code"] == 410 and event["object"]["reason"] == "Expired"


async def test_request_log_redacts_authorization(api):
    await api.get("/api/v1/namespaces/default/pods", headers={**ADMIN, "X-Trace": "t1"})
    text = api.log_path.read_text()
    assert "admin-token-0123" not in text
    record = [r for r in requestlog.read(api.log_path) if r["path"] == "/api/v1/namespaces/default/pods"][-1]
    digest = hashlib.sha256(b"admin-token-0123").hexdigest()
    assert requestlog.header(record, "Authorization") == [f"Bearer sha256:{digest}"]
    assert requestlog.header(record, "X-Trace") == ["t1"]
    assert record["user"] == "root" and record["status"] == 200


async def test_impersonation_rules(api):
    missing_user = await api.get("/api/v1/namespaces/default/pods", headers={**ADMIN, "Impersonate-Group": "g"})
    assert missing_user.status == 400
    denied = await api.get("/api/v1/namespaces/default/pods", headers={**VIEWER, "Impersonate-User": "x"})
    assert await denied.json() == status(
        403, "Forbidden",
        'users "x" is forbidden: User "vera" cannot impersonate resource "users" in API group "" at the cluster scope',
        {"name": "x", "kind": "users"})
    ok = await api.get("/api/v1/namespaces/default/pods",
                       headers={**ADMIN, "Impersonate-User": "alice", "Impersonate-Group": "dev"})
    assert ok.status == 200
    record = requestlog.read(api.log_path)[-1]
    assert (record["user"], record["impersonated_user"], record["impersonated_groups"]) == (
        "root", "alice", ["dev", "system:authenticated"])


async def test_self_subject_access_review_matches_authorization(api):
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
              "spec": {"resourceAttributes": {"verb": "delete", "resource": "pods", "namespace": "default"}}}
    resp = await api.post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", json=review, headers=VIEWER)
    assert resp.status == 201 and (await resp.json())["status"]["allowed"] is False
    real = await api.delete("/api/v1/namespaces/default/pods/web", headers=VIEWER)
    assert real.status == 403
    review["spec"]["resourceAttributes"]["verb"] = "list"
    resp = await api.post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", json=review, headers=VIEWER)
    assert (await resp.json())["status"]["allowed"] is True


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


async def test_protobuf_self_subject_access_review(api):
    attrs = _field(2, b"get") + _field(5, b"secrets") + _field(1, b"default")
    raw = _field(2, _field(1, attrs))
    type_meta = _field(1, b"authorization.k8s.io/v1") + _field(2, b"SelfSubjectAccessReview")
    body = b"k8s\x00" + _field(1, type_meta) + _field(2, raw)
    headers = {**VIEWER, "Content-Type": "application/vnd.kubernetes.protobuf",
               "Accept": "application/vnd.kubernetes.protobuf,application/json"}
    resp = await api.post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", data=body, headers=headers)
    assert resp.status == 201
    review = await resp.json()
    assert review["spec"]["resourceAttributes"] == {"verb": "get", "resource": "secrets", "namespace": "default"}
    assert review["status"]["allowed"] is False
    garbage = await api.post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", data=b"k8s\x00\xff",
                             headers=headers)
    assert garbage.status == 415


async def test_spdy_exec_is_refused_with_a_clear_status(api):
    resp = await api.post("/api/v1/namespaces/default/pods/web/exec?command=ls&stdout=true",
                          headers={**ADMIN, "Connection": "Upgrade", "Upgrade": "SPDY/3.1",
                                   "X-Stream-Protocol-Version": "v4.channel.k8s.io"})
    assert resp.status == 400
    assert "kubesim speaks only WebSockets" in (await resp.json())["message"]
    missing = await api.get("/api/v1/namespaces/default/pods/nope/exec?command=ls",
                            headers={**ADMIN, "Connection": "Upgrade", "Upgrade": "websocket"})
    assert missing.status == 404


async def test_scale_subresource(api):
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "d"}},
                    "template": {"metadata": {"labels": {"app": "d"}},
                                 "spec": {"containers": [{"name": "c", "image": "i"}]}}}}
    assert (await api.post("/apis/apps/v1/namespaces/default/deployments", json=dep, headers=ADMIN)).status == 201
    scale = await (await api.get("/apis/apps/v1/namespaces/default/deployments/d/scale", headers=ADMIN)).json()
    assert scale["kind"] == "Scale" and scale["apiVersion"] == "autoscaling/v1"
    assert scale["spec"] == {"replicas": 1} and scale["status"]["selector"] == "app=d"
    resp = await api.patch("/apis/apps/v1/namespaces/default/deployments/d/scale", json={"spec": {"replicas": 3}},
                           headers={**ADMIN, "Content-Type": "application/merge-patch+json"})
    assert (await resp.json())["spec"]["replicas"] == 3
    assert len(api.sim.cluster.objects("", "pods", "default")) == 4


def test_request_info_matches_kube_apiserver():
    from multidict import MultiDict

    info = request_info("GET", "/api/v1/namespaces/d/pods", MultiDict(watch=""))
    assert (info.verb, info.namespace, info.resource) == ("watch", "d", "pods")
    info = request_info("GET", "/api/v1/namespaces/d/pods", MultiDict(fieldSelector="metadata.name=web", watch="1"))
    assert (info.verb, info.name) == ("watch", "web")
    info = request_info("DELETE", "/api/v1/namespaces", MultiDict())
    assert info.verb == "deletecollection"
    info = request_info("PUT", "/api/v1/namespaces/other/status", MultiDict())
    assert (info.resource, info.subresource, info.name, info.namespace) == ("namespaces", "status", "other", "other")
    info = request_info("GET", "/apis/apps/v1", MultiDict())
    assert not info.is_resource


async def test_watch_client_disconnect_releases_the_watcher(api):
    resp = await api.get("/api/v1/namespaces/default/pods?watch=1", headers=ADMIN)
    assert json.loads(await resp.content.readline())["type"] == "ADDED"
    assert api.sim.cluster.watcher_count() == 1
    resp.close()
    for _ in range(500):
        if api.sim.cluster.watcher_count() == 0:
            break
        await asyncio.sleep(0.01)
    assert api.sim.cluster.watcher_count() == 0
    record = [r for r in requestlog.read(api.log_path) if r["query"] == "watch=1"][-1]
    assert record["status"] in (200, 499)


@pytest.mark.parametrize("body", [
    {"metadata": {"name": "x", "labels": "oops"}},
    {"metadata": {"name": 5}},
    {"metadata": "x"},
    {"metadata": {"name": "x", "ownerReferences": "y"}},
    {"metadata": {"name": "x"}, "spec": "not-an-object"},
])
async def test_malformed_objects_are_400_not_500(api, body):
    resp = await api.post("/api/v1/namespaces?fieldValidation=Ignore", json=body, headers=ADMIN)
    assert resp.status == 400
    assert (await resp.json())["reason"] == "BadRequest"


async def test_delete_options_come_from_the_body_when_there_is_one(api):
    """As kube-apiserver's DeleteResource: a non-empty body is the DeleteOptions and the query counts for nothing."""
    pod = "/api/v1/namespaces/default/pods/web"
    dry = await api.delete(pod + "?dryRun=All", headers=ADMIN)
    assert dry.status == 200
    assert (await api.get(pod, headers=ADMIN)).status == 200
    real = await api.delete(pod + "?dryRun=All", headers={**ADMIN, "Content-Type": "application/json"},
                            data=b'{"propagationPolicy":"Background"}')
    assert real.status == 200
    assert (await api.get(pod, headers=ADMIN)).status == 404
