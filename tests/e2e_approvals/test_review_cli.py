"""A held `kubectl delete` released from the command line: manage.py review show, then approve."""

import io

import pytest
from django.core.management import call_command

from approvals.tests.factories import reviewer
from tests.e2e_approvals.conftest import wait_for_review
from tests.e2e_approvals.test_hold_kubectl import finish

pytestmark = pytest.mark.django_db(transaction=True)


def manage(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_review_show_then_approve_releases_the_held_delete(agent, kubectl):
    proc = agent.popen("delete", "deployment", "web", "-n", "shop", "--wait=false")
    review = wait_for_review()
    assert f'{review.pk} pending' in manage("review", "list")
    shown = manage("review", "show", str(review.pk))
    assert "Request    DELETE /apis/apps/v1/namespaces/shop/deployments/web" in shown
    reviewer("rita")
    out = manage("review", "approve", str(review.pk), "--by", "rita", "--reason", "from the shell")
    assert out.startswith(f"review {review.pk} approved (Once: this exact request")
    code, out, err = finish(proc)
    assert code == 0, err
    assert 'deployment.apps "web" deleted' in out
    review.refresh_from_db()
    assert (review.decided_by, review.reason, review.consumed_at is not None) == ("rita", "from the shell", True)
