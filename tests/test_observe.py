"""/livez, /readyz and /metrics through a real HTTP client against the real application (uvicorn, TLS),
in front of kubesim: answered before ALLOWED_HOSTS, telling nothing of the inside, readiness
following the database away and back, and metrics whose labels carry no secret."""

import re
import socket
import time
from contextlib import contextmanager
from unittest import mock

import httpx
import pytest
from django.db import OperationalError
from django.db.backends.base.base import BaseDatabaseWrapper
from prometheus_client.parser import text_string_to_metric_families

from runtime import metrics
from tests.gateway_harness import AGENT_TOKEN, allow_everything_for, make_gateway_app, serving

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "hunter2-db-password"
REFUSED = OperationalError(f'connection to server at "db.internal" port 5432 failed: password={PASSWORD}')
WRONG_TOKEN = "wrong-token-5f1d9a"
POD_IP = "10.244.1.17"


@contextmanager
def database_away():
    with mock.patch.object(BaseDatabaseWrapper, "ensure_connection", side_effect=REFUSED):
        yield


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def observed(cluster_connection, tmp_path, settings):
    """The gateway with its metrics listener on a free loopback port; (gateway, metrics URL)."""
    settings.AIRLOCK_METRICS_PORT = free_port()
    settings.AIRLOCK_METRICS_ADDRESS = "127.0.0.1"
    allow_everything_for(cluster_connection)
    with serving(make_gateway_app(), cluster_connection, tmp_path / "gateway") as gateway:
        yield gateway, f"http://127.0.0.1:{settings.AIRLOCK_METRICS_PORT}/metrics"


def get(gateway, path, **kwargs):
    with httpx.Client(verify=str(gateway.ca_file), timeout=10) as client:
        return client.get(gateway.url + path, **kwargs)


def samples(text: str) -> list:
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def value(text: str, name: str, **labels) -> float:
    return sum(s.value for s in samples(text) if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_livez_and_readyz_answer_the_kubelet_whatever_host_it_names(observed):
    gateway, _ = observed
    for path in ("/livez", "/readyz"):
        answer = get(gateway, path, headers={"Host": f"{POD_IP}:8443"})  # not in ALLOWED_HOSTS
        assert (answer.status_code, answer.text) == (200, "ok\n"), path
        assert answer.headers["content-type"] == "text/plain; charset=utf-8"
        assert answer.headers["cache-control"] == "no-store"
    # Django still refuses that Host for its own pages.
    assert get(gateway, "/admin/login/", headers={"Host": POD_IP}).status_code == 400


def test_readiness_follows_the_database_away_and_back_and_says_only_which_check_failed(observed, caplog):
    gateway, _ = observed
    assert get(gateway, "/readyz").status_code == 200
    with database_away():
        down = get(gateway, "/readyz")
        live = get(gateway, "/livez")
    assert (down.status_code, down.text) == (503, "not ready: database\n")
    assert (live.status_code, live.text) == (200, "ok\n")  # liveness needs no database
    assert PASSWORD not in down.text and "db.internal" not in down.text
    for _ in range(200):  # the pool's probe (every PROBE_INTERVAL) counts the database up again
        back = get(gateway, "/readyz")
        if back.status_code == 200:
            break
        time.sleep(0.1)
    assert (back.status_code, back.text) == (200, "ok\n")
    assert "readiness: database failed" in caplog.text and "readiness: database recovered" in caplog.text
    assert PASSWORD not in caplog.text


def test_metrics_on_their_own_port_after_requests_with_bounded_labels_and_no_secret(observed):
    gateway, url = observed
    assert get(gateway, "/metrics").status_code == 404  # not on the gateway's port
    before = httpx.get(url, timeout=10).text

    pods = get(gateway, "/k8s/kubesim/api/v1/namespaces/default/pods?labelSelector=app%3Dsecret-app",
               headers={"Authorization": f"Bearer {AGENT_TOKEN}"})
    assert pods.status_code == 200
    refused = get(gateway, "/k8s/kubesim/api/v1/pods", headers={"Authorization": f"Bearer {WRONG_TOKEN}"})
    assert refused.status_code == 401
    assert get(gateway, "/k8s/kubesim/api/v1/pods").status_code == 401
    assert get(gateway, "/readyz").status_code == 200  # checks the connection's cluster

    answer = httpx.get(url, timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=")
    text = answer.text
    assert value(text, "airlock_authentication_failures_total", reason="invalid") == \
        value(before, "airlock_authentication_failures_total", reason="invalid") + 1
    assert value(text, "airlock_authentication_failures_total", reason="missing") == \
        value(before, "airlock_authentication_failures_total", reason="missing") + 1
    assert value(text, "airlock_audit_append_seconds_count") >= 1
    # The request addon (gateway.metrics) is wired by make_application: the allowed list is counted.
    assert value(text, "airlock_requests_total", connection="kubesim", verb="list", resource="pods",
                 decision="allow", code="2xx") == \
        value(before, "airlock_requests_total", connection="kubesim", verb="list", resource="pods",
              decision="allow", code="2xx") + 1
    assert value(text, "airlock_gateway_overhead_seconds_count", connection="kubesim", verb="list") >= 1
    assert value(text, "airlock_upstream_up", connection="kubesim") == 1
    assert value(text, "airlock_ready") == 1
    assert {"airlock_reviews_pending", "airlock_leases_active", "airlock_audit_queue_depth"} <= {
        family.name for family in text_string_to_metric_families(text)}

    for sample in samples(text):
        for label, label_value in sample.labels.items():
            # The registry is the process's: other tests' requests are counted too, so a label may name any
            # resource ("namespaces") or subresource ("pods/exec"); a path or a piece of one never appears.
            assert not label_value.startswith("/"), (sample.name, label, label_value)
            for secret in (AGENT_TOKEN, WRONG_TOKEN, "secret-app", "labelSelector", "namespaces/default", "/api"):
                assert secret not in label_value, (sample.name, label, label_value)
    assert AGENT_TOKEN not in text and WRONG_TOKEN not in text
    assert httpx.get(url.replace("/metrics", "/other"), timeout=10).status_code == 404


def test_metrics_listener_is_off_unless_a_port_is_set(cluster_connection, tmp_path, settings):
    settings.AIRLOCK_METRICS_PORT = None
    app = make_gateway_app()
    assert app.metrics is None
    with serving(app, cluster_connection, tmp_path / "gateway") as gateway:
        assert get(gateway, "/livez").status_code == 200


def test_label_values_from_requests_are_bounded():
    bounded = metrics.Bounded(limit=2)
    assert [bounded(v) for v in ("pods", "pods", "secrets", "configmaps", "Bad Value", "a" * 200)] == [
        "pods", "pods", "secrets", "other", "other", "other"]
    assert re.fullmatch(r"[a-z_]+", metrics.OTHER)


def test_the_application_traces_each_stage_of_a_real_request_when_tracing_is_on(cluster_connection, tmp_path):
    """make_application wires gateway.tracing (its addon, authenticator, recorder and upstream wrappers):
    a request served for real has one root span and a span per stage, each with the audit ID, and no span
    carries the token, the query or a path."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from gateway.tracing import Tracing

    exporter = InMemorySpanExporter()
    allow_everything_for(cluster_connection)
    with serving(make_gateway_app(tracing=Tracing(SimpleSpanProcessor(exporter))), cluster_connection,
                 tmp_path / "gateway") as gateway:
        pods = get(gateway, "/k8s/kubesim/api/v1/namespaces/default/pods?labelSelector=app%3Dsecret-app",
                   headers={"Authorization": f"Bearer {AGENT_TOKEN}"})
        assert pods.status_code == 200
    finished = exporter.get_finished_spans()
    root = next(span for span in finished
                if span.name == "airlock.request" and span.attributes.get("airlock.verb") == "list")
    audit_id = root.attributes["airlock.audit_id"]
    ours = [span for span in finished if span.attributes.get("airlock.audit_id") == audit_id]
    names = {span.name for span in ours}
    assert {"airlock.request", "parse", "authenticate", "authorize", "upstream", "record"} <= names, names
    assert all(span.context.trace_id == root.context.trace_id for span in ours)
    everything = repr([(span.name, dict(span.attributes)) for span in finished])
    for secret in (AGENT_TOKEN, "labelSelector", "secret-app", "/api/v1"):
        assert secret not in everything, secret
