"""Unit tests of the store: selectors, resource versions, continue tokens, watch history."""

from __future__ import annotations

import pytest

from kubesim.controllers import Controllers
from kubesim.discovery import Discovery
from kubesim.errors import ApiError
from kubesim.selectors import fields_match, field_getters, labels_match, parse_field_selector, parse_label_selector
from kubesim.store import Cluster, WatchSpec

DISCOVERY = Discovery()
PODS = DISCOVERY.lookup("", "v1", "pods")
CONFIGMAPS = DISCOVERY.lookup("", "v1", "configmaps")
NAMESPACES = DISCOVERY.lookup("", "v1", "namespaces")
DEPLOYMENTS = DISCOVERY.lookup("apps", "v1", "deployments")
SECRETS = DISCOVERY.lookup("", "v1", "secrets")


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(DISCOVERY, tmp_path, history_size=50)
    Controllers(c)
    for ns in ("default", "other"):
        c.create(NAMESPACES, "", {"metadata": {"name": ns}})
    return c


def cm(name: str, labels: dict | None = None, **extra) -> dict:
    return {"metadata": {"name": name, "labels": labels or {}}, "data": {"k": "v"}, **extra}


@pytest.mark.parametrize(
    "selector, labels, expected",
    [
        ("app=web", {"app": "web"}, True),
        ("app==web", {"app": "db"}, False),
        ("app!=web", {}, True),
        ("app!=web", {"app": "web"}, False),
        ("tier in (a, b)", {"tier": "b"}, True),
        ("tier notin (a,b)", {"tier": "a"}, False),
        ("tier notin (a,b)", {}, True),
        ("app", {"app": ""}, True),
        ("!app", {"app": "x"}, False),
        ("app=web,!legacy,tier in (front)", {"app": "web", "tier": "front"}, True),
        ("x.example.com/role=db", {"x.example.com/role": "db"}, True),
        ("replicas>2", {"replicas": "3"}, True),
        ("", {"anything": "x"}, True),
    ],
)
def test_label_selectors(selector, labels, expected):
    assert labels_match(parse_label_selector(selector), labels) is expected


@pytest.mark.parametrize("bad", ["app=(", "tier in a", "a b", "app=web,", "in (x)", "-bad=1"])
def test_malformed_label_selectors_are_400(bad):
    with pytest.raises(ApiError) as exc:
        parse_label_selector(bad)
    assert exc.value.code == 400 and exc.value.reason == "BadRequest"


def test_field_selectors_and_supported_fields():
    pod = {"metadata": {"name": "web", "namespace": "shop"}, "status": {"phase": "Running"}}
    getters = field_getters("", "pods", parse_field_selector("metadata.name=web,status.phase!=Pending"))
    assert fields_match(getters, pod)
    getters = field_getters("", "pods", parse_field_selector("metadata.namespace==other"))
    assert not fields_match(getters, pod)
    event = {"metadata": {"name": "e"}, "involvedObject": {"name": "web", "uid": "u1"}}
    getters = field_getters("", "events", parse_field_selector("involvedObject.name=web,involvedObject.uid=u1"))
    assert fields_match(getters, event)
    with pytest.raises(ApiError) as exc:
        field_getters("", "configmaps", parse_field_selector("spec.nodeName=x"))
    assert exc.value.message == "field label not supported: spec.nodeName"


def test_resource_versions_are_one_global_counter(cluster):
    a = cluster.create(CONFIGMAPS, "default", cm("a"))
    b = cluster.create(SECRETS, "default", {"metadata": {"name": "b"}, "stringData": {"x": "y"}})
    assert int(b["metadata"]["resourceVersion"]) > int(a["metadata"]["resourceVersion"])
    updated = cluster.update(CONFIGMAPS, "default", "a", {**a, "data": {"k": "w"}})
    assert int(updated["metadata"]["resourceVersion"]) > int(b["metadata"]["resourceVersion"])
    assert updated["metadata"]["uid"] == a["metadata"]["uid"]
    same = cluster.update(CONFIGMAPS, "default", "a", updated)
    assert same["metadata"]["resourceVersion"] == updated["metadata"]["resourceVersion"]


def test_update_with_stale_resource_version_conflicts(cluster):
    a = cluster.create(CONFIGMAPS, "default", cm("a"))
    cluster.update(CONFIGMAPS, "default", "a", {**a, "data": {"k": "1"}})
    with pytest.raises(ApiError) as exc:
        cluster.update(CONFIGMAPS, "default", "a", {**a, "data": {"k": "2"}})
    assert exc.value.code == 409
    assert exc.value.message == ('Operation cannot be fulfilled on configmaps "a": the object has been modified; '
                                 "please apply your changes to the latest version and try again")


def test_create_errors_match_kube_apiserver(cluster):
    cluster.create(DEPLOYMENTS, "default", {"metadata": {"name": "x"}, "spec": {"template": {}}})
    with pytest.raises(ApiError) as exists:
        cluster.create(DEPLOYMENTS, "default", {"metadata": {"name": "x"}, "spec": {}})
    assert (exists.value.code, exists.value.message) == (409, 'deployments.apps "x" already exists')
    with pytest.raises(ApiError) as no_ns:
        cluster.create(CONFIGMAPS, "missing", cm("a"))
    assert (no_ns.value.code, no_ns.value.message) == (404, 'namespaces "missing" not found')
    with pytest.raises(ApiError) as invalid:
        cluster.create(CONFIGMAPS, "default", {"metadata": {}})
    assert invalid.value.code == 422
    assert invalid.value.message == ('ConfigMap "" is invalid: metadata.name: Required value: '
                                     "name or generateName is required")
    with pytest.raises(ApiError) as bad_name:
        cluster.create(CONFIGMAPS, "default", cm("Bad_Name"))
    assert bad_name.value.code == 422 and bad_name.value.details["causes"][0]["field"] == "metadata.name"


def test_generate_name_and_generation(cluster):
    obj = cluster.create(DEPLOYMENTS, "default", {"metadata": {"generateName": "web-"},
                                                  "spec": {"replicas": 1, "template": {}}})
    name = obj["metadata"]["name"]
    assert name.startswith("web-") and len(name) == len("web-") + 5
    assert obj["metadata"]["generation"] == 1
    current = cluster.get(DEPLOYMENTS, "default", name)
    relabeled = cluster.update(DEPLOYMENTS, "default", name,
                               {**current, "metadata": {**current["metadata"], "labels": {"a": "b"}}})
    assert relabeled["metadata"]["generation"] == 1
    rescaled = cluster.update(DEPLOYMENTS, "default", name, {**relabeled, "spec": {**relabeled["spec"], "replicas": 3}})
    assert rescaled["metadata"]["generation"] == 2


def test_dry_run_writes_nothing(cluster):
    before = cluster.rv
    obj = cluster.create(CONFIGMAPS, "default", cm("dry"), dry_run=True)
    assert obj["metadata"]["uid"] and cluster.rv == before
    assert cluster.find("", "configmaps", "default", "dry") is None


def test_secret_string_data_is_merged_and_dropped(cluster):
    s = cluster.create(SECRETS, "default", {"metadata": {"name": "s"}, "data": {"a": "YQ=="},
                                            "stringData": {"b": "plain"}})
    assert s["data"] == {"a": "YQ==", "b": "cGxhaW4="}
    assert "stringData" not in s and s["type"] == "Opaque"
    with pytest.raises(ApiError) as exc:
        cluster.create(SECRETS, "default", {"metadata": {"name": "t"}, "data": {"a": "not base64!"}})
    assert exc.value.code == 400


def test_list_with_limit_and_continue(cluster):
    for i in range(5):
        cluster.create(CONFIGMAPS, "default", cm(f"cm-{i}", {"n": str(i)}))
    page, meta = cluster.list(CONFIGMAPS, "default", limit=2)
    assert [o["metadata"]["name"] for o in page] == ["cm-0", "cm-1"]
    assert meta["remainingItemCount"] == 3
    page2, meta2 = cluster.list(CONFIGMAPS, "default", limit=2, continue_token=meta["continue"])
    assert [o["metadata"]["name"] for o in page2] == ["cm-2", "cm-3"]
    assert meta2["resourceVersion"] == meta["resourceVersion"]
    page3, meta3 = cluster.list(CONFIGMAPS, "default", limit=2, continue_token=meta2["continue"])
    assert [o["metadata"]["name"] for o in page3] == ["cm-4"] and "continue" not in meta3
    with pytest.raises(ApiError) as exc:
        cluster.list(CONFIGMAPS, "default", continue_token="garbage")
    assert exc.value.code == 400


def test_list_filters_by_selectors_and_namespace(cluster):
    cluster.create(CONFIGMAPS, "default", cm("a", {"app": "web"}))
    cluster.create(CONFIGMAPS, "other", cm("b", {"app": "web"}))
    cluster.create(CONFIGMAPS, "default", cm("c", {"app": "db"}))
    everywhere, _ = cluster.list(CONFIGMAPS, None, labels=parse_label_selector("app=web"))
    assert [o["metadata"]["name"] for o in everywhere] == ["a", "b"]
    named, _ = cluster.list(CONFIGMAPS, "default", fields=parse_field_selector("metadata.name=c"))
    assert [o["metadata"]["name"] for o in named] == ["c"]


def test_watch_replays_history_after_a_resource_version(cluster):
    a = cluster.create(CONFIGMAPS, "default", cm("a"))
    start = a["metadata"]["resourceVersion"]
    cluster.update(CONFIGMAPS, "default", "a", {**a, "data": {"k": "2"}})
    cluster.create(CONFIGMAPS, "other", cm("b"))
    cluster.delete(CONFIGMAPS, "default", "a")
    spec = WatchSpec(("", "configmaps"), "default")
    watcher, events = cluster.watch(CONFIGMAPS, spec, resource_version=start, send_initial_events=None)
    assert [(t, o["metadata"]["name"]) for t, o, _ in events] == [("MODIFIED", "a"), ("DELETED", "a")]
    cluster.create(CONFIGMAPS, "default", cm("c"))
    live = watcher.queue.get_nowait()
    assert (live[0], live[1]["metadata"]["name"]) == ("ADDED", "c")
    cluster.unwatch(watcher)
    assert cluster.watcher_count() == 0


def test_watch_from_zero_starts_with_current_objects(cluster):
    cluster.create(CONFIGMAPS, "default", cm("a"))
    cluster.create(CONFIGMAPS, "default", cm("b"))
    _, events = cluster.watch(CONFIGMAPS, WatchSpec(("", "configmaps"), "default"), resource_version="0",
                              send_initial_events=None)
    assert [(t, o["metadata"]["name"]) for t, o, _ in events] == [("ADDED", "a"), ("ADDED", "b")]


def test_watch_selector_transitions_become_added_and_deleted(cluster):
    a = cluster.create(CONFIGMAPS, "default", cm("a", {"app": "web"}))
    spec = WatchSpec(("", "configmaps"), "default", parse_label_selector("app=web"))
    watcher, _ = cluster.watch(CONFIGMAPS, spec, resource_version=a["metadata"]["resourceVersion"],
                               send_initial_events=None)
    moved = cluster.update(CONFIGMAPS, "default", "a", {**a, "metadata": {**a["metadata"], "labels": {"app": "db"}}})
    cluster.update(CONFIGMAPS, "default", "a", {**moved, "metadata": {**moved["metadata"], "labels": {"app": "web"}}})
    assert [watcher.queue.get_nowait()[0] for _ in range(2)] == ["DELETED", "ADDED"]


def test_watch_from_a_compacted_resource_version_is_410(cluster):
    first = cluster.create(CONFIGMAPS, "default", cm("a"))
    for i in range(60):
        cluster.create(CONFIGMAPS, "default", cm(f"x{i}"))
    with pytest.raises(ApiError) as exc:
        cluster.watch(CONFIGMAPS, WatchSpec(("", "configmaps"), None),
                      resource_version=first["metadata"]["resourceVersion"], send_initial_events=None)
    assert exc.value.code == 410 and exc.value.reason == "Expired"
    assert exc.value.message.startswith(f"too old resource version: {first['metadata']['resourceVersion']} (")


def test_deleting_a_namespace_deletes_its_objects(cluster, tmp_path):
    cluster.create(CONFIGMAPS, "other", cm("a"))
    cluster.create(PODS, "other", {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})
    assert cluster.sandbox_dir("other", "p").is_dir()
    out = cluster.delete(NAMESPACES, "", "other")
    assert out["status"]["phase"] == "Terminating"
    assert cluster.objects("", "configmaps", "other") == []
    assert cluster.objects("", "pods", "other") == []
    assert not cluster.sandbox_dir("other", "p").exists()


def test_pods_get_running_status_sandbox_and_logs(cluster):
    pod = cluster.create(PODS, "default", {
        "metadata": {"name": "p", "annotations": {"kubesim.airlock.dev/log": "hello\n",
                                                  "kubesim.airlock.dev/files": '{"etc/x": "secret", "../escape": "no"}'}},
        "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}})
    assert pod["status"]["phase"] == "Running" and pod["status"]["containerStatuses"][0]["ready"]
    sandbox = cluster.sandbox_dir("default", "p")
    assert (sandbox / ".logs" / "c.log").read_text() == "hello\n"
    assert (sandbox / "etc" / "x").read_text() == "secret"
    assert not (sandbox.parent / "escape").exists()
    pending = cluster.create(PODS, "default", {"metadata": {"name": "q"}, "spec": {"containers": [
        {"name": "c", "image": "i"}]}, "status": {"phase": "Pending"}})
    assert pending["status"] == {"phase": "Pending"}


def test_port_target_parses_the_annotation(cluster):
    pod = {"metadata": {"annotations": {"kubesim.airlock.dev/ports": "80=127.0.0.1:18080, 443=[::1]:18443"}}}
    assert cluster.port_target(pod, 80) == ("127.0.0.1", 18080)
    assert cluster.port_target(pod, 443) == ("::1", 18443)
    assert cluster.port_target(pod, 22) is None


def test_deployment_controller_creates_replicaset_and_pods(cluster):
    cluster.create(DEPLOYMENTS, "default", {"metadata": {"name": "web"}, "spec": {
        "replicas": 2, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}})
    rs = cluster.objects("apps", "replicasets", "default")
    assert len(rs) == 1 and rs[0]["spec"]["replicas"] == 2
    pods = cluster.objects("", "pods", "default")
    assert len(pods) == 2 and all(p["metadata"]["labels"]["app"] == "web" for p in pods)
    dep = cluster.get(DEPLOYMENTS, "default", "web")
    assert dep["status"]["readyReplicas"] == 2 and dep["status"]["observedGeneration"] == 1
    cluster.delete(DEPLOYMENTS, "default", "web")
    assert cluster.objects("apps", "replicasets", "default") == []
    assert cluster.objects("", "pods", "default") == []
