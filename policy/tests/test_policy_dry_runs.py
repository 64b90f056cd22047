"""Dry runs in policy: rules match them on purpose, a review rule never holds one, presets allow them."""

import pytest

from identity.principal import Principal
from kube.requestinfo import parse
from policy.check import InvalidRule, check_rule
from policy.compile import compile_rule
from policy.evaluate import evaluate
from policy.messages import denial_message
from policy.presets import PRESETS, preset_rule_fields

AGENT = Principal(subject="agent-1", username="agent@example.com", groups=("agents",), issuer="https://idp",
                  expires_at=0.0, token_id="t")
NS = "/api/v1/namespaces/shop"
APPS = "/apis/apps/v1/namespaces/shop"
DELETE_POD = parse("DELETE", f"{NS}/pods/web", "")


def rule(name, order, effect, **fields):
    base = dict(subjects=["*"], verbs=["*"], api_groups=["*"], resources=["*"], namespaces=["*"], names=["*"])
    return compile_rule({"name": name, "order": order, "effect": effect, **base, **fields}, id=order)


def test_dry_run_only_rules_match_dry_runs_and_never_rules_real_requests():
    rules = [rule("dry", 1, "allow", dry_run="only"), rule("real", 2, "deny", dry_run="never")]
    assert evaluate(rules, AGENT, DELETE_POD, dry_run=True).rule_name == "dry"
    assert evaluate(rules, AGENT, DELETE_POD, dry_run=False).rule_name == "real"
    assert evaluate(rules, AGENT, DELETE_POD).rule_name == "real"  # not a dry run unless said so


def test_a_review_rule_denies_a_dry_run_instead_of_holding_it():
    decision = evaluate([rule("review-deletes", 10, "review")], AGENT, DELETE_POD, dry_run=True)
    assert (decision.effect, decision.rule_name, decision.held_back, decision.dry_run) == (
        "deny", "review-deletes", True, True)
    assert decision.mask_secrets
    message = denial_message(decision, DELETE_POD, "prod")
    assert message.startswith('airlock: denied by rule "review-deletes" (connection prod): dry run of delete pods '
                              '"web" in namespace "shop"; ')
    assert "a dry run is never held" in message and "dryRun: only" in message
    real = evaluate([rule("review-deletes", 10, "review")], AGENT, DELETE_POD)
    assert (real.effect, real.held_back) == ("review", False)


def test_any_is_the_default_and_matches_both():
    assert evaluate([rule("r", 1, "allow")], AGENT, DELETE_POD, dry_run=True).effect == "allow"
    assert evaluate([rule("r", 1, "allow")], AGENT, DELETE_POD, dry_run=False).effect == "allow"


@pytest.mark.parametrize("fields, error", [
    (dict(effect="review", dry_run="only"), "never held for review"),
    (dict(dry_run="sometimes"), "must be one of any, only, never"),
    (dict(review_hold="forever"), "must be one of open, retry"),
])
def test_rule_validation(fields, error):
    base = dict(name="r", order=1, effect="allow", subjects=["*"], verbs=["*"], api_groups=["*"], resources=["*"],
                namespaces=["*"], names=["*"])
    errors = check_rule(base | fields)
    assert any(error in message for messages in errors.values() for message in messages), errors
    with pytest.raises(InvalidRule):
        compile_rule(base | fields)


def test_a_dry_run_only_rule_is_for_resource_requests():
    errors = check_rule(dict(name="r", order=1, effect="allow", subjects=["*"], verbs=["post"],
                             non_resource_urls=["/x"], dry_run="only"))
    assert errors["dry_run"] == ["only resource requests (writes) can be dry runs"]


def compiled(preset):
    return [compile_rule(fields, id=i) for i, fields in enumerate(preset_rule_fields(preset))]


# (method, path, query): what kubectl diff, apply --dry-run=server, delete --dry-run=server send
DRY_RUNS = [
    ("PATCH", f"{APPS}/deployments/web", "dryRun=All&fieldManager=kubectl-client-side-apply"),
    ("POST", f"{APPS}/deployments", "dryRun=All&fieldManager=kubectl-client-side-apply"),
    ("PATCH", f"{APPS}/deployments/web/scale", "dryRun=All"),
    ("DELETE", f"{NS}/pods/web", ""),
    ("DELETE", "/apis/rbac.authorization.k8s.io/v1/namespaces/shop/rolebindings/admin", ""),
    ("DELETE", NS, ""),
    ("PUT", f"{NS}/secrets/db", "dryRun=All"),
]


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("method, path, query", DRY_RUNS)
def test_both_presets_allow_dry_runs_with_masking(preset, method, path, query):
    decision = evaluate(compiled(preset), AGENT, parse(method, path, query), dry_run=True)
    assert (decision.effect, decision.rule_name, decision.mask_secrets) == ("allow", "dry-runs", True)


@pytest.mark.parametrize("preset, effect, rule_name", [
    ("read-only", "deny", "no-serviceaccount-tokens"),
    ("production-guardrails", "review", "review-serviceaccount-tokens"),
])
def test_a_token_request_asking_for_a_dry_run_is_still_a_token_request(preset, effect, rule_name):
    """kube.dryrun does not count it as a dry run (TokenRequest ignores dryRun), so the token rules decide."""
    info = parse("POST", f"{NS}/serviceaccounts/default/token", "dryRun=All")
    decision = evaluate(compiled(preset), AGENT, info, dry_run=False)
    assert (decision.effect, decision.rule_name) == (effect, rule_name)


def test_production_guardrails_answers_writes_at_once_and_holds_streams_open():
    holds = {fields["name"]: fields.get("review_hold", "open") for fields in preset_rule_fields("production-guardrails")
             if fields["effect"] == "review"}
    assert holds.pop("review-exec-attach-portforward") == "open"
    assert set(holds.values()) == {"retry"}
    decision = evaluate(compiled("production-guardrails"), AGENT, DELETE_POD)
    assert (decision.effect, decision.hold) == ("review", "retry")


RULESET = """
apiVersion: airlock.dev/v1
kind: RuleSet
rules:
  - {name: dry-runs, effect: allow, subjects: ["*"], verbs: ["*"], apiGroups: ["*"], resources: ["*"],
     namespaces: ["*"], names: ["*"], dryRun: only}
  - {name: review-deletes, effect: review, subjects: ["*"], verbs: [delete], apiGroups: ["*"], resources: ["*"],
     namespaces: ["*"], names: ["*"], review: {hold: retry}}
  - {name: review-exec, effect: review, subjects: ["*"], verbs: ["*"], apiGroups: [""], resources: [pods/exec],
     namespaces: ["*"], names: ["*"]}
"""


@pytest.mark.django_db
def test_ruleset_yaml_carries_dry_run_and_hold_both_ways():
    from connections.models import Connection
    from policy import rulesets

    conn = Connection(name="prod", server_url="https://k8s.example", bearer_token="not-a-real-token")
    conn.save()
    rulesets.import_text(conn, RULESET)
    stored = {r.name: (r.dry_run, r.review_hold) for r in conn.rules.all()}
    assert stored == {"dry-runs": ("only", "open"), "review-deletes": ("any", "retry"), "review-exec": ("any", "open")}
    exported = rulesets.export_connection(conn)
    assert "dryRun: only" in exported and "hold: retry" in exported
    again = Connection(name="again", server_url="https://k8s.example", bearer_token="not-a-real-token")
    again.save()
    rulesets.import_text(again, exported)
    assert {r.name: (r.dry_run, r.review_hold) for r in again.rules.all()} == stored
    with pytest.raises(rulesets.RuleSetError) as error:
        rulesets.import_text(again, RULESET.replace("review: {hold: retry}", "dryRun: only"), replace=True)
    assert 'rule 2 "review-deletes": dryRun: a dry run is never held for review' in str(error.value)
