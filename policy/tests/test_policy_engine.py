"""The pure policy engine: matching, ordering, default deny, streaming subresources, messages."""

import dataclasses

import pytest

from identity.principal import Principal
from kube.requestinfo import parse
from policy.compile import broken_rule, compile_rule, in_order
from policy.evaluate import evaluate
from policy.globs import GlobSet
from policy.messages import denial_message, describe_request
from policy.vocabulary import DEFAULT_DENY, POLICY_ERROR

ALICE = Principal(
    subject="3f2a-alice", username="alice@example.com", groups=("sre", "agents-prod"),
    issuer="https://idp.example", expires_at=0.0, token_id="t-1",
)
BOB = Principal(
    subject="9c1d-bob", username="bob@example.com", groups=("dev",),
    issuer="https://idp.example", expires_at=0.0, token_id="t-2",
)

ANY_RESOURCE = dict(
    subjects=["*"], verbs=["*"], api_groups=["*"], resources=["*"], namespaces=["*"], names=["*"]
)


def rule(name="r", order=10, effect="allow", **fields):
    base = dict(ANY_RESOURCE)
    if "non_resource_urls" in fields:
        base = dict(subjects=["*"], verbs=["*"])
    return compile_rule({"name": name, "order": order, "effect": effect, **base, **fields}, id=order)


def req(method, path, query=""):
    return parse(method, path, query)


def matches(r, info, principal=ALICE):
    return evaluate([r], principal, info).rule_name == r.name


NS = "/api/v1/namespaces/shop"
APPS = "/apis/apps/v1/namespaces/shop"

MATCH_TABLE = [
    # verbs
    (dict(verbs=["get"]), "GET", f"{NS}/pods/web", "", True),
    (dict(verbs=["get"]), "GET", f"{NS}/pods", "", False),
    (dict(verbs=["list"]), "GET", f"{NS}/pods", "limit=500", True),
    (dict(verbs=["list"]), "GET", f"{NS}/pods", "watch=1", False),
    (dict(verbs=["watch"]), "GET", f"{NS}/pods", "watch=true", True),
    (dict(verbs=["watch"]), "GET", "/api/v1/watch/namespaces/shop/pods", "", True),
    (dict(verbs=["delete"]), "DELETE", f"{NS}/pods/web", "", True),
    (dict(verbs=["delete"]), "DELETE", f"{NS}/pods", "", False),
    (dict(verbs=["deletecollection"]), "DELETE", f"{NS}/pods", "", True),
    (dict(verbs=["create"]), "POST", f"{NS}/pods", "", True),
    (dict(verbs=["update"]), "PUT", f"{NS}/pods/web", "", True),
    (dict(verbs=["patch"]), "PATCH", f"{NS}/pods/web", "", True),
    (dict(verbs=["update"]), "PATCH", f"{NS}/pods/web", "", False),
    (dict(verbs=["*"]), "PATCH", f"{NS}/pods/web", "", True),
    # API groups
    (dict(api_groups=[""]), "GET", f"{NS}/pods/web", "", True),
    (dict(api_groups=[""]), "GET", f"{APPS}/deployments/web", "", False),
    (dict(api_groups=["apps"]), "GET", f"{APPS}/deployments/web", "", True),
    (dict(api_groups=["apps"]), "GET", f"{NS}/pods/web", "", False),
    (dict(api_groups=["*.k8s.io"]), "GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles/x", "", True),
    (dict(api_groups=["*.k8s.io"]), "GET", f"{APPS}/deployments/web", "", False),
    # resources and subresources
    (dict(resources=["pods"]), "GET", f"{NS}/pods/web", "", True),
    (dict(resources=["pods"]), "POST", f"{NS}/pods/web/exec", "command=ls", False),
    (dict(resources=["pods"]), "GET", f"{NS}/pods/web/log", "", False),
    (dict(resources=["pods/exec"]), "POST", f"{NS}/pods/web/exec", "command=ls", True),
    (dict(resources=["pods/exec"]), "GET", f"{NS}/pods/web", "", False),
    (dict(resources=["pods/*"]), "GET", f"{NS}/pods/web/log", "", True),
    (dict(resources=["pods/*"]), "GET", f"{NS}/pods/web", "", False),
    (dict(resources=["*/scale"]), "PATCH", f"{APPS}/deployments/web/scale", "", True),
    (dict(resources=["*/scale"]), "PATCH", f"{APPS}/deployments/web", "", False),
    (dict(resources=["*/status"]), "PUT", f"{APPS}/deployments/web/status", "", True),
    (dict(resources=["deployments/scale"]), "PATCH", f"{APPS}/statefulsets/web/scale", "", False),
    (dict(resources=["*"]), "POST", f"{NS}/pods/web/exec", "command=ls", True),
    (dict(resources=["*"]), "GET", f"{NS}/configmaps/x", "", True),
    (dict(resources=["deploy*"]), "GET", f"{APPS}/deployments/web", "", True),
    (dict(resources=["deploy*"]), "GET", f"{APPS}/deployments/web/scale", "", False),
    (dict(resources=["serviceaccounts/token"]), "POST", f"{NS}/serviceaccounts/default/token", "", True),
    # namespaces, incl. cluster-scoped
    (dict(namespaces=["shop"]), "GET", f"{NS}/pods/web", "", True),
    (dict(namespaces=["shop"]), "GET", "/api/v1/namespaces/default/pods/web", "", False),
    (dict(namespaces=["shop"]), "GET", "/api/v1/pods", "", False),
    (dict(namespaces=["team-*"]), "GET", "/api/v1/namespaces/team-a/pods/web", "", True),
    (dict(namespaces=[""]), "GET", "/api/v1/nodes/n1", "", True),
    (dict(namespaces=[""]), "GET", "/api/v1/pods", "", True),
    (dict(namespaces=[""]), "GET", f"{NS}/pods/web", "", False),
    (dict(namespaces=["*"]), "GET", "/api/v1/nodes/n1", "", True),
    (dict(namespaces=["?*"]), "GET", "/api/v1/nodes/n1", "", False),
    (dict(namespaces=["?*"]), "GET", f"{NS}/pods/web", "", True),
    # the Namespace object is cluster-scoped, although RequestInfo's namespace is its name
    (dict(namespaces=["shop"]), "DELETE", "/api/v1/namespaces/shop", "", False),
    (dict(namespaces=["shop"]), "PUT", "/api/v1/namespaces/shop/finalize", "", False),
    (dict(namespaces=["shop"]), "PATCH", "/api/v1/namespaces/shop", "", False),
    (dict(namespaces=["shop"]), "PUT", "/api/v1/namespaces/shop/status", "", False),
    (dict(namespaces=["shop"]), "GET", "/api/v1/namespaces/shop", "", False),
    (dict(namespaces=["?*"]), "PATCH", "/api/v1/namespaces/shop", "", False),
    (dict(namespaces=[""]), "PATCH", "/api/v1/namespaces/shop", "", True),
    (dict(namespaces=[""]), "DELETE", "/api/v1/namespaces/shop", "", True),
    (dict(namespaces=["*"]), "PATCH", "/api/v1/namespaces/shop", "", True),
    (dict(namespaces=["shop"]), "GET", f"{NS}/configmaps/namespaces", "", True),
    # names
    (dict(names=["web"]), "GET", f"{NS}/pods/web", "", True),
    (dict(names=["web"]), "GET", f"{NS}/pods/api", "", False),
    (dict(names=["web"]), "GET", f"{NS}/pods", "", False),
    (dict(names=["web"]), "GET", f"{NS}/pods", "fieldSelector=metadata.name%3Dweb&watch=1", True),
    (dict(names=["web-*"]), "GET", f"{NS}/pods/web-7f9", "", True),
    (dict(names=[""]), "GET", f"{NS}/pods", "", True),
    (dict(names=[""]), "GET", f"{NS}/pods/web", "", False),
    (dict(names=["*"]), "GET", f"{NS}/pods", "", True),
    (dict(names=["a[b"]), "GET", f"{NS}/configmaps/a[b", "", True),
    (dict(names=["a[b"]), "GET", f"{NS}/configmaps/ab", "", False),
    # non-resource URLs
    (dict(non_resource_urls=["/version"]), "GET", "/version", "", True),
    (dict(non_resource_urls=["/version"]), "GET", "/version/", "", False),
    (dict(non_resource_urls=["/apis/*"]), "GET", "/apis/apps/v1", "", True),
    (dict(non_resource_urls=["/apis/*"]), "GET", "/apis", "", False),
    (dict(non_resource_urls=["/api", "/api/*"]), "GET", "/api/v1", "", True),
    (dict(non_resource_urls=["/healthz*"]), "GET", "/healthz/etcd", "", True),
    (dict(non_resource_urls=["/healthz*"]), "GET", "/livez", "", False),
    (dict(non_resource_urls=["/openapi/*"]), "GET", "/openapi/v3/apis/apps/v1", "", True),
    (dict(non_resource_urls=["/version"], verbs=["get"]), "HEAD", "/version", "", False),
    (dict(non_resource_urls=["/version"], verbs=["head"]), "HEAD", "/version", "", True),
    (dict(non_resource_urls=["/version"], verbs=["get"]), "POST", "/version", "", False),
    (dict(non_resource_urls=["*"]), "GET", f"{NS}/pods/web", "", False),
    (dict(), "GET", "/version", "", False),
    (dict(), "GET", "/api/v1", "", False),
]


@pytest.mark.parametrize("fields, method, path, query, expected", MATCH_TABLE)
def test_matching_table(fields, method, path, query, expected):
    assert matches(rule(**fields), req(method, path, query)) is expected


@pytest.mark.parametrize(
    "fields, principal, expected",
    [
        (dict(subjects=["alice@example.com"]), ALICE, True),
        (dict(subjects=["alice@example.com"]), BOB, False),
        (dict(subjects=["*@example.com"]), BOB, True),
        (dict(subjects=["3f2a-*"]), ALICE, True),
        (dict(subjects=[], groups=["sre"]), ALICE, True),
        (dict(subjects=[], groups=["sre"]), BOB, False),
        (dict(subjects=[], groups=["agents-*"]), ALICE, True),
        (dict(subjects=["bob@example.com"], groups=["sre"]), ALICE, True),
        (dict(subjects=["bob@example.com"], groups=["sre"]), BOB, True),
        (dict(subjects=["*"]), None, False),
    ],
)
def test_principal_matching(fields, principal, expected):
    assert matches(rule(**fields), req("GET", f"{NS}/pods/web"), principal) is expected


def test_rule_without_subjects_or_groups_matches_nobody():
    nobody = dataclasses.replace(rule(), subjects=GlobSet.of([]), groups=GlobSet.of([]))
    assert evaluate([nobody], ALICE, req("GET", f"{NS}/pods/web")).rule_name == DEFAULT_DENY


def test_first_matching_rule_in_order_wins_regardless_of_list_order():
    """Rules are put in order once, when compiled (in_order; load_compiled_rules), not per request."""
    deny = rule("no-secrets", order=10, effect="deny", resources=["secrets"])
    allow = rule("read-all", order=20, effect="allow", verbs=["get"])
    info = req("GET", f"{NS}/secrets/db")
    for rules in ([deny, allow], [allow, deny]):
        decision = evaluate(in_order(rules), ALICE, info)
        assert (decision.effect, decision.rule_name, decision.rule_id) == ("deny", "no-secrets", 10)
    assert evaluate(in_order([allow, deny]), ALICE, req("GET", f"{NS}/pods/web")).rule_name == "read-all"


def test_equal_order_is_broken_by_name():
    a = rule("a-deny", order=5, effect="deny")
    b = rule("b-allow", order=5, effect="allow")
    assert evaluate(in_order([b, a]), ALICE, req("GET", f"{NS}/pods/web")).rule_name == "a-deny"
    # By code point, as export and import keep it, whatever the database's collation says.
    hyphen, letter = rule("a-b", order=5, effect="deny"), rule("aa", order=5, effect="allow")
    assert in_order([letter, hyphen]) == (hyphen, letter)


def test_evaluate_takes_the_rules_in_the_order_given():
    """The hot path does not sort: the first matching rule of the sequence decides."""
    deny = rule("no-pods", order=10, effect="deny")
    allow = rule("read-all", order=20, effect="allow")
    assert evaluate([allow, deny], ALICE, req("GET", f"{NS}/pods/web")).rule_name == "read-all"


def test_disabled_rules_are_skipped():
    off = compile_rule({"name": "off", "order": 1, "effect": "allow", "enabled": False, **ANY_RESOURCE})
    deny = rule("deny-all", order=2, effect="deny")
    assert evaluate([off, deny], ALICE, req("GET", f"{NS}/pods/web")).rule_name == "deny-all"
    assert evaluate([off], ALICE, req("GET", f"{NS}/pods/web")).rule_name == DEFAULT_DENY


def test_default_deny():
    decision = evaluate([rule(resources=["configmaps"])], ALICE, req("GET", f"{NS}/pods/web"))
    assert decision.effect == "deny"
    assert decision.rule_id is None
    assert decision.rule_name == DEFAULT_DENY
    assert "no enabled rule matched" in decision.reason
    assert decision.mask_secrets is True
    assert evaluate([], ALICE, req("GET", "/version")).rule_name == DEFAULT_DENY


def test_decision_carries_masking_and_lease():
    info = req("GET", f"{NS}/secrets/db")
    unmasked = evaluate([rule(mask_secrets=False, requires_lease=True)], ALICE, info)
    assert (unmasked.effect, unmasked.mask_secrets, unmasked.requires_lease) == ("allow", False, True)
    assert evaluate([rule(mask_secrets=True)], ALICE, info).mask_secrets is True
    # Unmasking needs an allowing rule: review and deny always mask.
    assert evaluate([rule(effect="review", mask_secrets=False)], ALICE, info).mask_secrets is True
    assert evaluate([rule(effect="deny", mask_secrets=False)], ALICE, info).mask_secrets is True


STREAMS = [
    ("/api/v1/namespaces/shop/pods/web/exec", "command=ls&stdout=true&stderr=true"),
    ("/api/v1/namespaces/shop/pods/web/attach", "stdout=true"),
    ("/api/v1/namespaces/shop/pods/web/portforward", "ports=8080"),
    ("/api/v1/namespaces/shop/pods/web/proxy/healthz", ""),
    ("/api/v1/namespaces/shop/services/web/proxy/", ""),
    ("/api/v1/nodes/n1/proxy/metrics", ""),
]


@pytest.mark.parametrize("path, query", STREAMS)
@pytest.mark.parametrize(
    "verbs, expected",
    [(["get"], "allow"), (["create"], "allow"), (["*"], "allow"), (["list", "watch"], "deny"),
     (["update"], "deny")],
)
def test_streaming_subresources_same_decision_for_websocket_get_and_spdy_post(path, query, verbs, expected):
    subresource = "proxy" if "/proxy" in path else path.rsplit("/", 1)[1]
    policy = [rule("stream", verbs=verbs, resources=[f"*/{subresource}"])]
    websocket = req("GET", path, query)
    spdy = req("POST", path, query)
    assert (websocket.verb, spdy.verb) == ("get", "create")
    decisions = {evaluate(policy, ALICE, info).effect for info in (websocket, spdy)}
    assert decisions == {expected}


def test_exec_deny_is_not_bypassed_by_verb_specific_allow():
    policy = [
        rule("no-exec", order=10, effect="deny", verbs=["create"], resources=["pods/exec"]),
        rule("read", order=20, verbs=["get", "list", "watch"]),
    ]
    for method in ("GET", "POST"):
        assert evaluate(policy, ALICE, req(method, f"{NS}/pods/web/exec", "command=sh")).rule_name == "no-exec"


def test_proxy_methods_other_than_get_and_post_are_decided_by_the_subresource():
    policy = [rule("proxy", verbs=["get"], resources=["pods/proxy"], effect="review")]
    for method in ("PUT", "PATCH", "DELETE"):
        assert evaluate(policy, ALICE, req(method, f"{NS}/pods/web/proxy/x")).effect == "review"


def test_legacy_proxy_path_is_treated_as_proxy_subresource():
    info = req("GET", "/api/v1/proxy/namespaces/shop/pods/web/metrics")
    assert (info.verb, info.subresource) == ("proxy", "")
    policy = [
        rule("no-proxy", order=1, effect="deny", verbs=["get"], resources=["*/proxy"]),
        rule("read-pods", order=2, verbs=["*"], resources=["pods"]),
    ]
    assert evaluate(policy, ALICE, info).rule_name == "no-proxy"
    assert evaluate([rule(verbs=["*"], resources=["pods"])], ALICE, info).rule_name == DEFAULT_DENY


def test_broken_rule_denies_everything_from_its_position():
    allow_first = rule("read", order=1, verbs=["get"], resources=["pods"])
    broken = broken_rule(id=7, name="typo", order=5)
    after = rule("all", order=9)
    assert evaluate([allow_first, broken, after], ALICE, req("GET", f"{NS}/pods/web")).rule_name == "read"
    decision = evaluate([allow_first, broken, after], ALICE, req("DELETE", f"{NS}/pods/web"))
    assert (decision.effect, decision.rule_name) == ("deny", "typo")
    assert evaluate([broken], None, req("GET", "/version")).rule_name == "typo"
    disabled = broken_rule(id=8, name="typo-off", order=5, enabled=False)
    assert evaluate([disabled, after], ALICE, req("GET", "/api/v1/nodes")).rule_name == "all"


def test_evaluation_errors_fail_closed():
    decision = evaluate([rule()], ALICE, object())
    assert (decision.effect, decision.rule_name) == ("deny", POLICY_ERROR)


@pytest.mark.parametrize(
    "method, path, query, expected",
    [
        ("GET", f"{NS}/secrets/db", "", 'get secrets "db" in namespace "shop"'),
        ("GET", f"{NS}/pods", "limit=500", 'list pods in namespace "shop"'),
        ("POST", f"{NS}/pods/web/exec", "command=ls", 'create pods/exec "web" in namespace "shop"'),
        ("DELETE", f"{APPS}/deployments/web", "", 'delete deployments "web" in namespace "shop"'),
        ("GET", "/api/v1/nodes/n1", "", 'get nodes "n1"'),
        ("DELETE", "/api/v1/namespaces/shop", "", 'delete namespaces "shop"'),
        ("GET", "/version", "", "get /version"),
    ],
)
def test_describe_request(method, path, query, expected):
    assert describe_request(req(method, path, query)) == expected


def test_denial_messages():
    deny = evaluate([rule("no-secrets", effect="deny", resources=["secrets"])], ALICE, req("GET", f"{NS}/secrets/db"))
    assert denial_message(deny, req("GET", f"{NS}/secrets/db"), connection="prod") == (
        'airlock: denied by rule "no-secrets" (connection prod): get secrets "db" in namespace "shop"'
    )
    info = req("DELETE", f"{APPS}/deployments/web")
    review = evaluate([rule("guardrails-writes", effect="review")], ALICE, info)
    assert denial_message(review, info) == (
        'airlock: approval required by rule "guardrails-writes": delete deployments "web" in namespace '
        '"shop"; a reviewer must approve this request'
    )
    default = evaluate([], ALICE, req("GET", "/version"))
    assert denial_message(default, req("GET", "/version"), connection="prod") == (
        'airlock: denied by rule "default-deny" (connection prod): get /version; no rule allows this request'
    )
    allowed = evaluate([rule()], ALICE, info)
    with pytest.raises(ValueError):
        denial_message(allowed, info)


def test_denial_message_quotes_unusual_names():
    info = req("GET", '/api/v1/namespaces/shop/configmaps/a"b')
    message = denial_message(evaluate([], ALICE, info), info)
    assert 'get configmaps "a\\"b" in namespace "shop"' in message


@pytest.mark.parametrize("one, other, overlaps, covers", [
    (["*"], ["shop"], True, True),
    (["shop"], ["*"], True, False),
    (["shop", "dev"], ["dev"], True, True),
    (["shop"], ["dev"], False, False),
    (["s*"], ["shop"], True, True),
    (["shop"], ["s*"], True, False),
    (["s*"], ["d*"], True, False),  # two globs: taken to overlap, never proved to cover
    ([], ["*"], False, False),
])
def test_glob_sets_overlap_and_cover(one, other, overlaps, covers):
    from policy.globs import GlobSet

    assert GlobSet.of(one).overlaps(GlobSet.of(other)) is overlaps
    assert GlobSet.of(one).covers(GlobSet.of(other)) is covers


@pytest.mark.parametrize("one, other, overlaps, covers", [
    (["*"], ["pods/exec"], True, True),
    (["pods"], ["pods/exec"], False, False),
    (["pods/*"], ["pods/exec", "pods/log"], True, True),
    (["*/scale"], ["deployments/scale"], True, True),
    (["deployments/scale"], ["*/scale"], True, False),
    (["pods", "secrets"], ["secrets"], True, True),
])
def test_resource_sets_overlap_and_cover(one, other, overlaps, covers):
    from policy.globs import ResourceSet

    assert ResourceSet.of(one).overlaps(ResourceSet.of(other)) is overlaps
    assert ResourceSet.of(one).covers(ResourceSet.of(other)) is covers


@pytest.mark.parametrize("attributes, matched", [
    (dict(verb="*", resource="*", group="*"), True),
    # kubectl auth can-i '*' '*' asks about the core group, as RBAC reads it: that includes deleting namespace
    # shop, and so deployment web in it
    (dict(verb="*", resource="*"), True),
    (dict(verb="get", resource="*"), False),
    (dict(verb="delete", resource="deployments", group="apps", namespace="shop"), True),  # any name: "web" too
    (dict(verb="delete", resource="deployments", group="extensions", namespace="shop", name="web"), True),
    (dict(verb="delete", resource="deployments", group="apps", namespace="shop", name="db"), False),
    (dict(verb="deletecollection", resource="deployments", group="apps", namespace="shop"), True),
    (dict(verb="get", resource="deployments", group="apps", namespace="shop"), False),
    (dict(verb="delete", resource="deployments", group="apps", namespace="dev"), False),
    (dict(verb="delete", resource="namespaces", name="shop"), True),  # deletes what is in it
    (dict(verb="delete", resource="namespaces", name="dev"), False),
    (dict(verb="delete", resource="namespaces"), True),
])
def test_a_rule_may_match_a_class_of_requests(attributes, matched):
    from kube.requestinfo import RequestInfo

    keep_web = compile_rule({"name": "keep-web", "order": 1, "effect": "deny", "subjects": ["*"],
                             "verbs": ["delete"], "api_groups": ["apps"], "resources": ["deployments"],
                             "namespaces": ["shop"], "names": ["web"]})
    a = {"namespace": "", "group": "", "name": "", "subresource": "", **attributes}
    info = RequestInfo(True, "", a["verb"], "apis", a["group"], "v1", a["namespace"], a["resource"],
                       a["subresource"], a["name"], ())
    assert keep_web.may_match(ALICE, info) is matched
    assert not dataclasses.replace(keep_web, enabled=False).may_match(ALICE, info)
