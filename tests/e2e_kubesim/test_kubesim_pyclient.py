"""The official ``kubernetes`` Python client against kubesim."""

from __future__ import annotations

import threading

import pytest
from kubernetes import client, config, watch


@pytest.fixture
def core(kubesim):
    api_client = config.new_client_from_config(config_file=str(kubesim.kubeconfig))
    yield client.CoreV1Api(api_client)
    api_client.close()


def test_list_pods(core):
    pods = core.list_namespaced_pod("shop", label_selector="app=web").items
    assert len(pods) == 2
    assert all(p.status.phase == "Running" and p.status.pod_ip for p in pods)
    everywhere = core.list_pod_for_all_namespaces(field_selector="metadata.namespace=payments").items
    assert {p.metadata.namespace for p in everywhere} == {"payments"}


def test_list_pages_with_continue_tokens(core):
    first = core.list_pod_for_all_namespaces(limit=2)
    assert len(first.items) == 2 and first.metadata._continue
    assert first.metadata.remaining_item_count == 3
    rest = core.list_pod_for_all_namespaces(limit=10, _continue=first.metadata._continue)
    names = [p.metadata.name for p in first.items + rest.items]
    assert len(names) == 5 and len(set(names)) == 5
    assert rest.metadata._continue is None


def test_watch_pods_sees_an_event(core):
    start = core.list_namespaced_pod("payments").metadata.resource_version
    labelled = threading.Event()

    def relabel():
        core.patch_namespaced_pod("debug-shell", "payments", {"metadata": {"labels": {"seen": "yes"}}})
        labelled.set()

    stream = watch.Watch()
    threading.Timer(0.2, relabel).start()
    seen = None
    for event in stream.stream(core.list_namespaced_pod, "payments", resource_version=start, timeout_seconds=10):
        labels = event["object"].metadata.labels or {}
        if event["object"].metadata.name == "debug-shell" and labels.get("seen") == "yes":
            seen = event  # (controllers may update the pod first: wait for the relabel itself)
            stream.stop()
    assert labelled.wait(10)  # the watch event can arrive before the PATCH's own answer does
    assert seen is not None and seen["type"] == "MODIFIED"
    assert seen["object"].metadata.labels["seen"] == "yes"


def test_read_secret(core):
    secret = core.read_namespaced_secret("api-keys", "shop")
    assert secret.type == "Opaque"
    assert set(secret.data) == {"STRIPE_KEY", "JWT_SIGNING_KEY"}
    assert secret.string_data is None


def test_errors_are_status_objects(core):
    with pytest.raises(client.ApiException) as missing:
        core.read_namespaced_pod("nope", "shop")
    assert missing.value.status == 404
    assert '"message":"pods \\"nope\\" not found"' in missing.value.body
    with pytest.raises(client.ApiException) as exists:
        core.create_namespaced_config_map("shop", {"metadata": {"name": "web-config"}})
    assert exists.value.status == 409
    assert '"reason":"AlreadyExists"' in exists.value.body
