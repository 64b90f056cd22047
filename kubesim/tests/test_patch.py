"""Tests of kubesim.patch: the PATCH bodies kubectl 1.37 sends, RFC 6902/7386, SMP directives, apply.

The kubectl bodies below were captured from real kubectl 1.37.1 runs (apply, scale, label,
annotate, set image, rollout restart, edit, patch --type=json, apply --server-side).
"""

import copy
import json

import pytest

from kubesim.patch import (
    APPLY_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    PatchError,
    apply_patch,
    media_type,
    merge_key,
)

SECRET_VALUE = "hunter2-do-not-leak"

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def deployment():
    """The Deployment as kube-apiserver stores it after `kubectl apply` of web.yaml."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "uid": "0b5c8a52-1b8e-4f63-9a55-0d2d3f5e8a11",
            "resourceVersion": "1001",
            "generation": 1,
            "creationTimestamp": "2026-11-26T22:00:00Z",
            "labels": {"app": "web"},
            "annotations": {LAST_APPLIED: '{"kind":"Deployment"}\n'},
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": "nginx:1.25",
                            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                            "ports": [{"containerPort": 80, "protocol": "TCP"}],
                        },
                        {"name": "side", "image": "busybox:1.36"},
                    ],
                    "tolerations": [{"key": "a", "operator": "Exists"}],
                },
            },
        },
        "status": {"replicas": 2, "readyReplicas": 2, "conditions": [{"type": "Available", "status": "True"}]},
    }


def smp(obj, body):
    return apply_patch(obj, json.dumps(body).encode(), STRATEGIC_MERGE_PATCH)


def containers(obj):
    return obj["spec"]["template"]["spec"]["containers"]


def assert_error(excinfo, code, *fragments):
    assert excinfo.value.code == code
    for fragment in fragments:
        assert fragment in excinfo.value.message
    assert SECRET_VALUE not in excinfo.value.message
    assert SECRET_VALUE not in repr(excinfo.value)


# --- media types ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type, expected",
    [
        ("application/json-patch+json", JSON_PATCH),
        ("application/merge-patch+json; charset=utf-8", MERGE_PATCH),
        ("Application/Strategic-Merge-Patch+JSON", STRATEGIC_MERGE_PATCH),
        (" application/apply-patch+yaml ;charset=UTF-8", APPLY_PATCH),
    ],
)
def test_media_type_ignores_parameters_and_case(content_type, expected):
    assert media_type(content_type) == expected


@pytest.mark.parametrize("content_type", ["application/json", "application/yaml", "", "text/plain; x=application/json-patch+json"])
def test_unsupported_media_type_is_415_with_the_kube_apiserver_message(content_type):
    with pytest.raises(PatchError) as excinfo:
        apply_patch(deployment(), b"{}", content_type)
    assert excinfo.value.code == 415
    assert excinfo.value.message == (
        "the body of the request was in an unknown format - accepted media types include: "
        "application/json-patch+json, application/merge-patch+json, "
        "application/strategic-merge-patch+json, application/apply-patch+yaml"
    )


def test_patch_body_must_be_bytes():
    with pytest.raises(TypeError):
        apply_patch(deployment(), '{"spec": {}}', MERGE_PATCH)


@pytest.mark.parametrize(
    "content_type, body",
    [
        (JSON_PATCH, b'[{"op":"remove","path":"/spec/template/spec/containers/0/env/0"}]'),
        (MERGE_PATCH, b'{"spec":{"template":{"spec":{"containers":[]}}},"metadata":{"labels":null}}'),
        (STRATEGIC_MERGE_PATCH, b'{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"$patch":"delete","name":"A"}]}]}}}}'),
        (APPLY_PATCH, b"apiVersion: apps/v1\nkind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n      - name: web\n        image: x\n"),
    ],
)
def test_input_object_is_not_mutated_and_result_is_a_new_dict(content_type, body):
    original = deployment()
    before = copy.deepcopy(original)
    result = apply_patch(original, body, content_type)
    assert original == before
    assert result is not original
    assert result != before


# --- JSON patch (RFC 6902) ---------------------------------------------------------------


def json_patch(obj, ops):
    return apply_patch(obj, json.dumps(ops).encode(), JSON_PATCH)


def test_kubectl_patch_type_json_test_then_replace():
    body = b'[{"op":"test","path":"/spec/replicas","value":2},{"op":"replace","path":"/spec/replicas","value":4}]'
    assert apply_patch(deployment(), body, JSON_PATCH)["spec"]["replicas"] == 4


def test_json_patch_add_remove_replace_move_copy():
    result = json_patch(
        deployment(),
        [
            {"op": "add", "path": "/metadata/labels/tier", "value": "frontend"},
            {"op": "add", "path": "/spec/template/spec/containers/0/env/-", "value": {"name": "C", "value": "3"}},
            {"op": "remove", "path": "/spec/template/spec/containers/0/env/0"},
            {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "nginx:1.27"},
            {"op": "move", "from": "/metadata/labels/tier", "path": "/metadata/annotations/tier"},
            {"op": "copy", "from": "/spec/selector", "path": "/spec/selectorCopy"},
        ],
    )
    assert result["metadata"]["labels"] == {"app": "web"}
    assert result["metadata"]["annotations"]["tier"] == "frontend"
    assert [e["name"] for e in containers(result)[0]["env"]] == ["B", "C"]
    assert containers(result)[0]["image"] == "nginx:1.27"
    assert result["spec"]["selectorCopy"] == {"matchLabels": {"app": "web"}}
    result["spec"]["selectorCopy"]["matchLabels"]["app"] = "changed"
    assert result["spec"]["selector"]["matchLabels"]["app"] == "web"


def test_json_patch_failed_test_is_422_and_stops_later_operations():
    with pytest.raises(PatchError) as excinfo:
        json_patch(deployment(), [{"op": "test", "path": "/spec/replicas", "value": 3}, {"op": "remove", "path": "/spec"}])
    assert_error(excinfo, 422)
    assert excinfo.value.message == "testing value /spec/replicas failed: test failed"


@pytest.mark.parametrize("value", [True, "2", 2.5, None, [2]])
def test_json_patch_test_uses_json_equality(value):
    with pytest.raises(PatchError) as excinfo:
        json_patch({"spec": {"replicas": 1 if value is True else 2}}, [{"op": "test", "path": "/spec/replicas", "value": value}])
    assert excinfo.value.code == 422


def test_json_patch_test_accepts_equal_numbers_and_documents():
    doc = {"a": {"b": [1, {"c": None}]}, "n": 2}
    assert json_patch(doc, [{"op": "test", "path": "/n", "value": 2.0}, {"op": "test", "path": "/a", "value": {"b": [1, {"c": None}]}}]) == doc


@pytest.mark.parametrize(
    "op, message",
    [
        ({"op": "remove", "path": "/data/missing"}, 'remove operation does not apply: doc is missing path: "/data/missing"'),
        ({"op": "replace", "path": "/data/missing", "value": "x"}, "replace operation does not apply: doc is missing key: /data/missing"),
        ({"op": "add", "path": "/nope/deeper", "value": "x"}, 'add operation does not apply: doc is missing path: "/nope/deeper"'),
        ({"op": "add", "path": "/data/password/x", "value": "x"}, 'add operation does not apply: doc is missing path: "/data/password/x"'),
        ({"op": "move", "from": "/data/missing", "path": "/data/x"}, "move operation does not apply: doc is missing from path: /data/missing"),
        ({"op": "copy", "from": "/nope", "path": "/data/x"}, "copy operation does not apply: doc is missing from path: /nope"),
        ({"op": "test", "path": "/data/password", "value": "guess"}, "testing value /data/password failed: test failed"),
        ({"op": "bogus", "path": "/data"}, "Unexpected kind: bogus"),
        ({"op": SECRET_VALUE, "path": "/data"}, "Unexpected kind: <string>"),
        ({"path": "/data"}, "Unexpected kind: <null>"),
        ({"op": "add", "value": 1}, "add operation failed to decode path"),
        ({"op": "move", "path": "/data/x"}, "move operation failed to decode from"),
        ({"op": "replace", "path": "/data/password"}, "missing value field"),
    ],
)
def test_json_patch_failures_are_422_and_never_echo_the_document(op, message):
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}, "data": {"password": SECRET_VALUE}}
    with pytest.raises(PatchError) as excinfo:
        json_patch(secret, [op])
    assert_error(excinfo, 422, message)


@pytest.mark.parametrize("body", [b"", b"[", b'[{"op":"add","path":"/a","value":NaN}]', b"\xff\xfe[]", b"[" * 100000])
def test_json_patch_invalid_json_is_400(body):
    with pytest.raises(PatchError) as excinfo:
        apply_patch(deployment(), body, JSON_PATCH)
    assert excinfo.value.code == 400
    assert excinfo.value.message == "invalid JSON patch"


def test_json_patch_must_be_an_array():
    with pytest.raises(PatchError) as excinfo:
        apply_patch(deployment(), b'{"op":"add","path":"/a","value":1}', JSON_PATCH)
    assert_error(excinfo, 400, "cannot unmarshal object into Go value of type jsonpatch.Patch")


def test_json_patch_operations_must_be_objects():
    with pytest.raises(PatchError) as excinfo:
        apply_patch(deployment(), b'[{"op":"test","path":"/kind","value":"Deployment"}, "remove"]', JSON_PATCH)
    assert_error(excinfo, 400, "cannot unmarshal string into Go value of type jsonpatch.Operation")


def test_json_patch_null_or_empty_list_changes_nothing():
    assert apply_patch(deployment(), b"null", JSON_PATCH) == deployment()
    assert apply_patch(deployment(), b"[]", JSON_PATCH) == deployment()


def test_json_patch_operation_limit_is_413():
    ops = [{"op": "test", "path": "/kind", "value": "Deployment"}] * 10001
    with pytest.raises(PatchError) as excinfo:
        json_patch(deployment(), ops)
    assert_error(excinfo, 413, "The allowed maximum operations in a JSON patch is 10000, got 10001")


def test_json_patch_that_replaces_the_root_with_a_non_object_is_422():
    with pytest.raises(PatchError) as excinfo:
        json_patch(deployment(), [{"op": "replace", "path": "", "value": [1, 2]}])
    assert excinfo.value.code == 422


# --- JSON merge patch (RFC 7386) -----------------------------------------------------------


def scale():
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {"name": "web", "namespace": "default", "resourceVersion": "1001"},
        "spec": {"replicas": 2},
        "status": {"replicas": 2, "selector": "app=web"},
    }


def test_kubectl_scale_merge_patch_on_the_scale_subresource():
    result = apply_patch(scale(), b'{"spec":{"replicas":5}}', MERGE_PATCH)
    assert result == {**scale(), "spec": {"replicas": 5}}


def test_kubectl_label_and_unlabel():
    labeled = apply_patch(deployment(), b'{"metadata":{"labels":{"tier":"frontend"}}}', MERGE_PATCH + "; charset=utf-8")
    assert labeled["metadata"]["labels"] == {"app": "web", "tier": "frontend"}
    unlabeled = apply_patch(labeled, b'{"metadata":{"labels":{"tier":null}}}', MERGE_PATCH)
    assert unlabeled["metadata"]["labels"] == {"app": "web"}
    assert unlabeled == deployment()


def test_kubectl_annotate():
    result = apply_patch(deployment(), b'{"metadata":{"annotations":{"note":"hello"}}}', MERGE_PATCH)
    assert result["metadata"]["annotations"] == {LAST_APPLIED: '{"kind":"Deployment"}\n', "note": "hello"}


def test_merge_patch_replaces_lists_and_prunes_nulls_in_new_values():
    result = apply_patch(
        deployment(),
        json.dumps(
            {
                "spec": {
                    "template": {"spec": {"containers": [{"name": "only", "image": "x", "args": None}]}},
                    "strategy": "not-an-object",
                    "paused": {"a": None, "b": {"c": None, "d": 1}},
                },
                "status": None,
                "missing": None,
            }
        ).encode(),
        MERGE_PATCH,
    )
    assert containers(result) == [{"name": "only", "image": "x"}]
    assert result["spec"]["strategy"] == "not-an-object"
    assert result["spec"]["paused"] == {"b": {"d": 1}}
    assert "status" not in result and "missing" not in result
    assert result["spec"]["template"]["spec"]["tolerations"] == [{"key": "a", "operator": "Exists"}]


def test_merge_patch_object_replaces_a_scalar():
    result = apply_patch({"a": "x"}, b'{"a":{"b":1,"c":null}}', MERGE_PATCH)
    assert result == {"a": {"b": 1}}


@pytest.mark.parametrize("body", [b"null", b"5", b'"x"', b"true"])
def test_merge_patch_must_be_an_object(body):
    with pytest.raises(PatchError) as excinfo:
        apply_patch(deployment(), body, MERGE_PATCH)
    assert excinfo.value.code == 400
    assert excinfo.value.message == "Invalid JSON Patch"


def test_merge_patch_array_would_replace_the_object_and_is_422():
    with pytest.raises(PatchError) as excinfo:
        apply_patch(deployment(), b"[1,2]", MERGE_PATCH)
    assert excinfo.value.code == 422


def test_merge_patch_invalid_json_is_400():
    with pytest.raises(PatchError) as excinfo:
        apply_patch(deployment(), b'{"spec":', MERGE_PATCH)
    assert excinfo.value.code == 400
    assert excinfo.value.message == "invalid JSON patch"


# --- strategic merge patch: real kubectl bodies --------------------------------------------

CLIENT_SIDE_APPLY = (
    b'{"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\\"apiVersion\\":\\"apps/v1\\",'
    b'\\"kind\\":\\"Deployment\\",\\"metadata\\":{\\"annotations\\":{},\\"labels\\":{\\"app\\":\\"web\\"},\\"name\\":\\"web\\",'
    b'\\"namespace\\":\\"default\\"},\\"spec\\":{\\"replicas\\":3}}\\n"}},"spec":{"replicas":3,"template":{"spec":'
    b'{"$setElementOrder/containers":[{"name":"web"},{"name":"side"}],"containers":[{"$setElementOrder/env":'
    b'[{"name":"A"}],"env":[{"$patch":"delete","name":"B"}],"image":"nginx:1.26","name":"web"}]}}}}'
)


def test_kubectl_client_side_apply_patch():
    result = apply_patch(deployment(), CLIENT_SIDE_APPLY, STRATEGIC_MERGE_PATCH)
    assert result["spec"]["replicas"] == 3
    assert containers(result) == [
        {"name": "web", "image": "nginx:1.26", "env": [{"name": "A", "value": "1"}], "ports": [{"containerPort": 80, "protocol": "TCP"}]},
        {"name": "side", "image": "busybox:1.36"},
    ]
    last_applied = json.loads(result["metadata"]["annotations"][LAST_APPLIED])
    assert last_applied["spec"] == {"replicas": 3}
    assert result["metadata"]["labels"] == {"app": "web"}
    assert result["status"] == deployment()["status"]
    assert "$setElementOrder/containers" not in json.dumps(result)


def test_kubectl_client_side_apply_with_finalizers_retain_keys_and_a_removed_container():
    live = deployment()
    live["metadata"]["finalizers"] = ["example.com/a", "example.com/b"]
    live["spec"]["template"]["spec"]["volumes"] = [{"name": "data", "emptyDir": {}}]
    body = (
        b'{"metadata":{"$deleteFromPrimitiveList/finalizers":["example.com/a"],"$setElementOrder/finalizers":["example.com/b"],'
        b'"annotations":{}},"spec":{"strategy":{"$retainKeys":["type"],"rollingUpdate":null,"type":"Recreate"},"template":'
        b'{"spec":{"$setElementOrder/containers":[{"name":"web"}],"$setElementOrder/volumes":[{"name":"data"}],"containers":'
        b'[{"$patch":"delete","name":"side"}],"volumes":[{"$retainKeys":["configMap","name"],"configMap":{"name":"cfg"},'
        b'"emptyDir":null,"name":"data"}]}}}}'
    )
    result = apply_patch(live, body, STRATEGIC_MERGE_PATCH)
    assert result["metadata"]["finalizers"] == ["example.com/b"]
    assert result["metadata"]["annotations"] == live["metadata"]["annotations"]
    assert result["spec"]["strategy"] == {"type": "Recreate"}
    assert [c["name"] for c in containers(result)] == ["web"]
    assert result["spec"]["template"]["spec"]["volumes"] == [{"name": "data", "configMap": {"name": "cfg"}}]


def test_kubectl_client_side_apply_to_service_ports_merges_by_port():
    live = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "clusterIP": "10.96.0.10",
            "selector": {"app": "web"},
            "ports": [
                {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
                {"name": "metrics", "port": 9090, "protocol": "TCP", "targetPort": 9090},
            ],
        },
    }
    body = (
        b'{"metadata":{"annotations":{}},"spec":{"$setElementOrder/ports":[{"port":443},{"port":80}],"ports":'
        b'[{"name":"https","port":443,"targetPort":8443},{"port":80,"targetPort":8081},{"$patch":"delete","port":9090}]}}'
    )
    result = apply_patch(live, body, STRATEGIC_MERGE_PATCH)
    assert result["spec"]["ports"] == [
        {"name": "https", "port": 443, "targetPort": 8443},
        {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8081},
    ]
    assert result["spec"]["clusterIP"] == "10.96.0.10"


def test_kubectl_set_image():
    body = b'{"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"web"},{"name":"side"}],"containers":[{"image":"nginx:1.27","name":"web"}]}}}}'
    result = apply_patch(deployment(), body, STRATEGIC_MERGE_PATCH)
    expected = deployment()
    containers(expected)[0]["image"] = "nginx:1.27"
    assert result == expected


def test_kubectl_rollout_restart():
    body = b'{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":"2026-11-26T22:12:40Z"}}}}}'
    result = apply_patch(deployment(), body, STRATEGIC_MERGE_PATCH)
    assert result["spec"]["template"]["metadata"] == {
        "labels": {"app": "web"},
        "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-26T22:12:40Z"},
    }


def test_kubectl_edit():
    body = (
        b'{"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{}\\n"}},"spec":{"replicas":6,'
        b'"template":{"spec":{"$setElementOrder/containers":[{"name":"web"},{"name":"side"}],"containers":'
        b'[{"image":"busybox:1.37","name":"side"}]}}}}'
    )
    result = apply_patch(deployment(), body, STRATEGIC_MERGE_PATCH)
    assert result["spec"]["replicas"] == 6
    assert [(c["name"], c["image"]) for c in containers(result)] == [("web", "nginx:1.25"), ("side", "busybox:1.37")]
    assert result["metadata"]["annotations"][LAST_APPLIED] == "{}\n"


# --- strategic merge patch: semantics and directives ----------------------------------------


def test_smp_null_deletes_a_key_and_maps_merge_recursively():
    result = smp(deployment(), {"metadata": {"labels": {"app": None, "tier": "db"}}, "spec": {"strategy": None}})
    assert result["metadata"]["labels"] == {"tier": "db"}
    assert "strategy" not in result["spec"]


def test_smp_replaces_lists_without_a_merge_key():
    result = smp(deployment(), {"spec": {"template": {"spec": {"tolerations": [{"key": "b", "operator": "Exists", "value": None}]}}}})
    assert result["spec"]["template"]["spec"]["tolerations"] == [{"key": "b", "operator": "Exists"}]


def test_smp_new_list_items_come_first_like_kube_apiserver():
    result = smp(deployment(), {"spec": {"template": {"spec": {"containers": [{"name": "new", "image": "x"}]}}}})
    assert [c["name"] for c in containers(result)] == ["new", "web", "side"]


def test_smp_merges_env_ports_and_volume_mounts_by_their_keys():
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "env": [{"name": "B", "value": "20"}],
                            "ports": [{"containerPort": 80, "name": "http"}],
                            "volumeMounts": [{"mountPath": "/data", "name": "data"}],
                        }
                    ]
                }
            }
        }
    }
    web = containers(smp(deployment(), patch))[0]
    assert web["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "20"}]
    assert web["ports"] == [{"containerPort": 80, "protocol": "TCP", "name": "http"}]
    assert web["volumeMounts"] == [{"mountPath": "/data", "name": "data"}]


def test_smp_set_element_order_reorders_without_other_changes():
    result = smp(deployment(), {"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "side"}, {"name": "web"}]}}}})
    assert [c["name"] for c in containers(result)] == ["side", "web"]
    assert containers(result)[1] == containers(deployment())[0]


def test_smp_set_element_order_keeps_live_only_items_after_ordered_ones():
    live = deployment()
    containers(live).append({"name": "injected", "image": "proxy"})
    result = smp(live, {"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "web"}, {"name": "extra"}], "containers": [{"name": "extra", "image": "e"}]}}}})
    assert [c["name"] for c in containers(result)] == ["web", "extra", "side", "injected"]


def test_smp_set_element_order_infers_the_merge_key_of_lists_missing_from_the_table():
    live = {"spec": {"widgets": [{"id": "a", "v": 1}, {"id": "b", "v": 2}]}}
    result = smp(live, {"spec": {"$setElementOrder/widgets": [{"id": "b"}, {"id": "a"}], "widgets": [{"id": "a", "v": 10}]}})
    assert result["spec"]["widgets"] == [{"id": "b", "v": 2}, {"id": "a", "v": 10}]


def test_smp_delete_directive_infers_the_merge_key_of_lists_missing_from_the_table():
    live = {"spec": {"widgets": [{"id": "a"}, {"id": "b"}]}}
    assert smp(live, {"spec": {"widgets": [{"$patch": "delete", "id": "a"}]}})["spec"]["widgets"] == [{"id": "b"}]


def test_smp_set_element_order_that_contradicts_the_patch_list_is_400():
    with pytest.raises(PatchError) as excinfo:
        smp(deployment(), {"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "web"}], "containers": [{"name": "side", "image": "x"}]}}}})
    assert_error(excinfo, 400, "doesn't match the $setElementOrder list", ".spec.template.spec.containers")


def test_smp_scalar_merge_list_union_and_delete():
    live = {"metadata": {"finalizers": ["a", "b"]}}
    assert smp(live, {"metadata": {"finalizers": ["c", "a"]}})["metadata"]["finalizers"] == ["c", "a", "b"]
    assert smp(live, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a", "zzz"]}})["metadata"]["finalizers"] == ["b"]
    assert smp(live, {"metadata": {"finalizers": []}})["metadata"]["finalizers"] == ["a", "b"]
    assert smp(live, {"metadata": {"finalizers": None}})["metadata"] == {}


def test_smp_patch_replace_on_a_map_and_on_a_list():
    replaced_map = smp(deployment(), {"spec": {"strategy": {"$patch": "replace", "type": "Recreate"}}})
    assert replaced_map["spec"]["strategy"] == {"type": "Recreate"}
    body = {"spec": {"template": {"spec": {"containers": [{"name": "only", "image": "x"}, {"$patch": "replace"}]}}}}
    assert containers(smp(deployment(), body)) == [{"name": "only", "image": "x"}]


def test_smp_patch_delete_on_a_map_empties_it_and_drops_absent_keys():
    result = smp(deployment(), {"spec": {"strategy": {"$patch": "delete"}, "absent": {"$patch": "delete"}}})
    assert result["spec"]["strategy"] == {}
    assert "absent" not in result["spec"]


def test_smp_patch_merge_is_the_explicit_default():
    result = smp(deployment(), {"spec": {"strategy": {"$patch": "merge", "type": "Recreate"}}})
    assert result["spec"]["strategy"] == {"type": "Recreate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}
    result = smp(deployment(), {"spec": {"template": {"spec": {"containers": [{"$patch": "merge"}, {"name": "web", "image": "y"}]}}}})
    assert [c["image"] for c in containers(result)] == ["y", "busybox:1.36"]


def test_smp_new_values_are_cleaned_of_directives_and_nulls():
    body = {"spec": {"template": {"spec": {"containers": [{"name": "new", "image": "x", "args": None, "$setElementOrder/env": [{"name": "E"}], "env": [{"name": "E", "value": "1"}, {"$patch": "delete", "name": "F"}]}]}}}}
    assert containers(smp(deployment(), body))[0] == {"name": "new", "image": "x", "env": [{"name": "E", "value": "1"}]}


def test_smp_retain_keys_must_list_every_patched_key():
    with pytest.raises(PatchError) as excinfo:
        smp(deployment(), {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": {"maxSurge": 1}}}})
    assert_error(excinfo, 400)
    assert excinfo.value.message == "invalid patch format of retainKeys"


@pytest.mark.parametrize(
    "body, message",
    [
        ({"spec": {"strategy": {"$patch": "explode"}}}, "unknown patch type: explode in map at .spec.strategy"),
        ({"spec": {"template": {"spec": {"containers": [{"$patch": 7}]}}}}, "unknown patch type: <number> in list"),
        ({"spec": {"strategy": {"$patch": SECRET_VALUE}}}, "unknown patch type: <string> in map"),
        ({"spec": {"$retainKeys": "type"}}, "invalid patch format of retainKeys"),
        ({"spec": {"$setElementOrder": [{"name": "web"}]}}, "invalid patch format of setElementOrder list"),
        ({"spec": {"$setElementOrder/containers": {"name": "web"}}}, "invalid patch format of setElementOrder list"),
        ({"spec": {"template": {"spec": {"$setElementOrder/containers": ["web"]}}}}, "invalid patch format of setElementOrder list"),
        ({"metadata": {"$deleteFromPrimitiveList/": ["a"]}}, "invalid patch format of primitive list"),
        ({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}, "invalid patch format of primitive list"),
        ({"metadata": {"$deleteFromPrimitiveList/finalizers": [{"a": 1}]}}, "invalid patch format of primitive list"),
        ({"spec": {"$frobnicate": 1}}, "unknown directive $frobnicate at .spec"),
    ],
)
def test_smp_malformed_directives_are_400(body, message):
    with pytest.raises(PatchError) as excinfo:
        smp(deployment(), body)
    assert_error(excinfo, 400, message)


def test_smp_list_item_without_its_merge_key_is_422_and_does_not_echo_values():
    body = {"spec": {"template": {"spec": {"containers": [{"name": "web", "env": [{"value": SECRET_VALUE}]}]}}}}
    with pytest.raises(PatchError) as excinfo:
        smp(deployment(), body)
    assert_error(excinfo, 422, "map does not contain declared merge key: name at .spec.template.spec.containers.env")


def test_smp_mixed_list_element_types_are_422():
    with pytest.raises(PatchError) as excinfo:
        smp(deployment(), {"spec": {"template": {"spec": {"containers": ["web"]}}}})
    assert_error(excinfo, 422, "list element types are not identical")
    with pytest.raises(PatchError) as excinfo:
        smp({"metadata": {"finalizers": ["a"]}}, {"metadata": {"finalizers": [{"a": 1}]}})
    assert excinfo.value.code == 422


def test_smp_type_change_replaces_the_value():
    result = smp(deployment(), {"spec": {"selector": "app=web", "template": {"spec": {"containers": {"web": 1}}}}})
    assert result["spec"]["selector"] == "app=web"
    assert containers(result) == {"web": 1}


@pytest.mark.parametrize("body, kind", [(b"[]", "array"), (b'"x"', "string"), (b"1", "number"), (b"true", "bool")])
def test_smp_body_must_be_an_object(body, kind):
    with pytest.raises(PatchError) as excinfo:
        apply_patch(deployment(), body, STRATEGIC_MERGE_PATCH)
    assert_error(excinfo, 400, f"json: cannot unmarshal {kind} into Go value of type map[string]interface {{}}")


def test_smp_null_body_changes_nothing():
    assert apply_patch(deployment(), b"null", STRATEGIC_MERGE_PATCH) == deployment()


def test_smp_root_replace():
    result = smp(deployment(), {"$patch": "replace", "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}})
    assert result == {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}}


def test_deeply_nested_patch_is_rejected_not_crashed():
    body = b'{"a":' * 5000 + b"1" + b"}" * 5000
    with pytest.raises(PatchError) as excinfo:
        apply_patch({}, body, STRATEGIC_MERGE_PATCH)
    assert excinfo.value.code in (400, 422)


# --- merge key table ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, key",
    [
        (("spec", "containers"), "name"),
        (("spec", "initContainers"), "name"),
        (("spec", "ephemeralContainers"), "name"),
        (("spec", "template", "spec", "containers"), "name"),
        (("spec", "jobTemplate", "spec", "template", "spec", "initContainers"), "name"),
        (("spec", "containers", "env"), "name"),
        (("spec", "containers", "ports"), "containerPort"),
        (("spec", "template", "spec", "ephemeralContainers", "ports"), "containerPort"),
        (("spec", "containers", "volumeMounts"), "mountPath"),
        (("spec", "containers", "volumeDevices"), "devicePath"),
        (("spec", "volumes"), "name"),
        (("spec", "template", "spec", "imagePullSecrets"), "name"),
        (("spec", "hostAliases"), "ip"),
        (("spec", "topologySpreadConstraints"), "topologyKey"),
        (("spec", "ports"), "port"),
        (("status", "conditions"), "type"),
        (("status", "addresses"), "type"),
        (("metadata", "ownerReferences"), "uid"),
        (("spec", "template", "metadata", "ownerReferences"), "uid"),
        (("secrets",), "name"),
        (("spec", "tolerations"), None),
        (("spec", "containers", "args"), None),
        (("spec", "containers", "envFrom"), None),
        (("imagePullSecrets",), None),
        (("spec", "externalIPs"), None),
        (("spec", "ingress", "ports"), None),
        (("metadata", "finalizers"), None),
        ((), None),
    ],
)
def test_merge_key_table(path, key):
    assert merge_key(path) == key


# --- server-side apply (application/apply-patch+yaml) ---------------------------------------

SERVER_SIDE_APPLY = (
    b'{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"labels":{"app":"web"},"name":"web","namespace":"default"},'
    b'"spec":{"replicas":3,"selector":{"matchLabels":{"app":"web"}},"template":{"metadata":{"labels":{"app":"web"}},'
    b'"spec":{"containers":[{"env":[{"name":"A","value":"1"}],"image":"nginx:1.26","name":"web","ports":'
    b'[{"containerPort":80}]},{"image":"busybox:1.36","name":"side"}]}}}}\n'
)


def test_kubectl_server_side_apply_body_merges_into_the_live_object():
    result = apply_patch(deployment(), SERVER_SIDE_APPLY, APPLY_PATCH)
    assert result["spec"]["replicas"] == 3
    web = containers(result)[0]
    assert web["image"] == "nginx:1.26"
    # No ownership tracking: env B, set by an earlier client-side apply, is kept.
    assert web["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    assert web["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert result["status"] == deployment()["status"]
    assert result["metadata"]["uid"] == deployment()["metadata"]["uid"]


def test_server_side_apply_yaml_creates_from_an_empty_object():
    body = b"""
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: default
  annotations:
    deployed: 2026-11-26T22:00:00Z
data:
  enabled: "true"
  when: 2026-11-26
  count: "3"
"""
    result = apply_patch({}, body, APPLY_PATCH)
    assert result == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "default", "annotations": {"deployed": "2026-11-26T22:00:00Z"}},
        "data": {"enabled": "true", "when": "2026-11-26", "count": "3"},
    }


def test_server_side_apply_ignores_nulls_and_treats_dollar_keys_as_data():
    live = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}}
    result = apply_patch(live, b'{"apiVersion":"v1","kind":"ConfigMap","data":{"a":null,"$patch":"delete"}}', APPLY_PATCH)
    assert result["data"] == {"a": "1", "$patch": "delete"}


def test_server_side_apply_merges_finalizers_and_replaces_atomic_lists():
    live = deployment()
    live["metadata"]["finalizers"] = ["a"]
    body = b"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  finalizers: [b]\nspec:\n  template:\n    spec:\n      tolerations: []\n"
    result = apply_patch(live, body, APPLY_PATCH)
    assert result["metadata"]["finalizers"] == ["b", "a"]
    assert result["spec"]["template"]["spec"]["tolerations"] == []


@pytest.mark.parametrize(
    "body, message",
    [
        (b"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  managedFields: [{manager: x}]\n", "metadata.managedFields must be nil"),
        (b"apiVersion: apps/v1beta1\nkind: Deployment\n", "Incorrect version specified in apply patch. Specified patch version: apps/v1beta1, expected: apps/v1"),
        (b"kind: Deployment\n", "Specified patch version: , expected: apps/v1"),
        (b"apiVersion: apps/v1\nkind: StatefulSet\n", "Incorrect kind specified in apply patch. Specified patch kind: StatefulSet, expected: Deployment"),
        (b"- a\n- b\n", "error decoding patch: json: cannot unmarshal array into Go value of type map[string]interface {}"),
        (b"", "error decoding patch: json: cannot unmarshal null"),
        (b"a: 1\n---\nb: 2\n", "error decoding patch: yaml: line 2: but found another document"),
        (b"a: !!binary aGVsbG8=\n", "cannot be represented in JSON"),
        (b"a: .inf\n", "cannot be represented in JSON"),
        (b"? [a, b]\n: c\n", "error decoding patch: yaml:"),
        (b"\xff\xfe", "invalid UTF-8"),
    ],
)
def test_server_side_apply_errors_are_400(body, message):
    with pytest.raises(PatchError) as excinfo:
        apply_patch(deployment(), body, APPLY_PATCH)
    assert_error(excinfo, 400, message)


def test_server_side_apply_yaml_errors_do_not_quote_the_document():
    body = f"apiVersion: v1\nkind: Secret\nstringData:\n  password: {SECRET_VALUE}\n\tbroken: [\n".encode()
    with pytest.raises(PatchError) as excinfo:
        apply_patch({}, body, APPLY_PATCH)
    assert_error(excinfo, 400, "error decoding patch: yaml: line 5")


def test_server_side_apply_rejects_alias_bombs():
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 9):
        refs = ", ".join([f"*a{level - 1}"] * 10)
        lines.append(f"a{level}: &a{level} [{refs}]")
    with pytest.raises(PatchError) as excinfo:
        apply_patch({}, "\n".join(lines).encode(), APPLY_PATCH)
    assert_error(excinfo, 400, "excessive aliasing")


def test_server_side_apply_allows_modest_anchors():
    body = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  labels: &l {app: web}\n  annotations: *l\n"
    result = apply_patch({}, body, APPLY_PATCH)
    assert result["metadata"] == {"labels": {"app": "web"}, "annotations": {"app": "web"}}
    result["metadata"]["labels"]["app"] = "changed"
    assert result["metadata"]["annotations"] == {"app": "web"}


def test_server_side_apply_stringifies_scalar_keys_like_yaml_to_json():
    result = apply_patch({}, b"apiVersion: v1\nkind: ConfigMap\ndata:\n  1: one\n  true: yes\n  ~: none\n", APPLY_PATCH)
    assert result["data"] == {"1": "one", "true": True, "null": "none"}
