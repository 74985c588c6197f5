"""The DICOM Structured Report that carries the triage verdict back to the PACS.

The report is a Comprehensive 3D SR holding one TID 1500 Measurement Report, built only with
highdicom's templates. It joins the patient and study of the analysed CT series as a new series,
names the algorithm as the device observer (TID 1004) and in TID 4019, and records the
algorithm as Contributing Equipment, as IHE AI Results (AIR) asks.

The finding is the model's own (its spec's coded concept, stored with the result), never a
fixed one. One measurement group holds the verdict (a qualitative evaluation, the probability,
the threshold, a one-line summary and the disclaimer); each further finding of a multi-output
model has a group of its own with its probability. Values carry two decimals.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

import highdicom as hd
import pydicom
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from model.spec import STROKE, CodedFinding
from worker.errors import ReportError

logger = logging.getLogger(__name__)

DISCLAIMER = (
    "UNVERIFIED machine output, not for diagnostic use: no physician has reviewed it. "
    "The images decide."
)
"""Said inside the content tree, beside the verdict, for readers that show only the tree."""

PROBABILITY = hd.sr.CodedConcept.from_code(codes.DCM.Probability)
"""DCM 122157 "Probability": the model's probability of the finding."""
THRESHOLD = hd.sr.CodedConcept.from_code(codes.DCM.ThresholdValue)
"""DCM 122411 "Threshold Value": the probability at and above which the finding is suspected."""
SUMMARY = hd.sr.CodedConcept.from_code(codes.DCM.Summary)
"""DCM 121111 "Summary": the verdict in one line."""
COMMENT = hd.sr.CodedConcept.from_code(codes.DCM.Comment)
"""DCM 121106 "Comment": the disclaimer."""
# CID 240 "Present-Absent Only": SCT 52101004 Present, SCT 272519000 Absent.
PRESENT = hd.sr.CodedConcept.from_code(codes.SCT.Present)
ABSENT = hd.sr.CodedConcept.from_code(codes.SCT.Absent)
NO_UNITS = hd.sr.CodedConcept.from_code(codes.UCUM.NoUnits)

# Reports written before the finding travelled with the model: the evaluation was always SCT
# 230690007 and the values had private codes. ``read_finding`` still reads them.
_LEGACY_SCHEME = "99STRKTRG"
_LEGACY_PROBABILITY = hd.sr.CodedConcept("STROKE_PROB", _LEGACY_SCHEME, "Stroke probability")

DECIMALS = 2
"""Decimals of the probabilities and the threshold in the report and the series description."""

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
        probability: Series-level probability of the finding, in [0, 1].
        suspected: Whether the probability reached the threshold.
        threshold: Decision threshold the verdict was taken with.
        top_instance_uids: SOP Instance UIDs of the slices behind the most suspicious images,
            most suspicious first: the top slices, or every slice of the top slabs (cited).
        concept: What the model detects (its spec's finding, as stored with the result).
        other_findings: Further findings of a multi-output model with their probabilities.
        key_instance_uids: One slice per most suspicious image, most suspicious first (a slab's
            middle slice), for the heat map and the preview; empty: ``top_instance_uids``.
        averaging: How thin slices were averaged into slabs (said in the report), if they were.
    """

    probability: float
    suspected: bool
    threshold: float
    top_instance_uids: Sequence[str]
    concept: CodedFinding = STROKE
    other_findings: Sequence[tuple[CodedFinding, float]] = ()
    key_instance_uids: Sequence[str] = ()
    averaging: str | None = None

    @property
    def key_slices(self) -> Sequence[str]:
        """The slices the heat map and the preview show, most suspicious first."""
        return self.key_instance_uids or self.top_instance_uids


class ReportedFinding(NamedTuple):
    """The verdict read back from a Structured Report."""

    suspected: bool
    probability: float


def verdict_text(*, suspected: bool, finding: CodedFinding = STROKE) -> str:
    """The series description and tracking identifier: ``AI ICH TRIAGE: SUSPECTED``."""
    verdict = "SUSPECTED" if suspected else "NOT SUSPECTED"
    return f"AI {finding.short_name.upper()} TRIAGE: {verdict}"


def decimals_for(*, probability: float, threshold: float) -> int:
    """How many decimals show ``probability`` and ``threshold`` without contradicting the verdict.

    Two, unless rounding to two would make a probability just below the threshold look equal to
    it (0.4199 and 0.42 both read 0.42, yet the verdict is NOT SUSPECTED); then as many as it takes.
    """
    suspected = probability >= threshold
    for decimals in range(DECIMALS, 7):
        if (round(probability, decimals) >= round(threshold, decimals)) == suspected:
            return decimals
    return 7


def summary_text(finding: Finding) -> str:
    """The verdict in one line.

    For example ``AI ICH TRIAGE: SUSPECTED (probability 0.63, threshold 0.42)``.
    """
    places = decimals_for(probability=finding.probability, threshold=finding.threshold)
    return (
        f"{verdict_text(suspected=finding.suspected, finding=finding.concept)} "
        f"(probability {finding.probability:.{places}f}, threshold {finding.threshold:.{places}f})"
    )


def coded_concept(finding: CodedFinding) -> hd.sr.CodedConcept:
    """The finding as highdicom's coded concept."""
    return hd.sr.CodedConcept(finding.value, finding.scheme, finding.meaning)


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
    text = verdict_text(suspected=finding.suspected, finding=finding.concept)
    made = datetime.now()
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
            # Series Date and Time (type 3) let a PACS file the new series beside the CT by
            # date; highdicom stamps the content's own date and time a moment later.
            series_date=made.date(),
            series_time=made.time(),
        )
    except (ValueError, TypeError, AttributeError) as error:
        raise ReportError(f"The Structured Report could not be built: {error}.") from error
    report.CompletionFlagDescription = _COMPLETION_DESCRIPTION
    logger.info(
        "Built SR %s for series %s: %s suspected=%s, %d evidence instances, %d further findings",
        sop_instance_uid,
        source_datasets[0].SeriesInstanceUID,
        finding.concept.short_name,
        finding.suspected,
        len(source_datasets),
        len(finding.other_findings),
    )
    return report


def read_finding(sr: pydicom.Dataset) -> ReportedFinding:
    """Reads the verdict back from a report written by :func:`build_structured_report`.

    Args:
        sr: The Structured Report dataset, for example from ``pydicom.dcmread``.

    The verdict's group is the one whose qualitative evaluation names its finding (the groups
    of further findings have none). Reports written before the finding travelled with the model
    (SCT 230690007 and private value codes) are read too.

    Returns:
        Whether the finding was suspected, and the reported probability.

    Raises:
        ReportError: If the dataset holds no triage measurement group.
    """
    try:
        content = hd.sr.Comprehensive3DSR.from_dataset(sr, copy=True).content
    except (ValueError, TypeError, AttributeError) as error:
        raise ReportError(f"The dataset is not a readable Structured Report: {error}.") from error
    if not isinstance(content, hd.sr.MeasurementReport):
        raise ReportError("The Structured Report does not hold a TID 1500 Measurement Report.")
    for group in content.get_image_measurement_groups():
        evaluations = [
            e for e in group.get_qualitative_evaluations() if e.name == group.finding_type
        ]
        measurements = group.get_measurements(name=PROBABILITY) or group.get_measurements(
            name=_LEGACY_PROBABILITY
        )
        if evaluations and measurements:
            return ReportedFinding(
                suspected=evaluations[0].value == PRESENT,
                probability=float(measurements[0].value),
            )
    raise ReportError("The Structured Report holds no triage measurement group.")


def _check_inputs(*, source_datasets: Sequence[pydicom.Dataset], finding: Finding) -> None:
    if not source_datasets:
        raise ReportError("A Structured Report needs at least one source instance.")
    for concept, probability in [(finding.concept, finding.probability), *finding.other_findings]:
        if not 0.0 <= probability <= 1.0:
            raise ReportError(
                f"The probability {probability} of {concept.meaning} lies outside [0, 1]."
            )
    if len({ds.StudyInstanceUID for ds in source_datasets}) != 1:
        raise ReportError("The source instances belong to more than one study.")
    source_uids = {ds.SOPInstanceUID for ds in source_datasets}
    cited = [*finding.top_instance_uids, *finding.key_instance_uids]
    missing = [uid for uid in dict.fromkeys(cited) if uid not in source_uids]
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
    places = decimals_for(probability=finding.probability, threshold=finding.threshold)
    algorithm_id = hd.sr.AlgorithmIdentification(
        name=algorithm.name,
        version=algorithm.version,
        parameters=[
            f"model_sha256={algorithm.model_sha256}",
            f"threshold={finding.threshold:.{places}f}",
        ],
    )
    by_uid = {ds.SOPInstanceUID: ds for ds in source_datasets}
    concept = coded_concept(finding.concept)
    verdict = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=tracking_uid,
            identifier=verdict_text(suspected=finding.suspected, finding=finding.concept),
        ),
        finding_type=concept,
        algorithm_id=algorithm_id,
        finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SCT.Brain)],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(
                name=concept, value=PRESENT if finding.suspected else ABSENT
            )
        ],
        measurements=[
            _value(PROBABILITY, finding.probability, places),
            _value(THRESHOLD, finding.threshold, places),
        ],
        source_images=[
            hd.sr.SourceImageForMeasurementGroup.from_source_image(by_uid[uid])
            for uid in finding.top_instance_uids
        ]
        or None,
    )
    # TID 1501 allows TEXT qualitative evaluations: the summary and the disclaimer sit in the
    # tree itself, where a viewer that shows only the content tree still shows them.
    texts = [(SUMMARY, summary_text(finding)), (COMMENT, DISCLAIMER)]
    if classified_series:
        # One series of the study is read (issue 26): the tree says which, beside the verdict.
        texts.append((COMMENT, f"Classified series: {classified_series}"[:1024]))
    if finding.averaging:
        texts.append((COMMENT, finding.averaging[:1024]))
    verdict[0].ContentSequence.extend(
        hd.sr.TextContentItem(
            name=name, value=value, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
        )
        for name, value in texts
    )
    further = [
        hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=generate_uid(entropy_srcs=[tracking_uid, other.scheme, other.value]),
                identifier=f"AI {other.short_name.upper()} PROBABILITY",
            ),
            finding_type=coded_concept(other),
            # Without the threshold: it belongs to the verdict's finding, not to this one.
            algorithm_id=hd.sr.AlgorithmIdentification(
                name=algorithm.name,
                version=algorithm.version,
                parameters=[f"model_sha256={algorithm.model_sha256}"],
            ),
            finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SCT.Brain)],
            measurements=[_value(PROBABILITY, probability, DECIMALS)],
        )
        for other, probability in finding.other_findings
    ]
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
        imaging_measurements=[verdict, *further],
    )


def _value(name: hd.sr.CodedConcept, value: float, places: int) -> hd.sr.Measurement:
    """A unitless value, rounded: highdicom writes a float's every digit (0.62915306091309)."""
    return hd.sr.Measurement(name=name, value=round(float(value), places), unit=NO_UNITS)


def _algorithm_equipment(algorithm: AlgorithmInfo) -> hd.ContributingEquipment:
    # IHE AIR describes the AI model as Contributing Equipment with the purpose
    # (DCM 109102, "Processing Equipment"); "Modifying Equipment" would claim we changed data.
    return hd.ContributingEquipment(
        manufacturer=algorithm.manufacturer,
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=algorithm.model_name,
        software_versions=[algorithm.software_version, algorithm.version],
        contribution_description=(
            f"AI triage by {algorithm.name} {algorithm.version}, "
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
