"""Real kubectl through the gateway: a held delete is released, refused or times out (decisions via the service)."""

import subprocess
import time

import pytest

from approvals import reviews
from approvals.tests.factories import reviewer
from tests.e2e_approvals.conftest import wait_for_review

pytestmark = pytest.mark.django_db(transaction=True)


def finish(proc, timeout=30):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def test_held_delete_is_forwarded_once_approved(agent, kubectl):
    proc = agent.popen("delete", "deployment", "web", "-n", "shop", "--wait=false")
    review = wait_for_review()
    assert review.description == 'delete deployments "web" in namespace "shop"'
    assert review.principal_username == "agent-1" and review.rule_name == "review-deployment-deletes"
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=1)
    reviews.decide(review.pk, reviewer("rita"), approve=True, reason="planned cleanup")
    code, out, err = finish(proc)
    assert code == 0, err
    assert 'deployment.apps "web" deleted' in out
    gone = kubectl("get", "deployment", "web", "-n", "shop", check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr


def test_denied_delete_shows_the_reason(agent, kubectl):
    proc = agent.popen("delete", "deployment", "web", "-n", "shop", "--wait=false")
    review = wait_for_review()
    reviews.decide(review.pk, reviewer("rita"), approve=False, reason="not during the change freeze")
    code, _, err = finish(proc)
    assert code != 0
    assert f"denied by rita (review {review.pk}): not during the change freeze" in err
    assert "Forbidden" in err
    kubectl("get", "deployment", "web", "-n", "shop")


@pytest.mark.parametrize("hold_timeout", [1.0])
def test_timeout_names_the_review_and_the_retry_passes_once_approved(agent, kubectl):
    first = agent("delete", "deployment", "web", "-n", "shop", "--wait=false", check=False)
    review = wait_for_review()
    assert first.returncode != 0
    assert f"review {review.pk} is still pending" in first.stderr
    kubectl("get", "deployment", "web", "-n", "shop")
    reviews.decide(review.pk, reviewer("rita"), approve=True)
    retry = agent("delete", "deployment", "web", "-n", "shop", "--wait=false")
    assert 'deployment.apps "web" deleted' in retry.stdout
    review.refresh_from_db()
    assert review.consumed_at is not None


CONFIGMAP = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: held-cm, namespace: default}\ndata: {mode: %s}\n"


@pytest.mark.parametrize("hold_timeout", [1.0])
def test_a_once_approval_is_bound_to_the_reviewed_body(agent, kubectl, cluster_connection):
    """The body is read before the hold: the review shows it, and approving it approves nothing else."""
    from policy.models import Rule

    Rule.objects.create(connection=cluster_connection, order=4, name="review-configmap-writes", effect="review",
                        groups=["agents"], verbs=["create"], api_groups=[""], resources=["configmaps"],
                        namespaces=["default"], names=["*"])
    first = agent("create", "-f", "-", input=CONFIGMAP % "reviewed", check=False)
    review = wait_for_review(rule_name="review-configmap-writes")
    assert first.returncode != 0 and f"review {review.pk}" in first.stderr
    assert "reviewed" in review.body and "held-cm" in review.body
    reviews.decide(review.pk, reviewer("rita"), approve=True, reason="reviewed body")

    swapped = agent("create", "-f", "-", input=CONFIGMAP % "swapped", check=False)
    assert swapped.returncode != 0, "a different body is not covered by the approval"
    assert kubectl("get", "configmap", "held-cm", "-n", "default", check=False).returncode != 0

    same = agent("create", "-f", "-", input=CONFIGMAP % "reviewed")
    assert "configmap/held-cm created" in same.stdout
    stored = kubectl("get", "configmap", "held-cm", "-n", "default", "-o", "jsonpath={.data.mode}").stdout
    assert stored == "reviewed"


def wait_for_audit(timeout=30.0, **filters):
    from audit.models import AuditEvent

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = AuditEvent.objects.filter(**filters).first()
        if row is not None:
            return row
        time.sleep(0.05)
    raise AssertionError(f"no audit event {filters} within {timeout}s")


def test_a_held_request_is_in_the_audit_trail_while_it_waits(agent):
    """Issue 12: a gateway that dies during a hold leaves the request in the audit trail, not only a review."""
    from audit.models import AuditEvent

    proc = agent.popen("delete", "deployment", "web", "-n", "shop", "--wait=false")
    review = wait_for_review()
    held = wait_for_audit(stage="RequestReceived", review_id=str(review.pk))
    assert (held.verb, held.object_name, held.user_username, held.decision_effect) == ("delete", "web", "agent-1",
                                                                                      "review")
    assert str(held.audit_id) == review.audit_id
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=0.5)
    reviews.decide(review.pk, reviewer("rita"), approve=True)
    code, _, err = finish(proc)
    assert code == 0, err
    complete = wait_for_audit(stage="ResponseComplete", audit_id=held.audit_id)
    assert complete.response_code == 200 and complete.review_id == str(review.pk)
    assert AuditEvent.objects.filter(audit_id=held.audit_id).count() == 2
