"""What an agent learns about itself through the gateway, with real kubectl and the Python clients.

The connection carries the production-guardrails preset for the agents' group and the read-only
preset for the viewers' group (tests.gateway_harness.AGENT_TOKENS), as an operator binds them.
kubectl's own answers are the judge: ``auth whoami`` names the agent (never the connection's
credential, kubesim's admin), ``auth can-i`` says what the rules and the cluster allow together
and why not, ``--as`` is refused, and the discovery paths kube-apiserver serves work as they do
against kube-apiserver.
"""

import json
import subprocess
import sys

import pytest

from gateway.secretvalues import USER_AGENT
from kubesim.requestlog import header
from kubesim.testing import read_until
from tests.gateway_harness import serving

pytestmark = pytest.mark.django_db(transaction=True)

VIEWER_TOKEN = "viewer-token-2b9d"


@pytest.fixture
def guarded(cluster_connection, gateway_app, tmp_path):
    from policy.presets import apply_preset

    apply_preset(cluster_connection, "production-guardrails", groups=["agents"], name_prefix="agents-")
    apply_preset(cluster_connection, "read-only", groups=["viewers"], name_prefix="viewers-")
    with serving(gateway_app, cluster_connection, tmp_path / "gateway") as running:
        yield running


@pytest.fixture
def agent(guarded, kubectl):
    path = guarded.kubeconfig()

    def run(*args, **kwargs):
        return kubectl(*args, kubeconfig=path, **kwargs)

    run.kubeconfig = path
    return run


@pytest.fixture
def viewer(guarded, kubectl):
    path = guarded.kubeconfig(token=VIEWER_TOKEN, name="viewer")
    return lambda *args, **kwargs: kubectl(*args, kubeconfig=path, **kwargs)


def agent_requests(kubesim):
    """What reached kubesim on the agents' behalf (not the gateway's own Secret listing)."""
    return [r for r in kubesim.requests() if header(r, "user-agent") != [USER_AGENT]]


def test_whoami_names_the_agent_never_the_connection_credential(agent, kubesim):
    review = json.loads(agent("auth", "whoami", "-o", "json").stdout)
    assert review["kind"] == "SelfSubjectReview" and review["apiVersion"] == "authentication.k8s.io/v1"
    assert review["status"]["userInfo"] == {
        "username": "agent-1", "uid": "agent-1", "groups": ["agents", "dev"],
        "extra": {"airlock.dev/issuer": ["airlock-dev-static-tokens"], "airlock.dev/connection": ["kubesim"]},
    }
    table = agent("auth", "whoami").stdout
    assert "agent-1" in table and "kubesim-admin" not in table and "system:masters" not in table
    assert not [r for r in agent_requests(kubesim) if "selfsubjectreviews" in r["path"]]


def test_can_i_answers_from_the_rules_and_names_the_review(agent, viewer):
    assert agent("auth", "can-i", "get", "pods", "-n", "shop").stdout == "yes\n"
    assert agent("auth", "can-i", "list", "secrets", "-A").stdout == "yes\n"
    assert agent("auth", "can-i", "get", "/version/").stdout == "yes\n"

    held = agent("auth", "can-i", "delete", "pods", "-n", "shop", check=False)
    assert held.returncode == 1
    assert held.stdout == ('no - airlock: approval required by rule "agents-review-deletes" (connection kubesim): '
                           'delete pods in namespace "shop"; a reviewer must approve this request\n')
    scale = agent("auth", "can-i", "patch", "deployments.apps/web", "--subresource=scale", "-n", "shop", check=False)
    assert scale.returncode == 1 and 'approval required by rule "agents-review-scale"' in scale.stdout
    everything = agent("auth", "can-i", "*", "*", check=False)
    assert everything.returncode == 1 and everything.stdout.startswith("no - airlock:")
    exec_ = agent("auth", "can-i", "create", "pods", "--subresource=exec", "-n", "shop", check=False)
    assert 'approval required by rule "agents-review-exec-attach-portforward"' in exec_.stdout

    denied = viewer("auth", "can-i", "delete", "pods", "-n", "shop", check=False)
    assert denied.returncode == 1
    assert denied.stdout.startswith('no - airlock: denied by rule "viewers-read-only-no-writes" (connection kubesim)')
    metrics = viewer("auth", "can-i", "get", "/metrics", check=False)
    assert metrics.returncode == 1 and 'denied by rule "default-deny"' in metrics.stdout
    assert viewer("auth", "can-i", "get", "deployments", "-n", "shop").stdout == "yes\n"


def test_can_i_list_shows_what_is_allowed_and_names_the_rules_that_hold(agent):
    listed = agent("auth", "can-i", "--list", "-n", "shop")
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:] if line.strip()}
    assert "[get list watch]" in rows["*.*"] and "[get list watch]" in rows["secrets"]
    assert "[create]" in rows["selfsubjectaccessreviews.authorization.k8s.io"]
    assert "/version/" in listed.stdout and "/healthz/*" in listed.stdout
    assert not [line for line in rows.values() if "delete" in line or "patch" in line]
    warning = listed.stderr
    assert "the list may be incomplete: airlock: connection kubesim checks its rules in order" in warning
    assert '"agents-review-deletes" (needs a reviewer: delete,deletecollection *)' in warning
    assert '"agents-review-exec-attach-portforward" (needs a reviewer: * pods/exec,pods/attach,pods/portforward)' \
        in warning


def test_impersonation_is_refused_and_kubectl_prints_why(agent, kubesim):
    why = ("airlock: impersonation is not allowed through this gateway (the request carries Impersonate-User); "
           'requests run as the agent\'s own identity "agent-1": drop --as, --as-group and --as-uid')
    # A cold discovery cache: client-go reads discovery raw and prints a refusal there as "unknown";
    # the Warning header carries the reason.
    cold = agent("--as=bob", "get", "pods", "-n", "shop", check=False)
    assert cold.returncode != 0 and cold.stderr.startswith(f"Warning: {why}\n")
    agent("get", "pods", "-n", "shop")  # discovery cached, as an agent at work has it
    before = len(agent_requests(kubesim))
    warm = agent("--as=bob", "get", "pods", "-n", "shop", check=False)
    assert warm.returncode != 0 and f"Error from server (Forbidden): {why}" in warm.stderr
    asked = agent("auth", "can-i", "get", "secrets", "--as=bob", "--as-group=system:masters", check=False)
    assert asked.returncode != 0
    assert "Error from server (Forbidden): airlock: impersonation is not allowed" in asked.stderr
    assert "Impersonate-Group" in asked.stderr and "Impersonate-User" in asked.stderr
    assert len(agent_requests(kubesim)) == before


def test_discovery_paths_with_and_without_a_trailing_slash_answer_as_the_cluster_does(agent, kubectl, kubesim):
    for path in ("/version", "/version/", "/api", "/api/", "/apis/", "/api/v1/", "/apis/apps/v1/", "/openapi/v3/",
                 "/healthz", "/livez", "/readyz", "/readyz/ping", "/healthz/", "/openapi/v2/"):
        through = agent("get", "--raw", path, check=False)
        direct = kubectl("get", "--raw", path, check=False)
        assert (through.returncode, through.stdout, through.stderr) == (direct.returncode, direct.stdout,
                                                                        direct.stderr), path
    assert json.loads(agent("get", "--raw", "/version/").stdout)["gitVersion"].startswith("v1.37")
    refused = agent("get", "--raw", "/metrics", check=False)
    assert refused.returncode != 0 and 'denied by rule "default-deny"' in refused.stderr


def test_the_python_clients_see_the_agent(guarded):
    from kubernetes import client, config

    api_client = config.new_client_from_config(str(guarded.kubeconfig()))
    try:
        who = client.AuthenticationV1Api(api_client).create_self_subject_review(client.V1SelfSubjectReview())
        assert who.status.user_info.username == "agent-1" and who.status.user_info.groups == ["agents", "dev"]
        authz = client.AuthorizationV1Api(api_client)
        ask = authz.create_self_subject_access_review(client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=client.V1ResourceAttributes(
                verb="delete", resource="deployments", group="apps", namespace="shop", name="web"))))
        assert ask.status.allowed is False and "a reviewer must approve" in ask.status.reason
        assert ask.spec.resource_attributes.name == "web"
        listed = authz.create_self_subject_rules_review(client.V1SelfSubjectRulesReview(
            spec=client.V1SelfSubjectRulesReviewSpec(namespace="shop")))
        rules = {(tuple(r.verbs), tuple(r.resources)) for r in listed.status.resource_rules}
        assert (("get", "list", "watch"), ("*",)) in rules
        assert not [r for r in listed.status.resource_rules if "delete" in r.verbs]
        assert listed.status.incomplete is True
        assert client.VersionApi(api_client).get_code().git_version.startswith("v1.37")
    finally:
        api_client.close()
    # kr8s asks for /version/ when it starts (in its own process, which closes its connections on exit)
    script = "import sys, kr8s; print(kr8s.api(kubeconfig=sys.argv[1]).version()['gitVersion'])"
    started = subprocess.run([sys.executable, "-W", "ignore", "-c", script, str(guarded.kubeconfig())],
                             capture_output=True, text=True, timeout=60)
    assert started.returncode == 0 and started.stdout.startswith("v1.37"), started.stderr


@pytest.mark.parametrize("append_server_path", [False, True])
def test_kubectl_proxy_reaches_the_api_only_with_the_server_path(live_airlock, kubectl, append_server_path):
    """Without --append-server-path kubectl proxy sends /api/v1/pods to the gateway's root: a Status that
    says where the API is, never Django's debug page."""
    import re
    import urllib.request
    from urllib.error import HTTPError

    args = ["proxy", "--port=0"] + (["--append-server-path"] if append_server_path else [])
    proxy = kubectl.popen(*args, kubeconfig=live_airlock.kubeconfig())
    port = re.search(r"127\.0\.0\.1:(\d+)", read_until(proxy, "Starting to serve on")).group(1)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/namespaces/shop/pods", timeout=10) as answer:
            code, body = answer.status, json.loads(answer.read())
    except HTTPError as refused:
        code, body = refused.code, json.loads(refused.read())
    if append_server_path:
        assert code == 200 and body["kind"] == "PodList"
    else:
        assert code == 404 and body["kind"] == "Status" and body["reason"] == "NotFound"
        assert "/k8s/<connection>/" in body["message"] and "--append-server-path" in body["message"]
