"""The synthetic head phantom: HU content, DICOM validity, and round trip."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from model.dicom import dataset_to_hu, sort_slices
from model.phantom import (
    HAEMORRHAGE_HU,
    INFARCT_HU,
    Lesion,
    head_phantom_hu,
    infarct_slices,
    write_phantom_series,
)
from tests.helpers import require_tool


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    directory = tmp_path_factory.mktemp("phantom")
    return write_phantom_series(directory, n_slices=6, size=64, lesion=Lesion.INFARCT, seed=4)


def test_normal_phantom_tissues() -> None:
    volume = head_phantom_hu(n_slices=12, size=128)
    assert volume.shape == (12, 128, 128)
    assert volume.dtype == np.float32
    middle = volume[5]
    assert middle[0, 0] == -1000.0
    assert middle.max() >= 990
    brain = middle[(middle > 0) & (middle < 100)]
    assert 25 < float(np.median(brain)) < 45
    assert np.any(np.abs(middle - 5.0) < 6)  # ventricles
    head_area = (volume > -500).sum(axis=(1, 2))
    assert head_area[0] < head_area[5] > head_area[-1]


@pytest.mark.parametrize(
    ("lesion", "value"), [(Lesion.INFARCT, INFARCT_HU), (Lesion.HAEMORRHAGE, HAEMORRHAGE_HU)]
)
def test_lesion_changes_hu_only_inside_the_brain(lesion: Lesion, value: float) -> None:
    normal = head_phantom_hu(n_slices=16, size=128, seed=1)
    sick = head_phantom_hu(n_slices=16, size=128, lesion=lesion, seed=1)
    changed = np.abs(sick - normal) > 8
    assert changed.sum() > 100
    assert np.all(normal[changed] > 0)
    assert np.all(normal[changed] < 100)
    assert abs(float(np.median(sick[changed])) - value) < 3
    if lesion is Lesion.INFARCT:
        slices = np.flatnonzero(changed.any(axis=(1, 2)))
        assert set(slices) <= set(infarct_slices(16))
        assert len(slices) >= 3


def test_seed_controls_noise() -> None:
    a = head_phantom_hu(n_slices=2, size=32, seed=1)
    assert np.array_equal(a, head_phantom_hu(n_slices=2, size=32, seed=1))
    assert not np.array_equal(a, head_phantom_hu(n_slices=2, size=32, seed=2))


def test_series_round_trips_to_hu(written: list[Path]) -> None:
    volume = head_phantom_hu(n_slices=6, size=64, lesion=Lesion.INFARCT, seed=4)
    assert [p.name for p in written] == [f"CT00000{i}.dcm" for i in range(1, 7)]
    datasets = [pydicom.dcmread(p) for p in written]
    assert sort_slices(datasets[::-1]) == [5, 4, 3, 2, 1, 0]
    for k, ds in enumerate(datasets):
        assert np.abs(dataset_to_hu(ds) - volume[k]).max() <= 0.5 + 1e-4
    first = datasets[0]
    assert first.PatientName == "PHANTOM^HEAD"
    assert first.PatientID == "PHANTOM"
    assert first.BodyPartExamined == "HEAD"
    assert first.StudyDescription == "HEAD"
    assert list(first.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert first.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 1
    assert len({ds.SOPInstanceUID for ds in datasets}) == 6
    assert float(datasets[1].ImagePositionPatient[2]) - float(first.ImagePositionPatient[2]) == 5.0


def test_series_joins_a_given_study(tmp_path: Path) -> None:
    uid = pydicom.uid.generate_uid()
    paths = write_phantom_series(tmp_path, n_slices=1, size=32, study_instance_uid=uid)
    assert pydicom.dcmread(paths[0]).StudyInstanceUID == uid


def test_dciodvfy_finds_no_errors(written: list[Path]) -> None:
    require_tool("dciodvfy", "dicom3tools")
    for path in (written[0], written[3]):
        result = subprocess.run(
            ["dciodvfy", str(path)], check=False, capture_output=True, text=True
        )
        report = result.stdout + result.stderr
        assert "CTImage" in report
        errors = [line for line in report.splitlines() if line.startswith("Error")]
        assert errors == [], report
