"""A trusted proxy through the gateway's ASGI application, without sockets: the end user's rules decide,
the proxy's grant nothing, the cluster never sees the proxy's Impersonate-* headers, the record names
both; everyone else's impersonation stays refused."""

import httpx
import pytest

from gateway.app import GatewayApp
from gateway.tests.test_proxy import FakePolicy, FakeRecorder, FakeUpstream, call, status_of
from identity.chain import AuthenticatorChain
from identity.proxies import ProxyGrant
from identity.static import DEV_ISSUER, StaticTokenAuthenticator
from policy.compile import compile_rule

pytestmark = pytest.mark.asyncio

PODS = "/k8s/prod/api/v1/namespaces/shop/pods"
GRANT = ProxyGrant(name="mcp", issuer=DEV_ISSUER, subject="mcp-server", users=("*@example.com",),
                   groups=("team-*",))


def rule(name, order, *, effect="allow", groups=(), subjects=(), verbs=("*",), resources=("*",)):
    return compile_rule({"name": name, "effect": effect, "groups": list(groups), "subjects": list(subjects),
                         "verbs": list(verbs), "api_groups": ["*"], "resources": list(resources),
                         "namespaces": ["*"], "names": ["*"], "order": order}, id=order)


RULES = (
    rule("team-a-reads-pods", 1, groups=["team-a"], verbs=["get", "list"], resources=["pods"]),
    rule("bob-deletes-nothing", 2, effect="deny", subjects=["bob@example.com"], verbs=["delete"]),
    rule("proxies-do-everything", 3, groups=["mcp-proxies"]),  # the proxy's own: grants its users nothing
)


class Cluster:
    def __init__(self):
        self.requests = []

    def __call__(self, request):
        self.requests.append(request)
        return httpx.Response(200, json={"kind": "PodList", "apiVersion": "v1", "items": []})


def make(*, impersonate=False, grants=(GRANT,)):
    cluster, recorder = Cluster(), FakeRecorder()
    prod = FakeUpstream(impersonates=impersonate, trusted_proxies=grants)
    other = FakeUpstream(name="other", cache_key="other:1")  # nobody is registered there

    async def connections(name):
        return {"prod": prod, "other": other}.get(name)

    app = GatewayApp(
        prefix="/k8s/", connections=connections,
        authenticator=AuthenticatorChain(static=StaticTokenAuthenticator(
            "proxy-tok=mcp-server:mcp-proxies,agent-tok=agent-1:agents|mcp-proxies")),
        policy=FakePolicy(*RULES), recorder=recorder, max_body=1024, transport=httpx.MockTransport(cluster))
    return app, cluster, recorder


def acting(user, *groups):
    return [("Impersonate-User", user), *(("Impersonate-Group", g) for g in groups)]


async def test_the_end_users_rules_decide_and_the_cluster_sees_no_impersonation_header():
    app, cluster, recorder = make()
    status, _, _ = await call(app, PODS, token="proxy-tok", headers=acting("alice@example.com", "team-a"))
    assert status == 200
    [sent] = cluster.requests
    assert sent.headers["authorization"] == "Bearer cluster-credential"
    assert not [name for name in sent.headers if name.lower().startswith("impersonate-")]
    [event] = recorder.events
    assert (event["user_username"], event["user_groups"], event["user_issuer"]) == (
        "alice@example.com", ("team-a",), f"{DEV_ISSUER}#proxy=mcp-server")
    assert (event["proxy_username"], event["proxy_uid"], event["proxy_issuer"]) == (
        "mcp-server", "mcp-server", DEV_ISSUER)
    assert (event["decision_effect"], event["decision_rule_name"]) == ("allow", "team-a-reads-pods")


async def test_the_proxys_own_rules_grant_the_end_user_nothing():
    app, cluster, recorder = make()
    # The proxy itself may do everything (its own rule) ...
    status, _, _ = await call(app, PODS, method="DELETE", token="proxy-tok")
    assert status == 200
    # ... the users it serves only what their rules allow.
    status, _, content = await call(app, PODS, method="DELETE", token="proxy-tok",
                                    headers=acting("alice@example.com", "team-a"))
    assert status == 403 and "no rule allows this request" in status_of(content)["message"]
    status, _, content = await call(app, PODS + "/web", method="DELETE", token="proxy-tok",
                                    headers=acting("bob@example.com", "team-a"))
    assert status == 403 and "bob-deletes-nothing" in status_of(content)["message"]
    assert len(cluster.requests) == 1
    refused = [e for e in recorder.events if e["response_code"] == 403]
    assert [e["proxy_username"] for e in refused] == ["mcp-server", "mcp-server"]
    assert [e["user_username"] for e in refused] == ["alice@example.com", "bob@example.com"]
    assert [e["decision_rule_name"] for e in refused] == ["default-deny", "bob-deletes-nothing"]


async def test_in_impersonation_mode_the_cluster_sees_the_end_user_as_the_gateway_names_it():
    app, cluster, _ = make(impersonate=True)
    status, _, _ = await call(app, PODS, token="proxy-tok",
                              headers=[("IMPERSONATE-USER", "alice@example.com"), ("impersonate-group", "team-a"),
                                       ("Impersonate-Group", "team-b")])
    assert status == 200
    [sent] = cluster.requests
    assert sent.headers.get_list("impersonate-user") == ["airlock:alice@example.com"]
    assert sent.headers.get_list("impersonate-group") == ["team-a", "team-b"]


@pytest.mark.parametrize("headers, code, words", [
    (acting("mallory@evil.test"), 403, 'may not assert user "mallory@evil.test"'),
    (acting("alice@example.com", "admins"), 403, 'may not assert group "admins"'),
    (acting("alice@example.com", "system:masters"), 403, 'group "system:masters"'),
    (acting("system:serviceaccount:airlock:airlock"), 403, 'user "system:serviceaccount:airlock:airlock"'),
    ([("Impersonate-Group", "team-a")], 400, "requested [Group=team-a] without impersonating a user"),
    ([("Impersonate-User", "alice@example.com"), ("Impersonate-User", "bob@example.com")], 400, "sent 2 times"),
    ([("Impersonate-User", "alice@example.com"), ("Impersonate-Uid", "42")], 403, "Impersonate-Uid"),
    ([("Impersonate-User", "alice@example.com"), ("Impersonate-Extra-Reason", "x")], 403, "Impersonate-Extra-Reason"),
])
async def test_what_a_trusted_proxy_may_not_assert_is_refused_naming_it_and_recorded(headers, code, words):
    app, cluster, recorder = make()
    status, response_headers, content = await call(app, PODS, token="proxy-tok", headers=headers)
    body = status_of(content)
    assert status == body["code"] == code and words in body["message"]
    assert "warning" in response_headers  # kubectl prints it even for a refused discovery request
    assert not cluster.requests
    [event] = recorder.events
    assert event["response_code"] == code and event["user_username"] == "mcp-server"  # the one who asked
    assert event["response_message"] == body["message"]


async def test_an_untrusted_agents_impersonation_is_still_refused_even_in_the_proxies_group():
    """agent-1 is in group mcp-proxies too, but the registration names the proxy's subject."""
    app, cluster, recorder = make()
    status, _, content = await call(app, PODS, token="agent-tok", headers=acting("alice@example.com", "team-a"))
    assert status == 403
    assert status_of(content)["message"].startswith("airlock: impersonation is not allowed through this gateway")
    assert not cluster.requests and recorder.events[0]["proxy_username"] == ""


async def test_a_proxy_registered_on_one_connection_is_a_stranger_on_another():
    app, cluster, _ = make()
    status, _, content = await call(app, "/k8s/other/api/v1/namespaces/shop/pods", token="proxy-tok",
                                    headers=acting("alice@example.com", "team-a"))
    assert status == 403
    assert status_of(content)["message"].startswith("airlock: impersonation is not allowed through this gateway")
    assert not cluster.requests


async def test_a_disabled_or_removed_registration_trusts_nobody():
    app, cluster, _ = make(grants=())
    status, _, _ = await call(app, PODS, token="proxy-tok", headers=acting("alice@example.com", "team-a"))
    assert status == 403 and not cluster.requests
