"""The choice of a study's one series (dicom_edge): vendor kernels, description words, the
criteria in order, ties, and the facts read from real headers."""

from __future__ import annotations

import fnmatch
from dataclasses import replace
from pathlib import Path

import pydicom
import pytest

from dicom_edge import KernelFamily, SeriesFacts, choose_series, select_instances, series_facts
from dicom_edge.kernels import KERNEL_TABLE, description_family, kernel_family, reconstruction
from dicom_edge.study_choice import FULL_HEAD_MM, PASSED_OVER_PREFIX
from tests.listener.helpers import ct_dataset

SOFT, BONE, LUNG, SHARP = (
    KernelFamily.SOFT,
    KernelFamily.BONE,
    KernelFamily.LUNG,
    KernelFamily.SHARP,
)

#: Kernels as scanners send them, one or more for every row of the table.
VENDOR_KERNELS = [
    # Siemens
    ("H31s", SOFT),
    ("H20s", SOFT),
    ("H40s", SOFT),
    ("Hr40f", SOFT),
    ("Hr38", SOFT),
    ("J40s", SOFT),
    ("J30s", SOFT),
    ("Jr40", SOFT),
    ("B30f", SOFT),
    ("Br40", SOFT),
    ("Bv40", SOFT),
    ("Qr40", SOFT),
    ("I31f", SOFT),
    ("D30f", SOFT),
    ("H70h", BONE),
    ("H60s", BONE),
    ("Hr64", BONE),
    ("J70h", BONE),
    ("Jr64", BONE),
    ("U90u", BONE),
    ("Bl57", LUNG),
    ("B70f", SHARP),
    ("Br64", SHARP),
    ("I70f", SHARP),
    ("D70f", SHARP),
    # GE
    ("STANDARD", SOFT),
    ("HD STANDARD", SOFT),
    ("STD", SOFT),
    ("STD+", SOFT),
    ("SOFT", SOFT),
    ("BRAIN", SOFT),
    ("BONE", BONE),
    ("BONEPLUS", BONE),
    ("HD BONE", BONE),
    ("LUNG", LUNG),
    ("EDGE", SHARP),
    ("DETAIL", SHARP),
    # Philips
    ("UA", SOFT),
    ("UB", SOFT),
    ("UC", SOFT),
    ("A", SOFT),
    ("B", SOFT),
    ("C", SOFT),
    ("D", SHARP),
    ("E", BONE),
    ("EC", BONE),
    ("YB", BONE),
    ("YC", BONE),
    ("L", LUNG),
    # Canon (Toshiba)
    ("FC21", SOFT),
    ("FC26", SOFT),
    ("FC08", SOFT),
    ("FC13", SOFT),
    ("FC30", BONE),
    ("FC35", BONE),
    ("FC81", BONE),
    ("FC52", LUNG),
    ("BODY SHARP", SHARP),
]


@pytest.mark.parametrize(("kernel", "family"), VENDOR_KERNELS)
def test_vendor_kernels_have_their_family(kernel: str, family: KernelFamily) -> None:
    assert kernel_family(kernel) is family
    assert kernel_family(kernel.lower()) is family  # case does not matter
    assert kernel_family(f" {kernel} ") is family


def test_every_row_of_the_table_is_exercised_and_decides_its_examples() -> None:
    for row in KERNEL_TABLE:
        matched = [k for k, _ in VENDOR_KERNELS if fnmatch.fnmatchcase(k.upper(), row.pattern)]
        assert matched, f"no example kernel for {row.pattern} ({row.vendor})"
        # The row's family wins for at least one example (no earlier row shadows it).
        assert any(kernel_family(k) is row.family for k in matched), row


@pytest.mark.parametrize("kernel", ["", None, "  ", "XYZ99", "FC43", "H4"])
def test_unknown_or_missing_kernels_have_no_family(kernel: str | None) -> None:
    assert kernel_family(kernel) is None


def test_site_kernels_come_before_the_table() -> None:
    site = {"fc4?": SOFT, "H60S": SOFT, "MY*BONE": BONE}
    assert kernel_family("FC43", site_kernels=site) is SOFT
    assert kernel_family("H60s", site_kernels=site) is SOFT  # the site corrects the table
    assert kernel_family("MY SPECIAL BONE", site_kernels=site) is BONE
    assert kernel_family("H70h", site_kernels=site) is BONE  # the rest of the table stays


@pytest.mark.parametrize(
    ("description", "family"),
    [
        ("HEAD 5mm BONE", BONE),
        ("Head 1.0 bone", BONE),
        ("CHEST LUNG", LUNG),
        ("HEAD SHARP", SHARP),
        ("HEAD 5mm SOFT", SOFT),
        ("Brain 5mm", SOFT),
        ("BRAIN BONE WINDOW", BONE),  # the sharp word first
        ("HEAD 5mm", None),
        ("", None),
        (None, None),
    ],
)
def test_description_words(description: str | None, family: KernelFamily | None) -> None:
    assert description_family(description) is family


def test_the_kernel_wins_over_the_description_and_the_description_fills_in() -> None:
    assert reconstruction("STANDARD", "HEAD BONE WINDOW").family is SOFT
    by_words = reconstruction(None, "HEAD 5mm BONE")
    assert (by_words.family, by_words.by_description) == (BONE, True)
    unknown = reconstruction("XYZ", "HEAD 5mm BRAIN")
    assert (unknown.family, unknown.kernel, unknown.by_description) == (SOFT, "XYZ", True)
    assert reconstruction("XYZ", "HEAD").family is None


# The choice -------------------------------------------------------------------------------


def facts(number: int, **changes: object) -> SeriesFacts:
    """A whole-head 5 mm brain-kernel series, numbered ``number`` (its UID is ``2.25.number``)."""
    base = SeriesFacts(
        series_instance_uid=f"2.25.{number}",
        series_number=number,
        description=f"HEAD {number}",
        kernel="STANDARD",
        slice_thickness_mm=5.0,
        coverage_mm=150.0,
        slices=30,
        derived=False,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def choose(*candidates: SeriesFacts, model: float = 5.0, incumbent: int | None = None) -> str:
    decision = choose_series(
        candidates,
        model_thickness_mm=model,
        incumbent=None if incumbent is None else f"2.25.{incumbent}",
    )
    assert set(decision.reasons) == {c.series_instance_uid for c in candidates}
    assert decision.chosen is not None
    return decision.chosen


def test_the_brain_kernel_series_is_chosen_and_the_bone_one_says_why() -> None:
    brain, bone = facts(2), facts(3, kernel="BONEPLUS", description="HEAD 5mm BONE")
    decision = choose_series([bone, brain], model_thickness_mm=5.0)
    assert decision.chosen == brain.series_instance_uid
    assert decision.reasons[brain.series_instance_uid].startswith("chosen: soft-tissue kernel")
    assert decision.reasons[bone.series_instance_uid] == (
        f"{PASSED_OVER_PREFIX}: bone kernel BONEPLUS; chosen: series 2 HEAD 2"
    )


@pytest.mark.parametrize("kernel", ["BONEPLUS", "LUNG", "EDGE", "H70h", "YC", "FC81"])
def test_a_sharp_kernel_is_never_chosen_even_alone(kernel: str) -> None:
    decision = choose_series([facts(3, kernel=kernel)], model_thickness_mm=5.0)
    assert decision.chosen is None
    assert "the model reads soft-tissue (brain) reconstructions only" in decision.reasons["2.25.3"]


def test_the_description_decides_when_the_kernel_does_not() -> None:
    bone_by_words = facts(2, kernel=None, description="HEAD 5mm BONE")
    unknown = facts(3, kernel="XYZ", slices=10)
    assert choose(bone_by_words, unknown) == "2.25.3"
    decision = choose_series([bone_by_words], model_thickness_mm=5.0)
    assert decision.chosen is None
    assert decision.reasons["2.25.2"].startswith("bone reconstruction (by its series description)")
    brain_by_words = facts(4, kernel="XYZ", description="HEAD 5mm BRAIN", slices=10)
    assert choose(brain_by_words, facts(5, kernel="XYZ")) == "2.25.4"  # soft before unknown


def test_the_thickness_nearest_the_models_wins() -> None:
    thin, thick, five = (
        facts(2, slice_thickness_mm=0.625, slices=240),
        facts(3, slice_thickness_mm=8.0, slices=19),
        facts(4, slice_thickness_mm=5.0, slices=30),
    )
    assert choose(thin, thick, five) == "2.25.4"
    assert choose(thin, thick) == "2.25.3"  # 8 mm is nearer to 5 mm than 0.625 mm
    assert choose(thin, thick, five, model=1.0) == "2.25.2"  # a thin-slice model
    decision = choose_series([thin, five], model_thickness_mm=5.0)
    assert (
        "thinner slices than the chosen series (0.625 mm against 5 mm"
        in (decision.reasons["2.25.2"])
    )
    decision = choose_series([thick, five], model_thickness_mm=5.0)
    assert (
        "thicker slices than the chosen series (8 mm against 5 mm" in (decision.reasons["2.25.3"])
    )
    unstated = facts(5, slice_thickness_mm=None)
    assert (
        "slice thickness not stated"
        in choose_series([unstated, five], model_thickness_mm=5.0).reasons["2.25.5"]
    )


def test_the_whole_head_beats_a_nearer_thickness_and_more_coverage_beats_less() -> None:
    partial = facts(2, coverage_mm=45.0, slices=9)
    whole_thin = facts(3, slice_thickness_mm=1.25, coverage_mm=FULL_HEAD_MM + 40, slices=112)
    assert choose(partial, whole_thin) == "2.25.3"
    reason = choose_series([partial, whole_thin], model_thickness_mm=5.0).reasons["2.25.2"]
    assert "covers 45 mm, less than the whole head" in reason
    more = facts(4, coverage_mm=80.0, slices=16)
    assert choose(partial, more) == "2.25.4"
    assert (
        "covers less of the head than the chosen series (45 mm against 80 mm)"
        in (choose_series([partial, more], model_thickness_mm=5.0).reasons["2.25.2"])
    )


def test_original_images_beat_a_reformat_and_more_slices_beat_fewer() -> None:
    reformat = facts(2, derived=True, slices=40)
    original = facts(3, slices=30)
    assert choose(reformat, original) == "2.25.3"
    assert (
        "reformat (derived images)"
        in choose_series([reformat, original], model_thickness_mm=5.0).reasons["2.25.2"]
    )
    fewer = facts(4, slices=28)
    assert choose(fewer, original) == "2.25.3"
    assert (
        "fewer slices than the chosen series (28 against 30)"
        in choose_series([fewer, original], model_thickness_mm=5.0).reasons["2.25.4"]
    )


def test_ties_keep_the_series_chosen_before_then_the_lower_series_number() -> None:
    first, resend = facts(7), facts(3)
    assert choose(first, resend) == "2.25.3"  # the lower series number
    assert choose(first, resend, incumbent=7) == "2.25.7"  # an equal one changes nothing
    reason = choose_series([first, resend], model_thickness_mm=5.0, incumbent="2.25.7").reasons[
        "2.25.3"
    ]
    assert "as suitable as the chosen series, which was chosen first" in reason
    # No series number: numbered series first, then by UID.
    assert choose(facts(9, series_number=None), facts(8)) == "2.25.8"
    assert choose(facts(9, series_number=None), facts(8, series_number=None)) == "2.25.8"
    # A better series still replaces the one chosen before.
    assert choose(facts(7, slice_thickness_mm=2.5), facts(3), incumbent=7) == "2.25.3"


def test_the_order_of_the_candidates_does_not_matter() -> None:
    candidates = [
        facts(2, kernel="BONEPLUS"),
        facts(3, slice_thickness_mm=1.25, slices=120),
        facts(4),
        facts(5, derived=True),
    ]
    assert choose(*candidates) == choose(*reversed(candidates)) == "2.25.4"


# Facts from headers -----------------------------------------------------------------------


def test_facts_of_the_real_ge_head_ct(ge_head_ct: Path) -> None:
    paths = sorted(ge_head_ct.glob("*.dcm"))
    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in paths]
    selection = select_instances(headers, min_slices=5)
    assert selection.classify
    found = series_facts("2.25.1", [headers[i] for i in selection.selected])
    assert found.kernel == "STD+" and kernel_family(found.kernel) is SOFT
    assert found.slice_thickness_mm == 5.5  # 14 slices of 4 mm and 14 of 7 mm: the median
    assert found.slices == 28
    assert FULL_HEAD_MM < found.coverage_mm < 200.0  # the whole head, along the tilted stack
    assert found.series_number == 2 and not found.derived


def test_facts_take_the_spacing_where_no_thickness_is_stated() -> None:
    stack = []
    for number in range(1, 11):
        ds = ct_dataset(study_uid="1.2.3", series_uid="1.2.3.4", number=number)
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        ds.ConvolutionKernel = ["Hr40f", "3"]  # Siemens sends the ADMIRE strength too
        ds.SeriesNumber = 601
        del ds.SliceThickness  # Type 2: may be absent (or empty) in a derived series
        ds.ImagePositionPatient = [0.0, 0.0, 3.0 * number]  # 3 mm apart
        stack.append(ds)
    found = series_facts("1.2.3.4", stack)
    assert found.slice_thickness_mm == 3.0
    assert found.coverage_mm == 30.0  # nine spacings and one slice
    assert found.kernel == "Hr40f"
    assert found.derived and found.series_number == 601 and found.slices == 10
