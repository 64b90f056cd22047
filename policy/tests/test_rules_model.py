"""Rule model validation: every save is validated, errors name the field and say how to fix it."""

import pytest
from django.core.exceptions import ValidationError
from django.db import connection as db_connection

from connections.models import Connection
from kube.requestinfo import parse
from policy.evaluate import evaluate
from policy.models import Rule
from policy.vocabulary import DEFAULT_DENY

pytestmark = pytest.mark.django_db


@pytest.fixture
def prod():
    conn = Connection(name="prod", server_url="https://k8s.example", bearer_token="not-a-real-token")
    conn.save()
    return conn


def make(conn, **fields):
    base = dict(
        name="r", order=10, effect="allow", subjects=["*"], verbs=["get"], api_groups=[""],
        resources=["pods"], namespaces=["*"], names=["*"],
    )
    return Rule(connection=conn, **(base | fields))


def errors(rule):
    with pytest.raises(ValidationError) as info:
        rule.full_clean()
    return info.value.message_dict


def test_valid_rule_saves_and_compiles(prod):
    rule = make(prod)
    rule.save()
    compiled = rule.compile()
    assert (compiled.id, compiled.name, compiled.connection) == (rule.pk, "r", "prod")


@pytest.mark.parametrize(
    "fields, field, fragment",
    [
        (dict(effect="permit"), "effect", "not a valid choice"),
        (dict(verbs=["exec"]), "verbs", '["pods/exec"]'),
        (dict(verbs=["port-forward"]), "verbs", '["pods/portforward"]'),
        (dict(verbs=["GET"]), "verbs", 'use "get"'),
        (dict(verbs=["post"]), "verbs", '"create"'),
        (dict(verbs=["frobnicate"]), "verbs", "known verbs are"),
        (dict(verbs=[]), "verbs", "must not be empty"),
        (dict(verbs="get"), "verbs", "list of strings"),
        (dict(resources=[]), "resources", "needs resources"),
        (dict(resources=["Pods"]), "resources", "lower-case plural"),
        (dict(resources=["pods/exec/x"]), "resources", "invalid resource"),
        (dict(resources=["pods/"]), "resources", "invalid resource"),
        (dict(api_groups=[]), "api_groups", '[""] for the core group'),
        (dict(api_groups=["Apps"]), "api_groups", "invalid API group"),
        (dict(namespaces=[]), "namespaces", "must not be empty"),
        (dict(namespaces=["a b"]), "namespaces", "invalid namespace"),
        (dict(names=[]), "names", "must not be empty"),
        (dict(names=["a/b"]), "names", "invalid name"),
        (dict(subjects=[], groups=[]), "subjects", 'use ["*"]'),
        (dict(subjects=["bad\nname"]), "subjects", "invalid entry"),
        (dict(non_resource_urls=["/version"]), "non_resource_urls", "not both"),
        (dict(resources=[], api_groups=[], namespaces=[], names=[], non_resource_urls=["version"]),
         "non_resource_urls", 'must start with "/"'),
        (dict(resources=[], api_groups=[], namespaces=[], names=[], non_resource_urls=["/healthz?verbose"]),
         "non_resource_urls", "query strings are not matched"),
        (dict(resources=[], api_groups=[], namespaces=[], names=[], non_resource_urls=["/version"],
              verbs=["list"]), "verbs", "for non-resource URLs"),
        (dict(name="Bad Name"), "name", "slug"),
        (dict(name="bad_name"), "name", "lower-case letters, digits or '-'"),
        (dict(min_approvals=0), "min_approvals", "greater than or equal to 1"),
    ],
)
def test_validation_errors(prod, fields, field, fragment):
    messages = errors(make(prod, **fields))
    assert field in messages
    assert any(fragment in message for message in messages[field]), messages[field]
    assert len(messages[field]) == len(set(messages[field]))


@pytest.mark.parametrize("fields", [dict(effect="permit"), dict(name="Bad Name"), dict(min_approvals=0)])
def test_field_errors_are_not_repeated_by_rule_checks(prod, fields):
    (field,) = fields
    assert len(errors(make(prod, **fields))[field]) == 1


def test_save_validates(prod):
    with pytest.raises(ValidationError):
        make(prod, verbs=["exec"]).save()
    assert not Rule.objects.exists()


def test_non_resource_rule_is_valid(prod):
    rule = make(prod, resources=[], api_groups=[], namespaces=[], names=[], non_resource_urls=["/version"])
    rule.save()
    assert rule.compile().non_resource_urls.matches("/version")


def test_names_are_unique_per_connection(prod):
    make(prod).save()
    with pytest.raises(ValidationError) as info:
        make(prod, order=20).save()
    assert "already exists" in str(info.value)
    other = Connection(name="staging", server_url="https://k8s.example", bearer_token="not-a-real-token")
    other.save()
    make(other).save()


def test_rules_are_deleted_with_their_connection(prod):
    make(prod).save()
    prod.delete()
    assert not Rule.objects.exists()


def test_row_that_no_longer_validates_compiles_to_deny_all(prod):
    rule = make(prod, effect="allow")
    rule.save()
    with db_connection.cursor() as cursor:
        cursor.execute("UPDATE gateway_rule SET verbs = %s WHERE id = %s", ['["exec"]', rule.pk])
    compiled = Rule.objects.get(pk=rule.pk).compile()
    decision = evaluate([compiled], None, parse("GET", "/version", ""))
    assert (decision.effect, decision.rule_name) == ("deny", "r")
    assert "invalid" in decision.reason
    assert decision.rule_name != DEFAULT_DENY
