"""Step 1 of the pipeline: start a job and read its series, knowing only the job's id."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pydicom

import db.jobs
import db.receiving
from db.enums import JobStatus
from dicom_edge import CLASSIFIABLE_SOP_CLASSES, select_instances
from worker.context import WorkerContext
from worker.errors import ErrorCode, WorkerError

log = logging.getLogger(__name__)

FINAL_JOB_STATES = frozenset(
    {JobStatus.SUPERSEDED, JobStatus.DONE, JobStatus.SKIPPED, JobStatus.FAILED}
)


class SeriesUnreadableError(WorkerError):
    """The stored series cannot be read or holds no CT slice: retrying will not help."""

    code = ErrorCode.SERIES_UNREADABLE


class SeriesMismatchError(WorkerError):
    """The task names another series than its job: the message is wrong, not the data."""

    code = ErrorCode.SERIES_MISMATCH


@dataclass(frozen=True)
class JobSkipped:
    """The job is already final (a duplicate delivery, or superseded): nothing to do."""

    status: str


@dataclass(frozen=True)
class SeriesInputs:
    """A started job and the CT slices of its series, read from storage."""

    job_id: int
    series_instance_uid: str
    datasets: list[pydicom.Dataset]

    @cached_property
    def sop_instance_uids(self) -> list[str]:
        """The slices' SOP Instance UIDs, in the order of ``datasets``."""
        return [str(ds.SOPInstanceUID) for ds in self.datasets]

    @cached_property
    def fingerprint(self) -> str:
        """Which instances a result is computed on (see :func:`input_fingerprint`)."""
        return input_fingerprint(self.sop_instance_uids)


def input_fingerprint(sop_instance_uids: Sequence[str]) -> str:
    """sha256 of the sorted SOP Instance UIDs: which instances a result was computed on."""
    digest = hashlib.sha256()
    for uid in sorted(sop_instance_uids):
        digest.update(uid.encode("ascii") + b"\n")
    return digest.hexdigest()


def load_inputs(
    ctx: WorkerContext, *, job_id: int, series_instance_uid: str, worker: str | None
) -> SeriesInputs | JobSkipped:
    """Start the job (one transaction) and read its series' CT slices from storage.

    Args:
        ctx: This worker process's context.
        job_id: The job; its row names the series.
        series_instance_uid: The series the task names; must be the job's.
        worker: Name of this worker, recorded on the job.

    Raises:
        SeriesMismatchError: The task's series is not the job's.
        SeriesUnreadableError: The series was purged, holds no CT image, or a file is unreadable.
    """
    with ctx.sessions() as session:
        job = db.jobs.get_job(session=session, job_id=job_id)
        job_series_uid = job.series.series_instance_uid
        if job_series_uid != series_instance_uid:
            raise SeriesMismatchError(
                f"Job {job_id} is for series {job_series_uid}, but its task names series "
                f"{series_instance_uid}; the job is not run."
            )
        if job.status in FINAL_JOB_STATES:
            # A duplicate delivery, or a job superseded by newer instances of the series.
            log.info("Job %d is %s: nothing to do", job_id, job.status)
            return JobSkipped(str(job.status))
        db.jobs.start_job(session=session, job_id=job_id, worker=worker)
        purged_at = job.series.purged_at
        paths = [
            ctx.runtime.storage_dir / instance.path
            for instance in db.receiving.series_instances(
                session=session, series_instance_uid=series_instance_uid
            )
            if instance.sop_class_uid in CLASSIFIABLE_SOP_CLASSES
        ]
        session.commit()

    if purged_at is not None:
        raise SeriesUnreadableError(
            f"The stored instances of series {series_instance_uid} were deleted by the retention "
            f"policy on {purged_at:%Y-%m-%d}; send the series again to classify it."
        )
    return SeriesInputs(
        job_id, series_instance_uid, read_series(paths, series_instance_uid=series_instance_uid)
    )


def read_series(paths: Sequence[Path], *, series_instance_uid: str) -> list[pydicom.Dataset]:
    """Read a series' CT image files and keep the instances that are classified.

    The one reading step of the worker, which ``stroke-triage validate`` and ``calibrate`` call
    too: every file is read in full, then :func:`dicom_edge.select_instances` (the
    listener's own selection) keeps the axial slices of one stack, in the given order.

    Args:
        paths: The series' instances of a classifiable CT SOP class.
        series_instance_uid: The series, for the messages.

    Returns:
        The selected datasets, ready for ``Classifier.predict_series``.

    Raises:
        SeriesUnreadableError: No path, a file that is not readable DICOM, or no slice to
            classify (the message says why).
    """
    if not paths:
        raise SeriesUnreadableError(f"Series {series_instance_uid} holds no CT image to classify.")
    datasets: list[pydicom.Dataset] = []
    for path in paths:
        try:
            datasets.append(pydicom.dcmread(path))
        except (OSError, pydicom.errors.InvalidDicomError) as exc:
            # pydicom's text may quote the file's values: it goes to the log, not the job.
            raise SeriesUnreadableError(
                f"Instance {path.name} of series {series_instance_uid} is not readable DICOM.",
                detail=f"{type(exc).__name__}: {exc}",
            ) from exc
    # The listener's own selection: only the axial slices of one stack are classified.
    selection = select_instances(datasets, min_slices=1)
    if not selection.classify:
        raise SeriesUnreadableError(
            f"Series {series_instance_uid} has no slices to classify: {selection.reason}."
        )
    if len(selection.selected) < len(datasets):
        log.info("Series %s: %s", series_instance_uid, selection.reason)
    return [datasets[index] for index in selection.selected]
