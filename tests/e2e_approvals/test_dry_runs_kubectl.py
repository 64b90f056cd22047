"""Real kubectl under production-guardrails: server-side dry runs are answered, never held, change nothing,
and are recorded as dry runs; a dryRun kube-apiserver would refuse is held as the change it may be."""

import base64
import json
import ssl

import httpx
import pytest

from approvals.models import Review
from audit.models import AuditEvent
from tests.gateway_harness import AGENT_TOKEN

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def hold_timeout():
    """Short, so that a dry run held by mistake fails the test quickly instead of hanging it."""
    return 3.0


def manifest(kubectl, replicas):
    """deployment web in shop as kubectl would apply it, with ``replicas`` changed."""
    live = json.loads(kubectl("get", "deployment", "web", "-n", "shop", "-o", "json").stdout)
    return json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "labels": live["metadata"].get("labels", {})},
        "spec": live["spec"] | {"replicas": replicas},
    })


def live_replicas(kubectl):
    return kubectl("get", "deployment", "web", "-n", "shop", "-o", "jsonpath={.spec.replicas}").stdout


def dry_run_events():
    return list(AuditEvent.objects.filter(stage="ResponseComplete", dry_run=True)
                .values_list("verb", "object_resource", "response_code", "decision_rule_name"))


def test_kubectl_diff_and_server_dry_runs_pass_change_nothing_and_are_recorded(guarded_agent, kubectl, tmp_path):
    before = live_replicas(kubectl)
    path = tmp_path / "web.json"
    path.write_text(manifest(kubectl, int(before) + 3))

    diff = guarded_agent("diff", "-f", str(path), check=False)
    assert diff.returncode == 1, diff.stderr  # 1: differences found (0 none, >1 an error)
    assert f"-  replicas: {before}" in diff.stdout and f"+  replicas: {int(before) + 3}" in diff.stdout

    applied = guarded_agent("apply", "--dry-run=server", "-f", str(path))
    assert "deployment.apps/web configured (server dry run)" in applied.stdout

    deleted = guarded_agent("delete", "pod", "debug-shell", "-n", "payments", "--dry-run=server")
    assert 'pod "debug-shell" deleted from payments namespace (server dry run)' in deleted.stdout

    assert live_replicas(kubectl) == before
    kubectl("get", "pod", "debug-shell", "-n", "payments")
    assert not Review.objects.exists()
    events = dry_run_events()
    assert ("patch", "deployments", 200, "dry-runs") in events
    assert ("delete", "pods", 200, "dry-runs") in events
    assert all(rule == "dry-runs" for *_, rule in events)


def test_a_dry_run_value_kube_apiserver_refuses_is_held_as_the_change(guarded, kubectl):
    """``dryRun=Foo`` is a 400 from kube-apiserver, not a dry run: the gateway holds it like the write it names."""
    url = f"{guarded.server_url()}/api/v1/namespaces/payments/pods/debug-shell?dryRun=Foo"
    with httpx.Client(verify=ssl.create_default_context(cafile=str(guarded.ca_file))) as client:
        response = client.delete(url, headers={"Authorization": f"Bearer {AGENT_TOKEN}"})
    review = Review.objects.get()
    assert response.status_code == 403 and response.json()["details"]["name"] == str(review.pk)
    assert review.rule_name == "review-deletes" and '"Foo"' in review.dry_run_note
    assert not dry_run_events()
    kubectl("get", "pod", "debug-shell", "-n", "payments")


def test_the_answer_to_a_dry_run_is_masked_like_any_answer(guarded_agent, kubectl):
    created = guarded_agent("create", "secret", "generic", "dry-secret", "-n", "shop", "--dry-run=server",
                            "--from-literal=password=Hunter2-dry-run-Sup3r", "-o", "json")
    secret = json.loads(created.stdout)
    assert base64.b64decode(secret["data"]["password"]) == b"**AIRLOCK-MASKED**"
    assert "Hunter2-dry-run-Sup3r" not in created.stdout and "SHVudGVyMi" not in created.stdout
    assert kubectl("get", "secret", "dry-secret", "-n", "shop", check=False).returncode != 0
    assert ("create", "secrets", 201, "dry-runs") in dry_run_events()
