"""Slice-level figures with radiologists' slice labels: AUCs, localisation, patient bootstrap.

Pure numpy (no torch), shared by training, cross-validation and the serving-side commands.
Every slice has a patient, a 0/1 slice label (haemorrhage on that slice) and a score; every
patient has a 0/1 series label (the series truth). Intervals resample whole patients, so that
near-duplicate neighbouring slices of one patient do not narrow them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from model.aggregate import aggregate
from model.evaluation.metrics import percentile_intervals

LOCALISATION_K = 3
"""Slices the SR cites and the heat map shows: the top-k that localisation checks."""

SLICE_METRIC_NAMES: tuple[str, ...] = (
    "slice_auc",
    "slice_auc_within_positive",
    "series_auc_max",
    "series_auc_top_k_mean",
    "localisation_top_k",
)


def fast_auc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """ROC AUC by ranks (Mann-Whitney U, ties shared), NaN with one class; as sklearn's."""
    y = np.asarray(labels, dtype=np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    positives = int(y.sum())
    negatives = y.size - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranked = s[order]
    ranks = np.empty(s.size, dtype=np.float64)
    # Average rank of each run of tied scores.
    edges = np.flatnonzero(np.diff(ranked)) + 1
    starts = np.concatenate(([0], edges))
    ends = np.concatenate((edges, [s.size]))
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    u = ranks[y == 1].sum() - positives * (positives + 1) / 2.0
    return float(u / (positives * negatives))


@dataclass(frozen=True)
class PatientSlices:
    """One patient's slices in series order: labels, scores and the series label."""

    patient: str
    series_label: int
    slice_labels: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float64]


def group_slices(
    patients: Sequence[str],
    slice_labels: npt.ArrayLike,
    scores: npt.ArrayLike,
    series_labels: dict[str, int],
) -> list[PatientSlices]:
    """Slices grouped by patient (patients sorted, slices in their given order).

    Args:
        patients: The patient of each slice.
        slice_labels: 0/1 label of each slice.
        scores: Probability (or any score) of each slice.
        series_labels: 0/1 series truth of each patient.

    Raises:
        ValueError: If the lengths differ, a label is not 0/1, or a patient has no series label.
    """
    labels = np.asarray(slice_labels, dtype=np.int64).ravel()
    values = np.asarray(scores, dtype=np.float64).ravel()
    if not len(patients) == labels.size == values.size:
        raise ValueError(
            f"Need one patient, label and score per slice; got {len(patients)}, "
            f"{labels.size} and {values.size}."
        )
    if labels.size and not np.isin(labels, (0, 1)).all():
        raise ValueError("Slice labels must be 0 or 1.")
    index: dict[str, list[int]] = {}
    for i, patient in enumerate(patients):
        index.setdefault(patient, []).append(i)
    missing = sorted(set(index) - set(series_labels))
    if missing:
        raise ValueError(f"No series label for the patients {missing[:5]}.")
    return [
        PatientSlices(
            patient=name,
            series_label=int(series_labels[name]),
            slice_labels=labels[index[name]],
            scores=values[index[name]],
        )
        for name in sorted(index)
    ]


def localisation_hits(groups: Sequence[PatientSlices], *, k: int = LOCALISATION_K) -> list[bool]:
    """For each positive series with a labelled slice: do its top-k scored slices hit one?

    Ties in score rank the earlier slice first (as the classifier's ``top_slices``).
    """
    hits: list[bool] = []
    for group in groups:
        if group.series_label != 1 or not group.slice_labels.any():
            continue
        ranked = np.argsort(-group.scores, kind="stable")[:k]
        hits.append(bool(group.slice_labels[ranked].any()))
    return hits


def slice_figures(
    groups: Sequence[PatientSlices], *, series_k: int = 3, localisation_k: int = LOCALISATION_K
) -> dict[str, float]:
    """The figures of :data:`SLICE_METRIC_NAMES` (NaN where undefined) and the counts."""
    labels = np.concatenate([g.slice_labels for g in groups]) if groups else np.zeros(0)
    scores = np.concatenate([g.scores for g in groups]) if groups else np.zeros(0)
    positive = [g for g in groups if g.series_label == 1]
    within_labels = np.concatenate([g.slice_labels for g in positive]) if positive else labels[:0]
    within_scores = np.concatenate([g.scores for g in positive]) if positive else scores[:0]
    series_labels = np.array([g.series_label for g in groups], dtype=np.int64)
    series_max = np.array([aggregate(g.scores, rule="max") for g in groups])
    series_top = np.array([aggregate(g.scores, rule="top_k_mean", k=series_k) for g in groups])
    hits = localisation_hits(groups, k=localisation_k)
    return {
        "slice_auc": fast_auc(labels, scores),
        "slice_auc_within_positive": fast_auc(within_labels, within_scores),
        "series_auc_max": fast_auc(series_labels, series_max),
        "series_auc_top_k_mean": fast_auc(series_labels, series_top),
        "localisation_top_k": float(np.mean(hits)) if hits else float("nan"),
        "slices": float(labels.size),
        "positive_slices": float(labels.sum()),
        "series": float(len(groups)),
        "positive_series": float(series_labels.sum()),
        "localised_series": float(len(hits)),
    }


def slice_report(
    groups: Sequence[PatientSlices],
    *,
    series_k: int = 3,
    localisation_k: int = LOCALISATION_K,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, object]:
    """Figures and their percentile-bootstrap intervals, patients resampled.

    Returns:
        ``{"metrics": {...}, "ci95": {name: [low, high]}, "series_k": .., "localisation_k": ..}``.
    """
    metrics = slice_figures(groups, series_k=series_k, localisation_k=localisation_k)
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {name: [] for name in SLICE_METRIC_NAMES}
    for _ in range(n_resamples if groups else 0):
        picked = rng.integers(0, len(groups), size=len(groups))
        values = slice_figures(
            [groups[i] for i in picked], series_k=series_k, localisation_k=localisation_k
        )
        for name in SLICE_METRIC_NAMES:
            samples[name].append(values[name])
    intervals = percentile_intervals(samples, confidence=confidence)
    return {
        "metrics": metrics,
        "ci95": {name: list(bounds) for name, bounds in intervals.items()},
        "series_k": series_k,
        "localisation_k": localisation_k,
        "bootstrap": n_resamples,
    }


def format_interval(report: dict[str, object], name: str) -> str:
    """``0.812 (0.741-0.873)`` for one figure of a :func:`slice_report`."""
    metrics = report["metrics"]
    intervals = report.get("ci95", {})
    assert isinstance(metrics, dict) and isinstance(intervals, dict)
    value = metrics[name]
    if name not in intervals:
        return f"{value:.3f}"
    low, high = intervals[name]
    return f"{value:.3f} ({low:.3f}-{high:.3f})"
