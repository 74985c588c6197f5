"""The facts of a series' axial stack that the study choice looks at, read from its headers."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from itertools import pairwise

from pydicom.dataset import Dataset

from dicom_edge.selection import _as_list, _first_text, _normal, _numbers
from dicom_edge.study_choice import SeriesFacts


def series_facts(series_instance_uid: str, stack: Sequence[Dataset]) -> SeriesFacts:
    """Describe one series by the slices that would be classified (its selected axial stack).

    Args:
        series_instance_uid: The series.
        stack: The selected instances' headers (:func:`dicom_edge.select_instances`), any order.

    Returns:
        Kernel, thickness (the median Slice Thickness; the median spacing where none is
        stated), coverage along the stack's normal, slice count and whether it is derived.
    """
    if not stack:
        raise ValueError(f"Series {series_instance_uid} has no slice to describe.")
    first = stack[0]
    positions = sorted(_position_along_normal(header) for header in stack)
    spacings = [high - low for low, high in pairwise(positions)]
    stated = [t for t in (_positive(header.get("SliceThickness")) for header in stack) if t]
    thickness = (
        statistics.median(stated) if stated else (statistics.median(spacings) if spacings else None)
    )
    coverage = (positions[-1] - positions[0]) + (thickness or 0.0)
    image_type = [str(value).upper() for value in _as_list(first.get("ImageType", []))]
    return SeriesFacts(
        series_instance_uid=series_instance_uid,
        series_number=_integer(first.get("SeriesNumber")),
        description=str(first.get("SeriesDescription") or "").strip(),
        kernel=_first_text(first.get("ConvolutionKernel")),
        slice_thickness_mm=None if thickness is None else round(thickness, 3),
        coverage_mm=round(coverage, 1),
        slices=len(stack),
        derived=bool(image_type) and image_type[0] == "DERIVED",
    )


def _position_along_normal(header: Dataset) -> float:
    orientation = _numbers(header.get("ImageOrientationPatient"), 6)
    position = _numbers(header.get("ImagePositionPatient"), 3)
    if orientation is None or position is None:  # the selection keeps only slices that have both
        raise ValueError("A selected slice has no orientation or position.")
    normal = _normal(orientation)
    return sum(n * p for n, p in zip(normal, position, strict=True))


def _positive(value: object) -> float | None:
    try:
        number = float(str(value))
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _integer(value: object) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(str(value))
    except ValueError:
        return None
