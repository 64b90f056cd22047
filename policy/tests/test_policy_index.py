"""policy.index: the candidates of a request's shape give the same first match as walking every rule."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from identity.principal import Principal
from kube.requestinfo import parse
from policy.compile import broken_rule, compile_rule, in_order
from policy.evaluate import evaluate
from policy.index import MAX_SHAPES, RuleOrder


def agent(name, *groups):
    return Principal(subject=f"sub-{name}", username=name, groups=groups, issuer="https://idp.example",
                     expires_at=0.0, token_id=f"t-{name}")


PRINCIPALS = [agent("alice", "agents"), agent("bob", "dev"), agent("carol", "agents", "dev"), None]
NAMESPACES = ["shop", "prod", "kube-system", ""]
NAMES = ["web", "db", ""]

# Paths of every shape the matcher treats specially: collections and named objects, cluster-scoped
# resources and namespaces themselves, API groups that serve the same objects, subresources that
# stream, proxy, non-resource URLs.
REQUESTS = [
    ("GET", "/api/v1/namespaces/{ns}/pods/{name}", ""),
    ("GET", "/api/v1/namespaces/{ns}/pods", "watch=1"),
    ("GET", "/api/v1/pods", ""),
    ("DELETE", "/api/v1/namespaces/{ns}/pods", ""),
    ("DELETE", "/api/v1/namespaces/{ns}", ""),
    ("GET", "/api/v1/namespaces", ""),
    ("PATCH", "/api/v1/namespaces/{ns}", ""),
    ("GET", "/api/v1/namespaces/{ns}/secrets/{name}", ""),
    ("GET", "/api/v1/secrets", ""),
    ("DELETE", "/apis/extensions/v1beta1/namespaces/{ns}/deployments/{name}", ""),
    ("DELETE", "/apis/apps/v1/namespaces/{ns}/deployments", ""),
    ("GET", "/apis/events.k8s.io/v1/namespaces/{ns}/events", ""),
    ("POST", "/api/v1/namespaces/{ns}/pods/{name}/exec", "command=ls"),
    ("GET", "/api/v1/namespaces/{ns}/pods/{name}/log", ""),
    ("GET", "/api/v1/namespaces/{ns}/services/{name}/proxy/metrics", ""),
    ("GET", "/api/v1/nodes", ""),
    ("DELETE", "/api/v1/nodes/{name}", ""),
    ("GET", "/version", ""),
    ("GET", "/healthz/etcd", ""),
    ("GET", "/apis", ""),
]

rule_fields = st.fixed_dictionaries({
    "effect": st.sampled_from(["allow", "deny", "review"]),
    "enabled": st.booleans(),
    "subjects": st.lists(st.sampled_from(["alice", "sub-bob", "c*", "*"]), max_size=2),
    "groups": st.lists(st.sampled_from(["agents", "dev", "ag?nts", "*"]), max_size=2),
    "verbs": st.lists(st.sampled_from(["get", "list", "watch", "delete", "deletecollection", "create", "patch",
                                       "*"]), min_size=1, max_size=3),
    "api_groups": st.lists(st.sampled_from(["", "apps", "extensions", "events.k8s.io", "*"]), min_size=1,
                           max_size=2),
    "resources": st.lists(st.sampled_from(["pods", "pods/exec", "pods/log", "secrets", "deployments",
                                           "namespaces", "events", "services/proxy", "nodes", "*", "*/*",
                                           "pods/*"]), min_size=1, max_size=3),
    "namespaces": st.lists(st.sampled_from(["shop", "prod", "", "p*", "*"]), min_size=1, max_size=2),
    "names": st.lists(st.sampled_from(["web", "", "d?", "*"]), min_size=1, max_size=2),
    "dry_run": st.sampled_from(["any", "only", "never"]),
})
non_resource_fields = st.fixed_dictionaries({
    "effect": st.sampled_from(["allow", "deny"]),
    "groups": st.lists(st.sampled_from(["agents", "dev", "*"]), min_size=1, max_size=2),
    "verbs": st.lists(st.sampled_from(["get", "*"]), min_size=1, max_size=1),
    "non_resource_urls": st.lists(st.sampled_from(["/version", "/healthz*", "/apis", "*"]), min_size=1,
                                  max_size=2),
})


def compiled(index, fields):
    try:
        return compile_rule({"name": f"r{index}", "order": index, **fields}, id=index, connection="c")
    except Exception:  # a combination the checks refuse: stored rules like it are loaded as broken
        return broken_rule(id=index, name=f"r{index}", order=index, connection="c", enabled=fields.get("enabled", True))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(rule_fields, non_resource_fields), min_size=1, max_size=25), st.randoms())
def test_the_index_decides_as_walking_every_rule(fields, random):
    rules = [compiled(i, f) for i, f in enumerate(fields)]
    indexed = in_order(rules)
    assert isinstance(indexed, RuleOrder)
    plain = list(indexed)
    cases = [(method, path.format(ns=ns, name=name), query, principal, dry_run)
             for method, path, query in REQUESTS for ns in NAMESPACES[:3] for name in NAMES[:2]
             for principal in PRINCIPALS for dry_run in (False, True)]
    random.shuffle(cases)  # a shape's candidates are found by whichever of its requests comes first
    for method, path, query, principal, dry_run in cases:
        info = parse(method, path, query)
        assert evaluate(indexed, principal, info, dry_run=dry_run) == evaluate(plain, principal, info, dry_run=dry_run)


def test_requests_of_one_shape_share_candidates_and_other_agents_rules_are_skipped():
    others = [compile_rule({"name": f"team-{i}", "order": i, "effect": "allow", "groups": [f"team-{i}"],
                            "verbs": ["*"], "api_groups": ["*"], "resources": ["*"], "namespaces": ["*"],
                            "names": ["*"]}) for i in range(500)]
    ours = compile_rule({"name": "agents-shop", "order": 1000, "effect": "allow", "groups": ["agents"],
                         "verbs": ["get"], "api_groups": [""], "resources": ["configmaps"], "namespaces": ["shop"],
                         "names": ["*"]})
    rules = in_order([*others, ours])
    alice = PRINCIPALS[0]
    web = parse("GET", "/api/v1/namespaces/shop/configmaps/web", "")
    db = parse("GET", "/api/v1/namespaces/shop/configmaps/db", "")
    elsewhere = parse("GET", "/api/v1/namespaces/prod/configmaps/web", "")
    assert rules.candidates(alice, web, None, False) == (ours,)
    assert rules.candidates(alice, db, None, False) is rules.candidates(alice, web, None, False)
    assert evaluate(rules, alice, web).rule_name == "agents-shop"
    assert evaluate(rules, alice, elsewhere).rule_name == "default-deny"  # a candidate, not a match
    assert evaluate(rules, PRINCIPALS[1], web).rule_name == "default-deny"


def test_the_shapes_kept_are_bounded():
    rules = in_order([compile_rule({"name": "all", "order": 1, "effect": "allow", "subjects": ["*"], "verbs": ["*"],
                                    "non_resource_urls": ["*"]})])
    for i in range(MAX_SHAPES + 10):
        assert evaluate(rules, PRINCIPALS[0], parse("GET", f"/custom/{i}", "")).rule_name == "all"
    assert len(rules._shapes) <= MAX_SHAPES


def test_a_repeated_request_is_decided_without_testing_the_rules_again(monkeypatch):
    from policy.compile import CompiledRule

    rules = in_order([compile_rule({"name": "web-only", "order": 1, "effect": "allow", "groups": ["agents"],
                                    "verbs": ["get"], "api_groups": [""], "resources": ["configmaps"],
                                    "namespaces": ["shop"], "names": ["web"]})])
    alice = PRINCIPALS[0]
    web = parse("GET", "/api/v1/namespaces/shop/configmaps/web", "")
    first = evaluate(rules, alice, web)
    tested = []
    real = CompiledRule.matches
    monkeypatch.setattr(CompiledRule, "matches", lambda self, *a, **k: tested.append(self) or real(self, *a, **k))
    assert evaluate(rules, alice, parse("GET", "/api/v1/namespaces/shop/configmaps/web", "")) is first
    assert tested == []
    # Same shape, another object, dry run or agent: decided on its own.
    assert evaluate(rules, alice, parse("GET", "/api/v1/namespaces/shop/configmaps/db", "")).rule_name == "default-deny"
    assert evaluate(rules, alice, parse("GET", "/api/v1/namespaces/prod/configmaps/web", "")).rule_name == "default-deny"
    assert evaluate(rules, PRINCIPALS[1], web).rule_name == "default-deny"
    assert evaluate(rules, alice, web, dry_run=True).dry_run is True
    assert tested  # the others were tested against the rules


def test_the_decisions_kept_are_bounded():
    from policy.index import MAX_DECISIONS

    rules = in_order([compile_rule({"name": "all", "order": 1, "effect": "allow", "subjects": ["*"], "verbs": ["*"],
                                    "api_groups": ["*"], "resources": ["*"], "namespaces": ["*"], "names": ["*"]})])
    for i in range(MAX_DECISIONS + 10):
        assert evaluate(rules, PRINCIPALS[0], parse("GET", f"/api/v1/namespaces/shop/pods/p{i}", "")).rule_name == "all"
    assert len(rules._decided) <= MAX_DECISIONS
