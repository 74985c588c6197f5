"""Thin slices averaged into slabs of the thickness a model was trained on.

A model trained on 5 mm slices sees noise and partial structures in a 0.625 mm slice. Averaging
contiguous thin slices in HU (before windowing) along the slice normal gives the slab a 5 mm
reconstruction would have shown; the slabs are then classified as slices would be. A stack at or
above the training thickness is classified slice by slice, unchanged.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import pydicom

from model.dicom import SortedSeries

logger = logging.getLogger(__name__)

THICKNESS_TOLERANCE = 0.1
"""A stack within 10 % of the training thickness counts as at it: 4.5 mm for 5 mm is unchanged."""


def plan_slabs(positions: Sequence[float], *, spacing_mm: float, slab_mm: float) -> list[list[int]]:
    """Group sorted slices into contiguous slabs of ``slab_mm`` along the slice normal.

    Slab ``j`` holds the slices whose centre lies in ``[j, j + 1) * slab_mm`` measured from the
    lower edge of the first slice (its centre less half a spacing); a slab without slices (a gap
    in the stack) is left out, and the last slab may be thinner.

    Args:
        positions: Slice positions along the normal in mm, ascending.
        spacing_mm: The distance between neighbouring slices.
        slab_mm: The slab thickness.

    Returns:
        For each slab, bottom first, the ranks (indices into ``positions``) it averages.

    Raises:
        ValueError: No positions, positions not ascending, or a non-positive spacing or slab.
    """
    if not positions:
        raise ValueError("Cannot group an empty stack into slabs.")
    if spacing_mm <= 0 or slab_mm <= 0 or not math.isfinite(spacing_mm + slab_mm):
        raise ValueError(
            f"Spacing and slab thickness must be positive, got {spacing_mm} and {slab_mm}."
        )
    if any(high < low for low, high in pairwise(positions)):
        raise ValueError("Slice positions must be sorted in ascending order.")
    bottom = positions[0] - spacing_mm / 2.0
    slabs: dict[int, list[int]] = {}
    for rank, position in enumerate(positions):
        # A tiny allowance, so that a centre computed as 4.999999 mm lands where 5 mm would.
        slabs.setdefault(math.floor((position - bottom) / slab_mm + 1e-6), []).append(rank)
    return [slabs[key] for key in sorted(slabs)]


def stack_thickness_mm(
    datasets: Sequence[pydicom.Dataset], spacing_mm: float | None
) -> float | None:
    """The stack's slice thickness: the median Slice Thickness, else the median spacing.

    The study choice (``dicom_edge.facts``) reads a series' thickness the same way.
    """
    stated = [t for t in (_positive(ds.get("SliceThickness")) for ds in datasets) if t]
    return statistics.median(stated) if stated else spacing_mm


def _positive(value: object) -> float | None:
    try:
        number = float(str(value))
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


@dataclass(frozen=True)
class ClassifiedStack:
    """What the network classifies: the sorted slices, or slabs averaged from them.

    Attributes:
        units: Per classified image (slice or slab), bottom first, the input indices (into the
            datasets as given) it was made from; one each when nothing was averaged.
        slab_mm: The slab thickness when slices were averaged, else None.
        source_thickness_mm: The stack's own slice thickness, if known.
    """

    units: list[list[int]]
    slab_mm: float | None
    source_thickness_mm: float | None

    @property
    def averaged(self) -> bool:
        """Whether slices were averaged into slabs."""
        return self.slab_mm is not None

    def representative(self, unit: int) -> int:
        """The input index standing for a unit: its middle slice (the lower one of two)."""
        members = self.units[unit]
        return members[(len(members) - 1) // 2]

    def unit_of(self, index: int) -> int:
        """The unit an input index belongs to."""
        for unit, members in enumerate(self.units):
            if index in members:
                return unit
        raise ValueError(f"Input index {index} is not part of the stack.")

    def top_units(self, unit_probabilities: Sequence[float], k: int) -> list[int]:
        """The ``k`` most suspicious units, most suspicious first (ties: the lower one)."""
        ranked = sorted(range(len(self.units)), key=lambda u: (-float(unit_probabilities[u]), u))
        return ranked[: min(k, len(ranked))]


def classified_stack(series: SortedSeries, slab_mm: float | None) -> ClassifiedStack:
    """Decide, from the headers alone, whether a series is averaged into slabs, and how.

    A slab holds ``n = round(slab_mm / spacing)`` slices, so that slabs are even and as near
    ``slab_mm`` as whole slices allow (0.6 mm slices: 8 a slab, 4.8 mm); where ``n`` is 1 (a
    4 mm series at 4.2 mm spacing for a 5 mm model) nothing is averaged.

    Args:
        series: The series, sorted.
        slab_mm: The model's training thickness (its spec's); None never averages.

    Returns:
        The units the network classifies. Slices are averaged only when the stack is thinner
        than ``slab_mm`` (beyond :data:`THICKNESS_TOLERANCE`), its spacing is known (image
        positions, else a stated Slice Thickness taken as the spacing) and at least two slices
        fit a slab.
    """
    order = series.order
    single = [[index] for index in order]
    positions = series.positions
    spacings = [high - low for low, high in pairwise(positions or [])]
    spacing = statistics.median(spacings) if spacings else None
    thickness = stack_thickness_mm(series.datasets, spacing)
    unchanged = ClassifiedStack(units=single, slab_mm=None, source_thickness_mm=thickness)
    if slab_mm is None or thickness is None or thickness >= slab_mm * (1 - THICKNESS_TOLERANCE):
        return unchanged
    if positions is None or not spacing or spacing <= 0:
        # Sorted by Instance Number: the stated thickness stands for the spacing.
        spacing = thickness
        positions = [rank * thickness for rank in range(len(order))]
    per_slab = round(slab_mm / spacing)
    if per_slab < 2:
        return unchanged
    width = per_slab * spacing
    ranks = plan_slabs(positions, spacing_mm=spacing, slab_mm=width)
    units = [[order[rank] for rank in slab] for slab in ranks]
    logger.info(
        "Averaging %d slices of %.3g mm into %d slabs of %.3g mm",
        len(order),
        thickness,
        len(units),
        width,
    )
    return ClassifiedStack(units=units, slab_mm=round(width, 3), source_thickness_mm=thickness)


class SlabLoader:
    """HU of classified units ``lo`` to ``hi``: each slab the mean of its slices, in HU."""

    def __init__(self, series: SortedSeries, stack: ClassifiedStack) -> None:
        """Bind a sorted series to its units."""
        self._series = series
        self._stack = stack
        rank = {index: r for r, index in enumerate(series.order)}
        self._ranks = [(rank[members[0]], rank[members[-1]] + 1) for members in stack.units]

    def __call__(self, lo: int, hi: int) -> np.ndarray:
        """``(hi - lo, H, W)`` float32 HU."""
        if not self._stack.averaged:
            return self._series.hu(lo, hi)
        slabs = [
            self._series.hu(first, stop).mean(axis=0, dtype=np.float64).astype(np.float32)
            for first, stop in self._ranks[lo:hi]
        ]
        return np.stack(slabs)
