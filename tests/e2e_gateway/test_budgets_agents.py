"""Agent budgets with real agents (kubectl, the Kubernetes Python client) through the gateway to kubesim:
the 11th delete in an hour is a 429 naming the reset time, printed at once; a tight loop of a refused
request is slowed, and the agent then sees the refusal itself."""

import re
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from tests.e2e_gateway.test_audit_trail import events_for

pytestmark = pytest.mark.django_db(transaction=True)
RESET = re.compile(r"resets at (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) \(in (1 hour|59 min [0-9]+ s)\)")


def add_rule(connection, **fields):
    from policy.models import Rule

    return Rule.objects.create(connection=connection, subjects=[], groups=["agents"], api_groups=[""],
                               namespaces=["*"], names=["*"], **fields)


def configmaps(names, namespace="default") -> str:
    return yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace}, "data": {"n": name}}
        for name in names])


def test_the_eleventh_delete_in_an_hour_gets_a_429_with_the_reset_time(gateway, kubectl):
    add_rule(gateway.connection, order=1, name="capped-deletes", effect="allow", verbs=["delete"],
             resources=["configmaps"], budget={"quota": "10/hour"})
    agent = gateway.kubeconfig()
    names = [f"cm-{n:02d}" for n in range(11)]
    kubectl("apply", "-f", "-", input=configmaps(names), kubeconfig=agent)
    started = datetime.now(UTC)
    deleted = kubectl("delete", "configmap", *names, "-n", "default", "--wait=false", kubeconfig=agent, check=False)
    assert deleted.returncode != 0
    assert deleted.stdout.count("deleted") == 10 and 'configmap "cm-10" deleted' not in deleted.stdout
    assert "Error from server (TooManyRequests): airlock: too many requests: rule \"capped-deletes\"" in deleted.stderr
    assert 'allows each agent 10 per 1 hour (quota)' in deleted.stderr
    assert 'delete configmaps "cm-10" in namespace "default" was not forwarded' in deleted.stderr
    reset = datetime.strptime(RESET.search(deleted.stderr).group(1), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert started + timedelta(minutes=59) < reset <= datetime.now(UTC) + timedelta(hours=1, seconds=1)
    assert "cm-10" in kubectl("get", "configmaps", "-n", "default", "-o", "name", kubeconfig=agent).stdout

    # kubectl printed it at once (no Retry-After an hour away): one refused request, not eleven silent ones.
    throttled = events_for(object_name="cm-10", verb="delete")
    assert [e.response_code for e in throttled] == [429]
    assert throttled[0].response_reason == "TooManyRequests" and "(quota)" in throttled[0].response_message
    assert throttled[0].decision_rule_name == "capped-deletes"
    # The next agent-1 delete is refused too; reads are not counted.
    again = kubectl("delete", "configmap", "cm-10", "-n", "default", kubeconfig=agent, check=False)
    assert "TooManyRequests" in again.stderr and RESET.search(again.stderr).group(1) == reset.strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def test_a_tight_loop_of_a_refused_request_is_slowed_then_shows_the_refusal(gateway, kubectl):
    add_rule(gateway.connection, order=1, name="no-secrets", effect="deny", verbs=["*"], resources=["secrets"],
             budget={"loop": "3 per 2 seconds"})
    agent = gateway.kubeconfig()
    outputs = [kubectl("get", "secret", "shop-db", "-n", "shop", kubeconfig=agent, check=False) for _ in range(5)]
    assert all(out.returncode != 0 and 'Error from server (Forbidden): airlock: denied by rule "no-secrets"'
               in out.stderr for out in outputs)
    refused = events_for(at_least=6, object_name="shop-db", object_resource="secrets")
    codes = [event.response_code for event in refused]
    # At least one run was slowed: client-go slept through the 429's Retry-After, then got its answer.
    assert 429 in codes and codes.count(403) == 5, codes
    slowed = next(event for event in refused if event.response_code == 429)
    assert slowed.response_message.startswith('airlock: slowed down (loop detection, rule "no-secrets"')
    assert "refused or failed 3 times within 2 s" in slowed.response_message


def test_the_python_client_is_told_why_it_is_slowed(gateway):
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    add_rule(gateway.connection, order=1, name="no-secrets", effect="deny", verbs=["*"], resources=["secrets"])
    api_client = config.new_client_from_config(config_file=str(gateway.kubeconfig()))
    api_client.rest_client.pool_manager.connection_pool_kw["retries"] = False  # see every answer
    core = client.CoreV1Api(api_client)
    answers = []
    try:
        for _ in range(11):  # AIRLOCK_BUDGET_LOOP: 10 a minute
            with pytest.raises(ApiException) as refused:
                core.read_namespaced_secret("shop-db", "shop")
            answers.append(refused.value)
    finally:
        api_client.close()
    assert [answer.status for answer in answers] == [403] * 10 + [429]
    slowed = answers[-1]
    assert 0 < int(slowed.headers["Retry-After"]) <= 60
    assert "refused or failed 10 times within 1 min, so it is not tried again before 20" in slowed.body
    assert '"retryAfterSeconds":' in slowed.body and '"reason":"TooManyRequests"' in slowed.body
