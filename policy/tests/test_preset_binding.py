"""Presets bound to IdP groups and subjects: the function, the command and the admin view."""

import io

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from connections.models import Connection
from identity.principal import Principal
from kube.requestinfo import parse
from policy import presets, rulesets
from policy.evaluate import evaluate

pytestmark = pytest.mark.django_db

DELETE_POD = parse("DELETE", "/api/v1/namespaces/shop/pods/web", "")
LIST_PODS = parse("GET", "/api/v1/namespaces/shop/pods", "")


def principal(username, *groups):
    return Principal(subject=username, username=username, groups=groups, issuer="https://idp.example",
                     expires_at=0.0, token_id="t")


READER = principal("reader-agent", "readers")
GUARDED = principal("guarded-agent", "guardrailed")
STRANGER = principal("stranger", "dev")


@pytest.fixture
def prod():
    connection = Connection(name="prod", server_url="https://k8s.example", bearer_token="not-a-real-token")
    connection.save()
    return connection


def decide(connection, who, info):
    decision = evaluate([rule.compile() for rule in connection.rules.all()], who, info)
    return decision.effect, decision.rule_name


def test_bind_replaces_everyone_on_every_rule():
    bound = presets.bind(presets.preset_rule_fields("read-only"), groups=["readers"], subjects=["ci-bot"])
    assert len(bound) == len(presets.READ_ONLY["rules"])
    assert all(f["groups"] == ["readers"] and f["subjects"] == ["ci-bot"] for f in bound)
    assert all(f["subjects"] == ["*"] for f in presets.preset_rule_fields("read-only"))  # presets unchanged
    with pytest.raises(rulesets.RuleSetError, match="at least one group or subject"):
        presets.bind(presets.preset_rule_fields("read-only"))


def test_two_presets_bound_to_groups_on_one_connection(prod):
    presets.apply_preset(prod, "read-only", groups=["readers"], name_prefix="readers-")
    presets.apply_preset(prod, "production-guardrails", groups=["guardrailed"], name_prefix="guarded-")
    assert decide(prod, READER, LIST_PODS) == ("allow", "readers-read-all")
    assert decide(prod, READER, DELETE_POD) == ("deny", "readers-read-only-no-writes")
    assert decide(prod, GUARDED, LIST_PODS) == ("allow", "guarded-read-all")
    assert decide(prod, GUARDED, DELETE_POD) == ("review", "guarded-review-deletes")
    assert decide(prod, STRANGER, LIST_PODS) == ("deny", "default-deny")


def test_bound_to_a_subject(prod):
    presets.apply_preset(prod, "read-only", subjects=["reader-agent"])
    assert decide(prod, READER, LIST_PODS) == ("allow", "read-all")
    assert decide(prod, GUARDED, LIST_PODS) == ("deny", "default-deny")


def test_command_needs_an_explicit_binding(prod):
    for binding in ([], ["--everyone", "--group", "readers"], ["--everyone", "--subject", "x"]):
        with pytest.raises(CommandError, match="say whom the preset applies to"):
            call_command("apply_preset", "--connection", "prod", "read-only", *binding)
    assert not prod.rules.exists()


def test_command_binds_groups_and_subjects(prod):
    out = io.StringIO()
    call_command("apply_preset", "--connection", "prod", "production-guardrails", "--group", "agents",
                 "--group", "oncall", "--subject", "ci-bot", stdout=out)
    assert "for group agents, group oncall, subject ci-bot" in out.getvalue()
    assert {tuple(r.groups) for r in prod.rules.all()} == {("agents", "oncall")}
    assert {tuple(r.subjects) for r in prod.rules.all()} == {("ci-bot",)}
    assert decide(prod, principal("someone", "oncall"), DELETE_POD) == ("review", "review-deletes")
    assert decide(prod, STRANGER, LIST_PODS) == ("deny", "default-deny")


def test_command_explains_name_clashes_and_invalid_groups(prod):
    call_command("apply_preset", "--connection", "prod", "read-only", "--group", "readers", stdout=io.StringIO())
    with pytest.raises(CommandError, match="(?s)already has a rule.*--name-prefix"):
        call_command("apply_preset", "--connection", "prod", "read-only", "--group", "others")
    with pytest.raises(CommandError, match="groups: invalid entry"):
        call_command("apply_preset", "--connection", "prod", "read-only", "--group", "bad\x01group",
                     "--name-prefix", "x-")
    assert prod.rules.count() == len(presets.READ_ONLY["rules"])
    call_command("apply_preset", "--connection", "prod", "read-only", "--everyone", "--name-prefix", "all-",
                 stdout=io.StringIO())
    assert decide(prod, STRANGER, LIST_PODS) == ("allow", "all-read-all")


def test_admin_view_binds_groups(admin_client, prod):
    url = reverse("admin:policy_rule_apply_preset")
    response = admin_client.post(url, {"connection": prod.pk, "preset": "read-only"})
    assert response.status_code == 200
    assert "Say whom the preset applies to" in response.content.decode()
    response = admin_client.post(
        url, {"connection": prod.pk, "preset": "read-only", "groups": "readers, auditors\nsre", "everyone": "on"}
    )
    assert response.status_code == 200 and not prod.rules.exists()
    response = admin_client.post(
        url, {"connection": prod.pk, "preset": "read-only", "groups": "readers, auditors\nsre",
              "name_prefix": "ro-"}
    )
    assert response.status_code == 302
    assert {tuple(r.groups) for r in prod.rules.all()} == {("readers", "auditors", "sre")}
    assert decide(prod, READER, LIST_PODS) == ("allow", "ro-read-all")
