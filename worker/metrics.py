"""Prometheus metrics of a worker process, served on ``worker.metrics_port``.

With one process (``concurrency = 1``, the solo pool) the samples live in memory. A prefork
worker (``concurrency > 1``) runs tasks in forked children, so the service points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder before anything is measured
(:func:`worker.metrics_dir.use_multiprocess_dir`); every child writes its samples there
and the parent's port serves them all.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from datetime import datetime
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

import db.jobs
from db.engine import SessionFactory

if TYPE_CHECKING:
    from db.rows import Job

log = logging.getLogger(__name__)

#: The registry of this module's metrics (tests read it; the metrics port serves it).
REGISTRY = CollectorRegistry(auto_describe=True)

JOBS = Counter(
    "stroke_triage_worker_jobs",
    "Job runs by outcome: done, skipped, dropped, retry, failed.",
    ["outcome"],
    registry=REGISTRY,
)
INFERENCE_SECONDS = Histogram(
    "stroke_triage_worker_inference_seconds",
    "Time to classify one series (all its slices).",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0),
    registry=REGISTRY,
)
LAST_INSTANCE_TO_SR_SECONDS = Histogram(
    "stroke_triage_worker_last_instance_to_sr_seconds",
    "From the last instance of a series received to its SR sent (or stored, without PACS).",
    buckets=(5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0),
    registry=REGISTRY,
)
EXPORTS = Counter(
    "stroke_triage_worker_exports",
    "Export attempts (SR, SC to a PACS or DICOMweb server) by status: sent or failed.",
    ["status"],
    registry=REGISTRY,
)
MODEL_INFO = Gauge(
    "stroke_triage_worker_model_info",
    "The model this worker serves (value 1).",
    ["name", "version", "sha256"],
    registry=REGISTRY,
    multiprocess_mode="max",
)
QUEUE_DEPTH = "stroke_triage_queue_depth"

#: Every metric name this module exports (the Grafana dashboard test checks against them).
METRIC_NAMES = frozenset(
    {
        "stroke_triage_worker_jobs_total",
        *(
            f"{base}_{part}"
            for base in (
                "stroke_triage_worker_inference_seconds",
                "stroke_triage_worker_last_instance_to_sr_seconds",
            )
            for part in ("bucket", "count", "sum")
        ),
        "stroke_triage_worker_exports_total",
        "stroke_triage_worker_model_info",
        QUEUE_DEPTH,
    }
)


def job_outcome(outcome: str) -> None:
    """Count one run of a job by its outcome."""
    JOBS.labels(outcome=outcome).inc()


def inference_timer() -> AbstractContextManager[object]:
    """Time the block as one series' inference."""
    return INFERENCE_SECONDS.time()


def export_attempt(*, sent: bool) -> None:
    """Count one export attempt."""
    EXPORTS.labels(status="sent" if sent else "failed").inc()


def report_delivered(job: Job) -> Job:
    """Observe the time from the series' last instance to now (its SR out); return ``job``."""
    last: datetime = job.series.last_received_at
    if job.exported_at is not None:
        LAST_INSTANCE_TO_SR_SECONDS.observe(max(0.0, (job.exported_at - last).total_seconds()))
    return job


def model_loaded(*, name: str, version: str, sha256: str) -> None:
    """Set ``model_info`` for the model this process serves."""
    MODEL_INFO.labels(name=name, version=version, sha256=sha256).set(1)


class QueueDepthCollector(Collector):
    """Jobs waiting for a worker (pending + queued), read from the database at each scrape."""

    def __init__(self, sessions: SessionFactory) -> None:
        """Read through these sessions."""
        self._sessions = sessions

    def collect(self) -> Iterator[Metric]:
        """Yield the gauge (nothing when the database cannot be read)."""
        try:
            with self._sessions() as session:
                waiting = db.jobs.count_waiting_jobs(session=session)
        except Exception as exc:  # a scrape must not fail because the database is down
            log.warning("Queue depth not read: %s", exc)
            return
        gauge = GaugeMetricFamily(QUEUE_DEPTH, "Jobs waiting for a worker (pending + queued).")
        gauge.add_metric([], waiting)
        yield gauge


def serve_metrics(
    *,
    host: str,
    port: int,
    sessions: SessionFactory,
    problems: Callable[[], list[str]] | None = None,
) -> Callable[[], None] | None:
    """Serve this worker's metrics on ``host:port`` in a daemon thread; None when port is 0.

    The same port answers the hospital's monitoring without a token: ``/health`` (the process
    is alive) and ``/ready`` (200 when ``problems`` finds none, else 503 with them listed).

    Returns:
        A function that stops the server.
    """
    if port == 0:
        return None
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Forward(REGISTRY))
    registry.register(QueueDepthCollector(sessions))
    app = probes_app(make_wsgi_app(registry), problems or (lambda: []))
    try:
        server = make_server(host, port, app, _ThreadingServer, handler_class=_QuietHandler)
    except OSError as exc:  # a taken port must not stop the service itself
        log.error("Worker metrics cannot listen on %s:%d: %s", host, port, exc)
        return None
    thread = threading.Thread(target=server.serve_forever, name="worker-metrics", daemon=True)
    thread.start()
    log.info("Worker metrics on http://%s:%d/metrics (and /health, /ready)", host, port)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop


class _Forward(Collector):
    """Serve another registry's samples from a second registry."""

    def __init__(self, source: CollectorRegistry) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        yield from self._source.collect()


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def probes_app(metrics: WsgiApp, problems: Callable[[], list[str]]) -> WsgiApp:
    """``/health`` and ``/ready`` in front of the metrics app (which serves every other path)."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/health":
            return _json(start_response, "200 OK", {"status": "alive"})
        if path == "/ready":
            try:
                found = problems()
            except Exception as exc:  # a probe that fails is a problem, not a crash
                found = [f"readiness check failed: {type(exc).__name__}"]
            if found:
                return _json(start_response, "503 Service Unavailable", {"problems": found})
            return _json(start_response, "200 OK", {"status": "ready"})
        return metrics(environ, start_response)

    return app


def _json(start_response: Callable[..., Any], status: str, body: object) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds are not worth a log line."""
