"""The Structured Report: built by highdicom, read back, checked by dciodvfy and dsrdump.

The finding is the model's, values have two decimals, a summary line and the disclaimer sit in
the content tree, Series Date and Time are set, further findings get groups of their own.
"""

from __future__ import annotations

import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from model.phantom import write_phantom_series
from model.spec import INTRACRANIAL_HAEMORRHAGE, STROKE, CodedFinding
from tests.helpers import dciodvfy_errors, require_peer, require_tool
from worker.errors import ReportError
from worker.report import (
    DISCLAIMER,
    PROBABILITY,
    AlgorithmInfo,
    Finding,
    build_structured_report,
    coded_concept,
    decimals_for,
    read_finding,
    source_header,
    verdict_text,
)

EPIDURAL = CodedFinding(
    scheme="SCT", value="262300005", meaning="Epidural hemorrhage", short_name="EDH"
)
SUBDURAL = CodedFinding(
    scheme="SCT", value="35486000", meaning="Subdural hemorrhage", short_name="SDH"
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


def _finding(
    datasets: list[pydicom.Dataset],
    *,
    suspected: bool,
    probability: float,
    concept: CodedFinding = INTRACRANIAL_HAEMORRHAGE,
    threshold: float = 0.5,
    other_findings: tuple[tuple[CodedFinding, float], ...] = (),
) -> Finding:
    return Finding(
        probability=probability,
        suspected=suspected,
        threshold=threshold,
        top_instance_uids=[datasets[3].SOPInstanceUID, datasets[1].SOPInstanceUID],
        concept=concept,
        other_findings=other_findings,
    )


def _dsrdump(path: Path) -> str:
    """dsrdump's text of the report, long values printed whole."""
    dump = subprocess.run(
        [_tool("dsrdump"), "+Pl", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert dump.returncode == 0, dump.stderr
    return dump.stdout


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
    [(True, 0.8125, "AI ICH TRIAGE: SUSPECTED"), (False, 0.0625, "AI ICH TRIAGE: NOT SUSPECTED")],
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
    assert reported.probability == pytest.approx(probability, abs=0.005)
    source = phantom_datasets[0]
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    assert sr.PatientID == source.PatientID
    assert sr.SeriesInstanceUID != source.SeriesInstanceUID
    assert sr.SeriesDescription == text
    assert sr.VerificationFlag == "UNVERIFIED"
    assert sr.CompletionFlag == "COMPLETE"
    assert _evidence_uids(sr) == {ds.SOPInstanceUID for ds in phantom_datasets}

    # Set through highdicom's series_date/series_time, just before it stamps the content.
    series_made = datetime.strptime(f"{sr.SeriesDate}{sr.SeriesTime[:6]}", "%Y%m%d%H%M%S")
    content_made = datetime.strptime(f"{sr.ContentDate}{sr.ContentTime[:6]}", "%Y%m%d%H%M%S")
    assert timedelta(0) <= content_made - series_made < timedelta(seconds=5)
    assert dciodvfy_errors(path) == []
    dump = _dsrdump(path)
    assert text in dump
    assert '(1386000,SCT,"Intracranial hemorrhage")' in dump
    assert "230690007" not in dump


def test_dsrdump_shows_two_decimals_a_summary_and_the_disclaimer(
    tmp_path: Path, phantom_datasets: list[pydicom.Dataset]
) -> None:
    finding = _finding(
        phantom_datasets, suspected=True, probability=0.62915306091309, threshold=0.4213
    )
    path, _ = _write(tmp_path, phantom_datasets, finding)
    dump = _dsrdump(path)
    assert 'NUM:(,,"Probability")="0.63"' in dump
    assert 'NUM:(,,"Threshold Value")="0.42"' in dump
    assert "0.629153" not in dump and "0.4213" not in dump
    summary = "AI ICH TRIAGE: SUSPECTED (probability 0.63, threshold 0.42)"
    assert f'TEXT:(,,"Summary")="{summary}"' in dump
    assert f'TEXT:(,,"Comment")="{DISCLAIMER}"' in dump
    assert "UNVERIFIED machine output, not for diagnostic use" in DISCLAIMER
    assert dciodvfy_errors(path) == []
    # The rounded value is also the binary one: no reader sees the long float.
    sr = pydicom.dcmread(path)
    values = [
        item.MeasuredValueSequence[0]
        for group in sr.ContentSequence[-1].ContentSequence
        for item in group.ContentSequence
        if item.ValueType == "NUM"
    ]
    assert [float(v.FloatingPointValue) for v in values] == [0.63, 0.42]


def test_decimals_never_contradict_the_verdict() -> None:
    assert decimals_for(probability=0.62915, threshold=0.4213) == 2
    # 0.4199 and 0.42 would both read "0.42", yet the verdict is NOT SUSPECTED.
    assert decimals_for(probability=0.4199, threshold=0.42) == 4
    assert decimals_for(probability=0.42, threshold=0.42) == 2
    assert decimals_for(probability=0.41996, threshold=0.42) == 5
    # Rounding keeps order, so a suspected verdict never needs more than two.


def test_the_finding_of_an_old_checkpoint_is_still_stroke(
    tmp_path: Path, phantom_datasets: list[pydicom.Dataset]
) -> None:
    finding = _finding(phantom_datasets, suspected=True, probability=0.7, concept=STROKE)
    path, _ = _write(tmp_path, phantom_datasets, finding)
    sr = hd.sr.srread(path)
    assert sr.SeriesDescription == "AI STROKE TRIAGE: SUSPECTED"
    (group,) = _content(sr).get_image_measurement_groups()
    assert group.finding_type.value == "230690007"
    assert read_finding(sr) == (True, 0.7)


def test_further_findings_have_groups_of_their_own(
    tmp_path: Path, phantom_datasets: list[pydicom.Dataset]
) -> None:
    finding = _finding(
        phantom_datasets,
        suspected=False,
        probability=0.3,
        other_findings=((EPIDURAL, 0.123456), (SUBDURAL, 0.987)),
    )
    path, _ = _write(tmp_path, phantom_datasets, finding)
    sr = hd.sr.srread(path)
    verdict, *further = _content(sr).get_image_measurement_groups()
    assert verdict.finding_type == coded_concept(INTRACRANIAL_HAEMORRHAGE)
    assert [(g.finding_type.value, g.tracking_identifier) for g in further] == [
        ("262300005", "AI EDH PROBABILITY"),
        ("35486000", "AI SDH PROBABILITY"),
    ]
    probabilities = [float(g.get_measurements(name=PROBABILITY)[0].value) for g in further]
    assert probabilities == [0.12, 0.99]
    # A further finding claims no verdict: no evaluation, no threshold of its own.
    assert all(g.get_qualitative_evaluations() == [] for g in further)
    assert len({g.tracking_uid for g in [verdict, *further]}) == 3
    assert read_finding(sr) == (False, 0.3)
    assert dciodvfy_errors(path) == []
    dump = _dsrdump(path)
    assert '(262300005,SCT,"Epidural hemorrhage")' in dump
    assert 'NUM:(,,"Probability")="0.12"' in dump


def test_a_further_findings_probability_outside_unit_interval_is_refused(
    phantom_datasets: list[pydicom.Dataset],
) -> None:
    finding = _finding(
        phantom_datasets, suspected=True, probability=0.9, other_findings=((EPIDURAL, 1.2),)
    )
    with pytest.raises(ReportError, match="Epidural hemorrhage lies outside"):
        build_structured_report(
            source_datasets=phantom_datasets, finding=finding, algorithm=ALGORITHM
        )


def test_read_finding_reads_a_report_written_before_the_finding_travelled(
    phantom_datasets: list[pydicom.Dataset],
) -> None:
    """SCT 230690007 and the private value codes of the reports already in PACSs."""
    stroke = hd.sr.CodedConcept.from_code(codes.SCT.CerebrovascularAccidentOrStroke)
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=generate_uid(), identifier="AI STROKE TRIAGE: NOT SUSPECTED"
        ),
        finding_type=stroke,
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(name=stroke, value=codes.SCT.Absent)],
        measurements=[
            hd.sr.Measurement(
                name=hd.sr.CodedConcept("STROKE_PROB", "99STRKTRG", "Stroke probability"),
                value=0.31415926,
                unit=codes.UCUM.NoUnits,
            )
        ],
    )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid()
        ),
    )
    legacy = hd.sr.Comprehensive3DSR(
        evidence=[source_header(phantom_datasets[0])],
        content=hd.sr.MeasurementReport(
            observation_context=hd.sr.ObservationContext(observer_device_context=observer),
            procedure_reported=codes.LN.HeadCT,
            imaging_measurements=[group],
        ),
        series_instance_uid=generate_uid(),
        series_number=9001,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="stroke-triage project",
    )
    assert read_finding(legacy) == (False, pytest.approx(0.31415926))


def test_measurement_group_content(tmp_path: Path, phantom_datasets: list[pydicom.Dataset]) -> None:
    finding = _finding(phantom_datasets, suspected=True, probability=0.9)
    path, _ = _write(tmp_path, phantom_datasets, finding)
    sr = hd.sr.srread(path)

    (group,) = _content(sr).get_image_measurement_groups()
    assert group.tracking_identifier == verdict_text(
        suspected=True, finding=INTRACRANIAL_HAEMORRHAGE
    )
    assert [site.value for site in group.finding_sites] == [codes.SCT.Brain]
    (evaluation,) = group.get_qualitative_evaluations()
    assert evaluation.name == coded_concept(INTRACRANIAL_HAEMORRHAGE)
    assert evaluation.name.value == "1386000"
    assert evaluation.value == codes.SCT.Present
    units = {
        (m.name.scheme_designator, m.name.value): (float(m.value), m.unit.value)
        for m in group.get_measurements()
    }
    assert units == {("DCM", "122157"): (0.9, "1"), ("DCM", "122411"): (0.5, "1")}
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
    assert read_finding(sr) == (False, 0.12)  # 0.125, two decimals (round half to even)
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
