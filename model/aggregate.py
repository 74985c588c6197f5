"""Series-level aggregation of slice probabilities."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

AGGREGATION_RULES = ("top_k_mean", "mean", "max")


def aggregate(probabilities: Sequence[float] | np.ndarray, *, rule: str, k: int = 5) -> float:
    """Combine slice probabilities into one series probability.

    Args:
        probabilities: One probability per slice.
        rule: ``"top_k_mean"`` (mean of the ``min(k, n)`` largest), ``"mean"`` or ``"max"``.
        k: How many slices ``top_k_mean`` averages.

    Returns:
        The series probability.

    Raises:
        ValueError: If there are no probabilities, one is not finite, or the rule is unknown.
    """
    values = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("Cannot aggregate an empty list of slice probabilities.")
    if not np.all(np.isfinite(values)):
        raise ValueError("Slice probabilities must all be finite numbers.")
    if rule == "top_k_mean":
        if k < 1:
            raise ValueError(f"The top_k_mean rule needs k >= 1, got k={k}.")
        top = np.sort(values)[::-1][: min(k, values.size)]
        return float(top.mean())
    if rule == "mean":
        return float(values.mean())
    if rule == "max":
        return float(values.max())
    raise ValueError(f"Unknown aggregation rule {rule!r}; expected one of {AGGREGATION_RULES}.")
