"""/metrics of the console: database-wide gauges (series, jobs, exports, queue depth).

The gauges read the database at scrape time, so they are right however many listeners and
workers run. With PROMETHEUS_MULTIPROC_DIR set, the samples of every process writing there are
served too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

import db.statistics
from db.engine import SessionFactory
from db.enums import ExportStatus, JobStatus, SeriesStatus

router = APIRouter(tags=["metrics"])

#: The metric names the console's /metrics serves (the Grafana dashboard test checks against them).
METRIC_NAMES = frozenset(
    {
        "stroke_triage_series",
        "stroke_triage_jobs",
        "stroke_triage_exports",
        "stroke_triage_queue_depth",
    }
)


class DatabaseCollector(Collector):
    """Gauges of series, jobs and exports per status, and the queue depth, from the database."""

    def __init__(self, sessions: SessionFactory) -> None:
        """Read through these sessions at each scrape."""
        self._sessions = sessions

    def collect(self) -> Iterator[Metric]:
        """Yield the gauges."""
        with self._sessions() as session:
            counts = db.statistics.status_counts(session=session)
        for name, doc, found, states in (
            ("stroke_triage_series", "Series per status.", counts.series, SeriesStatus),
            ("stroke_triage_jobs", "Jobs per status (outcome).", counts.jobs, JobStatus),
            ("stroke_triage_exports", "Exports per status.", counts.exports, ExportStatus),
        ):
            gauge = GaugeMetricFamily(name, doc, labels=["status"])
            for state in states:
                gauge.add_metric([str(state)], found.get(str(state), 0))
            yield gauge
        depth = GaugeMetricFamily(
            "stroke_triage_queue_depth", "Jobs waiting for a worker (pending + queued)."
        )
        depth.add_metric(
            [],
            counts.jobs.get(str(JobStatus.PENDING), 0) + counts.jobs.get(str(JobStatus.QUEUED), 0),
        )
        yield depth


def build_registry(sessions: SessionFactory) -> CollectorRegistry:
    """The registry /metrics serves."""
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(sessions))
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus text format; no token (scrape it on a trusted network or via the proxy)."""
    registry: CollectorRegistry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
