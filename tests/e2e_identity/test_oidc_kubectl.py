"""Real kubectl, real OpenID provider, real gateway: agents reach what their IdP group is bound to.

Agents use kubeconfigs written by ``manage.py kubeconfig`` whose exec plugin fetches client-credentials
JWTs from the IdP.  ``readers`` is bound to read-only, ``guardrailed`` to production-guardrails (no
approvals Holder on this gateway, so ``review`` refuses with 403 "approval required").  Tokens that
are expired, tampered with, for another audience or from an untrusted issuer are refused with 401
and never reach the cluster.
"""

import base64
import json
import ssl
import time

import httpx
import jwt
import pytest
import yaml

from tests.e2e_identity.agents import (BRIEF, ELSEWHERE, ELSEWHERE_AGENT, GUARDED, READER, ROGUE, STRANGER,
                                      token_for)

pytestmark = pytest.mark.django_db(transaction=True)

NS = "/api/v1/namespaces/shop"


def pod_names(kubectl, kubeconfig, namespace="shop"):
    out = kubectl("get", "pods", "-n", namespace, "-o", "jsonpath={.items[*].metadata.name}", kubeconfig=kubeconfig)
    return out.stdout.split()


def forwarded(kubesim, method, path_part):
    return [r for r in kubesim.requests() if r["method"] == method and path_part in r["path"]]


def test_kubeconfig_holds_no_credential(agent_kubeconfig, kubesim):
    config = yaml.safe_load(agent_kubeconfig(READER).read_text())
    user = config["users"][0]["user"]
    assert list(user) == ["exec"]
    assert READER["client_secret"] not in json.dumps(config)
    assert kubesim.admin_token not in json.dumps(config)


def test_read_only_agent_lists_pods_but_cannot_delete(agent_kubeconfig, kubectl, kubesim):
    reader = agent_kubeconfig(READER)
    pods = pod_names(kubectl, reader)
    assert any(p.startswith("web-") for p in pods)
    kubectl("get", "deployment", "web", "-n", "shop", kubeconfig=reader)

    refused = kubectl("delete", "pod", pods[0], "-n", "shop", kubeconfig=reader, check=False)
    assert refused.returncode != 0
    assert "Error from server (Forbidden)" in refused.stderr
    assert (f'airlock: denied by rule "readers-read-only-no-writes" (connection kubesim): '
            f'delete pods "{pods[0]}" in namespace "shop"') in refused.stderr
    refused = kubectl("delete", "deployment", "web", "-n", "shop", kubeconfig=reader, check=False)
    assert 'denied by rule "readers-read-only-no-writes"' in refused.stderr
    refused = kubectl("exec", "-n", "payments", "debug-shell", "--", "true", kubeconfig=reader, check=False)
    assert refused.returncode != 0 and 'denied by rule "readers-no-exec-attach-portforward"' in refused.stderr

    assert pods == pod_names(kubectl, reader)  # nothing was deleted
    assert not [r for r in kubesim.requests() if r["method"] in ("DELETE", "POST")]
    assert not forwarded(kubesim, "GET", "/exec")
    listed = forwarded(kubesim, "GET", f"{NS}/pods")
    assert listed and all(r["user"] == "kubesim-admin" for r in listed)  # the gateway's credential


def test_guardrails_agent_is_refused_exec_and_delete_naming_the_rule(agent_kubeconfig, kubectl, kubesim):
    guarded = agent_kubeconfig(GUARDED)
    assert "web-" in kubectl("get", "pods", "-n", "shop", kubeconfig=guarded).stdout

    refused = kubectl("delete", "deployment", "web", "-n", "shop", kubeconfig=guarded, check=False)
    assert refused.returncode != 0
    assert "Error from server (Forbidden)" in refused.stderr
    assert ('airlock: approval required by rule "review-deletes" (connection kubesim): '
            'delete deployments "web" in namespace "shop"; a reviewer must approve this request') in refused.stderr

    refused = kubectl("exec", "-n", "payments", "debug-shell", "--", "cat", "/etc/hostname", kubeconfig=guarded,
                      check=False)
    assert refused.returncode != 0
    assert ('approval required by rule "review-exec-attach-portforward" (connection kubesim): '
            'create pods/exec "debug-shell" in namespace "payments"') in refused.stderr
    refused = kubectl("scale", "deployment", "web", "-n", "shop", "--replicas=0", kubeconfig=guarded, check=False)
    assert 'approval required by rule "review-scale"' in refused.stderr

    kubectl("get", "deployment", "web", "-n", "shop")  # still there (admin view of the cluster)
    assert not [r for r in kubesim.requests() if r["method"] not in ("GET", "HEAD")]
    assert not forwarded(kubesim, "GET", "/exec")


def test_agent_in_no_bound_group_is_denied_by_default(oidc_gateway, agents_idp, kubesim):
    """A valid token from the trusted IdP authenticates, but only bound groups have rules."""
    token = token_for(agents_idp, STRANGER)
    with gateway_client(oidc_gateway) as client:
        for path in (f"{NS}/pods", "/version", "/api"):
            refused = client.get(path, headers=bearer(token))
            assert refused.status_code == 403
            assert 'denied by rule "default-deny"' in refused.json()["message"]
    assert kubesim.requests() == []


def gateway_client(gateway):
    return httpx.Client(base_url=gateway.server_url(), verify=ssl.create_default_context(cafile=gateway.ca_file),
                        timeout=15)


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def tampered(token):
    """The same signature over a payload that now claims the guardrailed group and a longer life."""
    header, _, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    claims |= {"groups": ["guardrailed", "readers", "system:masters"], "exp": claims["exp"] + 3600}
    return f"{header}.{b64(claims)}.{signature}"


def expired(idp, client):
    token = token_for(idp, client)
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    while time.time() <= exp:  # leeway is 0 on this gateway: expired once exp has passed
        time.sleep(0.1)
    return token


@pytest.fixture
def refused_tokens(agents_idp, elsewhere_idp, untrusted_idp):
    return {
        "token expired": expired(agents_idp, BRIEF),
        "token signature invalid": tampered(token_for(agents_idp, READER)),
        "token audience not accepted": token_for(elsewhere_idp, ELSEWHERE_AGENT),
        "token issuer not trusted": token_for(untrusted_idp, ROGUE),
    }


def test_refused_tokens_get_401_status_and_never_reach_the_cluster(oidc_gateway, refused_tokens, kubesim):
    audience = jwt.decode(refused_tokens["token audience not accepted"], options={"verify_signature": False})["aud"]
    assert audience == ELSEWHERE
    with gateway_client(oidc_gateway) as client:
        for message, token in refused_tokens.items():
            for method, path in (("GET", f"{NS}/pods"), ("DELETE", f"{NS}/pods/web"), ("GET", "/version")):
                response = client.request(method, path, headers=bearer(token))
                assert response.status_code == 401, (message, response.text)
                status = response.json()
                assert (status["kind"], status["status"], status["reason"], status["code"]) == (
                    "Status", "Failure", "Unauthorized", 401)
                assert status["message"] == f"Unauthorized: {message}"
                assert token not in response.text
    assert kubesim.requests() == []


def test_kubectl_with_a_refused_token_is_not_logged_in(oidc_gateway, refused_tokens, kubectl, kubesim):
    for name, (message, token) in zip(("expired", "tampered", "audience", "issuer"), refused_tokens.items()):
        config = oidc_gateway.kubeconfig(token=token, name=name)
        result = kubectl("get", "pods", "-n", "shop", kubeconfig=config, check=False)
        assert result.returncode != 0
        assert "You must be logged in to the server" in result.stderr, result.stderr
        # `get pods` words it generically (discovery fails first); --raw shows the gateway's Status message.
        raw = kubectl("get", "--raw", "/api/v1/namespaces/shop/pods", kubeconfig=config, check=False)
        assert raw.returncode != 0
        assert f"error: You must be logged in to the server (Unauthorized: {message})" in raw.stderr
        assert token not in result.stderr + raw.stderr
        assert token not in result.stderr
    assert kubesim.requests() == []
