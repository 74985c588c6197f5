"""`stroke-triage performance`: live accuracy per model version, and drift.

Every model version (live, shadow, challenger) is scored side by side on the SAME series: those
with an outcome that every version shown has scored. Drift is the population stability index
(PSI) of each version's live probabilities against the distribution its spec keeps from
validation (``calibrate`` writes it), with the mix of manufacturers, kernels and slice
thicknesses seen; a PSI above 0.2 is flagged.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

import db.performance
from db.engine import SessionFactory, check_revision, create_engine_for, make_session_factory
from model.evaluation.drift import PSI_ALERT, population_stability_index
from model.evaluation.series_metrics import series_metric_intervals, series_metrics
from model.spec import ModelSpec
from validation.sample_size import too_few_series

log = logging.getLogger(__name__)

SPEC_FILE = "spec.json"
"""The spec's file in a checkpoint folder (``model.checkpoint.SPEC_FILE``, a test checks).

Not imported from there: ``model.checkpoint`` loads torch and timm, 3 of the command's 8 s."""


@dataclass
class ModelPerformance:
    """One model version's live numbers."""

    model_name: str
    model_version: str
    model_sha256: str
    roles: list[str]
    threshold: float
    scored: int
    with_outcome: int
    without_outcome: int
    compared: int
    metrics: dict[str, float] = field(default_factory=dict)
    intervals_95: dict[str, tuple[float, float]] = field(default_factory=dict)
    psi: float | None = None
    drift: bool = False
    warning: str | None = None
    """Set when the compared series are too few for intervals (then none are computed)."""


@dataclass(frozen=True)
class PerformanceReport:
    """Per model version, and the acquisition mix of the series scored."""

    models: list[ModelPerformance]
    manufacturers: dict[str, int]
    kernels: dict[str, int]
    slice_thicknesses: dict[str, int]


def reference_specs(checkpoints: Sequence[Path | None]) -> list[ModelSpec]:
    """The specs of the configured checkpoints (live and challenger) that can be read."""
    specs = []
    for directory in checkpoints:
        if directory is None:
            continue
        try:
            specs.append(ModelSpec.from_json((directory / SPEC_FILE).read_bytes()))
        except (OSError, ValueError) as exc:
            log.warning("The spec in %s cannot be read for drift: %s", directory, exc)
    return specs


def measure_performance(
    sessions: SessionFactory,
    *,
    specs: Sequence[ModelSpec],
    since: datetime | None = None,
    model_version: str | None = None,
    n_resamples: int = 1000,
) -> PerformanceReport:
    """Compute the report from the database (read only)."""
    with sessions() as session:
        rows = db.performance.scored_series(
            session=session, since=since, model_version=model_version
        )
    groups: dict[tuple[str, str, str], list[db.performance.ScoredSeries]] = {}
    for row in rows:
        groups.setdefault((row.model_name, row.model_version, row.model_sha256), []).append(row)
    with_outcome = [
        {r.series_instance_uid for r in members if r.stroke is not None}
        for members in groups.values()
    ]
    common = set.intersection(*with_outcome) if with_outcome else set()
    models = []
    for (name, version, sha256), members in sorted(groups.items(), key=lambda g: g[0][1]):
        by_series = {r.series_instance_uid: r for r in members}
        threshold = max(members, key=lambda r: r.created_at).threshold
        compared = [by_series[uid] for uid in sorted(common)]
        labels = np.array([int(bool(r.stroke)) for r in compared], dtype=np.int64)
        scores = np.array([r.probability for r in compared], dtype=np.float64)
        known = sum(r.stroke is not None for r in by_series.values())
        performance = ModelPerformance(
            model_name=name,
            model_version=version,
            model_sha256=sha256,
            roles=sorted({r.role for r in members}),
            threshold=threshold,
            scored=len(by_series),
            with_outcome=known,
            without_outcome=len(by_series) - known,
            compared=len(compared),
        )
        if compared:
            values = series_metrics(labels, scores, threshold)
            performance.metrics = {
                k: values[k] for k in ("sensitivity", "specificity", "ppv", "npv", "roc_auc")
            }
            positives = int(labels.sum())
            performance.warning = too_few_series(
                positives=positives, negatives=len(compared) - positives
            )
            if performance.warning is None:
                performance.intervals_95 = series_metric_intervals(
                    labels, scores, threshold, n_resamples=n_resamples
                )
        spec = next(
            (
                s
                for s in specs
                if (s.name, s.version) == (name, version) and s.reference_distribution is not None
            ),
            None,
        )
        if spec is not None and spec.reference_distribution is not None:
            performance.psi = population_stability_index(
                spec.reference_distribution, [r.probability for r in by_series.values()]
            )
            performance.drift = bool(np.isfinite(performance.psi) and performance.psi > PSI_ALERT)
        models.append(performance)
    series = {r.series_instance_uid: r for r in rows}.values()
    return PerformanceReport(
        models=models,
        manufacturers=dict(Counter(r.manufacturer or "unknown" for r in series)),
        kernels=dict(Counter(r.convolution_kernel or "unknown" for r in series)),
        slice_thicknesses=dict(
            Counter(
                "unknown" if r.slice_thickness_mm is None else f"{r.slice_thickness_mm:g} mm"
                for r in series
            )
        ),
    )


def _cell(value: float | None, interval: tuple[float, float] | None) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    if interval is None or not all(np.isfinite(interval)):
        return f"{value:.3f}"
    return f"{value:.3f} ({interval[0]:.3f}-{interval[1]:.3f})"


def render_performance(report: PerformanceReport) -> str:
    """The report as text: one line per model version, then drift and the acquisition mix."""
    if not report.models:
        return "No results in this period."
    lines = [
        "model version | roles | scored | with outcome | without | compared | sensitivity | "
        "specificity | PPV | AUC | PSI",
    ]
    for m in report.models:
        cells = [
            _cell(m.metrics.get(k), m.intervals_95.get(k))
            for k in ("sensitivity", "specificity", "ppv", "roc_auc")
        ]
        psi = "n/a (no reference in spec)" if m.psi is None else f"{m.psi:.3f}"
        if m.drift:
            psi += f" DRIFT (> {PSI_ALERT})"
        lines.append(
            " | ".join(
                [
                    f"{m.model_version} ({m.model_sha256[:12]})",
                    "+".join(m.roles),
                    str(m.scored),
                    str(m.with_outcome),
                    str(m.without_outcome),
                    str(m.compared),
                    *cells,
                    psi,
                ]
            )
        )
    lines.append("Metrics compare every model on the same series (95 % bootstrap intervals).")
    lines += [f"WARNING {m.model_version}: {m.warning}" for m in report.models if m.warning]

    def mix(title: str, counts: dict[str, int]) -> str:
        return f"{title}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))

    lines += [
        mix("manufacturers", report.manufacturers),
        mix("kernels", report.kernels),
        mix("slice thickness", report.slice_thicknesses),
    ]
    return "\n".join(lines)


def print_performance(
    database_url: str,
    *,
    checkpoints: Sequence[Path | None],
    since: datetime | None,
    model_version: str | None,
) -> int:
    """`stroke-triage performance`: print the report."""
    engine = create_engine_for(database_url)
    try:
        check_revision(engine)  # read only: never migrates
        report = measure_performance(
            make_session_factory(engine),
            specs=reference_specs(checkpoints),
            since=since,
            model_version=model_version,
        )
    finally:
        engine.dispose()
    print(render_performance(report))
    return 0
