"""Self reviews answered from the agent's token and the connection's rules (gateway.selfreviews), sans-IO."""

import json

import pytest

from gateway import selfreviews as sr
from identity.principal import Principal
from kube.requestinfo import parse
from kube.status import GatewayError
from policy.compile import broken_rule, compile_rule
from policy.presets import preset_rule_fields

AGENT = Principal(subject="sub-1", username="agent@example.com", groups=("agents",), issuer="https://idp.example",
                  expires_at=0.0, token_id="t")
GUARDRAILS = [compile_rule(f, id=i) for i, f in enumerate(preset_rule_fields("production-guardrails"))]
READ_ONLY = [compile_rule(f, id=i) for i, f in enumerate(preset_rule_fields("read-only"))]


def rule(name, order, effect, **fields):
    base = {"name": name, "order": order, "effect": effect, "subjects": ["*"]}
    if "non_resource_urls" not in fields:
        base |= {"api_groups": ["*"], "namespaces": ["*"], "names": ["*"]}
    return compile_rule(base | fields, id=order)


def ssar(**attributes):
    return {"spec": {"resourceAttributes": attributes}}


def ask(rules, **attributes):
    info = sr.access_question(ssar(**attributes))
    return sr.access_verdict(sr.access_decision(rules, AGENT, info), info, "prod")


@pytest.mark.parametrize("method, path, kind", [
    ("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", sr.IDENTITY),
    ("POST", "/apis/authentication.k8s.io/v1beta1/selfsubjectreviews", sr.IDENTITY),
    ("POST", "/apis/authentication.k8s.io/v1alpha1/selfsubjectreviews", sr.IDENTITY),
    ("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", sr.ACCESS),
    ("POST", "/apis/authorization.k8s.io/v1beta1/selfsubjectaccessreviews", sr.ACCESS),
    ("POST", "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews", sr.RULES),
    ("POST", "/apis/authorization.k8s.io/v1beta1/selfsubjectrulesreviews", sr.RULES),
    ("POST", "/apis/authorization.k8s.io/v2/selfsubjectaccessreviews", None),
    ("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", None),
    ("POST", "/apis/authorization.k8s.io/v1/namespaces/x/localsubjectaccessreviews", None),
    ("POST", "/apis/authentication.k8s.io/v1/tokenreviews", None),
    ("GET", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", None),
    ("POST", "/api/v1/namespaces/x/pods", None),
])
def test_which_requests_are_self_reviews(method, path, kind):
    assert sr.review_kind(parse(method, path, "")) == kind


def test_a_review_body_is_checked_as_kube_apiserver_checks_it():
    info = parse("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", "")
    assert sr.read(b'{"kind":"SelfSubjectAccessReview","apiVersion":"authorization.k8s.io/v1"}', info, sr.ACCESS) == {
        "kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1"}
    for body, words in ((b"[]", "must be a JSON object"), (b"{", "not valid JSON"),
                        (b'{"kind":"Pod"}', 'got kind "Pod"'),
                        (b'{"apiVersion":"authorization.k8s.io/v1beta1"}', "does not match the expected API version"),
                        (b'{"spec":[]}', "spec of the SelfSubjectAccessReview must be an object")):
        with pytest.raises(GatewayError) as refused:
            sr.read(body, info, sr.ACCESS)
        assert refused.value.code == 400 and words in refused.value.message
    whoami = parse("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", "")
    assert sr.read(b"", whoami, sr.IDENTITY) == {}
    for spec in ({}, {"resourceAttributes": {"verb": "get"}, "nonResourceAttributes": {"path": "/x"}}):
        with pytest.raises(GatewayError) as invalid:
            sr.access_question({"spec": spec})
        assert invalid.value.code == 422 and "exactly one of nonResourceAttributes or resourceAttributes" in \
            invalid.value.message
    with pytest.raises(GatewayError) as typed:
        sr.access_question(ssar(verb=["get"]))
    assert typed.value.code == 400


def test_whoami_is_the_agent_as_its_token_names_it():
    assert sr.identity(AGENT, connection="prod") == {"userInfo": {
        "username": "agent@example.com", "uid": "sub-1", "groups": ["agents"],
        "extra": {"airlock.dev/issuer": ["https://idp.example"], "airlock.dev/connection": ["prod"]}}}
    impersonating = sr.identity(AGENT, connection="prod", cluster_username="airlock:agent@example.com")
    assert impersonating["userInfo"]["extra"]["airlock.dev/cluster-username"] == ["airlock:agent@example.com"]


def test_the_answer_echoes_what_was_asked_in_the_asked_version():
    info = parse("POST", "/apis/authorization.k8s.io/v1beta1/selfsubjectaccessreviews", "")
    review = {"metadata": {"name": "x"}, "spec": {"resourceAttributes": {"verb": "get", "resource": "pods",
                                                                          "namespace": "", "bogus": 1}}}
    assert sr.answer(info, sr.ACCESS, review, {"allowed": True}) == {
        "kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1beta1",
        "metadata": {"name": "x", "creationTimestamp": None},
        "spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}}, "status": {"allowed": True}}
    whoami = parse("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", "")
    assert "spec" not in sr.answer(whoami, sr.IDENTITY, {}, {"userInfo": {}})


def test_allow_is_yes_review_is_no_naming_the_review_deny_is_no():
    assert ask(GUARDRAILS, verb="get", resource="pods", namespace="shop") == sr.Verdict(
        True, reason='airlock: allowed by rule "read-all" (connection prod)', ask_cluster=True)
    held = ask(GUARDRAILS, verb="delete", resource="pods", namespace="shop", name="web")
    assert not held.allowed and not held.denied and held.ask_cluster
    assert held.reason == ('airlock: approval required by rule "review-deletes" (connection prod): delete pods "web" '
                           'in namespace "shop"; a reviewer must approve this request')
    denied = ask(READ_ONLY, verb="delete", resource="pods", namespace="shop")
    assert not denied.allowed and denied.denied and not denied.ask_cluster
    assert denied.reason.startswith('airlock: denied by rule "read-only-no-writes" (connection prod)')
    nothing = ask(READ_ONLY, verb="get", resource="pods", namespace="shop", subresource="exec")
    assert nothing.denied and '"no-exec-attach-portforward"' in nothing.reason
    url = sr.access_question({"spec": {"nonResourceAttributes": {"path": "/metrics", "verb": "get"}}})
    assert sr.access_verdict(sr.access_decision(GUARDRAILS, AGENT, url), url, "prod").reason.endswith(
        "no rule allows this request")


def test_a_question_about_many_requests_is_yes_only_if_no_earlier_rule_holds_or_denies_part_of_it():
    rules = [rule("keep-web", 10, "deny", verbs=["delete"], resources=["deployments"], names=["web"]),
             rule("hold-exec", 20, "review", verbs=["*"], resources=["pods/exec"]),
             rule("everything", 30, "allow", verbs=["*"], resources=["*"]),
             rule("urls", 40, "allow", verbs=["get"], non_resource_urls=["*"])]
    assert ask(rules, verb="delete", resource="deployments", group="apps", namespace="shop", name="db").allowed
    some = ask(rules, verb="delete", resource="deployments", group="apps", namespace="shop")
    assert not some.allowed and '"keep-web"' in some.reason
    assert not ask(rules, verb="*", resource="*").allowed
    assert not ask(rules, verb="get", resource="pods", subresource="*", namespace="shop").allowed
    assert ask(rules, verb="get", resource="pods", namespace="shop").allowed
    assert ask(rules, verb="create", resource="configmaps", namespace="*").allowed


def test_an_allow_that_needs_a_lease_is_no_without_one():
    rules = [rule("leased", 10, "allow", verbs=["*"], resources=["*"], requires_lease=True)]
    info = sr.access_question(ssar(verb="get", resource="pods"))
    decision = sr.access_decision(rules, AGENT, info)
    verdict = sr.access_verdict(decision, info, "prod", lease_refusal="airlock: rule needs a lease")
    assert verdict == sr.Verdict(False, reason="airlock: rule needs a lease")


def test_yes_only_when_the_cluster_says_yes_too():
    yes = sr.Verdict(True, reason='airlock: allowed by rule "r" (connection prod)', ask_cluster=True)
    assert sr.with_cluster_access(yes, {"allowed": True, "reason": "RBAC: cluster-admin"}, "", "prod") == yes
    refused = sr.with_cluster_access(yes, {"allowed": False, "denied": True, "reason": "private"}, "", "prod")
    assert refused == sr.Verdict(False, denied=True, reason='airlock: allowed by rule "r" (connection prod), but the '
                                 "cluster does not allow it for the identity connection prod uses there",
                                 ask_cluster=True)
    unknown = sr.with_cluster_access(yes, None, "it answered 503", "prod")
    assert not unknown.allowed and unknown.evaluation_error == (
        "airlock: the cluster of connection prod could not be asked (it answered 503), so nothing is allowed here")
    held = sr.Verdict(False, reason="airlock: approval required", ask_cluster=True)
    assert sr.with_cluster_access(held, {"allowed": False}, "", "prod").reason.endswith(
        "the cluster does not allow it for the identity connection prod uses there either")
    assert sr.Verdict(False, denied=True, reason="r", evaluation_error="e").status() == {
        "allowed": False, "denied": True, "reason": "r", "evaluationError": "e"}


@pytest.mark.parametrize("code, body, problem", [
    (500, b"{}", "it answered 500"), (201, b"<html>", "its answer is not JSON"),
    (201, b'{"kind":"Status"}', "its answer is not a SelfSubjectAccessReview"),
])
def test_an_unusable_cluster_answer_is_never_a_yes(code, body, problem):
    assert sr.cluster_status(sr.ACCESS, code, body) == (None, problem)
    assert sr.cluster_status(sr.ACCESS, 201, b'{"kind":"SelfSubjectAccessReview","status":{"allowed":true}}') == (
        {"allowed": True}, "")


def test_the_cluster_is_asked_the_same_question():
    info = sr.access_question(ssar(verb="delete", group="apps", version="v1", resource="deployments", namespace="shop",
                                   name="web"))
    assert json.loads(sr.cluster_access_question(info)) == {
        "kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
        "spec": {"resourceAttributes": {"namespace": "shop", "verb": "delete", "group": "apps", "version": "v1",
                                        "resource": "deployments", "name": "web"}}}
    url = sr.access_question({"spec": {"nonResourceAttributes": {"path": "/version/", "verb": "get"}}})
    assert json.loads(sr.cluster_access_question(url))["spec"] == {
        "nonResourceAttributes": {"path": "/version/", "verb": "get"}}


def test_rules_lists_what_the_guardrails_allow_and_names_every_rule_that_takes_precedence():
    ours = sr.airlock_rules(GUARDRAILS, AGENT, "shop", "prod")
    assert {"verbs": ["get", "list", "watch"], "apiGroups": ["*"], "resources": ["*"]} in ours.resource_rules
    assert {"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["secrets"]} in ours.resource_rules
    assert not [r for r in ours.resource_rules if not {"delete", "create", "patch", "*"}.isdisjoint(r["verbs"])
                and "selfsubjectaccessreviews" not in r["resources"]]
    assert ours.non_resource_rules == [{"verbs": ["get", "head"], "nonResourceURLs": [
        "/api", "/api/*", "/apis", "/apis/*", "/version", "/version/", "/openapi", "/openapi/*", "/healthz",
        "/healthz/*", "/livez", "/livez/*", "/readyz", "/readyz/*"]}]
    dry_runs, note = ours.notes
    assert dry_runs.startswith('Rule "dry-runs" (') and dry_runs.endswith("applies to server-side dry runs only.")
    assert note.startswith('Rules that take precedence: "review-exec-attach-portforward" (needs a reviewer: * '
                           "pods/exec,pods/attach,pods/portforward)")
    assert '"review-deletes" (needs a reviewer: delete,deletecollection *)' in note
    status = sr.with_cluster_rules(ours, {"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                                          "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]}, "", "prod")
    assert status["resourceRules"] == ours.resource_rules and status["nonResourceRules"] == ours.non_resource_rules
    assert status["incomplete"] is True and status["evaluationError"].startswith(
        "airlock: connection prod checks its rules in order and the first match decides")


def test_an_earlier_rule_covering_an_allow_takes_its_verbs_and_one_covering_part_is_named():
    rules = [rule("no-deletes", 10, "deny", verbs=["delete", "deletecollection"], resources=["*"]),
             rule("keep-web", 20, "deny", verbs=["patch"], resources=["deployments"], names=["web"]),
             rule("apps", 30, "allow", verbs=["*"], api_groups=["apps"], resources=["deployments"]),
             rule("one-cm", 40, "allow", verbs=["get"], api_groups=[""], resources=["configmaps"], names=["cfg"]),
             rule("some-cms", 50, "allow", verbs=["get"], api_groups=[""], resources=["configmaps"], names=["c*"]),
             rule("elsewhere", 60, "allow", verbs=["get"], api_groups=[""], resources=["pods"], namespaces=["other"]),
             rule("leased", 70, "allow", verbs=["get"], api_groups=[""], resources=["nodes"], requires_lease=True)]
    ours = sr.airlock_rules(rules, AGENT, "shop", "prod")
    assert ours.resource_rules == [
        {"verbs": ["create", "get", "list", "patch", "proxy", "update", "watch"], "apiGroups": ["apps"],
         "resources": ["deployments"]},
        {"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["cfg"]},
    ]
    assert 'Rule "some-cms" (get configmaps in API groups "" named "c*") is not listed' in " ".join(ours.notes)
    assert 'Rule "leased" (get nodes in API groups "") needs an active lease' in " ".join(ours.notes)
    assert 'Rules that take precedence: "keep-web" (denied: patch deployments named "web")' in ours.notes[-1]
    leased = sr.airlock_rules(rules, AGENT, "shop", "prod", leased={"leased"})
    assert {"verbs": ["get"], "apiGroups": [""], "resources": ["nodes"]} in leased.resource_rules
    broken = sr.airlock_rules([rules[3], broken_rule(id=9, name="typo", order=35), rules[2]], AGENT, "shop", "prod")
    assert broken.resource_rules == [{"verbs": ["*"], "apiGroups": ["apps"], "resources": ["deployments"]}]
    assert broken.notes == ['Rule "typo" is invalid and denies everything after it.']


def test_rules_are_those_both_the_connection_and_the_cluster_allow():
    ours = sr.RuleList(resource_rules=[
        {"verbs": ["get", "list", "watch"], "apiGroups": ["*"], "resources": ["*"]},
        {"verbs": ["*"], "apiGroups": ["apps"], "resources": ["deployments", "*/scale"], "resourceNames": ["web"]},
        {"verbs": ["get"], "apiGroups": [""], "resources": ["config*"]},
    ], non_resource_rules=[{"verbs": ["get"], "nonResourceURLs": ["/api/*", "/version"]}])
    theirs = {"resourceRules": [
        {"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "pods/log"]},
        {"verbs": ["patch", "get"], "apiGroups": ["apps"], "resources": ["deployments/scale"]},
        {"verbs": ["get"], "apiGroups": [""], "resources": ["c*"]},
    ], "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": ["/api/v1", "/version", "/healthz"]}]}
    status = sr.with_cluster_rules(ours, theirs, "", "prod")
    assert status["resourceRules"] == [
        {"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "pods/log"]},
        {"verbs": ["get"], "apiGroups": ["apps"], "resources": ["deployments/scale"]},
        {"verbs": ["get"], "apiGroups": [""], "resources": ["c*"]},
        {"verbs": ["patch", "get"], "apiGroups": ["apps"], "resources": ["deployments/scale"], "resourceNames": ["web"]},
    ]
    assert status["nonResourceRules"] == [{"verbs": ["get"], "nonResourceURLs": ["/api/v1", "/version"]}]
    assert status["incomplete"] is True and "cannot be matched against" in status["evaluationError"]
    assert sr.with_cluster_rules(ours, None, "it is unreachable", "prod") == {
        "resourceRules": [], "nonResourceRules": [], "incomplete": True,
        "evaluationError": "airlock: the cluster of connection prod could not be asked (it is unreachable), so nothing "
                           "is allowed here"}
    partial = sr.with_cluster_rules(sr.RuleList(), {"incomplete": True}, "", "prod")
    assert partial["incomplete"] is True and "The cluster's own list is incomplete." in partial["evaluationError"]


def test_exec_denied_for_get_is_named_over_an_allow_of_create():
    """kubectl opens exec as a WebSocket GET and falls back to a SPDY POST: one decision for both verbs."""
    rules = [rule("no-exec", 10, "deny", verbs=["get"], resources=["pods/exec"]),
             rule("no-logs", 11, "deny", verbs=["get"], resources=["pods/log"]),
             rule("exec", 20, "allow", verbs=["create"], resources=["pods/exec", "pods/log"])]
    [note] = sr.airlock_rules(rules, AGENT, "shop", "prod").notes
    assert note == 'Rules that take precedence: "no-exec" (denied: get pods/exec).'
    assert not ask(rules, verb="create", resource="pods", subresource="exec", namespace="shop", name="web").allowed
