"""The heat-map Secondary Capture: pixels, banner, markers, legend, identity, and dciodvfy."""

from __future__ import annotations

import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

from model.phantom import write_phantom_series
from model.spec import INTRACRANIAL_HAEMORRHAGE, CodedFinding
from tests.helpers import require_tool
from worker.capture import (
    LEGEND,
    TILE_SIZE,
    banner_lines,
    build_heatmap_capture,
    edge_markers,
    series_description,
    slice_location_mm,
    tile_label,
)
from worker.errors import ReportError


@pytest.fixture(scope="module")
def top_slices(tmp_path_factory: pytest.TempPathFactory) -> list[pydicom.Dataset]:
    paths = write_phantom_series(tmp_path_factory.mktemp("phantom"), n_slices=5, size=64)
    return [pydicom.dcmread(path) for path in paths[1:4]]


def _windowed(dataset: pydicom.Dataset) -> np.ndarray:
    hu = dataset.pixel_array * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)
    return np.clip((hu - 0.0) / 80.0, 0.0, 1.0)


def _build(datasets: list[pydicom.Dataset], *, heat_size: int = 7) -> hd.sc.SCImage:
    rng = np.random.default_rng(0)
    return build_heatmap_capture(
        source_datasets=datasets,
        images=[_windowed(ds) for ds in datasets],
        heatmaps=[rng.random((heat_size, heat_size)) for _ in datasets],
        probability=0.75,
        suspected=True,
        threshold=0.42,
        finding=INTRACRANIAL_HAEMORRHAGE,
        model_version="2.0.0-test",
        series_instance_uid=generate_uid(),
        sop_instance_uid=generate_uid(),
    )


def test_capture_is_a_valid_rgb_mosaic(tmp_path: Path, top_slices: list[pydicom.Dataset]) -> None:
    path = tmp_path / "capture.dcm"
    _build(top_slices).save_as(path, enforce_file_format=True)

    capture = pydicom.dcmread(path)
    assert capture.SOPClassUID == SecondaryCaptureImageStorage
    assert capture.PhotometricInterpretation == "RGB"
    pixels = capture.pixel_array
    rows, columns, _ = pixels.shape
    assert columns == TILE_SIZE * len(top_slices)
    assert rows > TILE_SIZE + 40  # a banner above the tiles and a legend below them
    assert capture.BurnedInAnnotation == "YES"
    assert capture.SeriesDescription == "AI ICH TRIAGE: SUSPECTED (HEATMAP, NOT FOR DIAGNOSIS)"
    # Series Date and Time, so that a PACS files the capture beside the CT by date.
    assert capture.SeriesDate == capture.ContentDate and len(capture.SeriesDate) == 8
    assert capture.SeriesTime == capture.ContentTime
    assert capture.StudyInstanceUID == top_slices[0].StudyInstanceUID
    assert capture.PatientID == top_slices[0].PatientID
    assert capture.SeriesInstanceUID != top_slices[0].SeriesInstanceUID
    assert [item.ReferencedSOPInstanceUID for item in capture.SourceImageSequence] == [
        ds.SOPInstanceUID for ds in top_slices
    ]
    banner = pixels[:40]
    assert banner.min() != banner.max(), "the banner text is missing"
    legend = pixels[-30:]
    assert legend.min() != legend.max(), "the legend is missing"
    # The overlay colours the image: the channels differ somewhere inside the tiles.
    tiles = pixels[40:-30].astype(int)
    assert np.abs(tiles[..., 0] - tiles[..., 2]).max() > 50

    dciodvfy = require_tool("dciodvfy", "dicom3tools")
    completed = subprocess.run(
        [dciodvfy, str(path)], capture_output=True, text=True, check=False, timeout=60
    )
    lines = (completed.stdout + completed.stderr).splitlines()
    print("\n".join(line for line in lines if line.startswith("Warning")))
    assert [line for line in lines if line.startswith("Error")] == []


def test_highdicom_reads_the_capture(tmp_path: Path, top_slices: list[pydicom.Dataset]) -> None:
    path = tmp_path / "capture.dcm"
    _build(top_slices[:1], heat_size=64).save_as(path, enforce_file_format=True)
    image = hd.imread(path)
    assert image.SOPClassUID == SecondaryCaptureImageStorage
    rows, columns, samples = image.pixel_array.shape
    assert (columns, samples) == (TILE_SIZE, 3) and rows > TILE_SIZE


def test_the_banner_states_the_finding_threshold_and_model() -> None:
    lines = banner_lines(
        probability=0.62915,
        suspected=True,
        threshold=0.4213,
        finding=INTRACRANIAL_HAEMORRHAGE,
        model_version="2.0.0",
    )
    assert lines == [
        "NOT FOR DIAGNOSTIC USE - AI ICH TRIAGE, UNVERIFIED",
        "ICH SUSPECTED: probability 0.63, threshold 0.42, model 2.0.0",
    ]
    close = banner_lines(probability=0.4199, suspected=False, threshold=0.42)
    assert close[1] == "STROKE NOT SUSPECTED: probability 0.4199, threshold 0.4200"


def test_each_tile_says_its_rank_instance_and_slice_location(
    top_slices: list[pydicom.Dataset],
) -> None:
    first = top_slices[0]
    assert tile_label(1, first) == (
        f"#1 IMG {first.InstanceNumber}  {float(first.ImagePositionPatient[2]):.1f} mm"
    )
    located = pydicom.Dataset()
    located.InstanceNumber = 16
    located.SliceLocation = "-42.25"
    located.ImagePositionPatient = [0, 0, 7]
    assert slice_location_mm(located) == -42.25  # Slice Location wins where present
    assert tile_label(3, located) == "#3 IMG 16  -42.2 mm"
    assert tile_label(2, pydicom.Dataset()) == "#2 IMG ?"
    # The legend explains every part of that label.
    for words in ("#1 most suspicious", "IMG: instance number", "mm: slice location", "R/L"):
        assert words in LEGEND


def test_markers_put_the_patients_right_on_the_left_of_an_axial_slice() -> None:
    assert edge_markers(("L", "P")) == ("R", "L", "A", "P")
    # Rows running towards the patient's right (a flipped image): the markers follow.
    assert edge_markers(("R", "P")) == ("L", "R", "A", "P")


def test_series_description_fits_a_long_finding_name() -> None:
    long_name = CodedFinding(scheme="SCT", value="1", meaning="Something long", short_name="X" * 16)
    text = series_description(suspected=False, finding=long_name)
    assert len(text) <= 64
    assert text.startswith(f"AI {'X' * 16} TRIAGE: NOT SUSPECTED")


def test_mismatched_inputs_are_refused(top_slices: list[pydicom.Dataset]) -> None:
    with pytest.raises(ReportError, match="one image and one heat map"):
        build_heatmap_capture(
            source_datasets=top_slices,
            images=[_windowed(top_slices[0])],
            heatmaps=[np.zeros((4, 4))],
            probability=0.5,
            suspected=False,
            series_instance_uid=generate_uid(),
            sop_instance_uid=generate_uid(),
        )


def test_non_finite_heat_map_is_refused(top_slices: list[pydicom.Dataset]) -> None:
    with pytest.raises(ReportError, match="not finite"):
        build_heatmap_capture(
            source_datasets=top_slices[:1],
            images=[_windowed(top_slices[0])],
            heatmaps=[np.full((4, 4), np.nan)],
            probability=0.5,
            suspected=False,
            series_instance_uid=generate_uid(),
            sop_instance_uid=generate_uid(),
        )
