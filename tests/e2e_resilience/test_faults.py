"""Issue 12: the resilience suite's short forms (``make soak`` runs the long forms, bench/soak.py).

Two gateway processes share one PostgreSQL database, one Redis and one kubesim, each reached
through a proxy the test controls (tests/resilience_rig.py).  While clients, watches and held
deletes (approved through the other gateway) run against both, one dependency at a time is
refused, partitioned or frozen for a few seconds, or a gateway is killed or stopped.  Each
scenario then asserts:

* clean answers: never a 500, never a hang; every error a Kubernetes ``Status`` of its code, and
  only the stated ones while the fault lasts (503 without the database, 502 or 504 without the
  cluster, none at all without Redis);
* recovery without a restart, within ``RECOVERY`` seconds of the fault ending;
* exactly one completion event, with the status the client saw, per answered request, and an
  audit event for every request kubesim received;
* ``verify_audit`` intact.
"""

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.gateway_harness import AGENT_TOKEN
from tests.resilience_load import (
    FAULTS, Load, answers, audit_gaps, by_status, cut_off, inject, kill_and_restart, slowest, terminate_and_restart,
    watches_open_at,
)

FAULT_SECONDS = 2.0
TIMED_OUT = 2.0  # a cluster that answers nothing stays so this long past the Connection's first-byte timeout
RECOVERY = 10.0  # seconds: the stated bound for recovery after any of these faults (restarts aside)
CONFIGMAPS = "/k8s/kubesim/api/v1/namespaces/default/configmaps"
DRAIN_BOUND = 10.0  # seconds from SIGTERM to exit with only watches and short requests open (grace: 30 s)


def slug(name: str) -> str:
    return name.replace(" ", "-")


def assert_audited(rig, outcomes, prefix):
    gaps = audit_gaps(rig, outcomes, prefix)
    for key in ("missing", "duplicated", "wrong", "unaudited", "received_only"):
        assert not gaps[key], f"{len(gaps[key])} {key}: {gaps[key][:10]}"
    assert gaps["answered"] > 0 and gaps["forwarded"] > 0, gaps
    return gaps


@pytest.mark.parametrize("name", list(FAULTS), ids=slug)
def test_a_fault_under_load_gets_clean_answers_and_recovers_without_restart(rig, name):
    """A cluster partitioned or frozen (it answers nothing; 504 allowed) lasts past the Connection's
    first-byte timeout, so the requests caught in it end while it lasts: each with a 504 ``Status``."""
    fault = FAULTS[name]
    times_out = fault.allowed == {504}
    # The agents' requests in flight when the fault begins come back after one first-byte timeout; the
    # ones they send next must also time out while it holds, so it lasts two timeouts and the margin.
    seconds = 2 * rig.timeouts[1] + TIMED_OUT if times_out else FAULT_SECONDS
    prefix = f"resil/{slug(name)}/"
    load = Load(rig, prefix).start(settle=0.5)
    try:
        result = inject(load, fault, seconds, recover_within=RECOVERY)
    finally:
        outcomes = load.stop()
    print(result, by_status(outcomes), slowest(outcomes), dict(load.approvals))
    problems = answers(outcomes, fault.allowed, window=result["window"])
    assert not problems, "\n".join(problems[:20])
    if times_out:
        caught = cut_off(outcomes, result["in_place"])
        assert caught, "no request began and ended while the cluster answered nothing"
        assert all(o.status == 504 and not o.error for o in caught), [(o.agent, o.kind, o.status, o.error)
                                                                      for o in caught]
        assert all("cluster" in o.message for o in caught), {o.message for o in caught}
    assert_audited(rig, outcomes, prefix)


def test_a_gateway_killed_under_load_loses_no_audit_event(rig):
    """SIGKILL (the OOM killer's signal) while requests, watches and a held delete are in flight on it;
    the other gateway keeps serving, and the killed one is started again on the same journal directory."""
    prefix = "resil/sigkill/"
    victim = rig.gateways[0]  # the held deletes wait here
    load = Load(rig, prefix).start(settle=1.0)
    try:
        result = kill_and_restart(load, victim, recover_within=RECOVERY)
    finally:
        outcomes = load.stop()
    print(result, by_status(outcomes), slowest(outcomes))
    problems = answers(outcomes, window=result["window"], may_fail={victim.name})
    assert not problems, "\n".join(problems[:20])
    killed = result["window"][0]
    in_flight = [o for o in outcomes if o.gateway == victim.name and o.started < killed
                 and (o.status is None or o.ending == "cut")]
    assert in_flight, "nothing was in flight on the killed gateway"
    gaps = assert_audited(rig, outcomes, prefix)
    assert gaps["crashed"], "no request was closed as crashed from the killed gateway's journal"
    verify = rig.verify_audit()
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_gateway_stopped_with_open_watches_ends_them_and_exits_within_seconds(rig):
    """SIGTERM with watches open on it and requests arriving: every watch gets an ERROR event and a
    clean end, the process exits long before uvicorn's 30 s graceful-shutdown period."""
    prefix = "resil/sigterm/"
    victim = rig.gateways[1]
    load = Load(rig, prefix, watches=4).start(settle=0.5)
    try:
        result = terminate_and_restart(load, victim, drain_within=DRAIN_BOUND, recover_within=RECOVERY)
    finally:
        outcomes = load.stop()
    print(result, by_status(outcomes), slowest(outcomes))
    assert result["exit_code"] == -signal.SIGTERM, victim.log()[-3000:]  # uvicorn re-raises it once shut down
    assert "Application shutdown complete" in victim.log().rsplit("--- start", 2)[-2]
    problems = answers(outcomes, window=result["window"], may_fail={victim.name})
    assert not problems, "\n".join(problems[:20])
    refused = [o for o in outcomes if o.gateway == victim.name and o.status == 503]
    assert all("shutting down" in o.message for o in refused), [o.message for o in refused]
    open_at_stop = watches_open_at(outcomes, victim.name, result["window"][0])
    assert len(open_at_stop) == 2
    for watch in open_at_stop:
        assert watch.ending == "error-event", watch
        status = watch.last_event["object"]
        assert status["kind"] == "Status" and status["code"] == 503, status
        assert "shutting down" in status["message"], status
    assert_audited(rig, outcomes, prefix)
    verify = rig.verify_audit()
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_write_waits_for_a_database_that_stopped_answering_no_longer_than_the_wait_bound(rig):
    """Writes are refused (503) when their RequestReceived event cannot be committed; one that reached
    the audit writer as the database stopped answering (packets dropped, or a server that accepts
    bytes and never answers) waited for as long as that lasted.  The client here waits 6 s, the
    gateway's bound is 3 s (AIRLOCK_AUDIT_COMMIT_SECONDS)."""
    gateway = rig.gateways[0]
    http = httpx.Client(base_url=gateway.url, verify=rig.trust, timeout=6.0,
                        headers={"Authorization": f"Bearer {AGENT_TOKEN}", "User-Agent": "resil/write-bound"})

    def create(n):
        return http.post(CONFIGMAPS, json={"apiVersion": "v1", "kind": "ConfigMap",
                                           "metadata": {"name": f"write-bound-{n}"}})

    with http:
        assert create(0).status_code == 201  # connection, rules and the audit writer's connection warm
        rig.db_proxy.partition()
        try:
            with ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(create, range(1, 5)))
        finally:
            rig.db_proxy.resume()
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.json()["kind"] == "Status" and "not forwarded" in answer.json()["message"]
