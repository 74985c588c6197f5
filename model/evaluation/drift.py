"""Drift of the series probability distribution: reference histograms and the PSI."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from model.spec import ProbabilityDistribution

DEFAULT_BINS = 10
PSI_ALERT = 0.2
"""A population stability index above this is the usual sign of a real shift."""
_FLOOR = 1e-4
"""Smallest share per bin, so an empty bin does not make the index infinite."""


def probability_distribution(
    scores: npt.ArrayLike, *, bins: int = DEFAULT_BINS, source: str = ""
) -> ProbabilityDistribution:
    """Histogram of probabilities in ``bins`` equal bins over [0, 1]."""
    values = np.clip(np.asarray(scores, dtype=np.float64).ravel(), 0.0, 1.0)
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts, _ = np.histogram(values, bins=edges)
    total = max(int(values.size), 1)
    return ProbabilityDistribution(
        edges=[float(e) for e in edges],
        fractions=[float(c) / total for c in counts],
        count=int(values.size),
        source=source,
    )


def population_stability_index(reference: ProbabilityDistribution, scores: npt.ArrayLike) -> float:
    """PSI = sum((live - ref) * ln(live / ref)) over the reference's bins; NaN without scores."""
    values = np.clip(np.asarray(scores, dtype=np.float64).ravel(), 0.0, 1.0)
    if values.size == 0 or reference.count == 0:
        return float("nan")
    counts, _ = np.histogram(values, bins=np.asarray(reference.edges))
    live = np.maximum(counts / values.size, _FLOOR)
    ref = np.maximum(np.asarray(reference.fractions, dtype=np.float64), _FLOOR)
    return float(np.sum((live - ref) * np.log(live / ref)))
