"""An agent confined to a namespace cannot change the Namespace object itself, with real kubectl.

kube-apiserver's RequestInfo gives ``PATCH /api/v1/namespaces/shop`` the namespace ``shop``, so a
rule "anything in shop" used to cover relabelling the namespace: an agent could lift its own
pod-security enforcement (``pod-security.kubernetes.io/enforce: privileged``) or delete it.
"""

import json

import pytest

from policy.presets import DISCOVERY_URLS
from tests.gateway_harness import serving

pytestmark = pytest.mark.django_db(transaction=True)

PRIVILEGED = """\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels:
    pod-security.kubernetes.io/enforce: privileged
"""
CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: agent-notes, namespace: shop}
data: {note: hello}
"""


@pytest.fixture
def agent(cluster_connection, gateway_app, kubectl, tmp_path):
    """kubectl through the gateway as agent-1 (group agents), allowed everything in namespace shop."""
    from policy.models import Rule

    Rule.objects.create(connection=cluster_connection, order=10, name="agents-in-shop", effect="allow",
                        groups=["agents"], verbs=["*"], api_groups=["*"], resources=["*", "*/*"],
                        namespaces=["shop"], names=["*"])
    Rule.objects.create(connection=cluster_connection, order=20, name="agents-discovery", effect="allow",
                        groups=["agents"], verbs=["get", "head"], non_resource_urls=DISCOVERY_URLS)
    with serving(gateway_app, cluster_connection, tmp_path / "gateway") as gateway:
        path = gateway.kubeconfig()

        def run(*args, **kwargs):
            return kubectl(*args, kubeconfig=path, **kwargs)

        yield run


def namespace_patches(kubesim) -> list[dict]:
    return [r for r in kubesim.requests() if r.get("method") in ("PATCH", "PUT", "DELETE")
            and r.get("path", "").rstrip("/") == "/api/v1/namespaces/shop"]


def test_server_side_apply_of_the_namespace_is_refused(agent, kubectl, kubesim):
    applied = agent("apply", "--server-side", "-f", "-", input=PRIVILEGED, check=False)
    assert applied.returncode != 0
    assert "Forbidden" in applied.stderr and "no rule allows this request" in applied.stderr, applied.stderr
    labels = json.loads(kubectl("get", "namespace", "shop", "-o", "json").stdout)["metadata"].get("labels", {})
    assert "pod-security.kubernetes.io/enforce" not in labels
    assert namespace_patches(kubesim) == []


def test_label_and_delete_of_the_namespace_are_refused(agent, kubectl, kubesim):
    for args in (("label", "namespace", "shop", "pod-security.kubernetes.io/enforce=privileged"),
                 ("delete", "namespace", "shop", "--wait=false")):
        result = agent(*args, check=False)
        assert result.returncode != 0 and "Forbidden" in result.stderr, result.stderr
    assert kubectl("get", "namespace", "shop", "-o", "name").stdout.strip() == "namespace/shop"
    assert namespace_patches(kubesim) == []


def test_everything_in_the_namespace_is_still_allowed(agent):
    assert "serverside-applied" in agent("apply", "--server-side", "-f", "-", input=CONFIGMAP).stdout
    assert agent("get", "configmap", "agent-notes", "-n", "shop", "-o", "jsonpath={.data.note}").stdout == "hello"
