"""kubectl exec held for review: the WebSocket is accepted at once, kubectl shows that approval is pending
on stderr, and runs the command once approved; a denial ends it with the reviewer's reason."""

import os
import select
import time

import pytest

from approvals import reviews
from approvals.tests.factories import reviewer
from tests.e2e_approvals.conftest import wait_for_review

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def review_exec(gateway):
    from policy.models import Rule

    Rule.objects.create(
        connection=gateway.connection, order=4, name="review-exec", effect="review", groups=["agents"],
        verbs=["create", "get"], api_groups=[""], resources=["pods/exec"], namespaces=["*"], names=["*"],
    )
    return gateway


def read_stderr_until(proc, needle, timeout=30.0):
    fd, seen = proc.stderr.fileno(), b""
    deadline = time.monotonic() + timeout
    while needle.encode() not in seen:
        assert time.monotonic() < deadline, f"{needle!r} not on stderr: {seen!r}"
        if select.select([fd], [], [], 0.1)[0]:
            chunk = os.read(fd, 4096)
            assert chunk, f"{needle!r} not on stderr before EOF: {seen!r}"
            seen += chunk
    return seen.decode()


def exec_shell(kubectl, gateway):
    return kubectl.popen("exec", "debug-shell", "-n", "payments", "--", "sh", "-c", "echo ran-$((6*7))",
                         kubeconfig=gateway.kubeconfig())


def test_held_exec_runs_once_approved(review_exec, kubectl):
    proc = exec_shell(kubectl, review_exec)
    review = wait_for_review()
    read_stderr_until(proc, f"airlock: waiting for a reviewer to approve review {review.pk}")
    assert review.description == 'get pods/exec "debug-shell" in namespace "payments"'
    assert "command=sh" in review.query
    reviews.decide(review.pk, reviewer("rita"), approve=True)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and out == "ran-42\n"


def test_denied_exec_ends_with_the_reason(review_exec, kubectl):
    proc = exec_shell(kubectl, review_exec)
    review = wait_for_review()
    read_stderr_until(proc, "waiting for a reviewer")
    reviews.decide(review.pk, reviewer("rita"), approve=False, reason="no shells in payments")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode != 0 and out == ""
    assert f"denied by rita (review {review.pk}): no shells in payments" in err
