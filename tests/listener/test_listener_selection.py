"""Which instances of a series are classified, decided from every header (issue 11, item 5).

The listener and the worker share one function, ``dicom_edge.select_instances``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import SecondaryCaptureImageStorage

from dicom_edge import CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE, select_instances
from dicom_edge.sop_classes import LEGACY_CONVERTED_ENHANCED_CT_IMAGE_STORAGE

AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
SAGITTAL = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]


def _slice(number: int = 1, orientation: list[float] | None = None) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImageOrientationPatient = orientation or AXIAL
    ds.ImagePositionPatient = [0, 0, 5.0 * number]
    ds.Rows = ds.Columns = 64
    ds.BodyPartExamined = "HEAD"
    return ds


def _axial(count: int) -> list[Dataset]:
    return [_slice(number) for number in range(1, count + 1)]


def _sagittal(count: int) -> list[Dataset]:
    slices = []
    for number in range(1, count + 1):
        ds = _slice(number, SAGITTAL)
        ds.ImagePositionPatient = [2.0 * number, 0, 0]
        ds.ImageType = ["DERIVED", "SECONDARY", "REFORMATTED"]
        slices.append(ds)
    return slices


def test_axial_head_ct_with_enough_slices_is_classified() -> None:
    selection = select_instances(_axial(28), min_slices=5)
    assert selection.classify
    assert selection.selected == tuple(range(28))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]}, "localizer"),
        ({"SOPClassUID": SecondaryCaptureImageStorage}, "not a CT image"),
        ({"SOPClassUID": ENHANCED_CT_IMAGE_STORAGE}, "multi-frame Enhanced CT is stored but not"),
        (
            {"SOPClassUID": LEGACY_CONVERTED_ENHANCED_CT_IMAGE_STORAGE},
            "multi-frame Legacy Converted Enhanced CT is stored but not classified",
        ),
        ({"ImageOrientationPatient": SAGITTAL}, "not an axial"),
        ({"BodyPartExamined": "CHEST", "StudyDescription": "CT THORAX"}, "not the head"),
        ({"Modality": "MR"}, "not CT"),
    ],
)
def test_other_series_are_skipped_with_a_reason(change: dict[str, object], reason: str) -> None:
    headers = _axial(28)
    for header in headers:
        for keyword, value in change.items():
            setattr(header, keyword, value)
    selection = select_instances(headers, min_slices=5)
    assert not selection.classify
    assert reason in selection.reason
    assert selection.selected == ()


def test_too_few_slices_are_skipped() -> None:
    selection = select_instances(_axial(3), min_slices=5)
    assert not selection.classify
    assert "fewer than the 5" in selection.reason


def test_tilted_gantry_still_counts_as_axial() -> None:
    headers = _axial(28)
    for header in headers:
        header.ImageOrientationPatient = [1, 0, 0, 0, 0.9483237, -0.3173047]  # GE, 18.5 degrees
    assert select_instances(headers, min_slices=5).classify


Order = Callable[[list[Dataset], list[Dataset]], list[Dataset]]
ORDERINGS: dict[str, Order] = {
    "axial first": lambda axial, sagittal: axial + sagittal,
    "sagittal first": lambda axial, sagittal: sagittal + axial,
    "one sagittal first": lambda axial, sagittal: sagittal[:1] + axial + sagittal[1:],
    "interleaved": lambda axial, sagittal: [
        s for pair in zip(axial, sagittal, strict=True) for s in pair
    ],
}


@pytest.mark.parametrize("ordering", ORDERINGS)
def test_axial_and_sagittal_mix_classifies_the_axial_slices_in_any_order(ordering: str) -> None:
    axial, sagittal = _axial(12), _sagittal(12)
    headers = ORDERINGS[ordering](axial, sagittal)
    selection = select_instances(headers, min_slices=5)
    assert selection.classify, selection.reason
    assert sorted(id(headers[i]) for i in selection.selected) == sorted(map(id, axial))
    assert "12 of 24" in selection.reason
    assert "12 not an axial series" in selection.reason


@pytest.mark.parametrize("chest_at", [0, 5, 11])
def test_explicit_non_head_body_part_wins_over_a_head_description(chest_at: int) -> None:
    headers = _axial(12)
    for header in headers:
        header.StudyDescription = "CT HEAD WITHOUT CONTRAST"
        header.SeriesDescription = "HEAD 5mm"
    headers[chest_at].BodyPartExamined = "CHEST"
    selection = select_instances(headers, min_slices=5)
    assert not selection.classify
    assert "body part CHEST is not the head" in selection.reason


def test_without_a_body_part_a_series_is_classified() -> None:
    headers = _axial(12)
    for header in headers:
        del header.BodyPartExamined
    assert select_instances(headers, min_slices=5).classify


def test_one_reconstruction_repeated_at_the_same_positions_is_skipped() -> None:
    twice = _axial(12) + _axial(12)  # the same scan twice: which to read is not ours to guess
    selection = select_instances(twice, min_slices=5)
    assert not selection.classify and "share a position" in selection.reason


def _reconstruction(count: int, *, kernel: str, first_number: int = 1) -> list[Dataset]:
    slices = _axial(count)
    for offset, ds in enumerate(slices):
        ds.ConvolutionKernel = kernel
        ds.InstanceNumber = first_number + offset
    return slices


@pytest.mark.parametrize("bone_first", [True, False])
def test_a_series_of_a_soft_and_a_bone_reconstruction_reads_the_soft_one(bone_first: bool) -> None:
    # The bone stack has more slices: the kernel the model reads still comes first.
    bone = _reconstruction(14, kernel="H70h", first_number=1 if bone_first else 100)
    soft = _reconstruction(12, kernel="H31s", first_number=100 if bone_first else 1)
    headers = [*bone, *soft] if bone_first else [*soft, *bone]
    selection = select_instances(headers, min_slices=5)
    assert selection.classify, selection.reason
    assert [headers[i].ConvolutionKernel for i in selection.selected] == ["H31s"] * 12
    assert list(selection.selected) == sorted(selection.selected)  # in the given order
    assert selection.reason == (
        "axial head CT: 12 of 26 instances (left out: 14 in another stack of this series)"
    )


def test_stacks_of_unknown_kernels_read_the_longer_then_the_first_numbered() -> None:
    thin = _reconstruction(20, kernel="XYZ1", first_number=30)
    for number, ds in enumerate(thin):  # 2 mm apart: some positions are also the thick one's
        ds.ImagePositionPatient = [0, 0, 2.0 * number]
    thick = _reconstruction(12, kernel="XYZ2")
    selection = select_instances([*thick, *thin], min_slices=5)
    assert selection.selected == tuple(range(12, 32))
    # Equal lengths: the stack with the lower Instance Number.
    later, earlier = (
        _reconstruction(12, kernel="A", first_number=50),
        _reconstruction(12, kernel="B"),
    )
    headers = [*later, *earlier]
    assert select_instances(headers, min_slices=5).selected == tuple(range(12, 24))
    # The chosen stack alone must have min_slices.
    assert "12 axial slices, fewer than the 13" in select_instances(headers, min_slices=13).reason


@pytest.mark.parametrize("first", [True, False])
def test_a_stray_slice_of_another_orientation_or_size_is_left_out(first: bool) -> None:
    tilted = _axial(12)
    tilted[0 if first else -1].ImageOrientationPatient = [1, 0, 0, 0, 0.9483237, -0.3173047]
    selection = select_instances(tilted, min_slices=5)
    assert selection.selected == (tuple(range(1, 12)) if first else tuple(range(11)))
    assert "1 in another stack of this series" in selection.reason
    sizes = _axial(12)
    sizes[0 if first else -1].Rows = 512
    assert len(select_instances(sizes, min_slices=5).selected) == 11


def test_without_a_reconstruction_that_is_one_stack_the_series_is_skipped() -> None:
    # Two kernels, each scanned twice at the same positions: neither is one stack.
    headers = [*_reconstruction(6, kernel="H31s")] * 2 + [*_reconstruction(6, kernel="H70h")] * 2
    selection = select_instances(headers, min_slices=3)
    assert not selection.classify and "share a position" in selection.reason


def test_localizers_in_an_axial_series_are_left_out() -> None:
    headers = _axial(10)
    scout = _slice(0)
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    selection = select_instances([scout, *headers], min_slices=5)
    assert selection.classify
    assert selection.selected == tuple(range(1, 11))
