"""The Structured Report: built by highdicom, read back, checked by dciodvfy and dsrdump."""

from __future__ import annotations

import subprocess
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from model.phantom import write_phantom_series
from tests.helpers import dciodvfy_errors, require_peer, require_tool
from worker.errors import ReportError
from worker.report import (
    NOT_SUSPECTED_TEXT,
    STROKE,
    SUSPECTED_TEXT,
    AlgorithmInfo,
    Finding,
    build_structured_report,
    read_finding,
)

ALGORITHM = AlgorithmInfo(
    name="stroke-vit-tiny",
    version="0.0.1-test",
    software_version="0.1.0",
    model_sha256="0123456789abcdef" * 4,
)


def _tool(name: str) -> str:
    return require_tool(name, "dicom3tools" if name == "dciodvfy" else "dcmtk")


@pytest.fixture(scope="module")
def phantom_datasets(tmp_path_factory: pytest.TempPathFactory) -> list[pydicom.Dataset]:
    directory = tmp_path_factory.mktemp("phantom")
    paths = write_phantom_series(directory, n_slices=5, size=64)
    return [pydicom.dcmread(path) for path in paths]


@pytest.fixture(scope="module")
def ge_datasets(ge_head_ct: Path) -> list[pydicom.Dataset]:
    paths = sorted(ge_head_ct.glob("*.dcm"))
    if len(paths) != 28:
        require_peer(
            "the GE head CT series",
            f"expected its 28 slices in {ge_head_ct}, found {len(paths)} files.",
        )
    return [pydicom.dcmread(path, stop_before_pixels=True) for path in paths]


def _finding(datasets: list[pydicom.Dataset], *, suspected: bool, probability: float) -> Finding:
    return Finding(
        probability=probability,
        suspected=suspected,
        threshold=0.5,
        top_instance_uids=[datasets[3].SOPInstanceUID, datasets[1].SOPInstanceUID],
    )


def _write(
    tmp_path: Path, datasets: list[pydicom.Dataset], finding: Finding
) -> tuple[Path, hd.sr.Comprehensive3DSR]:
    report = build_structured_report(
        source_datasets=datasets,
        finding=finding,
        algorithm=ALGORITHM,
        series_instance_uid=generate_uid(),
        sop_instance_uid=generate_uid(),
    )
    path = tmp_path / "report.dcm"
    report.save_as(path, enforce_file_format=True)
    return path, report


def _content(
    sr: hd.sr.Comprehensive3DSR | hd.sr.ComprehensiveSR | hd.sr.EnhancedSR,
) -> hd.sr.MeasurementReport:
    content = sr.content
    assert isinstance(content, hd.sr.MeasurementReport)
    return content


def _evidence_uids(sr: pydicom.Dataset) -> set[str]:
    return {
        item.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }


@pytest.mark.parametrize(
    ("suspected", "probability", "text"),
    [(True, 0.8125, SUSPECTED_TEXT), (False, 0.0625, NOT_SUSPECTED_TEXT)],
)
def test_phantom_report_round_trips_and_validates(
    tmp_path: Path,
    phantom_datasets: list[pydicom.Dataset],
    suspected: bool,
    probability: float,
    text: str,
) -> None:
    finding = _finding(phantom_datasets, suspected=suspected, probability=probability)
    path, _ = _write(tmp_path, phantom_datasets, finding)

    sr = hd.sr.srread(path)
    assert isinstance(sr, hd.sr.Comprehensive3DSR)
    reported = read_finding(sr)
    assert reported.suspected is suspected
    assert reported.probability == pytest.approx(probability)
    source = phantom_datasets[0]
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    assert sr.PatientID == source.PatientID
    assert sr.SeriesInstanceUID != source.SeriesInstanceUID
    assert sr.SeriesDescription == text
    assert sr.VerificationFlag == "UNVERIFIED"
    assert sr.CompletionFlag == "COMPLETE"
    assert _evidence_uids(sr) == {ds.SOPInstanceUID for ds in phantom_datasets}

    assert dciodvfy_errors(path) == []
    dump = subprocess.run(
        [_tool("dsrdump"), str(path)], capture_output=True, text=True, check=False, timeout=60
    )
    assert dump.returncode == 0, dump.stderr
    assert text in dump.stdout
    assert "Stroke" in dump.stdout


def test_measurement_group_content(tmp_path: Path, phantom_datasets: list[pydicom.Dataset]) -> None:
    finding = _finding(phantom_datasets, suspected=True, probability=0.9)
    path, _ = _write(tmp_path, phantom_datasets, finding)
    sr = hd.sr.srread(path)

    (group,) = _content(sr).get_image_measurement_groups()
    assert group.tracking_identifier == SUSPECTED_TEXT
    assert [site.value for site in group.finding_sites] == [codes.SCT.Brain]
    (evaluation,) = group.get_qualitative_evaluations()
    assert evaluation.name == STROKE
    assert evaluation.name.value == "230690007"
    assert evaluation.value == codes.SCT.Present
    units = {m.name.meaning: (float(m.value), m.unit.value) for m in group.get_measurements()}
    assert units == {"Stroke probability": (0.9, "1"), "Stroke decision threshold": (0.5, "1")}
    assert [image.referenced_sop_instance_uid for image in group.source_images] == list(
        finding.top_instance_uids
    )
    (observer,) = _content(sr).get_observer_contexts(observer_type=codes.DCM.Device)
    assert observer.observer_identifying_attributes.name == ALGORITHM.name
    ours = [e for e in sr.ContributingEquipmentSequence if e.Manufacturer == ALGORITHM.manufacturer]
    assert len(ours) == 1
    assert ours[0].PurposeOfReferenceCodeSequence[0].CodeValue == "109102"
    assert ALGORITHM.model_sha256 in ours[0].ContributionDescription
    assert sr.Manufacturer == ALGORITHM.manufacturer
    assert sr.SoftwareVersions == ALGORITHM.software_version


# The de-identified GE series names its patient "REMOVED", which highdicom flags.
@pytest.mark.filterwarnings("ignore:The string .* is unlikely to represent:UserWarning")
def test_real_ge_series_report_references_every_slice(
    tmp_path: Path, ge_datasets: list[pydicom.Dataset]
) -> None:
    finding = _finding(ge_datasets, suspected=False, probability=0.125)
    path, _ = _write(tmp_path, ge_datasets, finding)

    sr = hd.sr.srread(path)
    assert read_finding(sr) == (False, 0.125)
    assert sr.StudyInstanceUID == ge_datasets[0].StudyInstanceUID
    assert sr.PatientID == ge_datasets[0].PatientID
    assert sr.SeriesInstanceUID != ge_datasets[0].SeriesInstanceUID
    assert _evidence_uids(sr) == {ds.SOPInstanceUID for ds in ge_datasets}
    assert len(_evidence_uids(sr)) == 28
    assert dciodvfy_errors(path) == []


def test_same_uids_give_the_same_tracking_uid(phantom_datasets: list[pydicom.Dataset]) -> None:
    finding = _finding(phantom_datasets, suspected=True, probability=0.7)
    series_uid, sop_uid = generate_uid(), generate_uid()
    first, second = (
        build_structured_report(
            source_datasets=phantom_datasets,
            finding=finding,
            algorithm=ALGORITHM,
            series_instance_uid=series_uid,
            sop_instance_uid=sop_uid,
        )
        for _ in range(2)
    )
    tracking = [
        _content(hd.sr.Comprehensive3DSR.from_dataset(r)).get_image_measurement_groups()[0]
        for r in (first, second)
    ]
    assert tracking[0].tracking_uid == tracking[1].tracking_uid
    assert first.SOPInstanceUID == second.SOPInstanceUID == sop_uid


def test_top_slice_outside_the_series_is_refused(
    phantom_datasets: list[pydicom.Dataset],
) -> None:
    finding = Finding(
        probability=0.9, suspected=True, threshold=0.5, top_instance_uids=[generate_uid()]
    )
    with pytest.raises(ReportError, match="not among the source instances"):
        build_structured_report(
            source_datasets=phantom_datasets, finding=finding, algorithm=ALGORITHM
        )


def test_probability_outside_unit_interval_is_refused(
    phantom_datasets: list[pydicom.Dataset],
) -> None:
    finding = _finding(phantom_datasets, suspected=True, probability=1.5)
    with pytest.raises(ReportError, match="outside"):
        build_structured_report(
            source_datasets=phantom_datasets, finding=finding, algorithm=ALGORITHM
        )


def test_read_finding_refuses_a_report_without_the_group(
    phantom_datasets: list[pydicom.Dataset],
) -> None:
    with pytest.raises(ReportError):
        read_finding(phantom_datasets[0])
