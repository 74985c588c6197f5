"""Which series of a study the model reads: one per study, and why each other one is not.

A head CT study arrives as several series: the brain-kernel axial series, the same slices with
a bone kernel, a thin-slice series, reformats, a localizer. Classifying each would put several
reports (and alerts) into one study, some of them on images the model was never made for. Of
the series that can be classified at all (:func:`dicom_edge.select_instances`), the one the
model was made for is chosen, by these criteria in turn:

1. a soft-tissue (brain) reconstruction: a bone, lung or sharp kernel is never read;
2. the whole head covered (at least :data:`FULL_HEAD_MM` along the stack);
3. a kernel known as soft tissue before one that is not known;
4. the slice thickness nearest the model's (to :data:`THICKNESS_STEP_MM`);
5. more of the head covered (between series that do not cover all of it);
6. original images before derived (reformatted) ones;
7. more slices;
8. the series already chosen (a resend as good as it changes nothing), then the lower series
   number, then the Series Instance UID.

Pure and standard library only: the listener judges with it and the tests call it directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from dicom_edge.kernels import KernelFamily, Reconstruction, reconstruction

FULL_HEAD_MM = 100.0
"""A stack at least this long (first to last slice, plus one thickness) covers the whole head."""
THICKNESS_STEP_MM = 0.1
"""Slice thicknesses this close to each other are as near to the model's."""

CHOSEN_PREFIX = "chosen"
PASSED_OVER_PREFIX = "another series of this study was chosen"
NOTHING_READABLE = "the model reads soft-tissue (brain) reconstructions only"


@dataclass(frozen=True)
class SeriesFacts:
    """What the choice looks at in one classifiable series (its axial stack).

    Attributes:
        series_instance_uid: The series.
        series_number: Series Number, if stated.
        description: Series Description ("" when absent).
        kernel: Convolution Kernel (first value), if stated.
        slice_thickness_mm: Slice Thickness (the median), else the spacing of the slices.
        coverage_mm: Length of the stack along its normal, plus one slice thickness.
        slices: Axial slices in the stack.
        derived: The images are derived (Image Type DERIVED: a reformat or a reconstruction of
            other images), not original.
    """

    series_instance_uid: str
    series_number: int | None
    description: str
    kernel: str | None
    slice_thickness_mm: float | None
    coverage_mm: float
    slices: int
    derived: bool = False

    def label(self) -> str:
        """``series 3 HEAD 5mm BONE``: how reasons and reports name it."""
        number = "?" if self.series_number is None else str(self.series_number)
        return " ".join(part for part in (f"series {number}", self.description.strip()) if part)


@dataclass(frozen=True)
class StudyDecision:
    """The choice in one study.

    Attributes:
        chosen: The series the model reads; None when no series of the study is readable.
        reasons: Why each candidate was chosen or not, by Series Instance UID.
    """

    chosen: str | None
    reasons: dict[str, str]


@dataclass(frozen=True)
class _Ranked:
    facts: SeriesFacts
    reco: Reconstruction
    key: tuple[object, ...]


def choose_series(
    candidates: Iterable[SeriesFacts],
    *,
    model_thickness_mm: float,
    site_kernels: Mapping[str, KernelFamily] | None = None,
    incumbent: str | None = None,
) -> StudyDecision:
    """Choose the series of a study that the model reads, and say why of every candidate.

    Args:
        candidates: Every classifiable series of the study (the one chosen before included).
        model_thickness_mm: Slice thickness the model was made for (its checkpoint's spec).
        site_kernels: The site's own kernel patterns (``listener.kernel_families``).
        incumbent: The series chosen before, if any: it keeps its place against an equal one.

    Returns:
        The chosen series (None if every candidate has a bone, lung or sharp kernel) and a
        reason for each candidate: ``chosen: ...`` or ``another series of this study was
        chosen: bone kernel BONEPLUS; chosen: series 2 HEAD 5mm STD``.
    """
    ranked = sorted(
        (
            _rank(facts, model_thickness_mm, site_kernels=site_kernels, incumbent=incumbent)
            for facts in candidates
        ),
        key=lambda entry: entry.key,
    )
    readable = [entry for entry in ranked if _readable(entry)]
    if not readable:
        return StudyDecision(
            None,
            {
                entry.facts.series_instance_uid: f"{entry.reco.describe()}: {NOTHING_READABLE}"
                for entry in ranked
            },
        )
    best = readable[0]
    reasons = {best.facts.series_instance_uid: _chosen_reason(best, model_thickness_mm, ranked)}
    for entry in ranked:
        if entry is not best:
            reasons[entry.facts.series_instance_uid] = (
                f"{PASSED_OVER_PREFIX}: {_why_not(entry, best, model_thickness_mm)}; "
                f"chosen: {best.facts.label()}"
            )
    return StudyDecision(best.facts.series_instance_uid, reasons)


def _readable(entry: _Ranked) -> bool:
    return entry.reco.family is None or entry.reco.family.readable


def _thickness_steps(facts: SeriesFacts, model_thickness_mm: float) -> int:
    if facts.slice_thickness_mm is None:
        return 1 << 30
    return round(abs(facts.slice_thickness_mm - model_thickness_mm) / THICKNESS_STEP_MM)


def _rank(
    facts: SeriesFacts,
    model_thickness_mm: float,
    *,
    site_kernels: Mapping[str, KernelFamily] | None,
    incumbent: str | None,
) -> _Ranked:
    reco = reconstruction(facts.kernel, facts.description, site_kernels=site_kernels)
    full = facts.coverage_mm >= FULL_HEAD_MM
    key = (
        0 if reco.family is None or reco.family.readable else 1,
        0 if full else 1,
        0 if reco.family is KernelFamily.SOFT else 1,
        _thickness_steps(facts, model_thickness_mm),
        0 if full else -round(facts.coverage_mm),
        1 if facts.derived else 0,
        -facts.slices,
        0 if facts.series_instance_uid == incumbent else 1,
        (0, facts.series_number) if facts.series_number is not None else (1, 0),
        facts.series_instance_uid,
    )
    return _Ranked(facts, reco, key)


def _mm(value: float | None) -> str:
    return "not stated" if value is None else f"{value:g} mm"


def _chosen_reason(best: _Ranked, model_thickness_mm: float, ranked: Sequence[_Ranked]) -> str:
    facts = best.facts
    parts = [
        best.reco.describe(),
        f"slice thickness {_mm(facts.slice_thickness_mm)} (the model's {model_thickness_mm:g} mm)",
        f"covers {facts.coverage_mm:.0f} mm"
        + ("" if facts.coverage_mm >= FULL_HEAD_MM else " (less than the whole head)"),
        f"{facts.slices} axial slices",
    ]
    if facts.derived:
        parts.append("derived images")
    others = len(ranked) - 1
    tail = f"; the best of {others + 1} classifiable series" if others else ""
    return f"{CHOSEN_PREFIX}: " + ", ".join(parts) + tail


def _why_not(entry: _Ranked, best: _Ranked, model_thickness_mm: float) -> str:
    """The first criterion on which ``entry`` loses to ``best``, in words."""
    facts, chosen = entry.facts, best.facts
    if not _readable(entry):
        return entry.reco.describe()
    full, chosen_full = facts.coverage_mm >= FULL_HEAD_MM, chosen.coverage_mm >= FULL_HEAD_MM
    if chosen_full and not full:
        return f"covers {facts.coverage_mm:.0f} mm, less than the whole head"
    if best.reco.family is KernelFamily.SOFT and entry.reco.family is not KernelFamily.SOFT:
        if entry.reco.kernel:
            return (
                f"kernel {entry.reco.kernel} is not known as a soft-tissue kernel, the chosen "
                "series' is (a site adds its kernels with listener.kernel_families)"
            )
        return "kernel not stated, nor a soft-tissue reconstruction in its series description"
    steps = _thickness_steps(facts, model_thickness_mm)
    if steps != _thickness_steps(chosen, model_thickness_mm):
        if facts.slice_thickness_mm is None:
            return "slice thickness not stated"
        side = "thicker" if facts.slice_thickness_mm > model_thickness_mm else "thinner"
        return (
            f"{side} slices than the chosen series ({_mm(facts.slice_thickness_mm)} against "
            f"{_mm(chosen.slice_thickness_mm)}; the model's {model_thickness_mm:g} mm)"
        )
    if not full and round(facts.coverage_mm) != round(chosen.coverage_mm):
        return (
            f"covers less of the head than the chosen series ({facts.coverage_mm:.0f} mm "
            f"against {chosen.coverage_mm:.0f} mm)"
        )
    if facts.derived and not chosen.derived:
        return "reformat (derived images); the chosen series is original"
    if facts.slices != chosen.slices:
        return f"fewer slices than the chosen series ({facts.slices} against {chosen.slices})"
    if entry.key[7] != best.key[7]:
        return "as suitable as the chosen series, which was chosen first"
    return "as suitable as the chosen series, which comes first by series number"
