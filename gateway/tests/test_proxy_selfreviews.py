"""kubectl auth whoami / can-i through the proxy, without sockets: the gateway answers, the cluster is asked
only what the connection's identity may do (fake cluster: httpx.MockTransport)."""

import json

import httpx
import pytest

from policy.compile import compile_rule
from policy.presets import preset_rule_fields
from gateway.app import GatewayApp
from gateway.tests.test_proxy import (COPIED, FakePolicy, FakeRecorder, FakeUpstream, call, cluster_with_secret,
                                      status_of)
from identity.chain import AuthenticatorChain
from identity.static import StaticTokenAuthenticator
from policy.compile import compile_rule
from policy.presets import preset_rule_fields

pytestmark = pytest.mark.asyncio

GUARDRAILS = [compile_rule(f, id=i) for i, f in enumerate(preset_rule_fields("production-guardrails"))]
SSAR = "/k8s/prod/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
SSRR = "/k8s/prod/apis/authorization.k8s.io/v1/selfsubjectrulesreviews"
WHOAMI = "/k8s/prod/apis/authentication.k8s.io/v1/selfsubjectreviews"
JSON = [("content-type", "application/json")]


def make_app(handler, *, impersonate=False, recorder=None, rules=GUARDRAILS, secret_values=None):
    async def connections(name):
        return FakeUpstream(impersonates=impersonate) if name == "prod" else None

    return GatewayApp(
        prefix="/k8s/", connections=connections,
        authenticator=AuthenticatorChain(static=StaticTokenAuthenticator("agent-tok=agent-1:agents")),
        policy=FakePolicy(*rules), recorder=recorder or FakeRecorder(), max_body=4096,
        transport=httpx.MockTransport(handler), secret_values=secret_values,
    )


def cluster_says(status, seen=None, code=201):
    def handler(request):
        if seen is not None:
            seen.append(request)
        kind = "SelfSubjectRulesReview" if request.url.path.endswith("selfsubjectrulesreviews") \
            else "SelfSubjectAccessReview"
        return httpx.Response(code, json={"kind": kind, "apiVersion": "authorization.k8s.io/v1", "status": status})

    return handler


def never(request):
    raise AssertionError("must not reach the cluster")


def can_i(**attributes):
    return json.dumps({"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
                       "spec": {"resourceAttributes": attributes}}).encode()


@pytest.mark.parametrize("version", ["v1", "v1beta1", "v1alpha1"])
async def test_whoami_is_answered_by_the_gateway_and_recorded(version):
    recorder = FakeRecorder()
    path = WHOAMI.replace("/v1/", f"/{version}/")
    body = json.dumps({"kind": "SelfSubjectReview", "apiVersion": f"authentication.k8s.io/{version}"}).encode()
    status, headers, content = await call(make_app(never, recorder=recorder), path, method="POST", body=body,
                                          headers=JSON)
    review = json.loads(content)
    assert status == 201 and headers["content-type"] == "application/json"
    assert review["apiVersion"] == f"authentication.k8s.io/{version}" and review["kind"] == "SelfSubjectReview"
    assert review["status"]["userInfo"]["username"] == "agent-1"
    assert "cluster-credential" not in content.decode()
    completed = recorder.events[-1]
    assert completed["stage"] == "ResponseComplete" and completed["response_code"] == 201
    assert completed["decision_rule_name"] == "self-reviews" and completed["response_body"] == content


async def test_whoami_in_impersonation_mode_says_whom_the_cluster_sees():
    _, _, content = await call(make_app(never, impersonate=True), WHOAMI, method="POST", body=b"{}", headers=JSON)
    assert json.loads(content)["status"]["userInfo"]["extra"]["airlock.dev/cluster-username"] == ["airlock:agent-1"]


async def test_can_i_asks_the_cluster_as_the_connection_and_says_yes_only_if_both_do():
    seen = []
    app = make_app(cluster_says({"allowed": True}, seen))
    status, _, content = await call(app, SSAR, method="POST", headers=JSON,
                                    body=can_i(verb="get", resource="pods", namespace="shop"))
    answer = json.loads(content)
    assert status == 201 and answer["status"] == {"allowed": True,
                                                  "reason": 'airlock: allowed by rule "read-all" (connection prod)'}
    assert answer["spec"] == {"resourceAttributes": {"verb": "get", "resource": "pods", "namespace": "shop"}}
    [asked] = seen
    assert str(asked.url) == "https://cluster.test/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
    assert asked.headers["authorization"] == "Bearer cluster-credential"
    assert json.loads(asked.content)["spec"] == answer["spec"]

    refused = make_app(cluster_says({"allowed": False, "reason": "RBAC: secret detail"}))
    _, _, content = await call(refused, SSAR, method="POST", headers=JSON,
                               body=can_i(verb="get", resource="pods", namespace="shop"))
    status = json.loads(content)["status"]
    assert status["allowed"] is False and "but the cluster does not allow it" in status["reason"]
    assert "secret detail" not in content.decode()


async def test_can_i_a_held_request_is_no_naming_the_review():
    _, _, content = await call(make_app(cluster_says({"allowed": True})), SSAR, method="POST", headers=JSON,
                               body=can_i(verb="delete", resource="pods", namespace="shop"))
    assert json.loads(content)["status"] == {
        "allowed": False, "reason": 'airlock: approval required by rule "review-deletes" (connection prod): delete pods '
                                    'in namespace "shop"; a reviewer must approve this request'}


@pytest.mark.parametrize("handler, problem", [
    (cluster_says({"allowed": True}, code=503), "it answered 503"),
    (lambda request: (_ for _ in ()).throw(httpx.ConnectError("refused")), "it is unreachable"),
    (lambda request: httpx.Response(201, content=b"not json"), "its answer is not JSON"),
])
async def test_can_i_without_the_clusters_answer_is_no_and_says_why(handler, problem):
    _, _, content = await call(make_app(handler), SSAR, method="POST", headers=JSON,
                               body=can_i(verb="get", resource="pods", namespace="shop"))
    status = json.loads(content)["status"]
    assert status["allowed"] is False
    assert status["evaluationError"] == f"airlock: the cluster of connection prod could not be asked ({problem}), " \
                                        "so nothing is allowed here"


async def test_can_i_in_impersonation_mode_asks_about_the_agent():
    seen = []
    _, _, content = await call(make_app(cluster_says({"allowed": False}, seen), impersonate=True), SSAR,
                               method="POST", headers=JSON, body=can_i(verb="get", resource="pods"))
    assert seen[0].headers.get_list("impersonate-user") == ["airlock:agent-1"]
    assert json.loads(content)["status"]["reason"].endswith(
        "but the cluster does not allow it for the identity connection prod uses there")


async def test_can_i_list_is_the_rules_both_allow():
    seen = []
    handler = cluster_says({"resourceRules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}],
                            "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": ["/version"]}]}, seen)
    body = json.dumps({"kind": "SelfSubjectRulesReview", "apiVersion": "authorization.k8s.io/v1",
                       "spec": {"namespace": "shop"}}).encode()
    status, _, content = await call(make_app(handler), SSRR, method="POST", headers=JSON, body=body)
    answer = json.loads(content)
    assert status == 201 and answer["spec"] == {"namespace": "shop"}
    assert answer["status"]["resourceRules"] == [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]
    assert answer["status"]["nonResourceRules"] == [{"verbs": ["get"], "nonResourceURLs": ["/version"]}]
    assert '"review-deletes" (needs a reviewer' in answer["status"]["evaluationError"]
    assert json.loads(seen[0].content)["spec"] == {"namespace": "shop"}


@pytest.mark.parametrize("body, code", [
    (b"[]", 400), (b'{"kind":"SelfSubjectAccessReview","spec":{}}', 422),
    (json.dumps({"spec": {"resourceAttributes": {"verb": 1}}}).encode(), 400),
])
async def test_a_malformed_review_is_a_status(body, code):
    status, _, content = await call(make_app(never), SSAR, method="POST", headers=JSON, body=body)
    assert status == code and status_of(content)["code"] == code


async def test_a_secret_value_asked_about_comes_back_and_is_recorded_masked():
    from gateway.secretvalues import SecretValueStores

    seen, recorder = [], FakeRecorder()
    cluster = cluster_with_secret(seen)

    def handler(request):
        if request.url.path.endswith("selfsubjectaccessreviews"):
            return cluster_says({"allowed": True})(request)
        return cluster(request)

    app = make_app(handler, recorder=recorder, secret_values=SecretValueStores())
    try:
        _, _, content = await call(app, SSAR, method="POST", headers=JSON,
                                   body=can_i(verb="get", resource="configmaps", namespace="shop", name=COPIED))
    finally:
        await app.aclose()
    assert COPIED not in content.decode() and "**AIRLOCK-MASKED**" in content.decode()
    assert json.loads(content)["status"]["allowed"] is True
    assert COPIED.encode() not in recorder.events[-1]["response_body"]
