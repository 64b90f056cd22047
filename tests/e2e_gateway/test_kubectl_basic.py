"""Real kubectl through the gateway to kubesim: the everyday commands an agent runs."""

import base64
import hashlib
import json
import time

import pytest
import yaml

from kubesim.requestlog import header
from kubesim.testing import read_until
from tests.gateway_harness import AGENT_TOKEN

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: hello, namespace: default, labels: {app: hello}}
spec:
  replicas: %d
  selector: {matchLabels: {app: hello}}
  template:
    metadata: {labels: {app: hello}}
    spec:
      containers:
      - {name: hello, image: "%s"}
"""


@pytest.fixture
def agent(gateway, kubectl):
    """kubectl with the agent's kubeconfig (through the gateway)."""
    path = gateway.kubeconfig()

    def run(*args, **kwargs):
        return kubectl(*args, kubeconfig=path, **kwargs)

    run.popen = lambda *args: kubectl.popen(*args, kubeconfig=path)
    run.kubeconfig = path
    return run


def test_get_table_yaml_and_all_namespaces(agent):
    table = agent("get", "pods", "-n", "shop").stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert len(table) == 4
    everywhere = agent("get", "pods", "-A", "--sort-by=.metadata.name").stdout
    assert "payments" in everywhere and "shop" in everywhere
    deployment = yaml.safe_load(agent("get", "deployment", "web", "-n", "shop", "-o", "yaml").stdout)
    assert deployment["kind"] == "Deployment" and deployment["status"]["readyReplicas"] == 2


def test_describe(agent):
    out = agent("describe", "deployment", "web", "-n", "shop").stdout
    assert "Replicas:" in out and "web" in out
    pod = agent("get", "pods", "-n", "shop", "-l", "app=cart", "-o", "jsonpath={.items[0].metadata.name}").stdout
    assert "Containers:" in agent("describe", "pod", pod, "-n", "shop").stdout
    assert "Type:" in agent("describe", "secret", "shop-db", "-n", "shop").stdout


def test_apply_scale_delete(agent, kubectl):
    created = agent("apply", "-f", "-", input=DEPLOYMENT % (1, "nginx:1.27"))
    assert "deployment.apps/hello created" in created.stdout
    updated = agent("apply", "-f", "-", input=DEPLOYMENT % (1, "nginx:1.28"))
    assert "deployment.apps/hello configured" in updated.stdout
    assert agent("get", "deploy", "hello", "-o", "jsonpath={.spec.template.spec.containers[0].image}").stdout == "nginx:1.28"
    assert "scaled" in agent("scale", "deployment", "hello", "--replicas=3").stdout
    assert agent("get", "deploy", "hello", "-o", "jsonpath={.spec.replicas}").stdout == "3"
    assert 'deployment.apps "hello" deleted' in agent("delete", "deployment", "hello").stdout
    gone = kubectl("get", "deployment", "hello", check=False)  # admin view of the cluster itself
    assert gone.returncode != 0 and "NotFound" in gone.stderr


def test_label_and_annotate(agent):
    agent("label", "deployment", "web", "-n", "shop", "tier=frontend")
    agent("annotate", "deployment", "web", "-n", "shop", "owner=agents")
    meta = json.loads(agent("get", "deployment", "web", "-n", "shop", "-o", "json").stdout)["metadata"]
    assert meta["labels"]["tier"] == "frontend" and meta["annotations"]["owner"] == "agents"


def test_get_watch_streams_events(agent, kubectl):
    watch = agent.popen("get", "configmaps", "-n", "default", "-w")
    read_until(watch, "NAME")
    kubectl("create", "configmap", "watched-cm", "-n", "default", "--from-literal=a=b")
    read_until(watch, "watched-cm")
    assert watch.poll() is None, "the watch must stay open"


def test_logs_and_follow(agent, kubesim):
    pod = agent("get", "pods", "-n", "shop", "-l", "app=web", "-o", "jsonpath={.items[0].metadata.name}").stdout
    assert agent("logs", pod, "-n", "shop").stdout
    follow = agent.popen("logs", "-f", pod, "-n", "shop")
    time.sleep(0.3)
    with open(kubesim.log_file("shop", pod, "web"), "a") as log:
        log.write("line-appended-while-following\n")
    read_until(follow, "line-appended-while-following")
    assert follow.poll() is None


def test_auth_can_i_and_create_token(agent, gateway):
    from policy.models import Rule

    assert agent("auth", "can-i", "delete", "pods", "-n", "shop").stdout.strip() == "yes"
    assert agent("create", "token", "deployer", "-n", "shop").stdout.strip() == "**AIRLOCK-MASKED**"
    Rule.objects.create(
        connection=gateway.connection, order=5, name="token-unmasked", effect="allow", groups=["agents"],
        verbs=["create"], api_groups=[""], resources=["serviceaccounts/token"], namespaces=["shop"],
        names=["deployer"], mask_secrets=False,
    )
    token = agent("create", "token", "deployer", "-n", "shop").stdout.strip()
    assert token.count(".") == 2, "a rule with masking off reveals the token"


def test_version_and_api_resources(agent):
    assert "v1.37" in agent("version").stdout
    assert "deployments" in agent("api-resources").stdout


def test_no_client_identity_or_binary_accept_reaches_the_cluster(agent, kubesim):
    """The agent's token stays at the gateway; Accept is JSON-only."""
    agent("get", "pods", "-n", "shop")
    agent("describe", "secret", "shop-db", "-n", "shop")  # typed client: protobuf Accept
    agent("auth", "can-i", "get", "pods")  # protobuf request body
    records = kubesim.requests()
    assert len(records) >= 6
    agent_hash = "sha256:" + hashlib.sha256(AGENT_TOKEN.encode()).hexdigest()
    admin_hash = "sha256:" + hashlib.sha256(kubesim.admin_token.encode()).hexdigest()
    for record in records:
        names = [name.lower() for name, _ in record["headers"]]
        assert not [n for n in names if n.startswith(("impersonate-", "x-remote-"))], record
        assert [v.split()[-1] for v in header(record, "authorization")] == [admin_hash]
        assert agent_hash not in json.dumps(record)
        for accept in header(record, "accept"):
            for clause in accept.split(","):
                assert clause.split(";")[0].strip() == "application/json", accept


def test_python_client_list_watch_and_read(gateway):
    from kubernetes import client, config, watch

    api_client = config.new_client_from_config(str(gateway.kubeconfig()))
    core = client.CoreV1Api(api_client)
    pods = core.list_namespaced_pod("shop")
    assert len(pods.items) == 3
    secret = core.read_namespaced_secret("api-keys", "shop")
    assert set(secret.data) and all(base64.b64decode(v) for v in secret.data.values())
    stream = watch.Watch().stream(core.list_namespaced_pod, "shop", timeout_seconds=5)
    first = next(stream)
    assert first["type"] == "ADDED" and first["object"].metadata.namespace == "shop"
    api_client.close()


def test_protobuf_writes_transcoded_or_refused(agent, kubesim):
    """kubectl >= 1.32 sends typed writes as protobuf; the cluster only ever sees JSON."""
    assert "secret/pb-made created" in agent("create", "secret", "generic", "pb-made", "--from-literal=k=v").stdout
    made = [r for r in kubesim.requests() if r["method"] == "POST" and r["path"].endswith("/secrets")][-1]
    assert header(made, "content-type") == ["application/json"]
    refused = agent("create", "deployment", "pb-deploy", "--image=nginx", check=False)
    assert refused.returncode != 0 and "cannot inspect this protobuf request body" in refused.stderr
    assert not [r for r in kubesim.requests() if r["path"].endswith("/deployments") and r["method"] == "POST"]


def test_raw_client_headers_scrubbed(gateway, kubesim):
    """Headers kubectl cannot send but a hostile client can: none reaches the cluster."""
    import ssl

    import httpx

    hostile = {
        "Authorization": f"Bearer {AGENT_TOKEN}",
        "X-Remote-User": "system:admin",
        "X-Remote-Group": "system:masters",
        "X-Remote-Extra-Reason": "x",
        "Accept": "application/cbor, application/yaml, application/vnd.kubernetes.protobuf;stream=watch",
        "Accept-Encoding": "gzip",
    }
    with httpx.Client(verify=ssl.create_default_context(cafile=str(gateway.ca_file))) as client:
        response = client.get(gateway.server_url() + "/api/v1/namespaces/shop/configmaps", headers=hostile)
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    assert response.json()["kind"] == "ConfigMapList"
    record = [r for r in kubesim.requests() if r["path"] == "/api/v1/namespaces/shop/configmaps"][-1]
    names = [name.lower() for name, _ in record["headers"]]
    assert not [n for n in names if n.startswith(("impersonate-", "x-remote-"))]
    assert header(record, "accept") == ["application/json"]
    assert header(record, "accept-encoding") == ["identity"]
    assert record["user"] == "kubesim-admin" and record["impersonated_user"] is None
