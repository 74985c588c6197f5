"""The heat-map Secondary Capture: pixels, banner, identity, and dciodvfy."""

from __future__ import annotations

import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

from model.phantom import write_phantom_series
from tests.helpers import require_tool
from worker.capture import BANNER_HEIGHT, SERIES_DESCRIPTION, TILE_SIZE, build_heatmap_capture
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
    assert pixels.shape == (BANNER_HEIGHT + TILE_SIZE, TILE_SIZE * len(top_slices), 3)
    assert capture.BurnedInAnnotation == "YES"
    assert capture.SeriesDescription == SERIES_DESCRIPTION
    assert capture.StudyInstanceUID == top_slices[0].StudyInstanceUID
    assert capture.PatientID == top_slices[0].PatientID
    assert capture.SeriesInstanceUID != top_slices[0].SeriesInstanceUID
    assert [item.ReferencedSOPInstanceUID for item in capture.SourceImageSequence] == [
        ds.SOPInstanceUID for ds in top_slices
    ]
    banner = pixels[:BANNER_HEIGHT]
    assert banner.min() != banner.max(), "the banner text is missing"
    # The overlay colours the image: the channels differ somewhere inside the tiles.
    tiles = pixels[BANNER_HEIGHT:].astype(int)
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
    assert image.pixel_array.shape == (BANNER_HEIGHT + TILE_SIZE, TILE_SIZE, 3)


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
