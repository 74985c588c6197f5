"""Which instances of a series are classified: the axial CT slices of the head, as one stack.

The listener decides with it whether a complete series becomes a job, and the worker picks the
job's slices with it, so both always agree. It looks at every instance of the series, never at
one: a series may mix axial slices with reformats or localizers, in any order.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from pydicom.dataset import Dataset
from pydicom.uid import UID

from dicom_edge.kernels import KernelFamily, kernel_family, normalise
from dicom_edge.sop_classes import CLASSIFIABLE_SOP_CLASSES, MULTI_FRAME_CT_SOP_CLASSES

HEAD_WORDS = ("HEAD", "BRAIN", "SKULL", "CEREBR", "NEURO", "CRANI", "STROKE")
AXIAL_TOLERANCE = 0.8  # |normal . z| above this counts as axial (gantry tilt up to ~35 degrees)
ORIENTATION_TOLERANCE = 0.01  # direction cosines of one stack agree to this
POSITION_TOLERANCE_MM = 0.01  # two slices closer than this along the normal share a position

NOT_AXIAL = "not an axial series (reformat or unknown orientation)"
ANOTHER_STACK = "in another stack of this series"


@dataclass(frozen=True)
class SeriesSelection:
    """The decision for one series: classify the selected instances, or skip it and say why."""

    classify: bool
    reason: str
    selected: tuple[int, ...] = ()
    """Indices (into the headers given) of the instances to classify, in the given order."""


def select_instances(headers: Sequence[Dataset], *, min_slices: int) -> SeriesSelection:
    """Decide from every instance's header which instances of a series to classify.

    Instances that are not single-frame axial CT slices (other SOP classes, localizers,
    reformats) are left out. The rest are classified when they form one consistent stack (one
    orientation, one size, one slice per position) of the head, with at least ``min_slices``
    slices; an explicit Body Part Examined other than the head wins over words in descriptions.
    A series that holds several reconstructions (two orientations, sizes, kernels or slice
    thicknesses) is split into them, and one is read (:func:`_stacks`).

    Args:
        headers: The headers of all instances of the series (pixel data not needed).
        min_slices: Fewest axial slices worth classifying.

    Returns:
        The decision, the reason, and the selected instances.
    """
    if not headers:
        return SeriesSelection(False, "no readable instance")
    candidates: list[int] = []
    left_out: Counter[str] = Counter()
    for index, header in enumerate(headers):
        reason = _left_out_because(header)
        if reason is None:
            candidates.append(index)
        else:
            left_out[reason] += 1
    if not candidates:
        return SeriesSelection(False, left_out.most_common(1)[0][0])
    problem = _not_head([headers[index] for index in candidates])
    if problem is not None:
        return SeriesSelection(False, problem)
    stacks = _stacks(headers, candidates)
    if isinstance(stacks, str):
        return SeriesSelection(False, stacks)
    candidates, *rest = stacks
    for other in rest:
        left_out[ANOTHER_STACK] += len(other)
    if len(candidates) < min_slices:
        return SeriesSelection(
            False, f"{len(candidates)} axial slices, fewer than the {min_slices} needed"
        )
    reason = "axial head CT"
    if left_out:
        others = ", ".join(f"{count} {why}" for why, count in sorted(left_out.items()))
        reason += f": {len(candidates)} of {len(headers)} instances (left out: {others})"
    return SeriesSelection(True, reason, tuple(candidates))


def _left_out_because(header: Dataset) -> str | None:
    """Why one instance is not an axial CT slice, or None when it is one."""
    sop_class = UID(str(header.get("SOPClassUID", "")))
    if sop_class in MULTI_FRAME_CT_SOP_CLASSES:
        # Stored, but the classifier reads single-frame slices only (for now).
        kind = sop_class.name.removesuffix(" Image Storage")
        return f"multi-frame {kind} is stored but not classified"
    if sop_class not in CLASSIFIABLE_SOP_CLASSES:
        name = sop_class.name if sop_class else "unknown"
        return f"SOP class {name} is not a CT image"
    if str(header.get("Modality", "")).upper() != "CT":
        return f"modality {header.get('Modality', '')!s} is not CT"
    image_type = [str(value).upper() for value in _as_list(header.get("ImageType", []))]
    if "LOCALIZER" in image_type or "SCOUT" in image_type:
        return "localizer (scout) image"
    orientation = _numbers(header.get("ImageOrientationPatient"), 6)
    if orientation is None or abs(_normal(orientation)[2]) < AXIAL_TOLERANCE:
        return NOT_AXIAL
    if _numbers(header.get("ImagePositionPatient"), 3) is None:
        return "no Image Position (Patient)"
    return None


def _stacks(headers: Sequence[Dataset], candidates: list[int]) -> list[list[int]] | str:
    """The axial slices as stacks, the one to read first; or why they form no stack.

    Slices that form one stack are that stack. Otherwise they are grouped by reconstruction
    (orientation, size, Convolution Kernel, Slice Thickness), and the groups that each form
    one stack are ranked: a kernel that :data:`dicom_edge.kernels.KERNEL_TABLE` knows as soft
    tissue, then one it does not know, then the others (bone, lung, sharp); then more slices;
    then the lower Instance Number. The table alone decides, not the site's patterns, so that
    the worker (which has no listener settings) reads the very stack the listener described.
    Repeated positions within one reconstruction (a scan repeated in the same series) are not
    split: which one to read is not for us to guess.

    Returns:
        The stacks (indices into ``headers``, in the given order), the one to read first; or
        the reason they form none (that of the whole set of slices).
    """
    problem = _not_one_stack([headers[index] for index in candidates])
    if problem is None:
        return [candidates]
    groups: dict[tuple[object, ...], list[int]] = {}
    orientations: list[list[float]] = []
    for index in candidates:
        groups.setdefault(_reconstruction_key(headers[index], orientations), []).append(index)
    stacks = [
        group
        for group in groups.values()
        if _not_one_stack([headers[index] for index in group]) is None
    ]
    if len(groups) < 2 or not stacks:
        return problem
    stacks.sort(key=lambda group: _stack_rank(headers, group))
    return stacks


def _reconstruction_key(header: Dataset, orientations: list[list[float]]) -> tuple[object, ...]:
    """Which reconstruction a slice belongs to; ``orientations`` collects those seen so far."""
    orientation = _numbers(header.get("ImageOrientationPatient"), 6)
    assert orientation is not None  # checked per instance
    same = (
        number
        for number, seen in enumerate(orientations)
        if max(abs(a - b) for a, b in zip(orientation, seen, strict=True)) <= ORIENTATION_TOLERANCE
    )
    number = next(same, len(orientations))
    if number == len(orientations):
        orientations.append(orientation)
    thickness = _numbers(header.get("SliceThickness"), 1)
    return (
        number,
        header.get("Rows"),
        header.get("Columns"),
        normalise(_first_text(header.get("ConvolutionKernel")) or ""),
        None if thickness is None else round(thickness[0], 2),
    )


def _stack_rank(headers: Sequence[Dataset], stack: list[int]) -> tuple[int, int, int, int]:
    family = kernel_family(_first_text(headers[stack[0]].get("ConvolutionKernel")))
    readable = 0 if family is KernelFamily.SOFT else 1 if family is None else 2
    numbers = [_numbers(headers[index].get("InstanceNumber"), 1) for index in stack]
    first = min((int(number[0]) for number in numbers if number is not None), default=2**31)
    return (readable, -len(stack), first, stack[0])


def _first_text(value: object) -> str | None:
    """The first value of a text attribute that may hold several (None when absent or empty)."""
    values = [str(item).strip() for item in _as_list(value) if item is not None]
    first = values[0] if values else ""
    return first or None


def _not_head(stack: Sequence[Dataset]) -> str | None:
    """Why the slices are not of the head, or None when they are (or nothing says so)."""
    body_parts = {str(header.get("BodyPartExamined") or "").strip().upper() for header in stack}
    body_parts.discard("")
    # An explicit body part is the scanner's own statement: it wins over free-text words.
    others = sorted(part for part in body_parts if not _names_head(part))
    if others:
        return f"body part {', '.join(others)} is not the head or brain"
    # Many scanners leave the body part empty: such a series is classified, whatever its
    # descriptions say (words there decide nothing against an explicit body part either).
    return None


def _not_one_stack(stack: Sequence[Dataset]) -> str | None:
    """Why the axial slices do not form one stack, or None when they do."""
    first = stack[0]
    reference = _numbers(first.get("ImageOrientationPatient"), 6)
    assert reference is not None  # checked per instance
    size = (first.get("Rows"), first.get("Columns"))
    normal = _normal(reference)
    positions: list[float] = []
    for header in stack:
        orientation = _numbers(header.get("ImageOrientationPatient"), 6)
        assert orientation is not None
        if max(abs(a - b) for a, b in zip(orientation, reference, strict=True)) > (
            ORIENTATION_TOLERANCE
        ):
            return "axial slices with different orientations (more than one stack)"
        if (header.get("Rows"), header.get("Columns")) != size:
            return "axial slices of different sizes (more than one stack)"
        position = _numbers(header.get("ImagePositionPatient"), 3)
        assert position is not None
        positions.append(sum(n * p for n, p in zip(normal, position, strict=True)))
    positions.sort()
    shared = sum(1 for low, high in pairwise(positions) if high - low < POSITION_TOLERANCE_MM)
    if shared:
        return f"axial slices that share a position ({shared} repeated: more than one stack)"
    return None


def _names_head(text: str) -> bool:
    return any(word in text for word in HEAD_WORDS)


def _as_list(value: object) -> list[object]:
    if isinstance(value, str | bytes):
        return [value]
    if isinstance(value, Sequence):
        return list(value)
    return [value]


def _numbers(value: object, count: int) -> list[float] | None:
    if value is None or isinstance(value, str | bytes):
        return None
    try:
        numbers = [float(item) for item in _as_list(value)]  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if len(numbers) != count or not all(math.isfinite(n) for n in numbers):
        return None
    return numbers


def _normal(orientation: Sequence[float]) -> tuple[float, float, float]:
    row, column = orientation[:3], orientation[3:]
    return (
        row[1] * column[2] - row[2] * column[1],
        row[2] * column[0] - row[0] * column[2],
        row[0] * column[1] - row[1] * column[0],
    )
