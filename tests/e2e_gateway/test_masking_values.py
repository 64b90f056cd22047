"""Secret values outside Secrets, through the gateway with real kubectl and the Python client.

Two kinds of leak: a value under a name that says "secret" but in a spelling the keyword
detectors missed (``DB_PASS``, ``MYSQL_PWD``, ``example.com/db-password``, ``db_pass``, an ini
``pass = ...``, log lines ``DB_PASS=...`` and ``pwd: ...``), and a Secret's value copied
verbatim under an innocuous name, which only masking by value can catch.  The objects are
written straight to kubesim (admin) before the agent's first request, so the gateway's first
list of Secrets already holds them.
"""

import base64
import json
import time

import pytest
import yaml

from kubesim.testing import read_until

pytestmark = pytest.mark.django_db(transaction=True)

M = "**AIRLOCK-MASKED**"

# Under secret-ish names in spellings the keyword detectors missed (none is a Secret's value).
ENV_DB_PASS = "envDbPass-7Hq2-x91"
ENV_MYSQL_PWD = "envMysqlPwd-K3v8-q04"
ANNOTATION_DB_PASSWORD = "annoDbPassword-Zr5-m27"
CM_DB_PASS = "cmDbPass-W8c-t63"
INI_PASS = "iniPass-N4p-h18"
LOG_DB_PASS = "logDbPass-B6y-u55"
LOG_PWD = "logPwd-F2j-e70"
KEYWORD_VALUES = [ENV_DB_PASS, ENV_MYSQL_PWD, ANNOTATION_DB_PASSWORD, CM_DB_PASS, INI_PASS, LOG_DB_PASS, LOG_PWD]

# A Secret's values, copied verbatim under names that say nothing.
COPIED = "Vq7-copied-kx93Lm2"
COPIED_BINARY_KEY = "tls-ish-Pk9:wQ3/zz"
LATER = "Later-added-4Rt8-pq"
VALUES = [COPIED, COPIED_BINARY_KEY, LATER]

SECRET = f"""\
apiVersion: v1
kind: Secret
metadata: {{name: app-creds, namespace: shop}}
type: kubernetes.io/basic-auth
stringData:
  username: shop
  password: {COPIED}
  api.key: "{COPIED_BINARY_KEY}"
"""

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "leaky",
        "namespace": "shop",
        "annotations": {
            "example.com/db-password": ANNOTATION_DB_PASSWORD,
            "example.com/note": f"copied by hand: {COPIED}",
            "kubesim.airlock.dev/log": (
                "2026-11-20T09:00:00Z INFO starting\n"
                f"2026-11-20T09:00:01Z DEBUG env DB_PASS={LOG_DB_PASS}\n"
                f"2026-11-20T09:00:01Z DEBUG config pwd: {LOG_PWD}\n"
                f"2026-11-20T09:00:02Z DEBUG connecting with {COPIED} as shop\n"
            ),
            "kubesim.airlock.dev/files": json.dumps({
                "etc/notes.txt": f"remember {COPIED} and {COPIED_BINARY_KEY}\n",
                "etc/blob.b64": base64.b64encode(f"xx{COPIED}\n".encode()).decode() + "\n",
            }),
        },
    },
    "spec": {
        "containers": [{
            "name": "app",
            "image": "busybox:1.37",
            "env": [
                {"name": "DB_PASS", "value": ENV_DB_PASS},
                {"name": "MYSQL_PWD", "value": ENV_MYSQL_PWD},
                {"name": "GREETING", "value": COPIED},
            ],
        }],
    },
}

CONFIGMAP = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "leaky-config", "namespace": "shop"},
    "data": {
        "db_pass": CM_DB_PASS,
        "my.ini": f"[client]\nuser = shop\npass = {INI_PASS}\n",
        "greeting": COPIED,
        "copied-from-secret": base64.b64encode(COPIED.encode()).decode(),
    },
}


def forms(value: str) -> list[str]:
    encoded = base64.b64encode(value.encode()).decode()
    return [value, encoded, encoded.rstrip("=")]


def assert_clean(text: str, values=(*KEYWORD_VALUES, *VALUES)):
    for value in values:
        for form in forms(value):
            assert form not in text, f"value leaked ({value[:6]}...)"


@pytest.fixture
def leaky(kubectl):
    """The Secret and its copies, written as the cluster admin (not through the gateway)."""
    kubectl("apply", "-f", "-", input=SECRET)
    kubectl("apply", "-f", "-", input=json.dumps(POD))
    kubectl("apply", "-f", "-", input=json.dumps(CONFIGMAP))


@pytest.fixture
def agent(leaky, gateway, kubectl):
    path = gateway.kubeconfig()

    def run(*args, **kwargs):
        result = kubectl(*args, kubeconfig=path, **kwargs)
        assert_clean(result.stdout + result.stderr)
        return result

    run.popen = lambda *args: kubectl.popen(*args, kubeconfig=path)
    run.kubeconfig = path
    return run


def test_pod_env_and_annotations(agent):
    pod = json.loads(agent("get", "pod", "leaky", "-n", "shop", "-o", "json").stdout)
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    assert env == {"DB_PASS": M, "MYSQL_PWD": M, "GREETING": M}
    annotations = pod["metadata"]["annotations"]
    assert annotations["example.com/db-password"] == M
    assert annotations["example.com/note"] == f"copied by hand: {M}"
    assert pod["metadata"]["namespace"] == "shop"
    as_yaml = yaml.safe_load(agent("get", "pod", "leaky", "-n", "shop", "-o", "yaml").stdout)
    assert as_yaml["metadata"]["annotations"]["example.com/db-password"] == M
    agent("describe", "pod", "leaky", "-n", "shop")
    agent("get", "pods", "-n", "shop", "-o", "yaml")


def test_configmap_keys_ini_and_copies(agent):
    data = yaml.safe_load(agent("get", "configmap", "leaky-config", "-n", "shop", "-o", "yaml").stdout)["data"]
    assert data["db_pass"] == M
    assert data["my.ini"] == f"[client]\nuser = shop\npass = {M}\n"
    assert data["greeting"] == M
    assert data["copied-from-secret"] == M
    agent("describe", "configmap", "leaky-config", "-n", "shop")
    agent("get", "configmaps", "-A", "-o", "json")


def test_logs_and_follow(agent, kubesim):
    logs = agent("logs", "leaky", "-n", "shop").stdout
    assert f"DB_PASS={M}" in logs and f"pwd: {M}" in logs
    assert f"connecting with {M} as shop" in logs
    follow = agent.popen("logs", "-f", "leaky", "-n", "shop")
    read_until(follow, "as shop")
    with open(kubesim.log_file("shop", "leaky", "app"), "a") as log:
        log.write(f"retry DB_PASS={LOG_DB_PASS} then {COPIED} done\n")
    seen = read_until(follow, "done")
    follow.terminate()
    follow.wait(timeout=10)
    assert f"retry DB_PASS={M} then {M} done" in seen
    assert_clean(seen)


def test_exec_output(agent):
    out = agent("exec", "leaky", "-n", "shop", "--", "cat", "etc/notes.txt").stdout
    assert out == f"remember {M} and {M}\n"
    blob = agent("exec", "leaky", "-n", "shop", "--", "cat", "etc/blob.b64").stdout
    assert M in blob


def test_python_client_and_watch(agent, gateway):
    from kubernetes import client, config, watch

    api_client = config.new_client_from_config(str(gateway.kubeconfig()))
    try:
        core = client.CoreV1Api(api_client)
        text = json.dumps(api_client.sanitize_for_serialization(core.list_config_map_for_all_namespaces()))
        text += json.dumps(api_client.sanitize_for_serialization(core.read_namespaced_pod("leaky", "shop")))
        for event in watch.Watch().stream(core.list_namespaced_config_map, "shop", timeout_seconds=1):
            text += json.dumps(api_client.sanitize_for_serialization(event["object"]))
        assert_clean(text)
        assert M in text
    finally:
        api_client.close()


def test_a_secret_created_later_is_masked_once_watched(agent, kubectl):
    """The gateway watches Secrets: a value added after its first list is masked once it has seen it."""
    agent("get", "configmap", "leaky-config", "-n", "shop")  # the store has listed by now
    kubectl("create", "secret", "generic", "later", "-n", "shop", f"--from-literal=token={LATER}")
    kubectl("create", "configmap", "later-copy", "-n", "shop", f"--from-literal=motd={LATER}")
    deadline = time.monotonic() + 15
    while True:
        got = kubectl("get", "configmap", "later-copy", "-n", "shop", "-o", "jsonpath={.data.motd}",
                      kubeconfig=agent.kubeconfig)
        if got.stdout == M:
            break
        assert time.monotonic() < deadline, "the later Secret's value was never masked"
        time.sleep(0.1)


def test_usernames_and_namespace_names_are_not_masked(agent):
    """payments-db's username is "payments", the namespace's name: rule 3 and 4 keep it readable."""
    pods = json.loads(agent("get", "pods", "-n", "payments", "-o", "json").stdout)["items"]
    assert {p["metadata"]["namespace"] for p in pods} == {"payments"}
    assert "payments" in agent("get", "namespaces").stdout
