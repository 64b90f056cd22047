"""The official ``kubernetes`` Python client runs the same operations straight against kubesim and
through the gateway, and must see the same answers: object shapes, Status bodies of errors, what a
delete returns, exec output and watch events.  These are the operations the client's own end-to-end
suite exercises (pods, services, config maps, deployments and their scale, jobs, nodes), written
here against its public API.  Each side works on objects named after it; the observations are
compared with that name and the server-assigned fields (uid, resourceVersion, timestamps) left out."""

from __future__ import annotations

import json
import threading

import pytest
from kubernetes import client, config, utils, watch
from kubernetes.stream import stream

pytestmark = pytest.mark.django_db(transaction=True)

ASSIGNED = {"uid", "resourceVersion", "creationTimestamp", "generation", "managedFields", "deletionTimestamp",
            "startTime", "podIP", "podIPs", "hostIP", "hostIPs", "clusterIP", "clusterIPs", "containerID",
            "startedAt", "lastTransitionTime", "lastUpdateTime", "nodeName"}


def normalized(value, name: str):
    """``value`` as JSON-like data with ``name`` replaced by NAME and server-assigned fields dropped."""
    if isinstance(value, dict):
        return {k: normalized(v, name) for k, v in value.items() if k not in ASSIGNED}
    if isinstance(value, list):
        return [normalized(v, name) for v in value]
    if isinstance(value, str):
        return value.replace(name, "NAME")
    return value


def as_data(api_client: client.ApiClient, obj):
    return api_client.sanitize_for_serialization(obj)


def api_error(call, *args, **kwargs) -> dict:
    with pytest.raises(client.ApiException) as failed:
        call(*args, **kwargs)
    return {"status": failed.value.status, "reason": failed.value.reason, "body": failed.value.body}


def observe(api_client: client.ApiClient, side: str) -> dict:
    """Run every operation as ``side`` and return what the client saw, keyed by operation."""
    core, apps, batch = client.CoreV1Api(api_client), client.AppsV1Api(api_client), client.BatchV1Api(api_client)
    ns, name = "default", f"parity-{side}"
    seen = {}

    pod = {"metadata": {"name": name, "labels": {"parity": name}},
           "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", "sleep 600"]}]}}
    seen["pod create"] = as_data(api_client, core.create_namespaced_pod(ns, pod))
    seen["pod read"] = as_data(api_client, core.read_namespaced_pod(name, ns))
    seen["pod list"] = [p.metadata.name for p in core.list_namespaced_pod(ns, label_selector=f"parity={name}").items]
    seen["pod exec"] = stream(core.connect_get_namespaced_pod_exec, name, ns, command=["sh", "-c", "echo out; echo err >&2"],
                              stderr=True, stdin=False, stdout=True, tty=False)
    seen["pod status"] = as_data(api_client, core.read_namespaced_pod_status(name, ns).status.phase)
    seen["pod delete"] = as_data(api_client, core.delete_namespaced_pod(name, ns))
    seen["pod gone"] = api_error(core.read_namespaced_pod, name, ns)

    service = {"metadata": {"name": name}, "spec": {"selector": {"parity": name}, "ports": [{"port": 80, "targetPort": 8080}]}}
    seen["service create"] = as_data(api_client, core.create_namespaced_service(ns, service))
    seen["service twice"] = api_error(core.create_namespaced_service, ns, service)
    seen["service patch"] = as_data(api_client, core.patch_namespaced_service(name, ns, {"metadata": {"labels": {"patched": "yes"}}}))
    seen["service delete"] = as_data(api_client, core.delete_namespaced_service(name, ns))

    config_map = {"metadata": {"name": name, "labels": {"parity": name}}, "data": {"a": "1"}}
    start = core.list_namespaced_config_map(ns, limit=1).metadata.resource_version
    seen["configmap create"] = as_data(api_client, core.create_namespaced_config_map(ns, config_map))
    seen["configmap replace"] = as_data(api_client, core.replace_namespaced_config_map(
        name, ns, {**config_map, "data": {"a": "2"}}))
    seen["configmap list"] = as_data(api_client, core.list_namespaced_config_map(ns, label_selector=f"parity={name}").items)
    seen["configmap delete collection"] = as_data(api_client, core.delete_collection_namespaced_config_map(
        ns, label_selector=f"parity={name}")).get("kind")
    events = watch.Watch().stream(core.list_namespaced_config_map, ns, label_selector=f"parity={name}",
                                  resource_version=start, timeout_seconds=3)
    seen["configmap watch"] = [(e["type"], e["object"].data) for e in events]

    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
                  "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                           "template": {"metadata": {"labels": {"app": name}},
                                        "spec": {"containers": [{"name": "main", "image": "nginx"}]}}}}
    utils.create_from_dict(api_client, deployment)
    seen["scale read"] = as_data(api_client, apps.read_namespaced_deployment_scale(name, ns))
    seen["scale patch"] = as_data(api_client, apps.patch_namespaced_deployment_scale(name, ns, {"spec": {"replicas": 2}}))
    seen["deployment replicas"] = apps.read_namespaced_deployment(name, ns).spec.replicas
    seen["deployment delete"] = as_data(api_client, apps.delete_namespaced_deployment(
        name, ns, body=client.V1DeleteOptions(propagation_policy="Background")))

    job = {"metadata": {"name": name}, "spec": {"template": {"spec": {
        "restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox", "command": ["true"]}]}}}}
    batch.create_namespaced_job(ns, job)
    seen["job delete"] = as_data(api_client, batch.delete_namespaced_job(name, ns, propagation_policy="Foreground"))
    seen["nodes"] = [n.metadata.name for n in core.list_node().items]
    seen["missing namespace"] = api_error(core.read_namespace, f"{name}-missing")
    return normalized(json.loads(json.dumps(seen, default=str)), name)


def test_the_python_client_sees_the_same_answers_directly_and_through_the_gateway(kubesim, gateway):
    sides = {"direct": kubesim.kubeconfig, "gateway": gateway.kubeconfig()}
    observed = {}
    for side, kubeconfig in sides.items():
        api_client = config.new_client_from_config(config_file=str(kubeconfig))
        try:
            observed[side] = observe(api_client, side)
        finally:
            api_client.close()
    direct, through = observed["direct"], observed["gateway"]
    assert direct["pod exec"] == "out\nerr\n"
    assert direct["service twice"]["status"] == 409
    assert direct["configmap watch"][0][0] == "ADDED"
    assert list(direct) == list(through)
    for operation in direct:
        assert through[operation] == direct[operation], operation


def test_watch_events_arrive_as_they_happen_through_the_gateway(gateway):
    api_client = config.new_client_from_config(config_file=str(gateway.kubeconfig()))
    core = client.CoreV1Api(api_client)
    start = core.list_namespaced_config_map("default", limit=1).metadata.resource_version
    created = threading.Timer(0.3, core.create_namespaced_config_map,
                              ("default", {"metadata": {"name": "live", "labels": {"live": "yes"}}}))
    created.start()
    stream_ = watch.Watch()
    try:
        for event in stream_.stream(core.list_namespaced_config_map, "default", label_selector="live=yes",
                                    resource_version=start, timeout_seconds=10):
            assert (event["type"], event["object"].metadata.name) == ("ADDED", "live")
            stream_.stop()
            break
        else:
            raise AssertionError("no event within the watch's timeout")
    finally:
        created.join()
        api_client.close()
