"""The real gateway with an approvals Holder in front of kubesim; a review rule holds deployment deletes."""

import io
import time

import pytest
from django.core.management import call_command

from tests.gateway_harness import make_gateway_app, serving


@pytest.fixture
def hold_timeout():
    return 60.0


@pytest.fixture
def gateway_app(hold_timeout):
    return make_gateway_app(hold={"timeout": hold_timeout, "poll_interval": 0.2})


@pytest.fixture
def review_deletes(cluster_connection):
    from policy.models import Rule

    return Rule.objects.create(
        connection=cluster_connection, order=5, name="review-deployment-deletes", effect="review",
        groups=["agents"], verbs=["delete"], api_groups=["apps"], resources=["deployments"], namespaces=["*"],
        names=["*"],
    )


@pytest.fixture
def agent(gateway, kubectl, review_deletes):
    """kubectl with the agent's kubeconfig (through the gateway)."""
    path = gateway.kubeconfig()

    def run(*args, **kwargs):
        return kubectl(*args, kubeconfig=path, **kwargs)

    run.popen = lambda *args: kubectl.popen(*args, kubeconfig=path)
    run.kubeconfig = path
    return run


def wait_for_review(state="pending", timeout=30.0, **filters):
    """The newest review in this state (the gateway thread writes it to the shared test database)."""
    from approvals.models import Review

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        review = Review.objects.filter(state=state, **filters).order_by("-id").first()
        if review is not None:
            return review
        time.sleep(0.05)
    raise AssertionError(f"no {state} review appeared within {timeout}s")


@pytest.fixture
def airlock(live_airlock, review_deletes):
    """The whole app on one port (tests/browser.py), with this directory's Holder and review rule."""
    return live_airlock


@pytest.fixture
def guarded(cluster_connection, gateway_app, tmp_path):
    """The gateway with this directory's Holder, group "agents" under production-guardrails (manage.py apply_preset)."""
    call_command("apply_preset", "--connection", cluster_connection.name, "production-guardrails",
                 "--group", "agents", stdout=io.StringIO())
    with serving(gateway_app, cluster_connection, tmp_path / "guarded") as running:
        yield running


@pytest.fixture
def guarded_agent(guarded, kubectl):
    """kubectl through the guarded gateway."""
    path = guarded.kubeconfig()

    def run(*args, **kwargs):
        return kubectl(*args, kubeconfig=path, **kwargs)

    run.popen = lambda *args: kubectl.popen(*args, kubeconfig=path)
    run.kubeconfig = path
    run.gateway = guarded
    return run
