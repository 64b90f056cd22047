"""Issue 6, done-when: a lease expiring cuts a running `kubectl exec -it` and a `kubectl get -w`.

Every resource request of the agent needs a lease here (a ``requires_lease``
rule first in order); discovery stays open.  The lease is granted through the
service, cut short, and then both sessions must end on their own when it
expires, and new requests are refused.
"""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from approvals import leases
from approvals.models import LeaseState
from approvals.tests.factories import reviewer
from kubesim.testing import PtyProcess, read_until

pytestmark = pytest.mark.django_db(transaction=True)

LEASE_SECONDS = 6


@pytest.fixture
def lease_gated(gateway):
    from policy.models import Rule

    Rule.objects.create(
        connection=gateway.connection, order=1, name="agents-with-lease", effect="allow", groups=["agents"],
        verbs=["*"], api_groups=["*"], resources=["*", "*/*"], namespaces=["*"], names=["*"], requires_lease=True,
    )
    return gateway


def grant_short_lease():
    lease = leases.request_lease(connection="kubesim", subject="agent-1", duration="1h", reason="INC-7 debugging",
                                 requested_by="oncall")
    lease = leases.decide(lease.pk, reviewer("rita"), grant=True, reason="ok")
    lease.expires_at = timezone.now() + timedelta(seconds=LEASE_SECONDS)
    lease.save()
    return lease


def wait_for_exit(proc, timeout=30.0):
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        assert time.monotonic() < deadline, "the session was not cut"
        time.sleep(0.05)
    return proc.returncode


def test_lease_expiry_cuts_exec_and_watch(lease_gated, kubectl):
    kubeconfig = lease_gated.kubeconfig()
    refused = kubectl("get", "pods", "-n", "shop", kubeconfig=kubeconfig, check=False)
    assert refused.returncode != 0 and "requires an active lease" in refused.stderr

    lease = grant_short_lease()
    watch = kubectl.popen("get", "pods", "-n", "shop", "-w", kubeconfig=kubeconfig)
    read_until(watch, "web-")
    tty = PtyProcess(kubectl.argv(("exec", "-it", "debug-shell", "-n", "payments", "--", "sh"), kubeconfig),
                     kubectl.env, rows=24, cols=100)
    try:
        tty.type("echo L$((40+2))\n")
        tty.expect(r"L42")
        assert wait_for_exit(tty.proc) != 0
        tty.expect(rf"lease {lease.pk} expired")
    finally:
        tty.close()
    wait_for_exit(watch)
    # kubectl prints the watch's ERROR event (a Status) as a row and ends.
    assert f"Forbidden   airlock: lease {lease.pk} expired" in watch.stdout.read()

    assert leases.expire_due() == [lease.pk]
    lease.refresh_from_db()
    assert lease.state == LeaseState.EXPIRED
    after = kubectl("get", "pods", "-n", "shop", kubeconfig=kubeconfig, check=False)
    assert after.returncode != 0 and "requires an active lease" in after.stderr
