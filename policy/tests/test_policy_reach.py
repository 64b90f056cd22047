"""Deny and review rules match everything a request reaches; allow rules stay literal.

These are the bypasses the end-to-end bypass suite (tests/e2e_identity/test_bypass.py) found:
deletecollection instead of delete, cluster-wide lists instead of namespaced ones, deleting the
namespace instead of the object, and API-group aliases of the same objects.
"""

import pytest

from identity.principal import Principal
from kube.requestinfo import RequestInfoError, parse
from policy.compile import compile_rule
from policy.evaluate import evaluate
from policy.reach import Reach
from policy.vocabulary import DEFAULT_DENY

AGENT = Principal(subject="a", username="agent", groups=("agents",), issuer="https://idp.example",
                  expires_at=0.0, token_id="t")
SHOP = "/api/v1/namespaces/shop"
DEPLOYMENTS = "/apis/apps/v1/namespaces/shop/deployments"


def rule(effect="deny", name="r", order=10, **fields):
    base = dict(subjects=["*"], verbs=["*"], api_groups=["*"], resources=["*"], namespaces=["*"], names=["*"])
    return compile_rule({"name": name, "order": order, "effect": effect, **base, **fields}, id=order)


def decide(rules, method, path, query=""):
    decision = evaluate(rules, AGENT, parse(method, path, query))
    return decision.effect, decision.rule_name


KEEP_WEB = dict(verbs=["delete"], api_groups=["apps"], resources=["deployments"], namespaces=["shop"], names=["web"])
SHOP_SECRETS = dict(verbs=["get"], api_groups=[""], resources=["secrets"], namespaces=["shop"], names=["shop-db"])

# (rule fields, method, path, query, does a deny/review rule with these fields match?)
REACH = [
    # deletecollection deletes the named object too
    (KEEP_WEB, "DELETE", f"{DEPLOYMENTS}/web", "", True),
    (KEEP_WEB, "DELETE", DEPLOYMENTS, "", True),
    (KEEP_WEB, "DELETE", DEPLOYMENTS, "labelSelector=app%3Dweb", True),
    (KEEP_WEB, "DELETE", DEPLOYMENTS, "fieldSelector=metadata.name%3Dweb", True),
    (KEEP_WEB, "DELETE", "/apis/apps/v1/deployments", "", True),
    (KEEP_WEB, "DELETE", f"{DEPLOYMENTS}/api", "", False),
    (KEEP_WEB, "DELETE", "/apis/apps/v1/namespaces/payments/deployments", "", False),
    (KEEP_WEB, "GET", DEPLOYMENTS, "", False),
    (KEEP_WEB, "PATCH", f"{DEPLOYMENTS}/web", "", False),
    # ... and so does deleting the namespace, or every namespace
    (KEEP_WEB, "DELETE", SHOP, "", True),
    (KEEP_WEB, "DELETE", "/api/v1/namespaces", "", True),
    (KEEP_WEB, "DELETE", "/api/v1/namespaces/payments", "", False),
    (KEEP_WEB, "PUT", f"{SHOP}/finalize", "", False),
    (dict(verbs=["get"], resources=["secrets"], namespaces=["shop"]), "DELETE", SHOP, "", False),
    (dict(verbs=["*"], resources=["pods/exec"], namespaces=["shop"]), "DELETE", SHOP, "", False),
    # lists and watches return what get would; deletecollection returns what it deleted
    (SHOP_SECRETS, "GET", f"{SHOP}/secrets/shop-db", "", True),
    (SHOP_SECRETS, "GET", f"{SHOP}/secrets", "", True),
    (SHOP_SECRETS, "GET", f"{SHOP}/secrets", "fieldSelector=metadata.name%3Dshop-db", True),
    (SHOP_SECRETS, "GET", f"{SHOP}/secrets", "fieldSelector=metadata.name%3Dother", False),
    (SHOP_SECRETS, "GET", f"{SHOP}/secrets", "watch=1", True),
    (SHOP_SECRETS, "GET", "/api/v1/watch/namespaces/shop/secrets/shop-db", "", True),
    (SHOP_SECRETS, "DELETE", f"{SHOP}/secrets", "", True),
    (SHOP_SECRETS, "GET", "/api/v1/secrets", "", True),
    (SHOP_SECRETS, "GET", "/api/v1/secrets", "fieldSelector=metadata.name%3Dshop-db", True),
    (SHOP_SECRETS, "GET", "/api/v1/namespaces/payments/secrets", "", False),
    (SHOP_SECRETS, "GET", f"{SHOP}/secrets/other", "", False),
    (dict(verbs=["list"], resources=["pods"]), "GET", f"{SHOP}/pods", "watch=true", True),
    (dict(verbs=["list"], resources=["pods"]), "GET", f"{SHOP}/pods/web", "", False),
    (dict(verbs=["deletecollection"], resources=["pods"]), "DELETE", f"{SHOP}/pods/web", "", False),
    # cluster-wide collections cover every namespace, unless the resource is cluster-scoped
    (dict(namespaces=["kube-system"]), "GET", "/api/v1/pods", "", True),
    (dict(namespaces=["kube-system"]), "GET", "/apis/example.com/v1/widgets", "", True),
    (dict(namespaces=["kube-system"]), "GET", "/api/v1/namespaces", "", True),
    (dict(namespaces=["kube-system"]), "GET", "/api/v1/nodes", "", False),
    (dict(namespaces=["kube-system"]), "GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles", "", False),
    (dict(namespaces=["kube-system"]), "GET", "/api/v1/namespaces/shop/pods", "", False),
    (dict(namespaces=[""], resources=["pods"], verbs=["list"]), "GET", f"{SHOP}/pods", "", False),
    # API groups that serve the same objects
    (dict(api_groups=[""], resources=["events"], verbs=["list"]), "GET",
     "/apis/events.k8s.io/v1/namespaces/shop/events", "", True),
    (dict(api_groups=["events.k8s.io"], resources=["events"], verbs=["list"]), "GET", f"{SHOP}/events", "", True),
    (dict(api_groups=["apps"], resources=["deployments"]), "DELETE",
     "/apis/extensions/v1beta1/namespaces/shop/deployments/web", "", True),
    (dict(api_groups=["extensions"], resources=["ingresses"]), "GET",
     "/apis/networking.k8s.io/v1/namespaces/shop/ingresses/web", "", True),
    (dict(api_groups=["apps"], resources=["deployments"]), "GET",
     "/apis/example.com/v1/namespaces/shop/deployments/web", "", False),
    (dict(api_groups=[""], resources=["events"]), "GET", "/apis/apps/v1/namespaces/shop/events", "", False),
    # the Namespace object: cluster-scoped for allow rules, still "in" itself for restrictive ones
    (dict(resources=["namespaces"], namespaces=["shop"]), "PATCH", SHOP, "", True),
    (dict(resources=["namespaces/status"], namespaces=["shop"]), "PUT", f"{SHOP}/status", "", True),
]


@pytest.mark.parametrize("effect", ["deny", "review"])
@pytest.mark.parametrize("fields, method, path, query, expected", REACH)
def test_restrictive_rules_match_what_a_request_reaches(effect, fields, method, path, query, expected):
    restrictive = rule(effect, name="restrict", **fields)
    assert (decide([restrictive], method, path, query)[1] == "restrict") is expected


LITERAL = {("DELETE", f"{DEPLOYMENTS}/web"), ("GET", f"{SHOP}/secrets/shop-db")}


@pytest.mark.parametrize("fields, method, path, query, expected", [row for row in REACH if row[4]])
def test_allow_rules_grant_only_what_they_name(fields, method, path, query, expected):
    granted = decide([rule("allow", **fields)], method, path, query)
    assert granted == (("allow", "r") if (method, path) in LITERAL and not query else ("deny", DEFAULT_DENY))


def test_a_literal_allow_still_matches_exactly():
    allow = rule("allow", **KEEP_WEB)
    assert decide([allow], "DELETE", f"{DEPLOYMENTS}/web") == ("allow", "r")
    assert decide([allow], "DELETE", DEPLOYMENTS) == ("deny", DEFAULT_DENY)
    assert decide([allow], "DELETE", SHOP) == ("deny", DEFAULT_DENY)


def test_first_match_order_is_kept():
    """An earlier allow still wins over a later, widened deny: order is the author's choice."""
    rules = [
        rule("allow", name="clean-shop", order=1, verbs=["deletecollection"], resources=["deployments"],
             namespaces=["shop"]),
        rule("deny", name="keep-web", order=2, **KEEP_WEB),
        rule("allow", name="all", order=3),
    ]
    assert decide(rules, "DELETE", DEPLOYMENTS) == ("allow", "clean-shop")
    assert decide(rules, "DELETE", "/apis/apps/v1/deployments") == ("deny", "keep-web")
    assert decide(rules, "DELETE", f"{DEPLOYMENTS}/api") == ("allow", "all")


def test_reach_of_a_request():
    reach = Reach.of(parse("DELETE", "/apis/extensions/v1beta1/deployments", ""))
    assert reach.verbs == ("deletecollection", "delete", "list", "get")
    assert reach.api_groups == {"apps", "extensions"}
    assert (reach.any_name, reach.any_namespace, reach.namespace_contents) == (True, True, False)
    named = Reach.of(parse("GET", "/api/v1/nodes/n1", ""))
    assert (named.verbs, named.any_name, named.any_namespace) == (("get",), False, False)
    assert Reach.of(parse("DELETE", SHOP, "")).namespace_contents is True
    assert Reach.of(parse("GET", f"{SHOP}/pods/web/log", "")).any_name is False


@pytest.mark.parametrize("path", [
    f"{SHOP}/Secrets", f"{SHOP}/SECRETS/shop-db", "/api/v1/namespaces/Shop/pods", "/api/V1/pods",
    "/apis/Apps/v1/deployments", "/apis/apps/V1/deployments", f"{SHOP}/pods/web/Exec",
    "/api/v1/watch/namespaces/shop/Pods", "/api/v1/proxy/namespaces/shop/Pods/web",
])
def test_mis_cased_resource_paths_are_refused(path):
    with pytest.raises(RequestInfoError, match="must be lower case"):
        parse("GET", path, "")


@pytest.mark.parametrize("path, name", [
    (f"{SHOP}/configmaps/MyConfig", "MyConfig"),
    ("/apis/rbac.authorization.k8s.io/v1/clusterroles/System:Viewer", "System:Viewer"),
    (f"{SHOP}/pods/web/proxy/Admin/Index.html", "web"),
    (f"{SHOP}/services/https:Web:443/proxy/", "https:Web:443"),
])
def test_names_and_proxied_paths_keep_their_case(path, name):
    assert parse("GET", path, "").name == name


def test_non_resource_paths_are_not_affected():
    info = parse("GET", "/Version", "")
    assert (info.is_resource_request, info.path) == (False, "/Version")


def test_the_namespace_object_is_cluster_scoped_for_allow_rules_and_both_for_restrictive_ones():
    patch_shop = ("PATCH", SHOP)
    assert decide([rule("allow", namespaces=["shop"])], *patch_shop) == ("deny", DEFAULT_DENY)
    assert decide([rule("allow", namespaces=[""])], *patch_shop) == ("allow", "r")
    for namespaces in ([""], ["shop"]):
        rules = [rule("deny", name="keep-ns", order=1, resources=["namespaces"], namespaces=namespaces),
                 rule("allow", order=2)]
        assert decide(rules, *patch_shop) == ("deny", "keep-ns")
