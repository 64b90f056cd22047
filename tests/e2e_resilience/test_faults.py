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

import pytest

from tests.resilience_load import FAULTS, Load, answers, audit_gaps, by_status, inject, slowest

FAULT_SECONDS = 2.0
RECOVERY = 10.0  # seconds: the stated bound for recovery after any of these faults


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
    fault = FAULTS[name]
    prefix = f"resil/{slug(name)}/"
    load = Load(rig, prefix).start(settle=0.5)
    try:
        result = inject(load, fault, FAULT_SECONDS, recover_within=RECOVERY)
    finally:
        outcomes = load.stop()
    print(result, by_status(outcomes), slowest(outcomes), dict(load.approvals))
    problems = answers(outcomes, fault.allowed, window=result["window"])
    assert not problems, "\n".join(problems[:20])
    assert_audited(rig, outcomes, prefix)
