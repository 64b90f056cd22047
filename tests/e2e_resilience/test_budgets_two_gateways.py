"""Agent budgets hold across gateway processes: two real gateways (tests/resilience_rig.py: uvicorn as
docker-compose starts it, one PostgreSQL database, one Redis) spend one quota, one loop count and one
set of concurrency slots; a gateway killed while it holds a slot does not keep it; with Redis away a
budgeted request is refused and the rest go on."""

import ssl
import time
from contextlib import closing

import httpx
import pytest

from kubesim.testing import start_kubesim
from tests.e2e_resilience.conftest import RIG_SETTINGS, RIG_TIMEOUTS
from tests.gateway_harness import AGENT_TOKEN
from tests.resilience_rig import Rig, manage

NS = "/k8s/kubesim/api/v1/namespaces/default"
BUDGET_RULES = """
from connections.models import Connection
from policy.models import Rule

c = Connection.objects.get(name="kubesim")
common = dict(connection=c, groups=["agents"], api_groups=[""], namespaces=["*"], names=["*"])
Rule.objects.create(order=1, name="capped-deletes", effect="allow", verbs=["delete"], resources=["configmaps"],
                    budget={"quota": "4/hour"}, **common)
Rule.objects.create(order=3, name="no-secrets", effect="deny", verbs=["*"], resources=["secrets"], **common)
Rule.objects.create(order=2, name="one-watch", effect="allow", verbs=["watch"], resources=["pods"],
                    budget={"concurrent": 1}, **common)
"""
SLOT_SECONDS = 3


@pytest.fixture(scope="module")
def budget_rig(postgres, tmp_path_factory):
    directory = tmp_path_factory.mktemp("budgets")
    sim = start_kubesim(directory / "kubesim")
    rig = Rig(directory, postgres, sim, RIG_SETTINGS | {"AIRLOCK_BUDGET_SLOT_SECONDS": str(SLOT_SECONDS)},
              RIG_TIMEOUTS)
    try:
        manage({"DATABASE_URL": postgres.url(rig.database)}, "shell", input=BUDGET_RULES)
        yield rig.start()
    finally:
        rig.stop()
        sim.stop()
        print(rig.logs())  # shown by pytest when a test failed


def agent(gateway, timeout=10.0) -> httpx.Client:
    return httpx.Client(base_url=gateway.url, verify=ssl.create_default_context(cafile=str(gateway.tls.ca_file)),
                        timeout=timeout, headers={"Authorization": f"Bearer {AGENT_TOKEN}"})


def test_two_gateways_spend_one_quota_and_one_loop_count(budget_rig):
    a, b = budget_rig.gateways
    with closing(agent(a)) as on_a, closing(agent(b)) as on_b:
        for n in range(5):
            created = on_a.post(f"{NS}/configmaps", json={"apiVersion": "v1", "kind": "ConfigMap",
                                                           "metadata": {"name": f"two-{n}"}})
            assert created.status_code == 201, created.text
        answers = [client.delete(f"{NS}/configmaps/two-{n}") for n, client in enumerate((on_a, on_b, on_a, on_b))]
        assert [answer.status_code for answer in answers] == [200] * 4
        for client in (on_a, on_b):
            refused = client.delete(f"{NS}/configmaps/two-4")
            assert refused.status_code == 429, refused.text
            status = refused.json()
            assert status["reason"] == "TooManyRequests" and "resets at 20" in status["message"]
            assert 'rule "capped-deletes"' in status["message"] and "retry-after" not in refused.headers
        assert on_a.get(f"{NS}/configmaps/two-4").status_code == 200  # not deleted

        # The same refused request, alternately through each gateway: one count.
        refused = [client.get(f"{NS}/secrets/db") for client in (on_a, on_b) * 5]
        assert [answer.status_code for answer in refused] == [403] * 10
        slowed = on_a.get(f"{NS}/secrets/db")
        assert slowed.status_code == 429 and int(slowed.headers["retry-after"]) <= 60
        assert "refused or failed 10 times within 1 min" in slowed.json()["message"]
        assert on_b.get(f"{NS}/secrets/db").status_code == 429


def open_watch(client):
    """A watch of pods through ``client``: (the context manager, the response) once the gateway answered."""
    stream = client.stream("GET", f"{NS}/pods", params={"watch": "true", "timeoutSeconds": "60"})
    response = stream.__enter__()
    return stream, response


def test_sessions_at_once_are_counted_across_gateways_and_a_killed_one_frees_its_slot(budget_rig):
    a, b = budget_rig.gateways
    with closing(agent(a, timeout=30)) as on_a, closing(agent(b, timeout=30)) as on_b:
        stream, watching = open_watch(on_a)
        assert watching.status_code == 200
        refused = on_b.get(f"{NS}/pods", params={"watch": "true"})
        assert refused.status_code == 429 and "allows each agent 1 at once (concurrent)" in refused.json()["message"]
        time.sleep(SLOT_SECONDS * 1.5)  # longer than a slot lives unrenewed: gateway a renews it
        assert on_b.get(f"{NS}/pods", params={"watch": "true", "timeoutSeconds": "1"}).status_code == 429
        stream.__exit__(None, None, None)  # the session ends: its slot is released at once
        deadline = time.monotonic() + 5
        while (again := on_b.get(f"{NS}/pods", params={"watch": "true", "timeoutSeconds": "1"})).status_code == 429:
            assert time.monotonic() < deadline, again.text
            time.sleep(0.1)
        assert again.status_code == 200

        # A gateway killed while it holds the slot never releases it: it expires.
        stream, watching = open_watch(on_b)
        assert watching.status_code == 200
        b.kill()
        try:
            assert on_a.get(f"{NS}/pods", params={"watch": "true", "timeoutSeconds": "1"}).status_code == 429
            deadline = time.monotonic() + SLOT_SECONDS + 5
            while (after := on_a.get(f"{NS}/pods", params={"watch": "true", "timeoutSeconds": "1"})).status_code == 429:
                assert time.monotonic() < deadline, "the killed gateway's slot never expired"
                time.sleep(0.2)
            assert after.status_code == 200
        finally:
            try:
                stream.__exit__(None, None, None)
            except Exception:  # the killed gateway's connection is gone
                pass
            b.start()


def test_with_redis_away_a_budgeted_request_is_refused_and_the_rest_go_on(budget_rig):
    a, _ = budget_rig.gateways
    with closing(agent(a)) as on_a:
        budget_rig.redis_proxy.partition()
        try:
            refused = on_a.get(f"{NS}/pods", params={"watch": "true", "timeoutSeconds": "1"})
            assert refused.status_code == 503, refused.text
            assert "the budget store is unavailable" in refused.json()["message"]
            assert on_a.get(f"{NS}/configmaps").status_code == 200  # no budget, loop detection skipped
            assert on_a.get(f"{NS}/configmaps/never-there-either").status_code == 404
        finally:
            budget_rig.redis_proxy.resume()
