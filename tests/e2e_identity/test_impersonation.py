"""Impersonation mode: the cluster sees the agent (Impersonate-User/-Group), never an identity the client chose.

Real kubectl with the exec plugin and the real IdP, through the OIDC gateway, to kubesim, whose
request log records the impersonated identity and whose authorizer then decides as it would for
that user (a kubesim "viewer": reads, but no Secrets).
"""

import json

import pytest

from kubesim.requestlog import header
from tests.e2e_identity import rawhttp
from tests.e2e_identity.agents import READER, token_for

pytestmark = pytest.mark.django_db(transaction=True)

PREFIX = "agent:"


@pytest.fixture
def impersonating(oidc_gateway):
    connection = oidc_gateway.connection
    connection.impersonation_mode = "impersonate"
    connection.impersonation_user_prefix = PREFIX
    connection.save()
    return oidc_gateway


def test_the_cluster_sees_the_agent(impersonating, agent_kubeconfig, kubectl, kubesim):
    reader = agent_kubeconfig(READER)
    assert "web-" in kubectl("get", "pods", "-n", "shop", kubeconfig=reader).stdout

    [listed] = [r for r in kubesim.requests() if r["path"] == "/api/v1/namespaces/shop/pods"]
    assert listed["user"] == "kubesim-admin"  # authenticated as the gateway ...
    assert listed["impersonated_user"] == f"{PREFIX}reader-agent"  # ... acting as the agent
    assert listed["impersonated_groups"] == ["readers", "system:authenticated"]  # kube adds the last
    assert header(listed, "Impersonate-User") == [f"{PREFIX}reader-agent"]
    assert header(listed, "Impersonate-Group") == ["readers"]

    # whoami names the agent as its token does, and the name the cluster knows it by
    user = json.loads(kubectl("auth", "whoami", "-o", "json", kubeconfig=reader).stdout)["status"]["userInfo"]
    assert user["username"] == "reader-agent" and user["groups"] == ["readers"]
    assert user["extra"]["airlock.dev/cluster-username"] == [f"{PREFIX}reader-agent"]

    # can-i is yes only when the rules and the cluster (asked as the impersonated agent) both say yes
    assert kubectl("auth", "can-i", "get", "pods", "-n", "shop", kubeconfig=reader).stdout == "yes\n"
    both = kubectl("auth", "can-i", "get", "secrets", "-n", "shop", kubeconfig=reader, check=False)
    assert both.returncode == 1 and both.stdout == (
        'no - airlock: allowed by rule "readers-read-secrets-masked" (connection kubesim), but the cluster does '
        "not allow it for the identity connection kubesim uses there\n")
    [asked] = [r for r in kubesim.requests() if r["path"].endswith("/selfsubjectaccessreviews")][-1:]
    assert asked["impersonated_user"] == f"{PREFIX}reader-agent"
    listed = kubectl("auth", "can-i", "--list", "-n", "shop", kubeconfig=reader).stdout
    assert "pods " in listed and "secrets" not in listed  # the cluster's viewer reads no Secrets

    # The gateway's read-only preset allows reading Secrets (masked); the cluster's own RBAC
    # decides for the impersonated agent, and a kubesim viewer may not read them.
    refused = kubectl("get", "secret", "shop-db", "-n", "shop", kubeconfig=reader, check=False)
    assert refused.returncode != 0 and "Forbidden" in refused.stderr
    assert f'User "{PREFIX}reader-agent" cannot get resource "secrets"' in refused.stderr


def test_client_impersonation_headers_never_pass(impersonating, agents_idp, kubesim):
    """The gateway impersonates the agent; the agent asking for someone else is a 403, and a front-proxy
    header is dropped."""
    port = int(impersonating.url.rsplit(":", 1)[1])
    token = token_for(agents_idp, READER)
    path = "/k8s/kubesim/api/v1/namespaces/shop/pods"
    for asked in (("Impersonate-User", "system:admin"), ("Impersonate-Group", "system:masters"),
                  ("impersonate-uid", "0"), ("Impersonate-Extra-Scopes", "everything")):
        refused = rawhttp.request("127.0.0.1", port, impersonating.ca_file, "GET", path,
                                  [("Authorization", f"Bearer {token}"), asked])
        assert refused.status == 403, asked
        assert refused.status_object()["message"].startswith("airlock: impersonation is not allowed")
    assert not [r for r in kubesim.requests() if r["path"] == "/api/v1/namespaces/shop/pods"]

    response = rawhttp.request("127.0.0.1", port, impersonating.ca_file, "GET", path,
                               [("Authorization", f"Bearer {token}"), ("X-Remote-User", "system:admin")])
    assert response.status == 200
    [record] = [r for r in kubesim.requests() if r["path"] == "/api/v1/namespaces/shop/pods"]
    assert record["impersonated_user"] == f"{PREFIX}reader-agent"
    assert record["impersonated_groups"] == ["readers", "system:authenticated"]
    assert header(record, "Impersonate-User") == [f"{PREFIX}reader-agent"]
    assert header(record, "Impersonate-Group") == ["readers"]
    sent = {name.lower() for name, _ in record["headers"]}
    assert not sent & {"impersonate-uid", "impersonate-extra-scopes", "x-remote-user"}
