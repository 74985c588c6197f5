"""deploy/grafana/stroke-triage.json queries only metrics that the code exports."""

from __future__ import annotations

import json
import re

import listener.metrics
import worker.metrics
from console.metrics import METRIC_NAMES as CONSOLE_METRICS
from tests.helpers import REPO_ROOT

DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "stroke-triage.json"
#: PromQL functions, keywords and label names that look like identifiers in an expression.
PROMQL_WORDS = {"sum", "max", "by", "le", "rate", "increase", "histogram_quantile"}


def _queried_metrics() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    names: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expression = re.sub(r"\[[^]]*\]|\{[^}]*\}|\"[^\"]*\"", "", target["expr"])
            expression = re.sub(r"by \([^)]*\)", "", expression)
            names |= set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expression)) - PROMQL_WORDS
    return names


def test_every_queried_metric_exists_in_the_code() -> None:
    exported = listener.metrics.METRIC_NAMES | worker.metrics.METRIC_NAMES | CONSOLE_METRICS
    queried = _queried_metrics()
    assert queried, "the dashboard queries nothing"
    assert queried <= exported, sorted(queried - exported)


def test_the_dashboard_shows_every_metric_the_issue_asks_for() -> None:
    queried = _queried_metrics()
    for needed in (
        "stroke_triage_listener_instances_received_total",
        "stroke_triage_listener_associations_refused_total",
        "stroke_triage_listener_store_seconds_bucket",
        "stroke_triage_listener_series_skipped_total",
        "stroke_triage_queue_depth",
        "stroke_triage_worker_jobs_total",
        "stroke_triage_worker_inference_seconds_bucket",
        "stroke_triage_worker_last_instance_to_sr_seconds_bucket",
        "stroke_triage_worker_exports_total",
        "stroke_triage_worker_model_info",
    ):
        assert needed in queried, needed


def test_metric_names_match_the_registries() -> None:
    """METRIC_NAMES is what the listener and worker registries really expose."""
    for module in (listener.metrics, worker.metrics):
        exposed = {sample.name for family in module.REGISTRY.collect() for sample in family.samples}
        # Labelled metrics have no samples until used; their family names are described.
        described = {family.name for family in module.REGISTRY.collect()}
        for name in module.METRIC_NAMES - {worker.metrics.QUEUE_DEPTH}:
            base = re.sub(r"_(total|bucket|count|sum)$", "", name)
            assert name in exposed or base in described, name
