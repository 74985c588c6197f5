"""The DICOM Structured Report that carries the triage verdict back to the PACS.

The report is a Comprehensive 3D SR holding one TID 1500 Measurement Report, built only with
highdicom's templates. It joins the patient and study of the analysed CT series as a new series,
names the algorithm as the device observer (TID 1004) and in TID 4019, and records the
algorithm as Contributing Equipment, as IHE AI Results (AIR) asks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import highdicom as hd
import pydicom
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from model.spec import CodedFinding
from worker.errors import ReportError

logger = logging.getLogger(__name__)

SUSPECTED_TEXT = "AI STROKE TRIAGE: SUSPECTED"
NOT_SUSPECTED_TEXT = "AI STROKE TRIAGE: NOT SUSPECTED"

PRIVATE_SCHEME = "99STRKTRG"
"""Designator of the project's private coding scheme (a "99" prefix marks it as local)."""

STROKE = hd.sr.CodedConcept.from_code(codes.SCT.CerebrovascularAccidentOrStroke)
"""SCT 230690007, the concept of the qualitative evaluation."""
STROKE_PROBABILITY = hd.sr.CodedConcept("STROKE_PROB", PRIVATE_SCHEME, "Stroke probability")
STROKE_THRESHOLD = hd.sr.CodedConcept(
    "STROKE_THRESHOLD", PRIVATE_SCHEME, "Stroke decision threshold"
)
# CID 240 "Present-Absent Only": SCT 52101004 Present, SCT 272519000 Absent.
PRESENT = hd.sr.CodedConcept.from_code(codes.SCT.Present)
ABSENT = hd.sr.CodedConcept.from_code(codes.SCT.Absent)
NO_UNITS = hd.sr.CodedConcept.from_code(codes.UCUM.NoUnits)

_COMPLETION_DESCRIPTION = "Machine-generated triage result; not reviewed by a physician"


@dataclass(frozen=True, kw_only=True)
class AlgorithmInfo:
    """Identity of the algorithm that produced a result (IHE AIR provenance).

    Attributes:
        name: Algorithm name, as in TID 4019.
        version: Algorithm (model) version, as in TID 4019.
        manufacturer: Who makes the algorithm.
        model_name: Manufacturer's model name of the software device.
        software_version: Version of the stroke-triage package.
        model_sha256: SHA-256 of the model weights file.
    """

    name: str
    version: str
    manufacturer: str = "stroke-triage project"
    model_name: str = "stroke-triage"
    software_version: str
    model_sha256: str


@dataclass(frozen=True, kw_only=True)
class Finding:
    """The verdict on one CT series.

    Attributes:
        probability: Series-level stroke probability in [0, 1].
        suspected: Whether the probability reached the threshold.
        threshold: Decision threshold the verdict was taken with.
        top_instance_uids: SOP Instance UIDs of the most suspicious slices, most suspicious first.
    """

    probability: float
    suspected: bool
    threshold: float
    top_instance_uids: Sequence[str]
    other_findings: Sequence[tuple[CodedFinding, float]] = ()
    """Further findings of a multi-output model with their probabilities (not the verdict's)."""


class ReportedFinding(NamedTuple):
    """The verdict read back from a Structured Report."""

    suspected: bool
    probability: float


def verdict_text(*, suspected: bool) -> str:
    """Returns the text that names a verdict in series descriptions and tracking identifiers."""
    return SUSPECTED_TEXT if suspected else NOT_SUSPECTED_TEXT


def series_description(verdict: str, classified_series: str | None) -> str:
    """``AI STROKE TRIAGE: SUSPECTED - series 2 HEAD 5mm STD``, cut to LO's 64 characters."""
    if not classified_series:
        return verdict
    return f"{verdict} - {classified_series}"[:64].rstrip()


def build_structured_report(
    *,
    source_datasets: Sequence[pydicom.Dataset],
    finding: Finding,
    algorithm: AlgorithmInfo,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    series_number: int = 9001,
    instance_number: int = 1,
    institution_name: str | None = None,
    previous_versions: Sequence[pydicom.Dataset] = (),
    classified_series: str | None = None,
) -> hd.sr.Comprehensive3DSR:
    """Builds the Comprehensive 3D SR that reports the verdict on a CT series.

    Args:
        source_datasets: Every instance of the analysed series (headers suffice).
        finding: The verdict to report.
        algorithm: Identity of the algorithm, stamped on the report.
        series_instance_uid: UID of the new SR series; random when None.
        sop_instance_uid: UID of the SR instance; random when None.
        series_number: Series Number of the SR series.
        instance_number: Instance Number of the SR.
        institution_name: Institution to record, if any.
        previous_versions: Earlier reports on the same study that this one replaces (a late
            instance, or a better series); listed in the Predecessor Documents Sequence.
        classified_series: The series the verdict is on (``series 2 HEAD 5mm STD``), named in
            the series description and the content tree.

    Returns:
        The report, ready for ``save_as`` or C-STORE.

    Raises:
        ReportError: If the inputs are inconsistent or highdicom rejects the content.
    """
    _check_inputs(source_datasets=source_datasets, finding=finding)
    sop_instance_uid = sop_instance_uid or hd.UID()
    series_instance_uid = series_instance_uid or hd.UID()
    text = verdict_text(suspected=finding.suspected)
    try:
        content = _measurement_report(
            source_datasets=source_datasets,
            finding=finding,
            algorithm=algorithm,
            tracking_uid=generate_uid(entropy_srcs=[sop_instance_uid, "tracking"]),
            classified_series=classified_series,
        )
        report = hd.sr.Comprehensive3DSR(
            evidence=[source_header(source_datasets[0]), *source_datasets[1:]],
            content=content,
            series_instance_uid=series_instance_uid,
            series_number=series_number,
            sop_instance_uid=sop_instance_uid,
            instance_number=instance_number,
            manufacturer=algorithm.manufacturer,
            # COMPLETE: the document holds everything the algorithm will ever say about this
            # series. It stays UNVERIFIED and PRELIMINARY: no physician has reviewed it.
            is_complete=True,
            is_final=False,
            is_verified=False,
            institution_name=institution_name,
            previous_versions=list(previous_versions) or None,
            record_evidence=True,
            contributing_equipment=[_algorithm_equipment(algorithm)],
            series_description=series_description(text, classified_series),
            manufacturer_model_name=algorithm.model_name,
            software_versions=algorithm.software_version,
            coding_schemes=[
                hd.coding_schemes.CodingSchemeIdentificationItem(
                    designator=PRIVATE_SCHEME,
                    name="stroke-triage private codes",
                    responsible_organization="stroke-triage project",
                )
            ],
        )
    except (ValueError, TypeError, AttributeError) as error:
        raise ReportError(f"The Structured Report could not be built: {error}.") from error
    report.CompletionFlagDescription = _COMPLETION_DESCRIPTION
    logger.info(
        "Built SR %s for series %s: suspected=%s, %d evidence instances",
        sop_instance_uid,
        source_datasets[0].SeriesInstanceUID,
        finding.suspected,
        len(source_datasets),
    )
    return report


def read_finding(sr: pydicom.Dataset) -> ReportedFinding:
    """Reads the verdict back from a report written by :func:`build_structured_report`.

    Args:
        sr: The Structured Report dataset, for example from ``pydicom.dcmread``.

    Returns:
        Whether stroke was suspected, and the reported probability.

    Raises:
        ReportError: If the dataset holds no stroke triage measurement group.
    """
    try:
        content = hd.sr.Comprehensive3DSR.from_dataset(sr, copy=True).content
    except (ValueError, TypeError, AttributeError) as error:
        raise ReportError(f"The dataset is not a readable Structured Report: {error}.") from error
    if not isinstance(content, hd.sr.MeasurementReport):
        raise ReportError("The Structured Report does not hold a TID 1500 Measurement Report.")
    groups = content.get_image_measurement_groups()
    for group in groups:
        evaluations = [e for e in group.get_qualitative_evaluations() if e.name == STROKE]
        measurements = group.get_measurements(name=STROKE_PROBABILITY)
        if evaluations and measurements:
            return ReportedFinding(
                suspected=evaluations[0].value == PRESENT,
                probability=float(measurements[0].value),
            )
    raise ReportError("The Structured Report holds no stroke triage measurement group.")


def _check_inputs(*, source_datasets: Sequence[pydicom.Dataset], finding: Finding) -> None:
    if not source_datasets:
        raise ReportError("A Structured Report needs at least one source instance.")
    if not 0.0 <= finding.probability <= 1.0:
        raise ReportError(f"The probability {finding.probability} lies outside [0, 1].")
    if len({ds.StudyInstanceUID for ds in source_datasets}) != 1:
        raise ReportError("The source instances belong to more than one study.")
    source_uids = {ds.SOPInstanceUID for ds in source_datasets}
    missing = [uid for uid in finding.top_instance_uids if uid not in source_uids]
    if missing:
        raise ReportError(f"The top slices {missing} are not among the source instances.")


def _measurement_report(
    *,
    source_datasets: Sequence[pydicom.Dataset],
    finding: Finding,
    algorithm: AlgorithmInfo,
    tracking_uid: str,
    classified_series: str | None = None,
) -> hd.sr.MeasurementReport:
    algorithm_id = hd.sr.AlgorithmIdentification(
        name=algorithm.name,
        version=algorithm.version,
        parameters=[f"model_sha256={algorithm.model_sha256}", f"threshold={finding.threshold}"],
    )
    by_uid = {ds.SOPInstanceUID: ds for ds in source_datasets}
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=tracking_uid, identifier=verdict_text(suspected=finding.suspected)
        ),
        finding_type=STROKE,
        algorithm_id=algorithm_id,
        finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SCT.Brain)],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(name=STROKE, value=PRESENT if finding.suspected else ABSENT)
        ],
        measurements=[
            hd.sr.Measurement(name=STROKE_PROBABILITY, value=finding.probability, unit=NO_UNITS),
            hd.sr.Measurement(name=STROKE_THRESHOLD, value=finding.threshold, unit=NO_UNITS),
        ],
        source_images=[
            hd.sr.SourceImageForMeasurementGroup.from_source_image(by_uid[uid])
            for uid in finding.top_instance_uids
        ]
        or None,
    )
    if classified_series:
        # One series of the study is read (issue 26): the tree says which, beside the verdict.
        group[0].ContentSequence.append(
            hd.sr.TextContentItem(
                name=codes.DCM.Comment,
                value=f"Classified series: {classified_series}"[:1024],
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(
                entropy_srcs=[algorithm.name, algorithm.version, algorithm.model_sha256]
            ),
            name=algorithm.name,
            manufacturer_name=algorithm.manufacturer,
            model_name=algorithm.model_name,
        ),
    )
    return hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.LN.HeadCT,
        imaging_measurements=[group],
    )


def _algorithm_equipment(algorithm: AlgorithmInfo) -> hd.ContributingEquipment:
    # IHE AIR describes the AI model as Contributing Equipment with the purpose
    # (DCM 109102, "Processing Equipment"); "Modifying Equipment" would claim we changed data.
    return hd.ContributingEquipment(
        manufacturer=algorithm.manufacturer,
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=algorithm.model_name,
        software_versions=[algorithm.software_version, algorithm.version],
        contribution_description=(
            f"AI stroke triage by {algorithm.name} {algorithm.version}, "
            f"model weights sha256 {algorithm.model_sha256}"
        ),
    )


# Type 2 attributes that highdicom reads with attribute access from the first evidence dataset;
# real, de-identified series often lack them (the GE test series has no Patient's Sex).
_TYPE2_PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)


def source_header(dataset: pydicom.Dataset) -> pydicom.Dataset:
    """Returns a header-only copy of a source instance that highdicom can inherit from.

    Missing type 2 patient and study attributes are added empty, so that derived objects
    carry a valid Patient and General Study module.
    """
    header = pydicom.Dataset()
    for element in dataset:
        if element.tag.group != 0x7FE0:
            header.add(element)
    if hasattr(dataset, "file_meta"):
        header.file_meta = dataset.file_meta
    for keyword in _TYPE2_PATIENT_STUDY:
        if keyword not in header:
            setattr(header, keyword, None)
    # De-identification Method is type 1C once Patient Identity Removed is YES; de-identified
    # sources often leave it empty, and the copied Patient module would then be invalid.
    if (
        header.get("PatientIdentityRemoved") == "YES"
        and not header.get("DeidentificationMethod")
        and not header.get("DeidentificationMethodCodeSequence")
    ):
        header.DeidentificationMethod = "Not stated in the source images"
    return header
