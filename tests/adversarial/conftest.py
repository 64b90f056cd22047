"""Fixtures for the adversarial suite: the real gateway in front of kubesim, with three checks
made after every attack that went through it.

* nothing leaked: every secret value the test cares about (``secrets``: kubesim's seeded values
  plus whatever the test adds), in every form of :mod:`tests.adversarial.leaks`, is absent from
  what kubectl printed (``agent``), from raw answers the test checks, and from everything the
  audit trail and the approvals tables kept;
* nothing went unrecorded: one completion event per request or stream the gateway handled
  (tests.gateway_harness.serving) and an intact audit chain (audit.chain.verify_chain);
* nothing ran unapproved: tests compare what kubesim received (``cluster``) and its state.
"""

import pytest

from kubesim import requestlog
from tests import wsraw
from tests.adversarial.leaks import SEEDED, assert_clean
from tests.e2e_identity import rawhttp
from tests.gateway_harness import AGENT_TOKEN, allow_everything_for, serving

SECRET_VALUES_AGENT = "airlock-gateway/secret-values"  # gateway.secretvalues.USER_AGENT


@pytest.fixture
def secrets():
    """The values no attack may obtain; a test adds the ones it plants."""
    return set(SEEDED)


def audit_and_review_text() -> str:
    """Everything the audit trail and the approvals tables hold, as one text."""
    from approvals.models import Review, ReviewEvent
    from audit.models import AuditEvent, Recording

    rows = [*AuditEvent.objects.values(), *Recording.objects.values(), *Review.objects.values(),
            *ReviewEvent.objects.values()]
    return "\n".join(
        repr(bytes(v).decode("utf-8", "replace")) if isinstance(v, (bytes, memoryview)) else repr(v)
        for row in rows for v in row.values()
    )


def assert_trail_intact_and_clean(values):
    from audit.chain import verify_chain

    result = verify_chain()
    assert result.ok, result.summary()
    assert_clean(audit_and_review_text(), values, where="the audit trail or the approvals tables")


@pytest.fixture
def gateway(cluster_connection, gateway_app, tmp_path, secrets, kubesim):
    """The gateway on TLS in front of kubesim (group "agents" may do everything, unless a test
    adds rules before); after the test: one event per request, the chain intact, no leak kept."""
    allow_everything_for(cluster_connection)
    with serving(gateway_app, cluster_connection, tmp_path / "gateway") as running:
        yield running
    assert_trail_intact_and_clean(secrets | {kubesim.admin_token})


@pytest.fixture
def agent(gateway, kubectl, secrets):
    """kubectl through the gateway; whatever it prints is checked for leaks."""
    path = gateway.kubeconfig()

    def run(*args, check=True, **kwargs):
        result = kubectl(*args, kubeconfig=path, check=check, **kwargs)
        assert_clean(result.stdout + result.stderr, secrets, where=f"kubectl {' '.join(args)[:80]}")
        return result

    run.kubeconfig = path
    run.kubectl = kubectl
    return run


def port_of(gateway) -> int:
    return int(gateway.url.rsplit(":", 1)[1])


@pytest.fixture
def raw(gateway, secrets):
    """raw(method, path, headers=(), body=b"", token=..., connection=...) -> rawhttp.Response; ``path``
    is the cluster path (sent byte for byte after /k8s/<connection>), the answer checked for leaks."""

    def send(method, path, headers=(), body=b"", token=AGENT_TOKEN, connection=None):
        response = rawhttp.request("127.0.0.1", port_of(gateway), gateway.ca_file, method,
                                   f"/k8s/{connection or gateway.connection.name}{path}",
                                   [("Authorization", f"Bearer {token}"), *headers], body)
        assert_clean([response.body, repr(response.headers)], secrets, where=f"{method} {path[:80]}")
        return response

    return send


@pytest.fixture
def websocket(gateway):
    """websocket(path, subprotocols, token=...) -> wsraw.RawWebSocket or wsraw.Refused."""

    def open_(path, subprotocols=("v5.channel.k8s.io",), token=AGENT_TOKEN):
        return wsraw.connect("127.0.0.1", port_of(gateway), gateway.ca_file, f"/k8s/{gateway.connection.name}{path}",
                             token=token, subprotocols=subprotocols)

    return open_


class ClusterLog:
    """What kubesim received from the agent's side (the gateway's own Secret watch left out)."""

    def __init__(self, kubesim):
        self.kubesim = kubesim
        self.start = 0

    def mark(self):
        self.start = len(self.kubesim.requests())

    def since(self) -> list[dict]:
        return [r for r in self.kubesim.requests()[self.start:]
                if SECRET_VALUES_AGENT not in requestlog.header(r, "user-agent")]

    def writes(self) -> list[tuple[str, str]]:
        return [(r["method"], r["path"]) for r in self.since() if r["method"] not in ("GET", "HEAD", "OPTIONS")]


@pytest.fixture
def cluster(kubesim):
    return ClusterLog(kubesim)
