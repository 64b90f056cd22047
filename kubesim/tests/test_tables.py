"""Tests of kubesim.tables: Table columns and cells per resource, row objects, PartialObjectMetadata."""

import copy
import json
from datetime import datetime, timedelta, timezone

import pytest

from kubesim.tables import (
    TableError,
    format_label_selector,
    human_duration,
    parse_time,
    to_partial_object_metadata,
    to_partial_object_metadata_list,
    to_table,
)

NOW = datetime(2026, 11, 26, 22, 0, 0, tzinfo=timezone.utc)


def ago(**delta) -> str:
    return (NOW - timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


def meta(name="x", **extra):
    return {"name": name, "namespace": "default", "creationTimestamp": ago(minutes=5), **extra}


def cells(obj, resource, group=""):
    return to_table([obj], resource, group, now=NOW)["rows"][0]["cells"]


def column_names(resource, group=""):
    return [(c["name"], c["type"], c["priority"]) for c in to_table([], resource, group)["columnDefinitions"]]


# --- durations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "delta, expected",
    [
        (timedelta(seconds=-5), "<invalid>"),
        (timedelta(seconds=-2), "<invalid>"),
        (timedelta(seconds=-1.5), "0s"),
        (timedelta(seconds=0), "0s"),
        (timedelta(seconds=59), "59s"),
        (timedelta(seconds=119, milliseconds=900), "119s"),
        (timedelta(minutes=2), "2m"),
        (timedelta(minutes=2, seconds=30), "2m30s"),
        (timedelta(minutes=9, seconds=59), "9m59s"),
        (timedelta(minutes=10, seconds=30), "10m"),
        (timedelta(minutes=179), "179m"),
        (timedelta(hours=3), "3h"),
        (timedelta(hours=3, minutes=5), "3h5m"),
        (timedelta(hours=7, minutes=59), "7h59m"),
        (timedelta(hours=8, minutes=30), "8h"),
        (timedelta(hours=47), "47h"),
        (timedelta(hours=48), "2d"),
        (timedelta(days=2, hours=3), "2d3h"),
        (timedelta(days=7, hours=23), "7d23h"),
        (timedelta(days=8, hours=5), "8d"),
        (timedelta(days=729), "729d"),
        (timedelta(days=730), "2y"),
        (timedelta(days=731), "2y1d"),
        (timedelta(days=365 * 8), "8y"),
        (timedelta(days=365 * 30 + 100), "30y"),
    ],
)
def test_human_duration_matches_apimachinery(delta, expected):
    assert human_duration(delta) == expected


@pytest.mark.parametrize(
    "value, expected",
    [
        ("2026-11-26T22:00:00Z", NOW),
        ("2026-11-26T22:00:00.123456Z", NOW + timedelta(microseconds=123456)),
        ("2026-11-26T23:00:00+01:00", NOW),
        ("2026-11-26T22:00:00", NOW),
        ("yesterday", None),
        ("", None),
        (None, None),
        (12, None),
    ],
)
def test_parse_time(value, expected):
    assert parse_time(value) == expected


def test_age_uses_the_real_clock_by_default():
    table = to_table([{"metadata": {"name": "old", "creationTimestamp": "1990-01-01T00:00:00Z"}}], "configmaps", "")
    assert table["rows"][0]["cells"][2].endswith("y")


# --- table envelope and row objects ---------------------------------------------------------


def secret_with_metadata():
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta(
            "db",
            uid="u-1",
            resourceVersion="77",
            labels={"app": "db"},
            annotations={"kubectl.kubernetes.io/last-applied-configuration": '{"stringData":{"password":"s3cret"}}'},
            managedFields=[{"manager": "kubectl-client-side-apply", "operation": "Update", "fieldsV1": {"f:data": {"f:password": {}}}}],
        ),
        "type": "Opaque",
        "data": {"password": "czNjcmV0"},
    }


def test_table_envelope_with_list_meta():
    table = to_table(
        [secret_with_metadata()],
        "secrets",
        "",
        list_meta={"resourceVersion": "900", "continue": "tok", "remainingItemCount": 0, "kind": "ignored"},
        now=NOW,
    )
    assert table["kind"] == "Table"
    assert table["apiVersion"] == "meta.k8s.io/v1"
    assert table["metadata"] == {"resourceVersion": "900", "continue": "tok", "remainingItemCount": 0}
    assert list(table) == ["kind", "apiVersion", "metadata", "columnDefinitions", "rows"]
    json.dumps(table)


def test_table_metadata_is_empty_without_list_meta():
    assert to_table([], "pods", "")["metadata"] == {}
    assert to_table([], "pods", "", list_meta={"resourceVersion": "", "continue": ""})["metadata"] == {}


@pytest.mark.parametrize("include_object", ["Metadata", ""])
def test_rows_carry_partial_object_metadata_by_default(include_object):
    secret = secret_with_metadata()
    table = to_table([secret], "secrets", "", include_object=include_object, now=NOW)
    row = table["rows"][0]
    assert row["cells"] == ["db", "Opaque", 1, "5m"]
    assert row["object"] == {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": secret["metadata"]}
    assert "last-applied-configuration" in json.dumps(row["object"])
    assert row["object"]["metadata"]["managedFields"] == secret["metadata"]["managedFields"]
    assert "data" not in row["object"]
    row["object"]["metadata"]["labels"]["app"] = "changed"
    assert secret["metadata"]["labels"] == {"app": "db"}


def test_include_object_object_embeds_a_copy_of_the_whole_object():
    secret = secret_with_metadata()
    row = to_table([secret], "secrets", "", include_object="Object", now=NOW)["rows"][0]
    assert row["object"] == secret
    row["object"]["data"]["password"] = "changed"
    assert secret["data"]["password"] == "czNjcmV0"


def test_include_object_none_gives_a_null_object():
    row = to_table([secret_with_metadata()], "secrets", "", include_object="None", now=NOW)["rows"][0]
    assert row == {"cells": ["db", "Opaque", 1, "5m"], "object": None}


@pytest.mark.parametrize("include_object", ["metadata", "All", "none"])
def test_unknown_include_object_is_400(include_object):
    with pytest.raises(TableError) as excinfo:
        to_table([], "pods", "", include_object=include_object)
    assert excinfo.value.code == 400
    assert excinfo.value.message == f'unrecognized includeObject value: "{include_object}"'


def test_table_does_not_mutate_its_input():
    objects = [secret_with_metadata()]
    before = copy.deepcopy(objects)
    table = to_table(objects, "secrets", "", include_object="Object", now=NOW)
    table["columnDefinitions"][0]["name"] = "changed"
    assert objects == before
    assert to_table([], "secrets", "")["columnDefinitions"][0]["name"] == "Name"


def test_every_column_definition_has_all_fields():
    for resource, group in [("pods", ""), ("deployments", "apps"), ("events", ""), ("widgets", "example.com")]:
        for column in to_table([], resource, group)["columnDefinitions"]:
            assert set(column) == {"name", "type", "format", "description", "priority"}
            assert column["description"]


# --- fallback (default table convertor) ------------------------------------------------------


def test_fallback_columns_and_cells():
    table = to_table(
        [
            {"metadata": {"name": "reader", "creationTimestamp": "2026-11-26T23:30:15.5+01:00"}},
            {"metadata": {"name": "undated"}},
        ],
        "roles",
        "rbac.authorization.k8s.io",
        now=NOW,
    )
    assert [(c["name"], c["type"], c["format"], c["priority"]) for c in table["columnDefinitions"]] == [
        ("Name", "string", "name", 0),
        ("Created At", "date", "", 0),
    ]
    assert table["columnDefinitions"][1]["description"].startswith("CreationTimestamp is a timestamp")
    assert [row["cells"] for row in table["rows"]] == [["reader", "2026-11-26T22:30:15Z"], ["undated", "0001-01-01T00:00:00Z"]]


def test_fallback_also_covers_known_resources_in_other_groups():
    assert column_names("pods", "example.com") == [("Name", "string", 0), ("Created At", "date", 0)]


def test_empty_rows_are_a_list_for_printers_and_null_for_the_default_convertor():
    assert to_table([], "pods", "")["rows"] == []
    assert to_table([], "widgets", "example.com")["rows"] is None


# --- pods --------------------------------------------------------------------------------------


def test_pod_columns():
    assert column_names("pods") == [
        ("Name", "string", 0),
        ("Ready", "string", 0),
        ("Status", "string", 0),
        ("Restarts", "string", 0),
        ("Age", "string", 0),
        ("IP", "string", 1),
        ("Node", "string", 1),
        ("Nominated Node", "string", 1),
        ("Readiness Gates", "string", 1),
    ]
    assert to_table([], "pods", "")["columnDefinitions"][0]["format"] == "name"


def running(name="c", ready=True, restarts=0, finished=None):
    status = {"name": name, "ready": ready, "restartCount": restarts, "state": {"running": {"startedAt": ago(minutes=4)}}}
    if finished:
        status["lastState"] = {"terminated": {"exitCode": 1, "finishedAt": finished}}
    return status


def pod(status, spec=None, **metadata):
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta("web", **metadata),
        "spec": spec or {"containers": [{"name": "c", "image": "nginx"}]},
        "status": status,
    }


def test_running_pod_cells():
    obj = pod(
        {
            "phase": "Running",
            "podIP": "10.0.0.9",
            "podIPs": [{"ip": "10.0.0.9"}, {"ip": "fd00::9"}],
            "nominatedNodeName": "node-b",
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "example.com/lb", "status": "False"}],
            "containerStatuses": [running(restarts=3, finished=ago(minutes=2))],
        },
        {"nodeName": "node-a", "containers": [{"name": "c"}], "readinessGates": [{"conditionType": "example.com/lb"}]},
    )
    table = to_table([obj], "pods", "", now=NOW)
    assert table["rows"][0]["cells"] == ["web", "1/1", "Running", "3 (2m ago)", "5m", "10.0.0.9", "node-a", "node-b", "0/1"]
    assert "conditions" not in table["rows"][0]


def test_pending_pod_without_anything_set():
    obj = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]}, "status": {"phase": "Pending", "podIP": "10.0.0.1"}}
    assert cells(obj, "pods") == ["p", "0/2", "Pending", "0", "<unknown>", "10.0.0.1", "<none>", "<none>", "<none>"]


@pytest.mark.parametrize(
    "container_statuses, conditions, expected",
    [
        ([{"name": "c", "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "restartCount": 4}], [], ("0/1", "CrashLoopBackOff", "4")),
        ([{"name": "c", "state": {"waiting": {"reason": "ImagePullBackOff"}}}], [], ("0/1", "ImagePullBackOff", "0")),
        ([{"name": "c", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}], [], ("0/1", "OOMKilled", "0")),
        ([{"name": "c", "state": {"terminated": {"exitCode": 3}}}], [], ("0/1", "ExitCode:3", "0")),
        ([{"name": "c", "state": {"terminated": {"exitCode": 0, "signal": 9}}}], [], ("0/1", "Signal:9", "0")),
        ([running(), {"name": "d", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}], [{"type": "Ready", "status": "True"}], ("1/2", "Running", "0")),
        ([running(), {"name": "d", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}], [], ("1/2", "NotReady", "0")),
        ([running(ready=False)], [], ("0/1", "Running", "0")),
    ],
)
def test_pod_status_from_container_states(container_statuses, conditions, expected):
    spec = {"containers": [{"name": s["name"]} for s in container_statuses]}
    row = cells(pod({"phase": "Running", "conditions": conditions, "containerStatuses": container_statuses}, spec), "pods")
    assert (row[1], row[2], row[3]) == expected


@pytest.mark.parametrize(
    "init_statuses, expected_status",
    [
        ([{"name": "i1", "state": {"waiting": {"reason": "PodInitializing"}}}, {"name": "i2", "state": {"waiting": {}}}], "Init:0/2"),
        ([{"name": "i1", "state": {"terminated": {"exitCode": 0}}}, {"name": "i2", "state": {"running": {}}}], "Init:1/2"),
        ([{"name": "i1", "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "restartCount": 2}], "Init:CrashLoopBackOff"),
        ([{"name": "i1", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}], "Init:Error"),
        ([{"name": "i1", "state": {"terminated": {"exitCode": 2}}}], "Init:ExitCode:2"),
        ([{"name": "i1", "state": {"terminated": {"exitCode": 1, "signal": 15}}}], "Init:Signal:15"),
    ],
)
def test_pod_status_while_initializing(init_statuses, expected_status):
    spec = {"initContainers": [{"name": "i1"}, {"name": "i2"}], "containers": [{"name": "c"}]}
    status = {"phase": "Pending", "initContainerStatuses": init_statuses, "containerStatuses": [{"name": "c", "state": {"waiting": {"reason": "PodInitializing"}}}]}
    assert cells(pod(status, spec), "pods")[1:3] == ["0/1", expected_status]


def test_pod_restarts_while_initializing_count_init_containers():
    spec = {"initContainers": [{"name": "i1"}], "containers": [{"name": "c"}]}
    status = {
        "phase": "Pending",
        "initContainerStatuses": [{"name": "i1", "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {"finishedAt": ago(seconds=30)}}}],
        "containerStatuses": [{"name": "c", "restartCount": 9, "state": {"waiting": {"reason": "PodInitializing"}}}],
    }
    assert cells(pod(status, spec), "pods")[3] == "2 (30s ago)"


def test_pod_with_sidecar_counts_it_as_a_container():
    spec = {"initContainers": [{"name": "proxy", "restartPolicy": "Always"}], "containers": [{"name": "c"}]}
    status = {
        "phase": "Running",
        "conditions": [{"type": "Initialized", "status": "True"}],
        "initContainerStatuses": [{"name": "proxy", "started": True, "ready": True, "restartCount": 1, "state": {"running": {}}, "lastState": {"terminated": {"finishedAt": ago(minutes=3)}}}],
        "containerStatuses": [running(restarts=1, finished=ago(minutes=1))],
    }
    assert cells(pod(status, spec), "pods")[1:4] == ["2/2", "Running", "2 (60s ago)"]


@pytest.mark.parametrize(
    "status, metadata, expected",
    [
        ({"phase": "Running", "containerStatuses": [running()]}, {"deletionTimestamp": ago(seconds=5)}, "Terminating"),
        ({"phase": "Running", "reason": "NodeLost"}, {"deletionTimestamp": ago(seconds=5)}, "Unknown"),
        ({"phase": "Succeeded"}, {"deletionTimestamp": ago(seconds=5)}, "Succeeded"),
        ({"phase": "Failed", "reason": "Evicted"}, {}, "Evicted"),
        ({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}, {}, "SchedulingGated"),
    ],
)
def test_pod_status_special_cases(status, metadata, expected):
    assert cells(pod(status, **metadata), "pods")[2] == expected


@pytest.mark.parametrize(
    "phase, condition",
    [
        ("Succeeded", {"type": "Completed", "status": "True", "reason": "Succeeded", "message": "The pod has completed successfully."}),
        ("Failed", {"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}),
    ],
)
def test_finished_pods_carry_a_row_condition(phase, condition):
    row = to_table([pod({"phase": phase})], "pods", "", now=NOW)["rows"][0]
    assert row["conditions"] == [condition]


# --- workloads -------------------------------------------------------------------------------


def template(*containers):
    return {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": n, "image": i} for n, i in containers]}}


def test_deployment_columns_and_cells():
    assert column_names("deployments", "apps") == [
        ("Name", "string", 0),
        ("Ready", "string", 0),
        ("Up-to-date", "string", 0),
        ("Available", "string", 0),
        ("Age", "string", 0),
        ("Containers", "string", 1),
        ("Images", "string", 1),
        ("Selector", "string", 1),
    ]
    obj = {
        "metadata": meta("web"),
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web", "a": "1"}, "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["z", "b"]}, {"key": "canary", "operator": "DoesNotExist"}]},
            "template": template(("web", "nginx:1.25"), ("side", "busybox")),
        },
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
    }
    assert cells(obj, "deployments", "apps") == ["web", "2/3", 3, 2, "5m", "web,side", "nginx:1.25,busybox", "a=1,app=web,!canary,tier notin (b,z)"]


def test_deployment_defaults_and_invalid_selector():
    obj = {"metadata": meta("web"), "spec": {"selector": {"matchExpressions": [{"key": "x", "operator": "Near"}]}}}
    assert cells(obj, "deployments", "apps") == ["web", "0/1", 0, 0, "5m", "", "", "<invalid>"]


def test_replicaset_columns_and_cells():
    assert column_names("replicasets", "apps") == [
        ("Name", "string", 0),
        ("Desired", "integer", 0),
        ("Current", "integer", 0),
        ("Ready", "integer", 0),
        ("Age", "string", 0),
        ("Containers", "string", 1),
        ("Images", "string", 1),
        ("Selector", "string", 1),
    ]
    obj = {"metadata": meta("web-5d4f"), "spec": {"replicas": 3, "selector": {"matchLabels": {"pod-template-hash": "5d4f", "app": "web"}}, "template": template(("web", "nginx"))}, "status": {"replicas": 3, "readyReplicas": 1}}
    assert cells(obj, "replicasets", "apps") == ["web-5d4f", 3, 3, 1, "5m", "web", "nginx", "app=web,pod-template-hash=5d4f"]


def test_statefulset_columns_and_cells():
    assert column_names("statefulsets", "apps") == [("Name", "string", 0), ("Ready", "string", 0), ("Age", "string", 0), ("Containers", "string", 1), ("Images", "string", 1)]
    obj = {"metadata": meta("db"), "spec": {"replicas": 3, "template": template(("pg", "postgres:17"))}, "status": {"readyReplicas": 3}}
    assert cells(obj, "statefulsets", "apps") == ["db", "3/3", "5m", "pg", "postgres:17"]


def test_job_columns():
    assert column_names("jobs", "batch") == [
        ("Name", "string", 0),
        ("Status", "string", 0),
        ("Completions", "string", 0),
        ("Duration", "string", 0),
        ("Age", "string", 0),
        ("Containers", "string", 1),
        ("Images", "string", 1),
        ("Selector", "string", 1),
    ]


@pytest.mark.parametrize(
    "spec, status, metadata, expected",
    [
        ({"completions": 3, "parallelism": 3}, {"succeeded": 3, "startTime": ago(minutes=4), "completionTime": ago(minutes=1), "conditions": [{"type": "Complete", "status": "True"}]}, {}, ["Complete", "3/3", "3m"]),
        ({}, {"startTime": ago(seconds=42)}, {}, ["Running", "0/1", "42s"]),
        ({"parallelism": 4}, {"succeeded": 2, "conditions": [{"type": "Failed", "status": "True"}]}, {}, ["Failed", "2/1 of 4", ""]),
        ({"parallelism": 1}, {"conditions": [{"type": "Suspended", "status": "True"}]}, {}, ["Suspended", "0/1", ""]),
        ({"completions": 2}, {"conditions": [{"type": "FailureTarget", "status": "True"}]}, {}, ["FailureTarget", "0/2", ""]),
        ({"completions": 2}, {"conditions": [{"type": "Suspended", "status": "True"}]}, {"deletionTimestamp": ago(seconds=1)}, ["Terminating", "0/2", ""]),
        ({"completions": 2}, {"conditions": [{"type": "Complete", "status": "False"}]}, {}, ["Running", "0/2", ""]),
    ],
)
def test_job_cells(spec, status, metadata, expected):
    obj = {"metadata": meta("j", **metadata), "spec": {**spec, "selector": {"matchLabels": {"job-name": "j"}}, "template": template(("w", "busybox"))}, "status": status}
    row = cells(obj, "jobs", "batch")
    assert row[1:4] == expected
    assert row[5:] == ["w", "busybox", "job-name=j"]


# --- services ----------------------------------------------------------------------------------


def test_service_columns():
    assert column_names("services") == [
        ("Name", "string", 0),
        ("Type", "string", 0),
        ("Cluster-IP", "string", 0),
        ("External-IP", "string", 0),
        ("Port(s)", "string", 0),
        ("Age", "string", 0),
        ("Selector", "string", 1),
    ]


@pytest.mark.parametrize(
    "spec, status, expected",
    [
        ({"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00::a"], "ports": [{"port": 80, "protocol": "TCP"}], "selector": {"app": "web", "a": "b"}}, {}, ["ClusterIP", "10.96.0.10", "<none>", "80/TCP", "a=b,app=web"]),
        ({"type": "NodePort", "clusterIP": "10.96.0.11", "externalIPs": ["1.2.3.4", "5.6.7.8"], "ports": [{"port": 80, "nodePort": 30080}, {"port": 53, "protocol": "UDP"}]}, {}, ["NodePort", "10.96.0.11", "1.2.3.4,5.6.7.8", "80:30080/TCP,53/UDP", "<none>"]),
        ({"type": "LoadBalancer", "clusterIP": "10.96.0.12", "ports": [{"port": 443, "nodePort": 31443, "protocol": "TCP"}]}, {}, ["LoadBalancer", "10.96.0.12", "<pending>", "443:31443/TCP", "<none>"]),
        ({"type": "LoadBalancer", "clusterIP": "10.96.0.13"}, {"loadBalancer": {"ingress": [{"hostname": "zz.elb.example.com"}, {"ip": "203.0.113.9"}, {"ip": "203.0.113.9"}]}}, ["LoadBalancer", "10.96.0.13", "203.0.113.9,zz.elb.example.com", "<none>", "<none>"]),
        ({"type": "LoadBalancer", "externalIPs": ["9.9.9.9"]}, {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}}, ["LoadBalancer", "<none>", "203.0.113.9,9.9.9.9", "<none>", "<none>"]),
        ({"type": "ExternalName", "externalName": "db.example.com"}, {}, ["ExternalName", "<none>", "db.example.com", "<none>", "<none>"]),
        ({"clusterIP": "None", "clusterIPs": ["None"]}, {}, ["ClusterIP", "None", "<none>", "<none>", "<none>"]),
        ({"type": "Weird"}, {}, ["Weird", "<none>", "<unknown>", "<none>", "<none>"]),
    ],
)
def test_service_cells(spec, status, expected):
    row = cells({"metadata": meta("svc"), "spec": spec, "status": status}, "services")
    assert row[0] == "svc" and row[5] == "5m"
    assert row[1:5] + row[6:] == expected


# --- config and identity ----------------------------------------------------------------------


def test_secret_columns_and_cells():
    assert column_names("secrets") == [("Name", "string", 0), ("Type", "string", 0), ("Data", "string", 0), ("Age", "string", 0)]
    tls = {"metadata": meta("tls"), "type": "kubernetes.io/tls", "data": {"tls.crt": "Y3J0", "tls.key": "a2V5"}}
    assert cells(tls, "secrets") == ["tls", "kubernetes.io/tls", 2, "5m"]
    assert cells({"metadata": meta("empty")}, "secrets") == ["empty", "Opaque", 0, "5m"]
    mixed = {"metadata": meta("m"), "data": {"a": "YQ=="}, "stringData": {"a": "x", "b": "y"}}
    assert cells(mixed, "secrets")[2] == 2


def test_configmap_columns_and_cells():
    assert column_names("configmaps") == [("Name", "string", 0), ("Data", "string", 0), ("Age", "string", 0)]
    obj = {"metadata": meta("cfg"), "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}}
    assert cells(obj, "configmaps") == ["cfg", 3, "5m"]


def test_namespace_columns_and_cells():
    assert column_names("namespaces") == [("Name", "string", 0), ("Status", "string", 0), ("Age", "string", 0)]
    assert cells({"metadata": {"name": "dev", "creationTimestamp": ago(days=3)}, "status": {"phase": "Terminating"}}, "namespaces") == ["dev", "Terminating", "3d"]
    assert cells({"metadata": {"name": "new", "creationTimestamp": ago(seconds=10)}}, "namespaces") == ["new", "Active", "10s"]


def test_serviceaccount_columns_and_cells():
    assert column_names("serviceaccounts") == [("Name", "string", 0), ("Secrets", "string", 0), ("Age", "string", 0)]
    assert cells({"metadata": meta("default"), "secrets": [{"name": "t"}]}, "serviceaccounts") == ["default", 1, "5m"]
    assert cells({"metadata": meta("bot")}, "serviceaccounts") == ["bot", 0, "5m"]


# --- nodes -------------------------------------------------------------------------------------


def test_node_columns():
    assert column_names("nodes") == [
        ("Name", "string", 0),
        ("Status", "string", 0),
        ("Roles", "string", 0),
        ("Age", "string", 0),
        ("Version", "string", 0),
        ("Internal-IP", "string", 1),
        ("External-IP", "string", 1),
        ("OS-Image", "string", 1),
        ("Kernel-Version", "string", 1),
        ("Container-Runtime", "string", 1),
    ]


def test_node_cells():
    node = {
        "metadata": {
            "name": "cp-1",
            "creationTimestamp": ago(days=40),
            "labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/": "", "kubernetes.io/role": "etcd", "kubernetes.io/hostname": "cp-1"},
        },
        "spec": {"unschedulable": True},
        "status": {
            "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
            "addresses": [{"type": "Hostname", "address": "cp-1"}, {"type": "InternalIP", "address": "192.168.0.10"}, {"type": "ExternalIP", "address": "203.0.113.1"}],
            "nodeInfo": {"kubeletVersion": "v1.37.1", "osImage": "Debian GNU/Linux 12 (bookworm)", "kernelVersion": "6.1.0-28-amd64", "containerRuntimeVersion": "containerd://2.0.1"},
        },
    }
    assert cells(node, "nodes") == [
        "cp-1",
        "Ready,SchedulingDisabled",
        "control-plane,etcd",
        "40d",
        "v1.37.1",
        "192.168.0.10",
        "203.0.113.1",
        "Debian GNU/Linux 12 (bookworm)",
        "6.1.0-28-amd64",
        "containerd://2.0.1",
    ]


def test_node_without_status():
    node = {"metadata": {"name": "w", "creationTimestamp": ago(hours=5)}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}
    assert cells(node, "nodes") == ["w", "NotReady", "<none>", "5h", "", "<none>", "<none>", "<unknown>", "<unknown>", "<unknown>"]
    assert cells({"metadata": {"name": "v"}}, "nodes")[1] == "Unknown"


# --- events ------------------------------------------------------------------------------------


def test_event_columns():
    table = to_table([], "events", "")
    assert [(c["name"], c["priority"], c["format"]) for c in table["columnDefinitions"]] == [
        ("Last Seen", 0, ""),
        ("Type", 0, ""),
        ("Reason", 0, ""),
        ("Object", 0, ""),
        ("Subobject", 1, ""),
        ("Source", 1, ""),
        ("Message", 0, ""),
        ("First Seen", 1, ""),
        ("Count", 1, ""),
        ("Name", 1, "name"),
    ]
    assert table["columnDefinitions"] == to_table([], "events", "events.k8s.io")["columnDefinitions"]


def test_core_event_cells():
    event = {
        "metadata": meta("web.17a"),
        "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{c}"},
        "reason": "BackOff",
        "message": "  Back-off restarting failed container\n",
        "type": "Warning",
        "count": 7,
        "firstTimestamp": ago(hours=2),
        "lastTimestamp": ago(seconds=30),
        "source": {"component": "kubelet", "host": "node-a"},
    }
    assert cells(event, "events") == ["30s", "Warning", "BackOff", "pod/web", "spec.containers{c}", "kubelet, node-a", "Back-off restarting failed container", "120m", 7, "web.17a"]


def test_new_style_core_event_cells():
    event = {
        "metadata": meta("e"),
        "involvedObject": {"kind": "Node"},
        "reason": "Rebooted",
        "message": "m",
        "type": "Normal",
        "eventTime": ago(minutes=3),
        "reportingComponent": "kubelet",
        "reportingInstance": "",
        "series": {"count": 4, "lastObservedTime": ago(seconds=20)},
    }
    assert cells(event, "events") == ["20s", "Normal", "Rebooted", "node", "", "kubelet", "m", "3m", 4, "e"]
    del event["series"]
    assert cells(event, "events")[0::8] == ["3m", 1]


def test_events_k8s_io_event_cells():
    event = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": meta("web.17b"),
        "regarding": {"kind": "Deployment", "name": "web"},
        "reason": "ScalingReplicaSet",
        "note": "Scaled up replica set web-5d4f to 3",
        "type": "Normal",
        "eventTime": ago(minutes=1),
        "reportingController": "deployment-controller",
        "reportingInstance": "kcm-1",
        "deprecatedCount": 2,
        "deprecatedFirstTimestamp": ago(minutes=10),
        "deprecatedLastTimestamp": ago(minutes=2),
    }
    assert cells(event, "events", "events.k8s.io") == [
        "2m",
        "Normal",
        "ScalingReplicaSet",
        "deployment/web",
        "",
        "deployment-controller, kcm-1",
        "Scaled up replica set web-5d4f to 3",
        "10m",
        2,
        "web.17b",
    ]


# --- label selectors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "selector, expected",
    [
        (None, "<none>"),
        ({}, "<none>"),
        ({"matchLabels": {"b": "2", "a": "1"}}, "a=1,b=2"),
        ({"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}, {"key": "app", "operator": "Exists"}]}, "app,env in (prod)"),
        ({"matchExpressions": [{"key": "env", "operator": "In", "values": []}]}, "<error>"),
        ({"matchExpressions": [{"key": "env", "operator": "Exists", "values": ["x"]}]}, "<error>"),
        ({"matchExpressions": [{"key": "env", "operator": "Gt", "values": ["1"]}]}, "<error>"),
    ],
)
def test_format_label_selector(selector, expected):
    assert format_label_selector(selector) == expected


# --- PartialObjectMetadata ----------------------------------------------------------------------


def test_partial_object_metadata_copies_the_whole_metadata():
    secret = secret_with_metadata()
    partial = to_partial_object_metadata(secret)
    assert partial == {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": secret["metadata"]}
    partial["metadata"]["annotations"].clear()
    assert secret["metadata"]["annotations"]
    assert to_partial_object_metadata({"kind": "Thing"}) == {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": {}}


def test_partial_object_metadata_list():
    objects = [secret_with_metadata(), {"metadata": {"name": "other"}}]
    result = to_partial_object_metadata_list(objects, {"resourceVersion": "500", "continue": "c2"})
    assert result["kind"] == "PartialObjectMetadataList"
    assert result["apiVersion"] == "meta.k8s.io/v1"
    assert result["metadata"] == {"resourceVersion": "500", "continue": "c2"}
    assert [item["metadata"]["name"] for item in result["items"]] == ["db", "other"]
    assert all(item["kind"] == "PartialObjectMetadata" and item["apiVersion"] == "meta.k8s.io/v1" for item in result["items"])
    json.dumps(result)


def test_empty_partial_object_metadata_list_has_null_items():
    assert to_partial_object_metadata_list([]) == {"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": {}, "items": None}
