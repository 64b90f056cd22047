"""Preset decisions for the requests kubectl actually makes."""

import pytest

from identity.principal import Principal
from kube.requestinfo import parse
from policy.compile import compile_rule
from policy.evaluate import evaluate
from policy.presets import PRESETS, preset_rule_fields

AGENT = Principal(
    subject="agent-1", username="agent@example.com", groups=(), issuer="https://idp.example",
    expires_at=0.0, token_id="t",
)
NS = "/api/v1/namespaces/shop"
APPS = "/apis/apps/v1/namespaces/shop"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
ADMISSION = "/apis/admissionregistration.k8s.io/v1"


def compiled(preset):
    return [compile_rule(fields, id=i) for i, fields in enumerate(preset_rule_fields(preset))]


READ_ONLY = compiled("read-only")
GUARDRAILS = compiled("production-guardrails")

# (description, method, path, query, read-only (effect, rule), production-guardrails (effect, rule))
GRID = [
    ("discovery /api", "GET", "/api", "", ("allow", "discovery"), ("allow", "discovery")),
    ("discovery /apis", "GET", "/apis", "", ("allow", "discovery"), ("allow", "discovery")),
    ("discovery /api/v1", "GET", "/api/v1", "", ("allow", "discovery"), ("allow", "discovery")),
    ("discovery apps/v1", "GET", "/apis/apps/v1", "", ("allow", "discovery"), ("allow", "discovery")),
    ("version", "GET", "/version", "", ("allow", "discovery"), ("allow", "discovery")),
    ("openapi v3", "GET", "/openapi/v3", "", ("allow", "discovery"), ("allow", "discovery")),
    ("openapi v3 gv", "GET", "/openapi/v3/apis/apps/v1", "", ("allow", "discovery"), ("allow", "discovery")),
    ("openapi v2", "GET", "/openapi/v2", "", ("allow", "discovery"), ("allow", "discovery")),
    ("healthz", "GET", "/healthz", "", ("allow", "discovery"), ("allow", "discovery")),
    ("livez", "HEAD", "/livez", "", ("allow", "discovery"), ("allow", "discovery")),
    ("readyz", "GET", "/readyz", "", ("allow", "discovery"), ("allow", "discovery")),
    # kube-apiserver serves these with a trailing slash too (kr8s asks for /version/)
    ("version/", "GET", "/version/", "", ("allow", "discovery"), ("allow", "discovery")),
    ("api/", "GET", "/api/", "", ("allow", "discovery"), ("allow", "discovery")),
    ("apis/", "GET", "/apis/", "", ("allow", "discovery"), ("allow", "discovery")),
    ("api/v1/", "GET", "/api/v1/", "", ("allow", "discovery"), ("allow", "discovery")),
    ("openapi v3/", "GET", "/openapi/v3/", "", ("allow", "discovery"), ("allow", "discovery")),
    ("healthz/", "GET", "/healthz/", "", ("allow", "discovery"), ("allow", "discovery")),
    ("healthz check", "GET", "/healthz/etcd", "", ("allow", "discovery"), ("allow", "discovery")),
    ("livez/", "GET", "/livez/", "", ("allow", "discovery"), ("allow", "discovery")),
    ("readyz check", "GET", "/readyz/ping", "verbose", ("allow", "discovery"), ("allow", "discovery")),
    ("post to /version", "POST", "/version", "", ("deny", "default-deny"), ("deny", "default-deny")),
    ("put to /healthz/", "PUT", "/healthz/", "", ("deny", "default-deny"), ("deny", "default-deny")),
    ("metrics", "GET", "/metrics", "", ("deny", "default-deny"), ("deny", "default-deny")),
    ("debug", "GET", "/debug/pprof/", "", ("deny", "default-deny"), ("deny", "default-deny")),
    ("logs", "GET", "/logs/", "", ("deny", "default-deny"), ("deny", "default-deny")),
    ("issuer", "GET", "/.well-known/openid-configuration", "", ("deny", "default-deny"),
     ("deny", "default-deny")),
    ("version and more", "GET", "/version/x", "", ("deny", "default-deny"), ("deny", "default-deny")),
    ("get pods", "GET", f"{NS}/pods", "limit=500", ("allow", "read-all"), ("allow", "read-all")),
    ("get pods -A", "GET", "/api/v1/pods", "limit=500", ("allow", "read-all"), ("allow", "read-all")),
    ("get pod -w", "GET", f"{NS}/pods", "fieldSelector=metadata.name%3Dweb&watch=true",
     ("allow", "read-all"), ("allow", "read-all")),
    ("get nodes", "GET", "/api/v1/nodes", "", ("allow", "read-all"), ("allow", "read-all")),
    ("describe events", "GET", f"{NS}/events", "fieldSelector=involvedObject.name%3Dweb",
     ("allow", "read-all"), ("allow", "read-all")),
    ("logs", "GET", f"{NS}/pods/web/log", "container=app", ("allow", "read-all"), ("allow", "read-all")),
    ("get deployment", "GET", f"{APPS}/deployments/web", "", ("allow", "read-all"), ("allow", "read-all")),
    ("get scale", "GET", f"{APPS}/deployments/web/scale", "", ("allow", "read-all"), ("allow", "read-all")),
    ("get secret", "GET", f"{NS}/secrets/db", "", ("allow", "read-secrets-masked"),
     ("allow", "read-secrets-masked")),
    ("list secrets", "GET", f"{NS}/secrets", "", ("allow", "read-secrets-masked"),
     ("allow", "read-secrets-masked")),
    ("watch secrets", "GET", f"{NS}/secrets", "watch=1", ("allow", "read-secrets-masked"),
     ("allow", "read-secrets-masked")),
    ("auth can-i", "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", "",
     ("allow", "self-reviews"), ("allow", "self-reviews")),
    ("auth whoami", "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", "",
     ("allow", "self-reviews"), ("allow", "self-reviews")),
    ("create deployment", "POST", f"{APPS}/deployments", "", ("deny", "read-only-no-writes"),
     ("review", "review-writes")),
    ("apply", "PATCH", f"{APPS}/deployments/web", "fieldManager=kubectl-client-side-apply",
     ("deny", "read-only-no-writes"), ("review", "review-writes")),
    ("replace secret", "PUT", f"{NS}/secrets/db", "", ("deny", "read-only-no-writes"),
     ("review", "review-writes")),
    ("evict", "POST", f"{NS}/pods/web/eviction", "", ("deny", "read-only-no-writes"),
     ("review", "review-writes")),
    ("debug", "PATCH", f"{NS}/pods/web/ephemeralcontainers", "", ("deny", "read-only-no-writes"),
     ("review", "review-writes")),
    ("delete pod", "DELETE", f"{NS}/pods/web", "", ("deny", "read-only-no-writes"), ("review", "review-deletes")),
    ("delete pods", "DELETE", f"{NS}/pods", "", ("deny", "read-only-no-writes"), ("review", "review-deletes")),
    # deleting namespaces deletes their RoleBindings too: the first review rule that covers it decides
    ("delete all namespaces", "DELETE", "/api/v1/namespaces", "", ("deny", "read-only-no-writes"),
     ("review", "review-rbac-changes")),
    ("delete namespace", "DELETE", NS, "", ("deny", "read-only-no-writes"), ("review", "review-rbac-changes")),
    ("scale", "PATCH", f"{APPS}/deployments/web/scale", "", ("deny", "read-only-no-writes"),
     ("review", "review-scale")),
    ("scale sts", "PUT", f"{APPS}/statefulsets/db/scale", "", ("deny", "read-only-no-writes"),
     ("review", "review-scale")),
    ("exec websocket", "GET", f"{NS}/pods/web/exec", "command=sh&stdin=true&tty=true",
     ("deny", "no-exec-attach-portforward"), ("review", "review-exec-attach-portforward")),
    ("exec spdy", "POST", f"{NS}/pods/web/exec", "command=sh&stdin=true&tty=true",
     ("deny", "no-exec-attach-portforward"), ("review", "review-exec-attach-portforward")),
    ("attach websocket", "GET", f"{NS}/pods/web/attach", "stdout=true",
     ("deny", "no-exec-attach-portforward"), ("review", "review-exec-attach-portforward")),
    ("attach spdy", "POST", f"{NS}/pods/web/attach", "stdout=true",
     ("deny", "no-exec-attach-portforward"), ("review", "review-exec-attach-portforward")),
    ("port-forward websocket", "GET", f"{NS}/pods/web/portforward", "",
     ("deny", "no-exec-attach-portforward"), ("review", "review-exec-attach-portforward")),
    ("port-forward spdy", "POST", f"{NS}/pods/web/portforward", "",
     ("deny", "no-exec-attach-portforward"), ("review", "review-exec-attach-portforward")),
    ("pod proxy", "GET", f"{NS}/pods/web/proxy/healthz", "", ("deny", "no-proxy"), ("review", "review-proxy")),
    ("service proxy post", "POST", f"{NS}/services/web/proxy/api", "", ("deny", "no-proxy"),
     ("review", "review-proxy")),
    ("node proxy", "GET", "/api/v1/nodes/n1/proxy/metrics", "", ("deny", "no-proxy"), ("review", "review-proxy")),
    ("legacy proxy", "GET", "/api/v1/proxy/namespaces/shop/pods/web/x", "", ("deny", "no-proxy"),
     ("review", "review-proxy")),
    ("create token", "POST", f"{NS}/serviceaccounts/default/token", "", ("deny", "no-serviceaccount-tokens"),
     ("review", "review-serviceaccount-tokens")),
    ("bind cluster-admin", "POST", f"{RBAC}/clusterrolebindings", "", ("deny", "read-only-no-writes"),
     ("review", "review-rbac-changes")),
    ("delete role", "DELETE", f"{RBAC}/namespaces/shop/roles/x", "", ("deny", "read-only-no-writes"),
     ("review", "review-rbac-changes")),
    ("read roles", "GET", f"{RBAC}/clusterroles", "", ("allow", "read-all"), ("allow", "read-all")),
    ("patch webhook", "PATCH", f"{ADMISSION}/validatingwebhookconfigurations/x", "",
     ("deny", "read-only-no-writes"), ("review", "review-admission-webhook-changes")),
    ("create mutating webhook", "POST", f"{ADMISSION}/mutatingwebhookconfigurations", "",
     ("deny", "read-only-no-writes"), ("review", "review-admission-webhook-changes")),
]


@pytest.mark.parametrize("preset, column", [("read-only", 4), ("production-guardrails", 5)])
@pytest.mark.parametrize("case", GRID, ids=[case[0] for case in GRID])
def test_preset_decisions(preset, column, case):
    rules = READ_ONLY if preset == "read-only" else GUARDRAILS
    info = parse(case[1], case[2], case[3])
    decision = evaluate(rules, AGENT, info)
    assert (decision.effect, decision.rule_name) == case[column]
    assert decision.mask_secrets is True
    assert decision.requires_lease is False


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_refuse_unauthenticated(preset):
    rules = compiled(preset)
    assert evaluate(rules, None, parse("GET", "/version", "")).rule_name == "default-deny"


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_match_non_resource_urls_only_by_explicit_rules(preset):
    """Every non-resource rule is read-only and lists URLs explicitly (no "*")."""
    for fields in preset_rule_fields(preset):
        if fields.get("non_resource_urls"):
            assert fields["effect"] == "allow"
            assert set(fields["verbs"]) <= {"get", "head"}
            assert "*" not in fields["non_resource_urls"]
