"""Real kubectl through the gateway: a held delete is released, refused or times out (decisions via the service)."""

import subprocess

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
