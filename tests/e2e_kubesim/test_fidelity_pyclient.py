"""Where the official Python client's own end-to-end suite (kubernetes/e2e_test) expects kube-apiserver's
answers: the exact error body, what a Job DELETE returns, the dry run of a subresource."""

from __future__ import annotations

import json

import pytest
from kubernetes import client, config, utils

SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "twice", "namespace": "default"},
           "spec": {"ports": [{"port": 80}]}}


@pytest.fixture
def api_client(kubesim):
    api = config.new_client_from_config(config_file=str(kubesim.kubeconfig))
    yield api
    api.close()


def job(name: str) -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "main", "image": "busybox", "command": ["sh", "-c", "sleep 5"]}]}}}}


def owned_pod(name: str, owner: dict) -> dict:
    ref = {"apiVersion": "batch/v1", "kind": "Job", "name": owner.metadata.name, "uid": owner.metadata.uid}
    return {"metadata": {"name": name, "ownerReferences": [ref]},
            "spec": {"containers": [{"name": "main", "image": "busybox"}]}}


def test_an_error_body_is_the_status_as_kube_apiserver_encodes_it(api_client):
    """kube-apiserver's serializer is Go's json.Encoder: compact JSON and a final newline."""
    utils.create_from_dict(api_client, SERVICE)
    with pytest.raises(utils.FailToCreateError) as failed:
        utils.create_from_dict(api_client, SERVICE)
    assert str(failed.value) == (
        'Error from server (Conflict): {"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
        '"message":"services \\"twice\\" already exists","reason":"AlreadyExists",'
        '"details":{"name":"twice","kind":"services"},"code":409}\n')


def test_a_job_delete_without_propagation_answers_with_the_job_marked_for_orphaning(api_client):
    batch, core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)
    created = batch.create_namespaced_job("default", job("orphaning"))
    core.create_namespaced_pod("default", owned_pod("orphaning-pod", created))

    raw = batch.delete_namespaced_job("orphaning", "default", _preload_content=False)
    answer = json.loads(raw.data)
    assert (answer["kind"], answer["metadata"]["name"]) == ("Job", "orphaning")
    assert answer["metadata"]["finalizers"] == ["orphan"] and answer["metadata"]["deletionTimestamp"]

    with pytest.raises(client.ApiException) as gone:
        batch.read_namespaced_job("orphaning", "default")
    assert gone.value.status == 404
    assert core.read_namespaced_pod("orphaning-pod", "default").metadata.owner_references is None


def test_a_background_job_delete_answers_with_a_status_and_collects_the_pods(api_client):
    batch, core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)
    created = batch.create_namespaced_job("default", job("background"))
    core.create_namespaced_pod("default", owned_pod("background-pod", created))

    raw = batch.delete_namespaced_job("background", "default", propagation_policy="Background",
                                      _preload_content=False)
    answer = json.loads(raw.data)
    assert answer["kind"] == "Status" and answer["status"] == "Success"
    assert answer["details"] == {"name": "background", "group": "batch", "kind": "jobs",
                                 "uid": created.metadata.uid}
    with pytest.raises(client.ApiException) as gone:
        core.read_namespaced_pod("background-pod", "default")
    assert gone.value.status == 404


def test_a_finalizer_keeps_a_deleted_object_until_it_is_removed(api_client):
    core = client.CoreV1Api(api_client)
    core.create_namespaced_config_map("default", {"metadata": {"name": "held", "finalizers": ["example.com/keep"]}})
    raw = core.delete_namespaced_config_map("held", "default", _preload_content=False)
    answer = json.loads(raw.data)
    assert answer["kind"] == "ConfigMap" and answer["metadata"]["deletionTimestamp"]
    assert core.read_namespaced_config_map("held", "default").metadata.deletion_timestamp is not None

    core.patch_namespaced_config_map("held", "default", {"metadata": {"finalizers": None}})
    with pytest.raises(client.ApiException) as gone:
        core.read_namespaced_config_map("held", "default")
    assert gone.value.status == 404


def test_a_dry_run_scale_answers_with_the_scale_as_it_would_be(kubectl):
    out = kubectl("patch", "deployment", "web", "-n", "shop", "--subresource=scale", "--type=merge",
                  "-p", '{"spec":{"replicas":3}}', "--dry-run=server", "-o", "json").stdout
    scale = json.loads(out)
    assert (scale["kind"], scale["spec"]["replicas"]) == ("Scale", 3)
    stored = kubectl("get", "deployment", "web", "-n", "shop", "-o", "jsonpath={.spec.replicas}").stdout
    assert stored == "2"
    assert len(kubectl("get", "pods", "-n", "shop", "-l", "app=web", "-o", "name").stdout.split()) == 2
