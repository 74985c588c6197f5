"""Prometheus metrics of the listener process, served on ``listener.metrics_port``.

The listener's own process keeps its samples in memory. When ``PROMETHEUS_MULTIPROC_DIR`` is
set before this module is imported (a prefork worker in the same process tree, see
:mod:`worker.metrics`), they are written there and the port serves every process's samples.
Receiving processes started with ``listener.processes > 1`` always write theirs to files
(:func:`prepare_children_dir`, :func:`use_children_dir`), and the port adds them to this
process's samples. Never imports torch.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.samples import Sample

import compat

if TYPE_CHECKING:
    from pydicom import Dataset
    from pynetdicom.events import Event


log = logging.getLogger(__name__)

P = ParamSpec("P")

#: The registry of this module's metrics (tests read it; the metrics port serves it).
REGISTRY = CollectorRegistry(auto_describe=True)

INSTANCES_RECEIVED = Counter(
    "stroke_triage_listener_instances_received",
    "C-STORE requests answered, by answer (success or the refusal's status name).",
    ["status"],
    registry=REGISTRY,
)
STORE_SECONDS = Histogram(
    "stroke_triage_listener_store_seconds",
    "Time to store one instance and answer its C-STORE.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)
CONNECTIONS_OPEN = Gauge(
    "stroke_triage_listener_associations_open",
    "DICOM connections (associations) open now.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
ASSOCIATIONS_ACCEPTED = Counter(
    "stroke_triage_listener_associations_accepted",
    "Associations accepted.",
    registry=REGISTRY,
)
ASSOCIATIONS_REFUSED = Counter(
    "stroke_triage_listener_associations_refused",
    "Associations rejected, by reason.",
    ["reason"],
    registry=REGISTRY,
)
SERIES_COMPLETED = Counter(
    "stroke_triage_listener_series_completed",
    "Series judged complete and given a job.",
    registry=REGISTRY,
)
SERIES_SKIPPED = Counter(
    "stroke_triage_listener_series_skipped",
    "Series judged complete but not classified, by reason.",
    ["reason"],
    registry=REGISTRY,
)

#: Every metric name this module exports (the Grafana dashboard test checks against them).
METRIC_NAMES = frozenset(
    {
        "stroke_triage_listener_instances_received_total",
        "stroke_triage_listener_store_seconds_bucket",
        "stroke_triage_listener_store_seconds_count",
        "stroke_triage_listener_store_seconds_sum",
        "stroke_triage_listener_associations_open",
        "stroke_triage_listener_associations_accepted_total",
        "stroke_triage_listener_associations_refused_total",
        "stroke_triage_listener_series_completed_total",
        "stroke_triage_listener_series_skipped_total",
    }
)


def reason_label(reason: str) -> str:
    """A bounded label value for a free-text reason: numbers become N, details are cut."""
    return re.sub(r"\d+", "N", reason.split(":", 1)[0]).strip()[:60] or "unknown"


def timed_store(
    handler: Callable[Concatenate[Event, P], int | Dataset],
) -> Callable[Concatenate[Event, P], int | Dataset]:
    """Wrap the C-STORE handler: count each answer by status and time it."""

    def timed(event: Event, /, *args: P.args, **kwargs: P.kwargs) -> int | Dataset:
        start = time.perf_counter()
        answer = handler(event, *args, **kwargs)
        STORE_SECONDS.observe(time.perf_counter() - start)
        INSTANCES_RECEIVED.labels(status=_status_name(answer)).inc()
        return answer

    return timed


def _status_name(answer: Any) -> str:
    from listener.status import StoreStatus

    code = int(answer) if isinstance(answer, int) else int(answer.Status)
    try:
        return StoreStatus(code).name.lower()
    except ValueError:
        return f"0x{code:04X}"


def connection_opened(event: Event) -> None:
    """EVT_CONN_OPEN."""
    CONNECTIONS_OPEN.inc()


def connection_closed(event: Event) -> None:
    """EVT_CONN_CLOSE."""
    CONNECTIONS_OPEN.dec()


def association_accepted(event: Event) -> None:
    """EVT_ACCEPTED."""
    ASSOCIATIONS_ACCEPTED.inc()


def association_refused(*, reason: str, transient: bool) -> None:
    """Count a rejected association; a transient (resources) rejection has one label."""
    reason = "out of resources" if transient else reason_label(reason)
    ASSOCIATIONS_REFUSED.labels(reason=reason).inc()


def series_completed() -> None:
    """A series got a job."""
    SERIES_COMPLETED.inc()


def series_skipped(reason: str) -> None:
    """A series was judged complete but is not classified."""
    SERIES_SKIPPED.labels(reason=reason_label(reason)).inc()


ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Where this process's receiving children write their samples ("dir"), when it has children.
_CHILDREN: dict[str, Path] = {}


def _in_files() -> bool:
    """Whether this process's own samples are written to PROMETHEUS_MULTIPROC_DIR."""
    return compat.prometheus_writes_to_files()


def prepare_children_dir(default: Path) -> Path:
    """The folder where receiving children write their samples (call before starting them).

    The folder this process writes to already if it does, else ``default``, emptied.
    """
    if _in_files() and os.environ.get(ENV):
        _CHILDREN.pop("dir", None)  # the usual multiprocess collector already reads them
        return Path(os.environ[ENV])
    shutil.rmtree(default, ignore_errors=True)
    default.mkdir(parents=True)
    _CHILDREN["dir"] = default
    return default


def use_children_dir(directory: Path) -> None:
    """In a receiving child: write this process's samples to ``directory``.

    Works because the fork server that starts the children imported prometheus_client with
    :data:`ENV` set (see ``_environment`` in :mod:`listener.server`), and file-backed values
    open their file again, under the variable's current value, in each new process.
    """
    os.environ[ENV] = str(directory)
    if not _in_files():
        log.warning("Metrics of receiving process %d stay in memory (not served)", os.getpid())


def child_died(pid: int) -> None:
    """Drop a dead child's live gauges (its counters stay: they were counted)."""
    directory = _CHILDREN.get("dir") or (Path(os.environ[ENV]) if os.environ.get(ENV) else None)
    if directory is not None:
        mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]


class _WithChildren:
    """This process's in-memory samples plus its children's, summed per sample."""

    def __init__(self, registry: CollectorRegistry, directory: Path) -> None:
        self._registry = registry
        self._children = MultiProcessCollector(None, path=str(directory))  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        sums: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        children = self._children.collect()  # type: ignore[no-untyped-call]
        for family in [*self._registry.collect(), *children]:
            families.setdefault(family.name, Metric(family.name, family.documentation, family.type))
            values = sums.setdefault(family.name, {})
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if sample.name.endswith("_created"):
                    values[key] = min(values.get(key, sample.value), sample.value)
                else:
                    values[key] = values.get(key, 0.0) + sample.value
        for name, family in families.items():
            family.samples = [
                Sample(sample_name, dict(labels), value)
                for (sample_name, labels), value in sums[name].items()
            ]
            yield family


def serving_registry(registry: CollectorRegistry) -> CollectorRegistry:
    """What the metrics port serves: every process's samples.

    ``registry`` alone; or, when PROMETHEUS_MULTIPROC_DIR was set before import, every
    process's files; or ``registry`` plus the receiving children's files.
    """
    if _in_files() and os.environ.get(ENV):
        merged = CollectorRegistry()
        MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return merged
    directory = _CHILDREN.get("dir")
    if directory is None:
        return registry
    merged = CollectorRegistry()
    merged.register(_WithChildren(registry, directory))
    return merged


def serve_metrics(*, host: str, port: int) -> Callable[[], None] | None:
    """Serve the listener's metrics on ``host:port`` in a daemon thread; None when port is 0.

    Returns:
        A function that stops the server.
    """
    if port == 0:
        return None
    try:
        server, thread = start_http_server(port, addr=host, registry=serving_registry(REGISTRY))
    except OSError as exc:  # a taken port must not stop the service itself
        log.error("Listener metrics cannot listen on %s:%d: %s", host, port, exc)
        return None
    log.info("Listener metrics on http://%s:%d/metrics", host, port)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop
