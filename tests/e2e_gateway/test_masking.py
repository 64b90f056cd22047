"""No secret value from kubesim's seed reaches an agent through the gateway, in any shape or stream."""

import base64
import json
import ssl
import time

import httpx
import pytest

from kubesim.testing import PtyProcess, read_until

pytestmark = pytest.mark.django_db(transaction=True)

SEEDED = [
    "s3cr3t-db-password-4f9a", "sk_live_kubesim_51f0c2e9", "jwt-signing-key-b7d1", "m4il-p4ss-7c1e",
    "sa-token-deployer-8b2c", "kubesim-aws-secret-2d7f", "pay-db-pass-61c3",
]


def forms(value: str) -> list[str]:
    """A value as it could leak: plain, base64 (Secret data), inside JSON-escaped base64."""
    encoded = base64.b64encode(value.encode()).decode()
    return [value, encoded, encoded.rstrip("=")]


def assert_clean(text: str, extra=()):
    for secret in [*SEEDED, *extra]:
        for form in forms(secret):
            assert form not in text, f"secret value leaked ({secret[:4]}...)"


@pytest.fixture
def agent(gateway, kubectl):
    path = gateway.kubeconfig()

    def run(*args, **kwargs):
        result = kubectl(*args, kubeconfig=path, **kwargs)
        assert_clean(result.stdout + result.stderr)
        return result

    run.popen = lambda *args: kubectl.popen(*args, kubeconfig=path)
    run.kubectl = kubectl
    run.kubeconfig = path
    return run


@pytest.fixture
def api(gateway):
    from tests.gateway_harness import AGENT_TOKEN

    context = ssl.create_default_context(cafile=str(gateway.ca_file))
    with httpx.Client(base_url=gateway.server_url(), verify=context, timeout=20,
                      headers={"Authorization": f"Bearer {AGENT_TOKEN}"}) as client:
        yield client


def test_reads_in_every_output_format(agent):
    for args in [
        ("get", "secrets", "-A"),
        ("get", "secrets", "-A", "-o", "yaml"),
        ("get", "secrets", "-A", "-o", "json"),
        ("get", "secret", "shop-db", "-n", "shop", "-o", "yaml"),
        ("get", "secret", "deployer-token", "-n", "shop", "-o", "jsonpath={.data.token}"),
        ("get", "secrets", "-A", "--sort-by=.metadata.name"),
        ("describe", "secret", "deployer-token", "-n", "shop"),
        ("describe", "secrets", "-n", "payments"),
        ("get", "configmaps", "-A", "-o", "yaml"),
        ("describe", "configmap", "web-config", "-n", "shop"),
        ("get", "pods", "-A", "-o", "yaml"),
        ("describe", "pods", "-n", "shop"),
        ("get", "deployments", "-A", "-o", "json"),
    ]:
        agent(*args)
    out = agent("get", "secret", "shop-db", "-n", "shop", "-o", "json").stdout
    secret = json.loads(out)
    assert set(secret["data"]) == {"DB_PASSWORD", "DB_USER"}
    assert base64.b64decode(secret["data"]["DB_PASSWORD"]) == b"**AIRLOCK-MASKED**"


def test_python_client_reads(gateway):
    from kubernetes import client, config

    api_client = config.new_client_from_config(str(gateway.kubeconfig()))
    try:
        core = client.CoreV1Api(api_client)
        text = json.dumps(api_client.sanitize_for_serialization(core.list_secret_for_all_namespaces()))
        text += json.dumps(api_client.sanitize_for_serialization(core.list_pod_for_all_namespaces()))
        assert_clean(text)
        assert "KipBSVJMT0NLLU1BU0tFRCoq" in text
    finally:
        api_client.close()


def test_watch_of_secrets_and_watch_list(agent, api, kubectl):
    watch = agent.popen("get", "secrets", "-n", "shop", "-w", "-o", "json")
    first = read_until(watch, "shop-db")
    kubectl("patch", "secret", "shop-db", "-n", "shop", "-p", '{"stringData":{"EXTRA":"w4tch-leak-9e1d"}}')
    seen = first + read_until(watch, "EXTRA")
    assert_clean(seen, extra=["w4tch-leak-9e1d"])

    params = {"watch": "1", "sendInitialEvents": "true", "allowWatchBookmarks": "true",
              "resourceVersionMatch": "NotOlderThan", "resourceVersion": "", "timeoutSeconds": "5"}
    body = b""
    with api.stream("GET", "/api/v1/secrets", params=params) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw():
            body += chunk
            if b"k8s.io/initial-events-end" in body:
                break
    events = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
    assert {e["type"] for e in events} >= {"ADDED", "BOOKMARK"}
    assert len([e for e in events if e["type"] == "ADDED"]) >= 4
    assert_clean(body.decode(), extra=["w4tch-leak-9e1d"])


def test_write_responses_delete_and_deletecollection(agent, api):
    manifest = ("apiVersion: v1\nkind: Secret\nmetadata: {name: applied, namespace: default}\n"
                "stringData: {key: 4pplied-v4lue-31c7}\n")
    created = agent("apply", "-f", "-", "-o", "json", input=manifest)
    assert_clean(created.stdout, extra=["4pplied-v4lue-31c7"])
    updated = agent("apply", "-f", "-", "-o", "yaml", input=manifest.replace("31c7", "41c8"))
    assert_clean(updated.stdout, extra=["4pplied-v4lue-31c7", "4pplied-v4lue-41c8"])
    dry = agent("create", "secret", "generic", "dry", "--from-literal=k=dry-run-v4lue-0a0a", "--dry-run=server",
                "-o", "json")
    assert_clean(dry.stdout, extra=["dry-run-v4lue-0a0a"])

    deleted = api.delete("/api/v1/namespaces/default/secrets/applied")
    assert deleted.status_code == 200
    assert_clean(deleted.text, extra=["4pplied-v4lue-41c8"])
    collection = api.delete("/api/v1/namespaces/shop/secrets")
    assert collection.status_code == 200 and collection.json()["items"]
    assert_clean(collection.text)


def test_create_token_is_masked(agent):
    token = agent("create", "token", "deployer", "-n", "shop").stdout.strip()
    assert token == "**AIRLOCK-MASKED**"


def test_logs_and_follow(agent, kubesim):
    pod = agent("get", "pods", "-n", "shop", "-l", "app=cart", "-o", "jsonpath={.items[0].metadata.name}").stdout
    logs = agent("logs", pod, "-n", "shop").stdout
    assert "postgres://shop:" in logs
    follow = agent.popen("logs", "-f", pod, "-n", "shop")
    read_until(follow, "postgres://shop:")
    time.sleep(0.3)
    with open(kubesim.log_file("shop", pod, "cart"), "a") as log:
        log.write("retrying with password=f0llow-leak-77ab now\n")
    seen = read_until(follow, "now")
    assert "password=**AIRLOCK-MASKED**" in seen
    assert_clean(seen, extra=["f0llow-leak-77ab"])


def test_exec_output_masked(agent):
    out = agent("exec", "debug-shell", "-n", "payments", "--", "cat", "etc/app/credentials").stdout
    assert "aws_secret_access_key=" in out and "AIRLOCK-MASKED" in out
    tty = PtyProcess(agent.kubectl.argv(("exec", "-it", "debug-shell", "-n", "payments", "--", "sh"), agent.kubeconfig),
                     agent.kubectl.env, rows=24, cols=100)
    try:
        tty.type("cat etc/app/credentials; echo E$((1+1))ND\n")
        tty.expect(r"E2ND")
        tty.type("exit\n")
        tty.proc.wait(timeout=20)
    finally:
        tty.close()
    assert_clean(tty.seen.decode(errors="replace"))
    assert b"aws_secret_access_key" in tty.seen


def test_write_back_guard(agent, kubectl):
    exported = agent("get", "secret", "shop-db", "-n", "shop", "-o", "yaml").stdout
    replaced = agent("replace", "-f", "-", input=exported, check=False)
    assert replaced.returncode != 0 and "AIRLOCK-MASKED" in replaced.stderr
    real = json.loads(kubectl("get", "secret", "shop-db", "-n", "shop", "-o", "json").stdout)  # admin, direct
    assert base64.b64decode(real["data"]["DB_PASSWORD"]) == b"s3cr3t-db-password-4f9a"
