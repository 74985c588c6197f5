"""The work behind one task: classify a completed series, record it, report it to PACS.

Idempotent: the same instances and the same model give one result row and one SR with
the same UIDs however often this runs; only exports not yet sent are sent again.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session

from db import crud
from db.enums import ExportKind, JobStatus
from db.models import Result
from worker.capture import build_heatmap_capture
from worker.context import WorkerContext
from worker.errors import WorkerError
from worker.heatmaps import top_slice_heatmaps
from worker.outbox import OutputFile, deliver, destinations, queue_exports
from worker.report import AlgorithmInfo, Finding, build_structured_report

log = logging.getLogger(__name__)

FINAL_JOB_STATES = frozenset(
    {JobStatus.SUPERSEDED, JobStatus.DONE, JobStatus.SKIPPED, JobStatus.FAILED}
)
CLASSIFIED_SOP_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.2"})
CAPTURE_SLICES = 3
"""Most suspicious slices shown in the heat-map Secondary Capture."""


class SeriesUnreadableError(WorkerError):
    """The stored series cannot be read or holds no CT slice: retrying will not help."""


@dataclass(frozen=True)
class Outcome:
    """What one run of the pipeline produced."""

    job_id: int
    result_id: int | None
    suspected: bool | None
    probability: float | None
    report_path: Path | None
    skipped: str | None = None


def software_version() -> str:
    """This package's version, for provenance."""
    try:
        return version("stroke-triage")
    except PackageNotFoundError:
        return "0+unknown"


def input_fingerprint(sop_instance_uids: Sequence[str]) -> str:
    """sha256 of the sorted SOP Instance UIDs: which instances a result was computed on."""
    digest = hashlib.sha256()
    for uid in sorted(sop_instance_uids):
        digest.update(uid.encode("ascii") + b"\n")
    return digest.hexdigest()


def process_series(
    ctx: WorkerContext, *, job_id: int, series_instance_uid: str, worker: str | None = None
) -> Outcome:
    """Classify the series of ``job_id``, store the result and send the reports.

    Args:
        ctx: This worker process's context.
        job_id: The job.
        series_instance_uid: Its series.
        worker: Name of this worker, recorded on the job.

    Returns:
        What was done. Exports that fail stay in the outbox for the sweeper; the job is
        finished (``exported_at``) once every export is sent.
    """
    sessions = ctx.sessions
    with sessions() as session:
        job = crud.get_job(session=session, job_id=job_id)
        if job.status in FINAL_JOB_STATES:
            # A duplicate delivery, or a job superseded by newer instances of the series.
            log.info("Job %d is %s: nothing to do", job_id, job.status)
            return Outcome(job_id, None, None, None, None, skipped=str(job.status))
        crud.start_job(session=session, job_id=job_id, worker=worker)
        purged_at = crud.get_series(
            session=session, series_instance_uid=series_instance_uid
        ).purged_at
        paths = [
            ctx.runtime.storage_dir / instance.path
            for instance in crud.series_instances(
                session=session, series_instance_uid=series_instance_uid
            )
            if instance.sop_class_uid in CLASSIFIED_SOP_CLASSES
        ]
        session.commit()

    if purged_at is not None:
        raise SeriesUnreadableError(
            f"The stored instances of series {series_instance_uid} were deleted by the retention "
            f"policy on {purged_at:%Y-%m-%d}; send the series again to classify it."
        )
    datasets = _read_series(paths, series_instance_uid)
    uids = [str(ds.SOPInstanceUID) for ds in datasets]
    fingerprint = input_fingerprint(uids)
    classifier = ctx.classifier
    spec = classifier.spec

    with sessions() as session:
        result = _existing_result(session, job_id, fingerprint, classifier.sha256)
        if result is None:
            prediction = classifier.predict_series(datasets)
            result = crud.record_result(
                session=session,
                job_id=job_id,
                probability=prediction.probability,
                suspected=prediction.suspected,
                threshold=prediction.threshold,
                model_name=spec.name,
                model_version=spec.version,
                model_sha256=classifier.sha256,
                input_fingerprint=fingerprint,
                precision=classifier.precision,
                device=str(classifier.device),
                slice_scores=list(zip(uids, prediction.slice_probabilities, strict=True)),
            )
            session.commit()
            log.info(
                "Series %s: probability %.3f, %s (threshold %.3f, %d slices)",
                series_instance_uid,
                prediction.probability,
                "suspected" if prediction.suspected else "not suspected",
                prediction.threshold,
                len(uids),
            )
            top = [uids[i] for i in prediction.top_slices]
        else:
            crud.mark_inferred(session=session, job_id=job_id)
            session.commit()
            top = _top_slices(result, spec.aggregation.k)
        finding = Finding(
            probability=result.probability,
            suspected=result.suspected,
            threshold=result.threshold,
            top_instance_uids=top,
        )
        result_id = result.id
        predecessors = crud.superseded_report_paths(session=session, result_id=result_id)

    seed = [fingerprint, classifier.sha256]
    outputs = [
        OutputFile(
            ExportKind.SR,
            _write_report(
                ctx,
                datasets=datasets,
                finding=finding,
                seed=seed,
                algorithm=AlgorithmInfo(
                    name=spec.name,
                    version=spec.version,
                    software_version=software_version(),
                    model_sha256=classifier.sha256,
                ),
                previous_versions=_read_predecessors(predecessors),
            ),
        )
    ]
    if ctx.config.secondary_capture:
        outputs.append(
            OutputFile(
                ExportKind.SC, _write_capture(ctx, datasets=datasets, finding=finding, seed=seed)
            )
        )
    _export(ctx, job_id=job_id, result_id=result_id, outputs=outputs)
    return Outcome(job_id, result_id, finding.suspected, finding.probability, outputs[0].path)


def _read_series(paths: Sequence[Path], series_instance_uid: str) -> list[pydicom.Dataset]:
    if not paths:
        raise SeriesUnreadableError(f"Series {series_instance_uid} holds no CT image to classify.")
    datasets: list[pydicom.Dataset] = []
    for path in paths:
        try:
            datasets.append(pydicom.dcmread(path))
        except (OSError, pydicom.errors.InvalidDicomError) as exc:
            raise SeriesUnreadableError(
                f"Instance {path.name} of series {series_instance_uid} cannot be read: {exc}"
            ) from exc
    return datasets


def _existing_result(
    session: Session, job_id: int, fingerprint: str, model_sha256: str
) -> Result | None:
    job = crud.get_job(session=session, job_id=job_id)
    found = session.scalars(
        select(Result).where(
            Result.series_id == job.series_id,
            Result.input_fingerprint == fingerprint,
            Result.model_sha256 == model_sha256,
        )
    ).first()
    if found is not None:
        # Same instances, same model: a retry or a duplicate delivery. Reuse, never recompute.
        log.info("Job %d: result %d already exists for these instances", job_id, found.id)
    return found


def _top_slices(result: Result, count: int) -> list[str]:
    scores = sorted(result.slice_scores, key=lambda score: score.rank)
    return [score.sop_instance_uid for score in scores[:count]]


def _write_report(
    ctx: WorkerContext,
    *,
    datasets: Sequence[pydicom.Dataset],
    finding: Finding,
    seed: Sequence[str],
    algorithm: AlgorithmInfo,
    previous_versions: Sequence[pydicom.Dataset],
) -> Path:
    # Deterministic UIDs: the same result always yields the same SR, so a re-run or a
    # retried export can never put a second copy in the PACS.
    series_uid = generate_uid(entropy_srcs=[*seed, "sr-series"])
    sop_uid = generate_uid(entropy_srcs=[*seed, "sr-instance"])
    report = build_structured_report(
        source_datasets=datasets,
        finding=finding,
        algorithm=algorithm,
        series_instance_uid=series_uid,
        sop_instance_uid=sop_uid,
        institution_name=ctx.config.institution_name,
        previous_versions=previous_versions,
    )
    return _save(ctx, report, str(datasets[0].StudyInstanceUID), sop_uid)


def _read_predecessors(paths: Sequence[str]) -> list[pydicom.Dataset]:
    """The SRs this one replaces (a late instance changed the series), as far as still on disk."""
    found: list[pydicom.Dataset] = []
    for path in paths:
        try:
            found.append(pydicom.dcmread(path, stop_before_pixels=True))
        except (OSError, pydicom.errors.InvalidDicomError) as exc:
            log.warning("Earlier report %s cannot be read, so it is not referenced: %s", path, exc)
    return found


def _write_capture(
    ctx: WorkerContext,
    *,
    datasets: Sequence[pydicom.Dataset],
    finding: Finding,
    seed: Sequence[str],
) -> Path:
    by_uid = {str(ds.SOPInstanceUID): index for index, ds in enumerate(datasets)}
    top = [by_uid[uid] for uid in finding.top_instance_uids[:CAPTURE_SLICES] if uid in by_uid]
    images, heatmaps = top_slice_heatmaps(
        network=ctx.network, spec=ctx.classifier.spec, datasets=datasets, top_indices=top
    )
    sop_uid = generate_uid(entropy_srcs=[*seed, "sc-instance"])
    capture = build_heatmap_capture(
        source_datasets=[datasets[i] for i in top],
        images=images,
        heatmaps=heatmaps,
        probability=finding.probability,
        suspected=finding.suspected,
        series_instance_uid=generate_uid(entropy_srcs=[*seed, "sc-series"]),
        sop_instance_uid=sop_uid,
    )
    return _save(ctx, capture, str(datasets[0].StudyInstanceUID), sop_uid)


def _save(ctx: WorkerContext, dataset: pydicom.Dataset, study_uid: str, sop_uid: str) -> Path:
    folder = ctx.runtime.reports_dir / study_uid
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{sop_uid}.dcm"
    temp = path.with_suffix(".part")
    dataset.save_as(temp, enforce_file_format=True)
    temp.replace(path)
    return path


def _export(
    ctx: WorkerContext, *, job_id: int, result_id: int, outputs: Sequence[OutputFile]
) -> None:
    """Queue the outputs in the outbox and try each once now; the sweeper retries the rest."""
    targets = destinations(ctx.config)
    with ctx.sessions() as session:
        unsent = queue_exports(session, result_id=result_id, outputs=outputs, targets=targets)
        session.commit()
    sent = sum(
        deliver(ctx.sessions, export_id=export_id, config=ctx.config) for export_id in unsent
    )
    if sent == len(unsent):
        # Nothing (left) to send: deliver() finished the job with the last export, if any.
        with ctx.sessions() as session:
            crud.finish_job(session=session, job_id=job_id)
            session.commit()
    else:
        log.warning(
            "Job %d: %d of %d exports not sent yet; the outbox will retry them",
            job_id,
            len(unsent) - sent,
            len(unsent),
        )
