"""RuleSet YAML import/export, presets loading and the management commands."""

import io

import pytest
import yaml
from django.core.management import CommandError, call_command

from connections.models import Connection
from policy import presets, rulesets
from policy.models import Rule

pytestmark = pytest.mark.django_db


def new_connection(name):
    conn = Connection(name=name, server_url="https://k8s.example", bearer_token="not-a-real-token")
    conn.save()
    return conn


@pytest.fixture
def prod():
    return new_connection("prod")


@pytest.fixture
def staging():
    return new_connection("staging")


VALID = """
apiVersion: airlock.dev/v1
kind: RuleSet
rules:
  - name: no-secrets
    effect: deny
    subjects: ["*"]
    verbs: ["*"]
    apiGroups: [""]
    resources: [secrets]
    namespaces: ["*"]
    names: ["*"]
  - name: agents-read
    order: 15
    description: agents may read
    effect: allow
    groups: [agents]
    verbs: [get, list, watch]
    apiGroups: ["*"]
    resources: ["*"]
    namespaces: [shop, ""]
    names: ["*"]
    maskSecrets: false
    requiresLease: true
    review: {minApprovals: 2, reviewerGroups: [sre]}
  - name: version
    effect: allow
    subjects: ["*"]
    verbs: [get]
    nonResourceURLs: [/version]
"""


def names(conn):
    return list(conn.rules.order_by("order", "name").values_list("name", flat=True))


def test_import_applies_defaults_and_fields(prod):
    rulesets.import_text(prod, VALID)
    rules = {r.name: r for r in prod.rules.all()}
    assert [rules[n].order for n in ("no-secrets", "agents-read", "version")] == [10, 15, 30]
    read = rules["agents-read"]
    assert (read.namespaces, read.mask_secrets, read.requires_lease) == (["shop", ""], False, True)
    assert (read.min_approvals, read.reviewer_groups) == (2, ["sre"])
    assert rules["no-secrets"].mask_secrets is True and rules["no-secrets"].enabled is True


def test_round_trip(prod, staging):
    rulesets.import_text(prod, VALID)
    exported = rulesets.export_connection(prod)
    document = yaml.safe_load(exported)
    assert (document["apiVersion"], document["kind"]) == ("airlock.dev/v1", "RuleSet")
    assert document["metadata"] == {"connection": "prod"}
    rulesets.import_text(staging, exported)
    again = yaml.safe_load(rulesets.export_connection(staging))
    assert again["rules"] == document["rules"]
    assert [r.compile("x").effect for r in staging.rules.order_by("order")] == ["deny", "allow", "allow"]


def test_presets_round_trip_through_yaml(prod, staging):
    presets.apply_preset(prod, "production-guardrails")
    rulesets.import_text(staging, rulesets.export_connection(prod))
    assert names(staging) == names(prod)
    assert len(names(prod)) == len(presets.PRODUCTION_GUARDRAILS["rules"])


BROKEN = VALID.replace("resources: [secrets]", "resources: [secrets]\n    verbz: [get]").replace(
    "apiGroups: [\"*\"]", "apiGroups: [Apps]"
)


def test_import_reports_every_error_with_rule_and_field(prod):
    with pytest.raises(rulesets.RuleSetError) as info:
        rulesets.import_text(prod, BROKEN)
    errors = info.value.errors
    assert 'rule 1 "no-secrets": unknown field verbz (did you mean verbs?)' in errors
    assert len(errors) == 1  # structural errors stop before model validation
    fixed = BROKEN.replace("    verbz: [get]\n", "")
    with pytest.raises(rulesets.RuleSetError) as info:
        rulesets.import_text(prod, fixed)
    assert any(e.startswith('rule 2 "agents-read": apiGroups: invalid API group') for e in info.value.errors)


def test_failed_import_writes_nothing_even_with_replace(prod):
    rulesets.import_text(prod, VALID)
    before = list(prod.rules.order_by("pk").values())
    bad = VALID.replace("nonResourceURLs: [/version]", "nonResourceURLs: [version]")
    for replace in (False, True):
        with pytest.raises(rulesets.RuleSetError) as info:
            rulesets.import_text(prod, bad, replace=replace)
        assert any('rule 3 "version": nonResourceURLs:' in e for e in info.value.errors)
        assert list(prod.rules.order_by("pk").values()) == before


def test_later_rule_invalid_means_earlier_rules_are_not_written(prod):
    bad = VALID.replace("effect: allow\n    subjects: [\"*\"]\n    verbs: [get]", "effect: maybe\n    subjects: [\"*\"]\n    verbs: [get]")
    with pytest.raises(rulesets.RuleSetError) as info:
        rulesets.import_text(prod, bad)
    assert any(e.startswith('rule 3 "version": effect:') for e in info.value.errors)
    assert not Rule.objects.exists()


def test_import_without_replace_refuses_name_conflicts(prod):
    rulesets.import_text(prod, VALID)
    with pytest.raises(rulesets.RuleSetError) as info:
        rulesets.import_text(prod, VALID)
    assert any("already has a rule with this name" in e for e in info.value.errors)
    rulesets.import_text(prod, VALID, replace=True)
    assert len(names(prod)) == 3


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("rules: [", "not valid YAML at line"),
        ("- a\n- b\n", "must be a mapping"),
        ("apiVersion: v1\nkind: RuleSet\nrules: []\n", "apiVersion must be airlock.dev/v1"),
        ("apiVersion: airlock.dev/v1\nkind: Policy\nrules: []\n", "kind must be RuleSet"),
        ("apiVersion: airlock.dev/v1\nkind: RuleSet\nrules: {}\n", "rules must be a list"),
        ("apiVersion: airlock.dev/v1\nkind: RuleSet\nspec: 1\nrules: []\n", "unknown top-level field(s): spec"),
        ("apiVersion: airlock.dev/v1\nkind: RuleSet\nrules: [{effect: deny}]\n", "rule 1: name: is required"),
        ("apiVersion: airlock.dev/v1\nkind: RuleSet\nrules: [{name: a, effect: deny, order: '5'}]\n",
         'rule 1 "a": order: must be an integer'),
        ("apiVersion: airlock.dev/v1\nkind: RuleSet\nrules: [{name: a, effect: deny, enabled: 'yes'}]\n",
         'rule 1 "a": enabled: must be true or false'),
        ("apiVersion: airlock.dev/v1\nkind: RuleSet\nrules: [{name: a, effect: deny, review: {quorum: 2}}]\n",
         'rule 1 "a": review: unknown field quorum'),
        ("apiVersion: airlock.dev/v1\nkind: RuleSet\nrules: [!!python/object:os.system {}]\n",
         "not valid YAML"),
    ],
)
def test_structural_errors(prod, text, fragment):
    with pytest.raises(rulesets.RuleSetError) as info:
        rulesets.import_text(prod, text)
    assert any(fragment in e for e in info.value.errors), info.value.errors


def test_duplicate_names_in_document(prod):
    text = VALID.replace("name: version", "name: no-secrets")
    with pytest.raises(rulesets.RuleSetError) as info:
        rulesets.import_text(prod, text)
    assert 'rule 3 "no-secrets": name: appears more than once in the document' in info.value.errors


def test_export_command_and_import_command(prod, staging, tmp_path):
    rulesets.import_text(prod, VALID)
    target = tmp_path / "prod.yaml"
    call_command("export_rules", "--connection", "prod", "-o", str(target))
    out = io.StringIO()
    call_command("export_rules", "--connection", "prod", stdout=out)
    assert out.getvalue() == target.read_text()
    out = io.StringIO()
    call_command("import_rules", "--connection", "staging", str(target), stdout=out)
    assert "imported 3 rule(s) into connection staging" in out.getvalue()
    assert names(staging) == names(prod)


def test_import_command_errors(prod, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(VALID.replace("effect: deny", "effect: nope"))
    with pytest.raises(CommandError) as info:
        call_command("import_rules", "--connection", "prod", str(bad))
    assert "nothing was written" in str(info.value)
    assert 'rule 1 "no-secrets": effect:' in str(info.value)
    with pytest.raises(CommandError, match="does not exist"):
        call_command("import_rules", "--connection", "nope", str(bad))
    with pytest.raises(CommandError, match="cannot read"):
        call_command("import_rules", "--connection", "prod", str(tmp_path / "missing.yaml"))


def test_apply_preset_command(prod):
    out = io.StringIO()
    call_command("apply_preset", "--connection", "prod", "read-only", "--everyone", stdout=out)
    assert "applied preset read-only" in out.getvalue()
    assert names(prod)[:2] == ["dry-runs", "no-exec-attach-portforward"]
    with pytest.raises(CommandError, match="already has a rule"):
        call_command("apply_preset", "--connection", "prod", "production-guardrails", "--everyone")
    assert len(names(prod)) == len(presets.READ_ONLY["rules"])
    call_command("apply_preset", "--connection", "prod", "production-guardrails", "--everyone", "--replace", stdout=out)
    assert names(prod)[:2] == ["dry-runs", "review-exec-attach-portforward"]
    assert len(names(prod)) == len(presets.PRODUCTION_GUARDRAILS["rules"])
    with pytest.raises(CommandError):
        call_command("apply_preset", "--connection", "prod", "no-such-preset", "--everyone")
