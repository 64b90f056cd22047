"""Real kubectl 1.37 against kubesim: the everyday commands an agent runs."""

from __future__ import annotations

import base64
import json

import pytest
import yaml

from kubesim.requestlog import header
from kubesim.testing import read_until

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: hello
  namespace: default
  labels: {app: hello}
spec:
  replicas: %(replicas)d
  selector: {matchLabels: {app: hello}}
  template:
    metadata: {labels: {app: hello}}
    spec:
      containers:
      - name: hello
        image: %(image)s
"""


def manifest(replicas: int = 1, image: str = "nginx:1.27") -> str:
    return DEPLOYMENT % {"replicas": replicas, "image": image}


def pod_names(kubectl, *selector: str, namespace: str = "shop") -> list[str]:
    out = kubectl("get", "pods", "-n", namespace, *selector, "-o", "jsonpath={.items[*].metadata.name}").stdout
    return out.split()


def test_version_reports_kubesim(kubectl):
    out = kubectl("version", "-o", "json").stdout
    server = json.loads(out)["serverVersion"]
    assert server["gitVersion"] == "v1.37.1-kubesim"
    assert (server["major"], server["minor"]) == ("1", "37")


def test_get_prints_a_table(kubectl):
    out = kubectl("get", "pods", "-n", "shop").stdout
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    rows = [line.split() for line in lines[1:]]
    assert len(rows) == 3
    assert all(r[1] == "1/1" and r[2] == "Running" for r in rows)
    assert sorted(r[0].rsplit("-", 2)[0] for r in rows) == ["cart", "web", "web"]


def test_get_all_namespaces_and_sort_by(kubectl, kubesim):
    out = kubectl("get", "pods", "-A", "--sort-by=.metadata.name").stdout
    rows = [line.split() for line in out.splitlines()[1:]]
    assert {r[0] for r in rows} == {"shop", "payments"}
    names = [r[1] for r in rows]
    assert names == sorted(names) and "debug-shell" in names
    sorted_get = [r for r in kubesim.requests() if r["path"] == "/api/v1/pods"][-1]
    assert "includeObject=Object" in sorted_get["query"]


def test_get_yaml_and_json(kubectl):
    secret = yaml.safe_load(kubectl("get", "secret", "shop-db", "-n", "shop", "-o", "yaml").stdout)
    assert base64.b64decode(secret["data"]["DB_PASSWORD"]) == b"s3cr3t-db-password-4f9a"
    assert "stringData" not in secret
    assert secret["metadata"]["resourceVersion"].isdigit()
    deploy = json.loads(kubectl("get", "deployment", "web", "-n", "shop", "-o", "json").stdout)
    assert deploy["kind"] == "Deployment" and deploy["apiVersion"] == "apps/v1"
    assert deploy["status"]["readyReplicas"] == 2


def test_describe_pod_secret_and_deployment(kubectl):
    cart = pod_names(kubectl, "-l", "app=cart")[0]
    pod = kubectl("describe", "pod", cart, "-n", "shop").stdout
    assert "Status:           Running" in pod
    assert "DB_PASSWORD:  s3cr3t-db-password-4f9a" in pod
    assert "Started container cart" in pod
    secret = kubectl("describe", "secret", "shop-db", "-n", "shop").stdout
    assert "DB_PASSWORD:  23 bytes" in secret
    assert "s3cr3t" not in secret
    deploy = kubectl("describe", "deployment", "web", "-n", "shop").stdout
    assert "2 desired | 2 updated | 2 total | 2 available | 0 unavailable" in deploy
    assert "Scaled up replica set web-" in deploy


def test_apply_creates_then_updates_with_validation(kubectl, kubesim):
    kubectl("apply", "-f", "-", input=manifest(1))
    assert kubectl("rollout", "status", "deployment/hello", "--timeout=20s").returncode == 0
    out = kubectl("apply", "-f", "-", input=manifest(3, "nginx:1.28")).stdout
    assert "deployment.apps/hello configured" in out
    deploy = json.loads(kubectl("get", "deployment", "hello", "-o", "json").stdout)
    assert deploy["spec"]["replicas"] == 3
    assert deploy["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.28"
    assert deploy["metadata"]["generation"] == 2
    assert "kubectl.kubernetes.io/last-applied-configuration" in deploy["metadata"]["annotations"]
    assert len(pod_names(kubectl, "-l", "app=hello", namespace="default")) == 3
    patches = [r for r in kubesim.requests() if r["method"] == "PATCH" and r["path"].endswith("/deployments/hello")]
    assert "fieldValidation=Strict" in patches[-1]["query"]
    assert header(patches[-1], "Content-Type") == ["application/strategic-merge-patch+json"]
    # Computed with the containers' merge key (from the served schemas or kubectl's own types alike).
    assert json.loads(patches[-1]["body"])["spec"]["template"]["spec"]["$setElementOrder/containers"] == [
        {"name": "hello"}]


def test_apply_rejects_unknown_fields_like_kube_apiserver(kubectl):
    bad = manifest(1).replace("  replicas: 1", "  replicas: 1\n  replicass: 2")
    result = kubectl("apply", "-f", "-", input=bad, check=False)
    assert result.returncode != 0
    assert 'strict decoding error: unknown field "spec.replicass"' in result.stderr
    assert kubectl("get", "deployment", "hello", check=False).returncode != 0


def test_label_and_annotate(kubectl):
    kubectl("label", "pod", "debug-shell", "-n", "payments", "reviewed=yes")
    kubectl("annotate", "pod", "debug-shell", "-n", "payments", "owner=team-payments")
    pod = json.loads(kubectl("get", "pod", "debug-shell", "-n", "payments", "-o", "json").stdout)
    assert pod["metadata"]["labels"]["reviewed"] == "yes"
    assert pod["metadata"]["annotations"]["owner"] == "team-payments"
    selected = kubectl("get", "pods", "-n", "payments", "-l", "reviewed in (yes),app", "-o", "name").stdout
    assert selected.split() == ["pod/debug-shell"]


def test_scale_changes_replicas_and_pods(kubectl):
    assert "deployment.apps/web scaled" in kubectl("scale", "deployment", "web", "-n", "shop", "--replicas=4").stdout
    assert len(pod_names(kubectl, "-l", "app=web")) == 4
    kubectl("scale", "deployment", "web", "-n", "shop", "--replicas=1")
    assert len(pod_names(kubectl, "-l", "app=web")) == 1
    assert "successfully rolled out" in kubectl("rollout", "status", "deployment/web", "-n", "shop").stdout


def test_delete_pod_and_deployment(kubectl):
    assert 'pod "debug-shell" deleted' in kubectl("delete", "pod", "debug-shell", "-n", "payments").stdout
    assert "NotFound" in kubectl("get", "pod", "debug-shell", "-n", "payments", check=False).stderr
    kubectl("delete", "deployment", "cart", "-n", "shop")
    assert pod_names(kubectl, "-l", "app=cart") == []
    assert kubectl("get", "rs", "-n", "shop", "-l", "app=cart", "-o", "name").stdout == ""


def test_logs_and_follow(kubectl, kubesim):
    cart = pod_names(kubectl, "-l", "app=cart")[0]
    logs = kubectl("logs", cart, "-n", "shop").stdout
    assert "postgres://shop:s3cr3t-db-password-4f9a@db.shop.svc" in logs
    assert kubectl("logs", cart, "-n", "shop", "--tail=1").stdout.strip().endswith("cart service ready on :8080")
    follow = kubectl.popen("logs", "-f", cart, "-n", "shop")
    read_until(follow, "ready on :8080")
    with kubesim.log_file("shop", cart, "cart").open("a") as fh:
        fh.write("2026-11-20T09:05:00Z INFO order 42 checked out\n")
    assert "order 42 checked out" in read_until(follow, "order 42 checked out")


def test_create_token_and_use_it(kubectl, kubesim, tmp_path):
    token = kubectl("create", "token", "deployer", "-n", "shop").stdout.strip()
    assert token.count(".") == 2
    request = [r for r in kubesim.requests() if r["path"].endswith("/serviceaccounts/deployer/token")][-1]
    assert header(request, "Content-Type") == ["application/vnd.kubernetes.protobuf"]
    config = kubesim.write_kubeconfig(tmp_path / "sa.kubeconfig", token=token, namespace="shop")
    who = kubectl("auth", "whoami", "-o", "json", kubeconfig=config).stdout
    assert json.loads(who)["status"]["userInfo"]["username"] == "system:serviceaccount:shop:deployer"
    assert len(kubectl("get", "pods", "-o", "name", kubeconfig=config).stdout.split()) == 3
    denied = kubectl("get", "secrets", kubeconfig=config, check=False)
    assert 'User "system:serviceaccount:shop:deployer" cannot list resource "secrets"' in denied.stderr


@pytest.mark.kubesim_args("--token", "viewer-token-1=vera:dev")
def test_auth_can_i_yes_and_no(kubectl, kubesim, tmp_path):
    assert kubectl("auth", "can-i", "delete", "pods").stdout.strip() == "yes"
    viewer = kubesim.write_kubeconfig(tmp_path / "viewer.kubeconfig", token="viewer-token-1")
    assert kubectl("auth", "can-i", "list", "pods", "-n", "shop", kubeconfig=viewer).stdout.strip() == "yes"
    no = kubectl("auth", "can-i", "delete", "pods", "-n", "shop", kubeconfig=viewer, check=False)
    assert (no.returncode, no.stdout.strip()) == (1, "no")
    secrets = kubectl("auth", "can-i", "get", "secrets", kubeconfig=viewer, check=False)
    assert secrets.stdout.strip() == "no"


def test_get_watch_sees_changes_made_by_another_command(kubectl):
    watch = kubectl.popen("get", "pod", "debug-shell", "-n", "payments", "-w")
    read_until(watch, "debug-shell")
    kubectl("label", "pod", "debug-shell", "-n", "payments", "watched=true")
    kubectl("delete", "pod", "debug-shell", "-n", "payments")
    events = kubectl.popen("get", "pods", "-n", "payments", "-w", "-o", "json", "--output-watch-events")
    read_until(events, '"type":"ADDED"')
    kubectl("label", "pod", "-n", "payments", "-l", "app=payments-api", "watched=true")
    assert '"watched":"true"' in read_until(events, '"type":"MODIFIED"')
    output = read_until(watch, "Terminating")
    assert output.count("debug-shell") >= 2


def test_api_resources_lists_discovery(kubectl):
    out = kubectl("api-resources").stdout
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "deploy" in rows["deployments"] and "apps/v1" in rows["deployments"]
    assert "Pod" in rows["pods"]
    assert "rbac.authorization.k8s.io/v1" in rows["clusterroles"]
    namespaced = kubectl("api-resources", "--namespaced=false", "-o", "name").stdout.split()
    assert "nodes" in namespaced and "pods" not in namespaced


def test_impersonation_reaches_the_request_log(kubectl, kubesim):
    out = kubectl("get", "pods", "-n", "shop", "--as", "alice", "--as-group", "sre", "-o", "name").stdout
    assert len(out.split()) == 3
    record = [r for r in kubesim.requests() if r["path"] == "/api/v1/namespaces/shop/pods"][-1]
    assert record["user"] == "kubesim-admin"
    assert record["impersonated_user"] == "alice"
    assert record["impersonated_groups"] == ["sre", "system:authenticated"]
    assert record["status"] == 200
    denied = kubectl("delete", "pod", "debug-shell", "-n", "payments", "--as", "alice", check=False)
    assert 'User "alice" cannot delete resource "pods"' in denied.stderr


def test_client_certificate_authentication(kubectl, kubesim, tmp_path):
    cert = kubesim.client_cert("carol", ("system:masters",))
    config = kubesim.write_kubeconfig(tmp_path / "cert.kubeconfig", client_cert=cert)
    assert "yes" == kubectl("auth", "can-i", "delete", "nodes", kubeconfig=config).stdout.strip()
    who = json.loads(kubectl("auth", "whoami", "-o", "json", kubeconfig=config).stdout)["status"]["userInfo"]
    assert who["username"] == "carol" and "system:masters" in who["groups"]


def test_create_commands_with_protobuf_bodies(kubectl):
    kubectl("create", "namespace", "scratch")
    kubectl("create", "secret", "generic", "s1", "-n", "scratch", "--from-literal=token=abc")
    kubectl("create", "configmap", "c1", "-n", "scratch", "--from-literal=k=v")
    secret = json.loads(kubectl("get", "secret", "s1", "-n", "scratch", "-o", "json").stdout)
    assert base64.b64decode(secret["data"]["token"]) == b"abc"
    names = kubectl("get", "sa,cm", "-n", "scratch", "-o", "name").stdout.split()
    assert set(names) == {"serviceaccount/default", "configmap/c1", "configmap/kube-root-ca.crt"}
    kubectl("delete", "namespace", "scratch")
    gone = kubectl("get", "secret", "s1", "-n", "scratch", check=False)
    assert 'namespaces "scratch" not found' in gone.stderr


def test_explain_reads_the_kubernetes_schemas(kubectl):
    containers = kubectl("explain", "pods.spec.containers").stdout
    assert "FIELD: containers <[]Container>" in containers
    assert "List of containers belonging to the pod." in containers
    assert "image\t<string>" in containers and "ports\t<[]ContainerPort>" in containers
    replicas = kubectl("explain", "deployments.spec.replicas").stdout
    assert "Number of desired pods." in replicas
    assert "jobTemplate\t<JobTemplateSpec> -required-" in kubectl("explain", "cronjobs.spec").stdout


LISTED = """\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: listed, namespace: default}
  data: {a: "1"}
- apiVersion: v1
  kind: Pod
  metadata: {name: listed, namespace: default}
  spec:
    containers:
    - {name: app, image: busybox, imagePullPolicyy: Always}
"""


def test_client_side_validation_of_a_list_reads_the_schemas(kubectl):
    """A kind: List is validated by kubectl itself, against the protobuf OpenAPI v2 document."""
    bad = kubectl("apply", "-f", "-", input=LISTED, check=False)
    assert bad.returncode != 0
    assert ('ValidationError(Pod.spec.containers[0]): unknown field "imagePullPolicyy" in '
            "io.k8s.api.core.v1.Container") in bad.stderr
    assert kubectl("get", "configmap", "listed", check=False).returncode != 0
    kubectl("apply", "-f", "-", input=LISTED.replace("imagePullPolicyy", "imagePullPolicy"))
    assert kubectl("get", "configmap", "listed", "-o", "jsonpath={.data.a}").stdout == "1"
