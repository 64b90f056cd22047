"""deploy/observability/: every metric the Grafana dashboard and the Prometheus alerts read is one the code
defines (runtime.metrics, approvals.metrics), and the files are what their tools load."""

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import yaml

from approvals.metrics import ReviewsAndLeases
from runtime import metrics

ROOT = Path(__file__).resolve().parents[2]
DIRECTORY = ROOT / "deploy" / "observability"
METRIC = re.compile(r"\b(airlock_[a-z0-9_]+)\b")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def defined_names() -> set[str]:
    """Every series name the registry exposes, whether or not a sample was recorded yet."""
    collector = ReviewsAndLeases(read=lambda: {"pending": {}, "leases": {}})
    names = set()
    for family in metrics.exposition_registry([collector]).collect():
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((DIRECTORY / "grafana-dashboard.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    expressions += [variable["definition"] for variable in dashboard["templating"]["list"] if "definition" in variable]
    return expressions


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load((DIRECTORY / "prometheus-alerts.yaml").read_text())["groups"]
            for rule in group["rules"]]


def test_the_dashboard_reads_only_metrics_the_code_defines_and_shows_every_request_metric():
    names = defined_names()
    used = {name for expr in dashboard_expressions() for name in METRIC.findall(expr)}
    assert used and sorted(used - names) == []
    for wanted in ("airlock_requests_total", "airlock_gateway_overhead_seconds_bucket",
                   "airlock_upstream_duration_seconds_bucket", "airlock_reviews_held", "airlock_leases_active",
                   "airlock_streams_open", "airlock_masking_replacements_total", "airlock_audit_queue_depth",
                   "airlock_audit_append_seconds_bucket", "airlock_upstream_errors_total",
                   "airlock_authentication_failures_total", "airlock_review_oldest_pending_age_seconds"):
        assert wanted in used, wanted


def test_the_alerts_read_only_metrics_the_code_defines_and_cover_the_three_incidents():
    names = defined_names()
    rules = alert_rules()
    used = {name for rule in rules for name in METRIC.findall(rule["expr"])}
    assert used and sorted(used - names) == []
    alerts = {rule["alert"] for rule in rules}
    assert {"AirlockAuditWriterStalled", "AirlockUpstreamDown", "AirlockReviewsWaitingTooLong"} <= alerts
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning") and rule["annotations"]["summary"]


def test_the_review_collector_reports_ages_from_the_database_values():
    created = datetime(2020, 1, 1, tzinfo=UTC)
    collector = ReviewsAndLeases(read=lambda: {"pending": {"prod": (3, created)}, "leases": {"prod": 2}})
    families = {family.name: family for family in collector.collect()}
    assert [(s.labels, s.value) for s in families["airlock_reviews_pending"].samples] == [({"connection": "prod"}, 3)]
    assert families["airlock_review_oldest_pending_age_seconds"].samples[0].value > 3600
    assert [s.value for s in families["airlock_leases_active"].samples] == [2]
