"""When there are too few labelled series for accuracy figures to mean anything.

With a handful of series a bootstrap interval collapses to a point (``0.000 (0.000-0.000)``)
or spans everything; ``validate`` and ``performance`` then say so and show no intervals.
"""

from __future__ import annotations

MIN_SERIES = 20
"""Fewest labelled series for intervals worth printing."""
MIN_PER_CLASS = 5
"""Fewest series with, and without, the finding among them."""


def too_few_series(*, positives: int, negatives: int) -> str | None:
    """A one-line warning when the series are too few for intervals, else None.

    Args:
        positives: Labelled series with the finding.
        negatives: Labelled series without it.
    """
    if positives + negatives >= MIN_SERIES and min(positives, negatives) >= MIN_PER_CLASS:
        return None
    return (
        f"too few series: {positives + negatives} labelled ({positives} with the finding, "
        f"{negatives} without); intervals need at least {MIN_SERIES}, {MIN_PER_CLASS} of each, "
        "so none are shown and the figures are only indicative."
    )
