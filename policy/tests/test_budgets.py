"""Agent budgets in rules: the notation, validation, the RuleSet key, the admin and the presets."""

import pytest
import yaml

from policy import presets, rulesets
from policy.budgets import Budget, Window, check_budget, compile_budget, duration, loop_setting, parse_window
from policy.compile import compile_rule
from policy.evaluate import evaluate

RULE = {"name": "deletes", "order": 1, "effect": "allow", "subjects": ["*"], "verbs": ["delete"],
        "api_groups": ["*"], "resources": ["*"], "namespaces": ["*"], "names": ["*"]}


@pytest.mark.parametrize("text, window", [
    ("10/hour", Window(10, 3600)), ("10 per hour", Window(10, 3600)), ("5 per 30 seconds", Window(5, 30)),
    ("3/2 minutes", Window(3, 120)), ("1/day", Window(1, 86400)), (" 20 / second ", Window(20, 1)),
])
def test_windows_are_written_as_count_per_unit(text, window):
    assert parse_window(text) == window


@pytest.mark.parametrize("text, says", [
    ("10", "is not a limit"), ("ten/hour", "is not a limit"), ("10/fortnight", "unknown unit"),
    ("0/hour", "between 1 and"), ("10/40 days", "31 days"), (10, "must be a string"),
])
def test_a_window_that_is_not_one_says_why(text, says):
    with pytest.raises(ValueError, match=says):
        parse_window(text)


def test_a_budget_is_checked_key_by_key():
    assert check_budget({}) == [] and check_budget(None) == []
    assert check_budget({"rate": "5/second", "quota": "10/hour", "concurrent": 3, "loop": "off"}) == []
    errors = check_budget({"quota": "lots", "concurrent": 0, "loop": "1/minute", "burst": 3})
    assert any(e.startswith("unknown key 'burst'") for e in errors)
    assert any(e.startswith("quota:") for e in errors)
    assert any(e.startswith("concurrent:") for e in errors)
    assert any(e.startswith("loop: a loop is the same request at least 2 times") for e in errors)
    assert check_budget(["10/hour"]) == ["must be a mapping with rate, quota, concurrent and/or loop"]
    assert check_budget({"concurrent": True}) != []


def test_the_rule_carries_its_compiled_budget_into_the_decision():
    rule = compile_rule(RULE | {"budget": {"quota": "10/hour", "rate": "2/second", "concurrent": 3}}, id=4)
    assert rule.budget == Budget(rate=Window(2, 1), quota=Window(10, 3600), concurrent=3)
    assert [kind for kind, _ in rule.budget.windows()] == ["quota", "rate"]  # the longer is named first

    class Info:
        verb, api_group, resource, subresource, namespace, name, path = "delete", "", "pods", "", "a", "b", ""
        is_resource_request = True
        api_version = "v1"

    class Agent:
        username = subject = "agent-1"
        groups = ()

    assert evaluate((rule,), Agent(), Info()).budget.quota == Window(10, 3600)
    assert compile_budget({"loop": "off"}).loop_off and not compile_budget({"loop": "off"}).spends


def test_an_invalid_budget_is_refused_naming_the_rule_and_the_key(db):
    from connections.models import Connection

    connection = Connection.objects.create(name="prod", server_url="https://cluster.test")
    document = {"apiVersion": "airlock.dev/v1", "kind": "RuleSet", "rules": [
        {"name": "deletes", "effect": "allow", "subjects": ["*"], "verbs": ["delete"], "apiGroups": ["*"],
         "resources": ["*"], "namespaces": ["*"], "names": ["*"], "budget": {"quota": "10 a day"}}]}
    with pytest.raises(rulesets.RuleSetError) as refused:
        rulesets.import_text(connection, yaml.safe_dump(document))
    assert any(e.startswith('rule 1 "deletes": budget: quota:') for e in refused.value.errors)
    document["rules"][0]["budget"] = "10/hour"
    with pytest.raises(rulesets.RuleSetError, match="budget: must be a mapping"):
        rulesets.import_text(connection, yaml.safe_dump(document))
    assert not connection.rules.exists()


def test_a_budget_survives_export_and_import(db):
    from connections.models import Connection

    connection = Connection.objects.create(name="prod", server_url="https://cluster.test")
    document = {"apiVersion": "airlock.dev/v1", "kind": "RuleSet", "rules": [
        {"name": "deletes", "effect": "allow", "subjects": ["*"], "verbs": ["delete"], "apiGroups": ["*"],
         "resources": ["*"], "namespaces": ["*"], "names": ["*"],
         "budget": {"quota": "10/hour", "concurrent": 2, "loop": "5/minute"}}]}
    rulesets.import_text(connection, yaml.safe_dump(document))
    exported = yaml.safe_load(rulesets.export_connection(connection))
    assert exported["rules"][0]["budget"] == {"quota": "10/hour", "concurrent": 2, "loop": "5/minute"}
    other = Connection.objects.create(name="other", server_url="https://cluster.test")
    rulesets.import_text(other, yaml.safe_dump(exported))
    assert other.rules.get().compile().budget.concurrent == 2


def test_production_guardrails_caps_deletes_and_sessions_per_agent():
    rules = {fields["name"]: fields for fields in presets.preset_rule_fields("production-guardrails")}
    assert compile_budget(rules["review-deletes"]["budget"]).quota == Window(10, 3600)
    assert compile_budget(rules["review-exec-attach-portforward"]["budget"]).concurrent == 3
    assert all(check_budget(fields.get("budget")) == [] for fields in rules.values())


def test_the_admin_edits_a_budget(admin_client, db):
    from connections.models import Connection
    from policy.models import Rule

    connection = Connection.objects.create(name="prod", server_url="https://cluster.test")
    rule = Rule.objects.create(connection=connection, **{k: v for k, v in RULE.items()})
    page = admin_client.get(f"/admin/policy/rule/{rule.pk}/change/")
    assert page.status_code == 200 and b'name="budget"' in page.content
    form = {"connection": connection.pk, "order": 1, "name": "deletes", "effect": "allow", "subjects": '["*"]',
            "groups": "[]", "verbs": '["delete"]', "api_groups": '["*"]', "resources": '["*"]',
            "namespaces": '["*"]', "names": '["*"]', "non_resource_urls": "[]", "dry_run": "any",
            "min_approvals": 1, "reviewer_groups": "[]", "review_hold": "open", "masking_detectors": "{}",
            "mask_secrets": "on", "enabled": "on"}
    refused = admin_client.post(f"/admin/policy/rule/{rule.pk}/change/", form | {"budget": '{"quota": "many"}'})
    assert refused.status_code == 200 and b"quota:" in refused.content
    saved = admin_client.post(f"/admin/policy/rule/{rule.pk}/change/", form | {"budget": '{"quota": "10/hour"}'})
    assert saved.status_code == 302, saved.content[:2000]
    rule.refresh_from_db()
    assert rule.budget == {"quota": "10/hour"}


def test_loop_setting_and_durations():
    assert loop_setting("off") is None and loop_setting("") is None
    assert loop_setting("10/minute") == Window(10, 60)
    with pytest.raises(ValueError):
        loop_setting("1/minute")
    assert [duration(s) for s in (3600, 7200, 90, 42, 3661)] == ["1 hour", "2 hours", "1 min 30 s", "42 s", "1 h 1 min"]
