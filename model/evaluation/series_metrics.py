"""Series-level operating-point metrics with bootstrap intervals, for site validation.

Sensitivity, specificity, PPV, NPV and ROC-AUC of series probabilities; built on
:mod:`model.evaluation.metrics` (same threshold rule: a score at or above it is positive).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from model.evaluation.metrics import binary_metrics, percentile_intervals

SERIES_METRIC_NAMES: tuple[str, ...] = ("sensitivity", "specificity", "ppv", "npv", "roc_auc")


def series_metrics(
    y_true: npt.ArrayLike, y_score: npt.ArrayLike, threshold: float
) -> dict[str, float]:
    """Sensitivity, specificity, PPV, NPV, ROC-AUC and the counts ``tn fp fn tp``.

    Undefined ratios (no positives, no negatives, ...) are NaN.
    """
    values = binary_metrics(y_true, y_score, threshold)
    tn, fn = values["tn"], values["fn"]
    return {
        "sensitivity": values["recall"],
        "specificity": values["specificity"],
        "ppv": values["precision"],
        "npv": float(tn / (tn + fn)) if tn + fn else float("nan"),
        "roc_auc": values["roc_auc"],
        **{key: values[key] for key in ("tn", "fp", "fn", "tp")},
    }


def series_metric_intervals(
    y_true: npt.ArrayLike,
    y_score: npt.ArrayLike,
    threshold: float,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of :data:`SERIES_METRIC_NAMES` (series resampled).

    Returns:
        ``{metric: (low, high)}``; NaN bounds where a metric is undefined in every resample.
    """
    labels = np.asarray(y_true, dtype=np.int64).ravel()
    scores = np.asarray(y_score, dtype=np.float64).ravel()
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {name: [] for name in SERIES_METRIC_NAMES}
    for _ in range(n_resamples if labels.size else 0):
        chosen = rng.integers(0, labels.size, size=labels.size)
        values = series_metrics(labels[chosen], scores[chosen], threshold)
        for name in SERIES_METRIC_NAMES:
            samples[name].append(values[name])
    return percentile_intervals(samples, confidence=confidence)
