"""Which series the listener hands to the classifier, decided from one header."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import SecondaryCaptureImageStorage

from listener.selection import select_series
from stroke_triage.edge import CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE


def _axial_head_ct() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.BodyPartExamined = "HEAD"
    return ds


def test_axial_head_ct_with_enough_slices_is_classified() -> None:
    assert select_series(_axial_head_ct(), instance_count=28, min_slices=5).classify


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]}, "localizer"),
        ({"SOPClassUID": SecondaryCaptureImageStorage}, "not a CT image"),
        ({"SOPClassUID": ENHANCED_CT_IMAGE_STORAGE}, "Enhanced CT"),
        ({"ImageOrientationPatient": [0, 1, 0, 0, 0, -1]}, "not an axial"),
        ({"BodyPartExamined": "CHEST", "StudyDescription": "CT THORAX"}, "not the head"),
        ({"Modality": "MR"}, "not CT"),
    ],
)
def test_other_series_are_skipped_with_a_reason(change: dict[str, object], reason: str) -> None:
    header = _axial_head_ct()
    for keyword, value in change.items():
        setattr(header, keyword, value)
    selection = select_series(header, instance_count=28, min_slices=5)
    assert not selection.classify
    assert reason in selection.reason


def test_too_few_slices_are_skipped() -> None:
    selection = select_series(_axial_head_ct(), instance_count=3, min_slices=5)
    assert not selection.classify
    assert "fewer than the 5" in selection.reason


def test_tilted_gantry_still_counts_as_axial() -> None:
    header = _axial_head_ct()
    header.ImageOrientationPatient = [1, 0, 0, 0, 0.9483237, -0.3173047]  # GE, 18.5 degrees
    assert select_series(header, instance_count=28, min_slices=5).classify
