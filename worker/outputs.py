"""Step 3 of the pipeline: write the SR (and the heat-map capture) durably to the reports folder.

UIDs are derived from the inputs and the model, so the same result always yields the same
objects: a re-run or a retried export can never put a second copy in the PACS.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from io import BytesIO

import pydicom
from pydicom.uid import generate_uid

import db.results
from db.enums import ExportKind
from dicom_edge import write_atomic
from model.explain import explain_slices
from worker.capture import build_heatmap_capture
from worker.classification import Verdict
from worker.context import WorkerContext
from worker.errors import ReportError
from worker.inputs import SeriesInputs
from worker.outbox import OutputFile
from worker.preview import series_label
from worker.report import AlgorithmInfo, build_structured_report

log = logging.getLogger(__name__)

CAPTURE_SLICES = 3
"""Most suspicious slices (or slabs, each by its middle slice) shown in the heat-map capture."""


def software_version() -> str:
    """This package's version, for provenance."""
    try:
        return version("stroke-triage")
    except PackageNotFoundError:
        return "0+unknown"


def stored_algorithm(ctx: WorkerContext, result_id: int) -> AlgorithmInfo:
    """The model that made a stored result, as its row records it.

    A reused result (a re-run, a requeue, a revision) keeps its own provenance: the checkpoint
    loaded now may carry another name or version for the same weights (a new spec file).
    """
    with ctx.sessions() as session:
        result = db.results.result_by_id(session=session, result_id=result_id)
        algorithm = AlgorithmInfo(
            name=result.model_name,
            version=result.model_version,
            software_version=software_version(),
            model_sha256=result.model_sha256,
        )
        session.commit()
    return algorithm


def write_outputs(ctx: WorkerContext, inputs: SeriesInputs, verdict: Verdict) -> list[OutputFile]:
    """Write the SR, and the Secondary Capture when configured; the SR comes first.

    The capture is best effort: one that cannot be made is logged and left out, and the SR
    and the alert go without it.
    """
    seed = [inputs.fingerprint, ctx.classifier.sha256]
    outputs = [_write_report(ctx, inputs, verdict, seed)]
    if ctx.config.secondary_capture:
        try:
            outputs.append(_write_capture(ctx, inputs, verdict, seed))
        except Exception:  # the heat map must never hold back the SR or the alert
            log.exception("Job %d: the heat-map capture could not be made", inputs.job_id)
    return outputs


def _write_report(
    ctx: WorkerContext, inputs: SeriesInputs, verdict: Verdict, seed: Sequence[str]
) -> OutputFile:
    sop_uid = generate_uid(entropy_srcs=[*seed, "sr-instance"])
    report = build_structured_report(
        source_datasets=inputs.datasets,
        finding=verdict.finding,
        algorithm=stored_algorithm(ctx, verdict.result_id),
        series_instance_uid=generate_uid(entropy_srcs=[*seed, "sr-series"]),
        sop_instance_uid=sop_uid,
        institution_name=ctx.config.institution_name,
        previous_versions=_read_predecessors(verdict.predecessor_paths),
        classified_series=series_label(inputs.datasets[0]),
    )
    return _save(ctx, ExportKind.SR, report, inputs, sop_uid)


def _read_predecessors(paths: Sequence[str]) -> list[pydicom.Dataset]:
    """The SRs this one replaces (late instances, or a better series of the study), as far as
    still on disk."""
    found: list[pydicom.Dataset] = []
    for path in paths:
        try:
            found.append(pydicom.dcmread(path, stop_before_pixels=True))
        except (OSError, pydicom.errors.InvalidDicomError) as exc:
            log.warning("Earlier report %s cannot be read, so it is not referenced: %s", path, exc)
    return found


def _write_capture(
    ctx: WorkerContext, inputs: SeriesInputs, verdict: Verdict, seed: Sequence[str]
) -> OutputFile:
    datasets, finding = inputs.datasets, verdict.finding
    by_uid = {uid: index for index, uid in enumerate(inputs.sop_instance_uids)}
    top = [by_uid[uid] for uid in finding.key_slices[:CAPTURE_SLICES] if uid in by_uid]
    images, heatmaps = explain_slices(
        network=ctx.network, spec=ctx.classifier.spec, datasets=datasets, indices=top
    )
    sop_uid = generate_uid(entropy_srcs=[*seed, "sc-instance"])
    capture = build_heatmap_capture(
        source_datasets=[datasets[i] for i in top],
        images=images,
        heatmaps=heatmaps,
        probability=finding.probability,
        suspected=finding.suspected,
        threshold=finding.threshold,
        finding=finding.concept,
        model_version=stored_algorithm(ctx, verdict.result_id).version,
        series_instance_uid=generate_uid(entropy_srcs=[*seed, "sc-series"]),
        sop_instance_uid=sop_uid,
    )
    return _save(ctx, ExportKind.SC, capture, inputs, sop_uid)


def _save(
    ctx: WorkerContext,
    kind: ExportKind,
    dataset: pydicom.Dataset,
    inputs: SeriesInputs,
    sop_uid: str,
) -> OutputFile:
    """Write a DICOM file durably: reports/<study>/<sop>.dcm appears whole or not at all.

    The output names the file's sha256 and size as written: what is sent must still be that.
    """
    buffer = BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    study_uid = str(inputs.datasets[0].StudyInstanceUID)
    try:
        path = write_atomic(ctx.runtime.reports_dir / study_uid / f"{sop_uid}.dcm", data)
    except OSError as exc:  # disk full, no permission, the folder replaced by a file
        raise ReportError(
            f"The {kind.upper()} {sop_uid} could not be written to the reports folder: {exc}."
        ) from exc
    return OutputFile(kind, path, sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
