"""Binary classification metrics, bootstrap confidence intervals and threshold selection.

Pure numpy functions: labels are 0 (normal) / 1 (stroke), scores are probabilities of the
positive class, and a score at or above the threshold counts as positive.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sklearn.metrics import roc_auc_score

logger = logging.getLogger(__name__)

METRIC_NAMES: tuple[str, ...] = (
    "accuracy",
    "precision",
    "recall",
    "specificity",
    "f1",
    "roc_auc",
)


@dataclass(frozen=True)
class ConfusionCounts:
    """A 2x2 confusion matrix in the paper's order."""

    tn: int
    fp: int
    fn: int
    tp: int

    def as_dict(self) -> dict[str, int]:
        """The four counts keyed by their short names."""
        return {"tn": self.tn, "fp": self.fp, "fn": self.fn, "tp": self.tp}


def _as_labels(y_true: npt.ArrayLike) -> npt.NDArray[np.int64]:
    labels = np.asarray(y_true).astype(np.int64).ravel()
    if labels.size and not np.isin(labels, (0, 1)).all():
        raise ValueError("Labels must be 0 or 1.")
    return labels


def _as_scores(y_score: npt.ArrayLike, n: int) -> npt.NDArray[np.float64]:
    scores = np.asarray(y_score, dtype=np.float64).ravel()
    if scores.size != n:
        raise ValueError(f"Expected {n} scores to match the labels, got {scores.size}.")
    return scores


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else float("nan")


def confusion(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> ConfusionCounts:
    """Counts true/false negatives and positives of hard 0/1 predictions."""
    labels = _as_labels(y_true)
    predicted = _as_labels(y_pred)
    if predicted.size != labels.size:
        raise ValueError("Predictions and labels must have the same length.")
    return ConfusionCounts(
        tn=int(np.sum((labels == 0) & (predicted == 0))),
        fp=int(np.sum((labels == 0) & (predicted == 1))),
        fn=int(np.sum((labels == 1) & (predicted == 0))),
        tp=int(np.sum((labels == 1) & (predicted == 1))),
    )


def roc_auc(y_true: npt.ArrayLike, y_score: npt.ArrayLike) -> float:
    """Area under the ROC curve; NaN when only one class is present."""
    labels = _as_labels(y_true)
    scores = _as_scores(y_score, labels.size)
    if np.unique(labels).size < 2:
        return float("nan")
    return float(roc_auc_score(labels, scores))


def binary_metrics(
    y_true: npt.ArrayLike, y_score: npt.ArrayLike, threshold: float
) -> dict[str, float]:
    """Accuracy, precision, recall (sensitivity), specificity, F1, ROC-AUC and the counts.

    Args:
        y_true: 0/1 labels.
        y_score: Positive-class probabilities.
        threshold: Scores at or above it are called positive.

    Returns:
        A flat dict of floats; the counts are under ``tn``, ``fp``, ``fn``, ``tp``.
    """
    labels = _as_labels(y_true)
    scores = _as_scores(y_score, labels.size)
    counts = confusion(labels, (scores >= threshold).astype(np.int64))
    precision = _ratio(counts.tp, counts.tp + counts.fp)
    recall = _ratio(counts.tp, counts.tp + counts.fn)
    f1 = _ratio(2 * counts.tp, 2 * counts.tp + counts.fp + counts.fn)
    result = {
        "accuracy": _ratio(counts.tp + counts.tn, labels.size),
        "precision": precision,
        "recall": recall,
        "specificity": _ratio(counts.tn, counts.tn + counts.fp),
        "f1": f1,
        "roc_auc": roc_auc(labels, scores),
    }
    result.update({key: float(value) for key, value in counts.as_dict().items()})
    return result


def bootstrap_ci(
    y_true: npt.ArrayLike,
    y_score: npt.ArrayLike,
    threshold: float,
    *,
    groups: Sequence[str] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap confidence intervals of :data:`METRIC_NAMES`.

    Args:
        y_true: 0/1 labels.
        y_score: Positive-class probabilities.
        threshold: Decision threshold.
        groups: Optional group (patient) of each item; whole groups are resampled together,
            so that near-duplicate slices of one patient do not narrow the interval.
        n_resamples: Number of bootstrap resamples.
        seed: Seed of the resampling generator.
        confidence: Two-sided coverage of the interval.

    Returns:
        ``{metric: (low, high)}``; NaN bounds where a metric is undefined in every resample.
    """
    labels = _as_labels(y_true)
    scores = _as_scores(y_score, labels.size)
    if groups is None:
        members = [np.array([i]) for i in range(labels.size)]
    else:
        if len(groups) != labels.size:
            raise ValueError("There must be one group per label.")
        index: dict[str, list[int]] = {}
        for i, group in enumerate(groups):
            index.setdefault(group, []).append(i)
        members = [np.array(items) for items in index.values()]
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {name: [] for name in METRIC_NAMES}
    for _ in range(n_resamples if members else 0):
        picked = rng.integers(0, len(members), size=len(members))
        chosen = np.concatenate([members[i] for i in picked])
        values = binary_metrics(labels[chosen], scores[chosen], threshold)
        for name in METRIC_NAMES:
            samples[name].append(values[name])
    return percentile_intervals(samples, confidence=confidence)


def percentile_intervals(
    samples: dict[str, list[float]], *, confidence: float
) -> dict[str, tuple[float, float]]:
    """Two-sided percentile intervals of each metric's resampled values, NaNs left out.

    Returns:
        ``{metric: (low, high)}``; NaN bounds where a metric has no finite value.
    """
    tail = (1.0 - confidence) / 2.0 * 100.0
    intervals: dict[str, tuple[float, float]] = {}
    for name, values_list in samples.items():
        finite = np.asarray(values_list, dtype=np.float64)
        finite = finite[np.isfinite(finite)]
        if finite.size == 0:
            intervals[name] = (float("nan"), float("nan"))
        else:
            low, high = np.percentile(finite, [tail, 100.0 - tail])
            intervals[name] = (float(low), float(high))
    return intervals


def threshold_for_sensitivity(
    y_true: npt.ArrayLike, y_score: npt.ArrayLike, target: float = 0.95
) -> float:
    """The highest threshold whose sensitivity is at least ``target``.

    Args:
        y_true: 0/1 labels; at least one positive.
        y_score: Positive-class probabilities.
        target: Required sensitivity (recall), between 0 and 1.

    Returns:
        One of the positive scores, so that ``score >= threshold`` reaches the target.

    Raises:
        ValueError: If there is no positive label or the target is out of range.
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"The target sensitivity must lie in (0, 1], got {target}.")
    labels = _as_labels(y_true)
    scores = _as_scores(y_score, labels.size)
    positives = np.sort(scores[labels == 1])[::-1]
    if positives.size == 0:
        raise ValueError("A threshold for sensitivity needs at least one positive label.")
    # Calling the n highest positive scores positive gives sensitivity n / P.
    needed = int(np.ceil(target * positives.size - 1e-9))
    return float(positives[max(needed, 1) - 1])
