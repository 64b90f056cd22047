"""Issue 15, item 9: scale-out, proved (short form; ``make soak`` runs the long one, bench/scaleout.py).

Three gateway processes (uvicorn, TLS, as docker-compose.yml starts them) behind HAProxy (TCP,
TLS passed through, round-robin per connection), one Celery worker and one beat, one PostgreSQL
database, one Redis, kubesim as the cluster.  While a small mixed load runs through the balancer
(every request on a new connection, so on another replica), each test runs one scenario across
replicas, then checks:

* the answers: none missing, no 5xx, each the expected one, every error a Kubernetes ``Status``;
* the load reached every replica (HAProxy's connection counts);
* exactly one completion event per request sent (requests counted by their User-Agents against
  the audit trail), and an audit event for every request kubesim received;
* ``manage.py verify_audit`` exits 0, against the anchors beat (through the worker) signed.
"""

from tests.scaleout_load import assert_served_and_audited, hold_open, hold_retry, lease_cut, run_with_load


def test_a_hold_on_one_replica_approved_through_another_is_let_through_once(scaleout):
    prefix = "scale/hold-open/"
    result, ledger, share = run_with_load(scaleout, prefix, lambda ledger: hold_open(scaleout, ledger, 1))
    assert not result["problems"], result
    assert result["approved_on"] != result["held_on"], result
    assert (result["released"], result["retried"], result["forwarded"]) == (200, 403, 1), result
    assert_served_and_audited(scaleout, prefix, ledger, share)


def test_a_retried_hold_approved_through_another_replica_goes_through_a_third_once(scaleout):
    prefix = "scale/hold-retry/"
    result, ledger, share = run_with_load(scaleout, prefix, lambda ledger: hold_retry(scaleout, ledger, 1))
    assert not result["problems"], result
    assert len({result["asked_on"], result["approved_on"], result["retried_on"]}) == 3, result
    assert (result["released"], result["retried_again"], result["forwarded"]) == (200, 403, 1), result
    assert_served_and_audited(scaleout, prefix, ledger, share)


def test_a_lease_revoked_on_one_replica_ends_streams_on_every_replica(scaleout):
    prefix = "scale/lease/"
    result, ledger, share = run_with_load(scaleout, prefix, lambda ledger: lease_cut(scaleout, ledger))
    assert not result["problems"], result
    assert all(kinds["watch"] >= 1 and kinds["exec"] >= 1 for kinds in result["streams"].values()), result
    opened = sum(sum(kinds.values()) for kinds in result["streams"].values())
    assert result["ended_with_status"] == opened, result
    assert_served_and_audited(scaleout, prefix, ledger, share)
    assert scaleout.scheduled_anchors() > 0, "beat's anchor task never ran on the worker"
