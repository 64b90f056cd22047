"""A third-party style MCP proxy behind Airlock: it holds its own token from the real test IdP, serves
end users, and names each with Impersonate-User/-Group (as kubernetes-mcp-server's impersonation mode
and any client-go program with ImpersonationConfig do).  Airlock applies the end user's rules, refuses
what the proxy may not assert, records both; everyone else's impersonation stays refused.

Through the real OIDC gateway on TLS to kubesim, whose request log shows what reached the cluster.
"""

import io
import json
import ssl
import time

import httpx
import pytest
from django.core.management import call_command

from audit.chain import verify_chain
from audit.models import AuditEvent
from connections.models import Connection
from masking import PLACEHOLDER
from tests.e2e_identity import rawhttp
from tests.e2e_identity.agents import MCP_PROXY, READER, token_for

pytestmark = pytest.mark.django_db(transaction=True)

PODS = "/api/v1/namespaces/shop/pods"
DB_PASSWORD = "s3cr3t-db-password-4f9a"  # kubesim's seed: shop/shop-db


class McpStyleProxy:
    """What an MCP server in front of Kubernetes does for a tool call: the Kubernetes request, with its
    own bearer token, naming the end user it serves."""

    def __init__(self, gateway, idp, connection="kubesim"):
        self.base = f"{gateway.url}/k8s/{connection}"
        self.client = httpx.Client(verify=ssl.create_default_context(cafile=str(gateway.ca_file)), timeout=15)
        self.token = token_for(idp, MCP_PROXY)

    def tool(self, user, groups, method, path, **kwargs) -> httpx.Response:
        headers = [("Authorization", f"Bearer {self.token}"), ("Accept", "application/json")]
        if user is not None:
            headers.append(("Impersonate-User", user))
        headers += [("Impersonate-Group", group) for group in groups]
        return self.client.request(method, self.base + path, headers=headers, **kwargs)

    def pods_list(self, user, groups=()):
        return self.tool(user, groups, "GET", PODS)

    def secret_get(self, user, groups=()):
        return self.tool(user, groups, "GET", "/api/v1/namespaces/shop/secrets/shop-db")

    def pod_delete(self, user, groups=(), name="web-0"):
        return self.tool(user, groups, "DELETE", f"{PODS}/{name}")


def register(connection, *extra):
    out = io.StringIO()
    call_command("register_proxy", "--connection", connection.name, "--name", "mcp", *extra, stdout=out)
    return out.getvalue()


@pytest.fixture
def proxy_gateway(oidc_gateway, agents_idp):
    """The gateway with the MCP proxy registered on its connection: the proxy's token (subject
    ``mcp-proxy``) may assert users ``*@example.com`` in groups ``readers`` and ``team-*``."""
    said = register(oidc_gateway.connection, "--issuer", agents_idp.issuer, "--subject", MCP_PROXY["client_id"],
                    "--user", "*@example.com", "--group", "readers", "--group", "team-*")
    assert "Registered trusted proxy 'mcp'" in said
    return oidc_gateway


@pytest.fixture
def mcp(proxy_gateway, agents_idp):
    proxy = McpStyleProxy(proxy_gateway, agents_idp)
    yield proxy
    proxy.client.close()


def cluster_saw(kubesim, path):
    return [r for r in kubesim.requests() if r["path"] == path]


def recorded(count, **filters):
    """The completion events matching ``filters`` once the recorder's writer has stored ``count`` of them."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        events = list(AuditEvent.objects.filter(stage="ResponseComplete", **filters).order_by("seq"))
        if len(events) >= count:
            return events
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} audit events {filters} within 10s")


def test_the_end_users_rules_apply_and_the_record_names_both(mcp, kubesim):
    # alice is a reader: she lists pods and reads the Secret masked ...
    listed = mcp.pods_list("alice@example.com", ["readers"])
    assert listed.status_code == 200 and any(p["metadata"]["name"].startswith("web-") for p in listed.json()["items"])
    secret = mcp.secret_get("alice@example.com", ["readers"])
    assert secret.status_code == 200 and DB_PASSWORD not in secret.text and PLACEHOLDER in secret.text
    # ... and may not delete (read-only), whatever the proxy's token could do.
    refused = mcp.pod_delete("alice@example.com", ["readers"])
    assert refused.status_code == 403 and refused.json()["kind"] == "Status"
    # bob is in no group bound to rules: the proxy serving him grants him nothing.
    assert mcp.pods_list("bob@example.com").status_code == 403
    # The proxy acting as itself is in no bound group either.
    assert mcp.pods_list(None).status_code == 403

    # The cluster saw the gateway's own credential, never the proxy's Impersonate-* headers.
    [seen] = cluster_saw(kubesim, PODS)
    assert seen["user"] == "kubesim-admin" and seen["impersonated_user"] is None
    assert not [name for name, _ in seen["headers"] if name.lower().startswith("impersonate-")]
    assert not [r for r in kubesim.requests() if r["method"] == "DELETE"]

    events = recorded(4, proxy_username="mcp-proxy")
    assert [(e.user_username, e.object_resource, e.decision_effect, e.response_code) for e in events] == [
        ("alice@example.com", "pods", "allow", 200), ("alice@example.com", "secrets", "allow", 200),
        ("alice@example.com", "pods", "deny", 403), ("bob@example.com", "pods", "deny", 403)]
    listing = events[0]
    assert listing.decision_rule_name.startswith("readers-") and listing.user_groups == ["readers"]
    assert listing.user_issuer.endswith("#proxy=mcp-proxy") and listing.proxy_uid == "mcp-proxy"
    assert recorded(1, user_username="mcp-proxy", proxy_username="")  # its completion may be written after the others
    assert verify_chain().ok


def test_what_the_proxy_may_not_assert_is_refused_and_nothing_reaches_the_cluster(mcp, kubesim):
    for user, groups, words in (
        ("mallory@evil.test", [], 'may not assert user "mallory@evil.test"'),
        ("alice@example.com", ["readers", "admins"], 'may not assert group "admins"'),
        ("alice@example.com", ["system:masters"], 'group "system:masters"'),
        ("system:serviceaccount:airlock:airlock", [], 'user "system:serviceaccount:airlock:airlock"'),
        ("system:admin", [], 'user "system:admin"'),
    ):
        response = mcp.pods_list(user, groups)
        status = response.json()
        assert response.status_code == status["code"] == 403, (user, groups)
        assert words in status["message"] and "registered as \"mcp\"" in status["message"]
        assert status["message"] in response.headers["warning"].replace('\\"', '"')
    assert not cluster_saw(kubesim, PODS)
    refusals = recorded(5, user_username="mcp-proxy", response_code=403)
    assert all("may not assert" in e.response_message for e in refusals)


def test_an_untrusted_clients_impersonation_is_still_refused(mcp, proxy_gateway, agents_idp, agent_kubeconfig,
                                                             kubectl, kubesim):
    # An agent with a valid token, in a bound group, asking to be someone the proxy may name.
    port = int(proxy_gateway.url.rsplit(":", 1)[1])
    token = token_for(agents_idp, READER)
    refused = rawhttp.request("127.0.0.1", port, proxy_gateway.ca_file, "GET", f"/k8s/kubesim{PODS}",
                              [("Authorization", f"Bearer {token}"), ("Impersonate-User", "alice@example.com"),
                               ("Impersonate-Group", "readers")])
    assert refused.status == 403
    assert refused.status_object()["message"].startswith("airlock: impersonation is not allowed through this gateway")
    # ... and with real kubectl --as: refused, and kubectl prints why.
    reader = agent_kubeconfig(READER)
    result = kubectl("get", "pods", "-n", "shop", "--as", "alice@example.com", kubeconfig=reader, check=False)
    assert result.returncode != 0 and "impersonation is not allowed" in result.stderr
    assert not cluster_saw(kubesim, PODS)


def test_client_go_impersonation_from_the_proxy_is_read_as_kube_apiserver_reads_it(proxy_gateway, agent_kubeconfig,
                                                                                   kubectl, kubesim):
    """Real kubectl holding the proxy's token with --as/--as-group: client-go's own Impersonate-* headers,
    on discovery and on the request itself."""
    proxy = agent_kubeconfig(MCP_PROXY)
    listed = kubectl("get", "pods", "-n", "shop", "--as", "alice@example.com", "--as-group", "readers",
                     kubeconfig=proxy)
    assert "web-" in listed.stdout
    who = json.loads(kubectl("auth", "whoami", "-o", "json", "--as", "alice@example.com", "--as-group", "readers",
                             kubeconfig=proxy).stdout)["status"]["userInfo"]
    assert (who["username"], who["groups"]) == ("alice@example.com", ["readers"])
    assert who["extra"]["airlock.dev/issuer"][0].endswith("#proxy=mcp-proxy")
    can = kubectl("auth", "can-i", "delete", "pods", "-n", "shop", "--as", "alice@example.com", "--as-group",
                  "readers", kubeconfig=proxy, check=False)
    assert can.stdout.startswith("no")
    outside = kubectl("get", "pods", "-n", "shop", "--as", "mallory@evil.test", kubeconfig=proxy, check=False)
    assert outside.returncode != 0 and 'may not assert user "mallory@evil.test"' in outside.stderr
    uid = kubectl("get", "pods", "-n", "shop", "--as", "alice@example.com", "--as-uid", "42", kubeconfig=proxy,
                  check=False)
    assert uid.returncode != 0 and "Impersonate-Uid" in uid.stderr
    [seen] = cluster_saw(kubesim, PODS)
    assert seen["impersonated_user"] is None


@pytest.mark.parametrize("headers, code, words", [
    ([("impersonate-user", "alice@example.com"), ("IMPERSONATE-GROUP", "admins")], 403, 'group "admins"'),
    ([("Impersonate-User", "alice@example.com"), ("Impersonate-User", "mallory@evil.test")], 400, "sent 2 times"),
    ([("Impersonate-Group", "readers")], 400, "requested [Group=readers] without impersonating a user"),
    ([("Impersonate-User", ""), ("Impersonate-Group", "readers")], 400, "without impersonating a user"),
    ([("Impersonate-User", "alice@example.com"), ("Impersonate-Uid", "0")], 403, "Impersonate-Uid"),
    ([("Impersonate-User", "alice@example.com"), ("Impersonate-Extra-Example.com%2Fscopes", "all")], 403,
     "Impersonate-Extra-Example.com%2fscopes"),
    ([("Impersonate-User", "alice@example.com"), ("Impersonate-Group", "readers,system:masters")], 403,
     'group "readers,system:masters"'),
    ([("Impersonate-User", "alice@example.com"), ("Impersonate-Group", "readers"),
      ("Impersonate-Group", "system:masters")], 403, 'group "system:masters"'),
    ([("Impersonate-User", "ALICE@EXAMPLE.COM")], 403, 'may not assert user "ALICE@EXAMPLE.COM"'),
])
def test_hostile_spellings_from_the_trusted_proxy_over_raw_http(proxy_gateway, agents_idp, kubesim, headers, code,
                                                                words):
    port = int(proxy_gateway.url.rsplit(":", 1)[1])
    token = token_for(agents_idp, MCP_PROXY)
    response = rawhttp.request("127.0.0.1", port, proxy_gateway.ca_file, "GET", f"/k8s/kubesim{PODS}",
                               [("Authorization", f"Bearer {token}"), *headers])
    status = response.status_object()
    assert response.status == status["code"] == code and words in status["message"], status
    assert not cluster_saw(kubesim, PODS)


def test_a_proxy_registered_on_one_connection_is_refused_on_another(mcp, proxy_gateway, kubesim, agents_idp):
    other = Connection(name="kubesim-b", server_url=kubesim.url, ca_bundle=proxy_gateway.connection.ca_bundle)
    other.bearer_token = kubesim.admin_token
    other.full_clean()
    other.save()
    call_command("apply_preset", "--connection", "kubesim-b", "read-only", "--group", "readers", stdout=io.StringIO())
    elsewhere = McpStyleProxy(proxy_gateway, agents_idp, connection="kubesim-b")
    try:
        response = elsewhere.pods_list("alice@example.com", ["readers"])
    finally:
        elsewhere.client.close()
    assert response.status_code == 403
    assert response.json()["message"].startswith("airlock: impersonation is not allowed through this gateway")
    assert mcp.pods_list("alice@example.com", ["readers"]).status_code == 200  # where it is registered


def test_in_impersonation_mode_the_cluster_sees_the_end_user_as_the_gateway_names_them(mcp, proxy_gateway, kubesim):
    connection = proxy_gateway.connection
    connection.impersonation_mode = "impersonate"
    connection.impersonation_user_prefix = "agent:"
    connection.save()
    assert mcp.pods_list("alice@example.com", ["readers"]).status_code == 200
    [seen] = cluster_saw(kubesim, PODS)
    assert seen["user"] == "kubesim-admin"  # the gateway's credential ...
    assert seen["impersonated_user"] == "agent:alice@example.com"  # ... acting for the end user, prefixed
    assert seen["impersonated_groups"] == ["readers", "system:authenticated"]


def test_a_disabled_registration_trusts_the_proxy_no_more(mcp, proxy_gateway):
    assert mcp.pods_list("alice@example.com", ["readers"]).status_code == 200
    register(proxy_gateway.connection, "--update", "--disable")
    refused = mcp.pods_list("alice@example.com", ["readers"])
    assert refused.status_code == 403 and "impersonation is not allowed" in refused.json()["message"]


@pytest.fixture
def holding_gateway(cluster_connection, agents_idp, tmp_path):
    """The OIDC gateway with the approvals Holder (a review rule waits 1 s, then answers with the review),
    the MCP proxy registered, and team-a's deletes of ConfigMaps in shop held for review."""
    from identity.chain import AuthenticatorChain
    from identity.oidc import Authenticator
    from identity.oidc_config import AuthenticatorConfig, IssuerConfig
    from policy.models import Rule
    from tests.e2e_identity.agents import AUDIENCE
    from tests.gateway_harness import make_gateway_app, serving

    app = make_gateway_app(
        AuthenticatorChain(oidc=Authenticator(AuthenticatorConfig(
            issuers=(IssuerConfig(issuer=agents_idp.issuer, audiences=(AUDIENCE,)),)))),
        hold={"timeout": 1.0, "poll_interval": 0.1})
    Rule.objects.create(connection=cluster_connection, order=5, name="team-a-deletes-need-review", effect="review",
                        groups=["team-a"], verbs=["delete"], api_groups=[""], resources=["configmaps"],
                        namespaces=["shop"], names=["*"])
    register(cluster_connection, "--issuer", agents_idp.issuer, "--subject", MCP_PROXY["client_id"],
             "--user", "*@example.com", "--group", "team-*")
    with serving(app, cluster_connection, tmp_path / "holding-gateway") as running:
        yield running


CONFIGMAP = "/api/v1/namespaces/shop/configmaps/web-config"


def test_a_held_request_through_the_proxy_shows_both_to_the_reviewer(holding_gateway, agents_idp, kubesim, client):
    from approvals import reviews
    from approvals.models import Review
    from approvals.tests.factories import reviewer

    proxy = McpStyleProxy(holding_gateway, agents_idp)
    try:
        waiting = proxy.tool("alice@example.com", ["team-a"], "DELETE", CONFIGMAP)
        review = Review.objects.get()
        assert waiting.status_code == 403 and f"review {review.pk} is still pending" in waiting.json()["message"]
        assert (review.principal_username, review.principal_groups, review.rule_name) == (
            "alice@example.com", ["team-a"], "team-a-deletes-need-review")
        assert (review.proxy_username, review.proxy_subject, review.proxy_issuer) == (
            "mcp-proxy", "mcp-proxy", agents_idp.issuer)
        rita = reviewer("rita")
        client.force_login(rita)
        page = client.get(f"/approvals/reviews/{review.pk}/").content.decode()
        assert "trusted proxy mcp-proxy" in page and "alice@example.com" in page
        reviews.decide(review.pk, rita, approve=True, reason="planned")

        done = proxy.tool("alice@example.com", ["team-a"], "DELETE", CONFIGMAP)
        assert done.status_code == 200
        # The approval was alice's through this proxy: the same request from the proxy itself is no such thing.
        assert proxy.tool(None, [], "DELETE", CONFIGMAP).status_code == 403
    finally:
        proxy.client.close()
    previews = [r for r in kubesim.requests() if r["method"] == "DELETE" and "dryRun=All" in r["query"]]
    assert previews and all(r["impersonated_user"] is None for r in previews)  # the reviewer's dry-run preview
    [deleted] = [r for r in kubesim.requests() if r["method"] == "DELETE" and "dryRun" not in r["query"]]
    assert deleted["path"] == CONFIGMAP and deleted["impersonated_user"] is None
    [completed] = recorded(1, proxy_username="mcp-proxy", response_code=200)
    assert (completed.user_username, completed.review_id, completed.decision_effect) == (
        "alice@example.com", str(review.pk), "review")
