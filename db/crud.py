"""Keyword-only data access.

Every function takes the caller's ``session``, flushes, and never commits: the caller owns the
transaction. Inserts that two processes may race on (instances, results, exports) use the
dialect's ``INSERT ... ON CONFLICT`` so that neither fails nor duplicates a row.
"""

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from db.enums import FINAL_JOB_STATUSES, ExportKind, ExportStatus, JobStatus, SeriesStatus
from db.errors import DbError, JobStateError, NotFoundError, ResultConflictError
from db.models import Export, Instance, Job, Result, Series, SliceScore, Study

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Rows per multi-row INSERT (keeps SQLite under its bound-parameter limit).
CHUNK_SIZE = 500

#: Length of Series Description (VR LO).
SERIES_DESCRIPTION_LENGTH = 64

#: Job states in which a job may still do work.
ACTIVE_JOB_STATUSES = (JobStatus.PENDING, JobStatus.QUEUED, JobStatus.STARTED, JobStatus.INFERRED)

#: Stage timestamps of a job, in the order the stages happen.
STAGES = ("received", "completed", "queued", "started", "inferred", "exported")

_EXPORT_PREFERENCE = (
    ExportStatus.SENT,
    ExportStatus.PENDING,
    ExportStatus.FAILED,
    ExportStatus.DEAD,
)


@dataclass(frozen=True)
class InstanceRecord:
    """One received SOP instance, as the listener stored it."""

    sop_instance_uid: str
    sop_class_uid: str
    path: str
    transfer_syntax_uid: str
    size_bytes: int
    received_at: datetime


@dataclass(frozen=True)
class ResultRow:
    """One line of the results overview."""

    study_instance_uid: str
    series_instance_uid: str
    series_description: str | None
    instance_count: int
    probability: float
    suspected: bool
    threshold: float
    model_version: str
    job_status: JobStatus
    created_at: datetime
    export_status: ExportStatus | None
    result_id: int
    job_id: int


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), CHUNK_SIZE):
        yield items[start : start + CHUNK_SIZE]


def _insert(session: Session, model: type[Any]) -> Any:
    """Return the dialect's INSERT (with ``on_conflict_*``) for ``model``."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(model)
    if dialect == "sqlite":
        return sqlite.insert(model)
    raise DbError(f"The database dialect {dialect!r} is not supported; use SQLite or PostgreSQL.")


def _one(session: Session, statement: Select[T], what: str) -> T:
    row = session.execute(statement.execution_options(populate_existing=True)).scalar_one_or_none()
    if row is None:
        raise NotFoundError(f"No {what} exists.")
    return row


def _series_for_update(session: Session, series_instance_uid: str) -> Series:
    statement = (
        select(Series)
        .where(Series.series_instance_uid == series_instance_uid)
        .with_for_update(of=Series)
    )
    return _one(session, statement, f"series with Series Instance UID {series_instance_uid}")


def _job_for_update(session: Session, job_id: int) -> Job:
    statement = select(Job).where(Job.id == job_id).with_for_update(of=Job)
    return _one(session, statement, f"job with id {job_id}")


def _export_for_update(session: Session, export_id: int) -> Export:
    statement = select(Export).where(Export.id == export_id).with_for_update(of=Export)
    return _one(session, statement, f"export with id {export_id}")


def _is_current(session: Session, job: Job) -> bool:
    """Return whether ``job`` is the newest, non-superseded job of its series."""
    if job.status == JobStatus.SUPERSEDED:
        return False
    newest = session.execute(
        select(func.max(Job.id)).where(Job.series_id == job.series_id)
    ).scalar_one()
    return newest == job.id


def _set_series_status(
    session: Session, job: Job, status: SeriesStatus, *, only_from: Sequence[SeriesStatus] = ()
) -> None:
    """Move the job's series to ``status`` if the job is its current job."""
    if not _is_current(session, job):
        return
    series = job.series
    if only_from and series.status not in only_from:
        return
    series.status = status


# --- Receiving -----------------------------------------------------------------------------------


def record_instances(
    *,
    session: Session,
    study_instance_uid: str,
    series_instance_uid: str,
    modality: str,
    series_description: str | None,
    calling_ae_title: str,
    instances: Sequence[InstanceRecord],
) -> Series:
    """Record received instances, creating the study and series on first sight.

    A re-sent SOP Instance UID updates its row (path, received time, ...) and is not counted
    twice. A series that receives new instances after it was judged complete goes back to
    ``RECEIVING`` so that it is processed again.

    Args:
        session: Database session.
        study_instance_uid: Study Instance UID.
        series_instance_uid: Series Instance UID.
        modality: Modality of the series (e.g. ``CT``).
        series_description: Series Description; truncated to 64 characters.
        calling_ae_title: AE title of the sender.
        instances: The instances received.

    Returns:
        The series, with its updated instance count and times.
    """
    by_uid = {record.sop_instance_uid: record for record in instances}
    records = list(by_uid.values())
    times = [record.received_at for record in records] or [_utc(None)]
    batch_first, batch_last = _utc(min(times)), _utc(max(times))
    description = (
        None if series_description is None else series_description[:SERIES_DESCRIPTION_LENGTH]
    )

    session.execute(
        _insert(session, Study)
        .values(study_instance_uid=study_instance_uid)
        .on_conflict_do_nothing(index_elements=[Study.study_instance_uid])
    )
    study_id = session.execute(
        select(Study.id).where(Study.study_instance_uid == study_instance_uid)
    ).scalar_one()
    session.execute(
        _insert(session, Series)
        .values(
            study_id=study_id,
            series_instance_uid=series_instance_uid,
            modality=modality,
            series_description=description,
            calling_ae_title=calling_ae_title,
            status=SeriesStatus.RECEIVING,
            instance_count=0,
            first_received_at=batch_first,
            last_received_at=batch_last,
        )
        .on_conflict_do_nothing(index_elements=[Series.series_instance_uid])
    )
    # The row lock (PostgreSQL) or the write lock taken by the INSERT above (SQLite) makes the
    # count and the state change below consistent between concurrent receivers.
    series = _series_for_update(session, series_instance_uid)

    existing: set[str] = set()
    for chunk in _chunks(list(by_uid)):
        existing.update(
            session.execute(
                select(Instance.sop_instance_uid).where(Instance.sop_instance_uid.in_(chunk))
            ).scalars()
        )
    for chunk_records in _chunks(records):
        statement = _insert(session, Instance).values(
            [
                {
                    "series_id": series.id,
                    "sop_instance_uid": record.sop_instance_uid,
                    "sop_class_uid": record.sop_class_uid,
                    "path": record.path,
                    "transfer_syntax_uid": record.transfer_syntax_uid,
                    "size_bytes": record.size_bytes,
                    "received_at": record.received_at,
                }
                for record in chunk_records
            ]
        )
        excluded = statement.excluded
        session.execute(
            statement.on_conflict_do_update(
                index_elements=[Instance.sop_instance_uid],
                set_={
                    "sop_class_uid": excluded.sop_class_uid,
                    "path": excluded.path,
                    "transfer_syntax_uid": excluded.transfer_syntax_uid,
                    "size_bytes": excluded.size_bytes,
                    "received_at": excluded.received_at,
                },
            )
        )

    new_count = len(by_uid.keys() - existing)
    series.instance_count = session.execute(
        select(func.count(Instance.id)).where(Instance.series_id == series.id)
    ).scalar_one()
    series.first_received_at = min(series.first_received_at, batch_first)
    series.last_received_at = max(series.last_received_at, batch_last)
    # A series whose files the retention policy deleted is being sent again: it is live again.
    revived = series.purged_at is not None
    series.purged_at = None
    if (new_count or revived) and series.status != SeriesStatus.RECEIVING:
        logger.info(
            "Series %s was %s%s and received %s new instances; receiving again.",
            series_instance_uid,
            series.status,
            " (purged)" if revived else "",
            new_count,
        )
        series.status = SeriesStatus.RECEIVING
        series.completed_at = None
        series.skip_reason = None
    session.flush()
    logger.debug(
        "Series %s: %s new and %s re-sent instances, %s in all.",
        series_instance_uid,
        new_count,
        len(records) - new_count,
        series.instance_count,
    )
    return series


def quiet_series(*, session: Session, received_before: datetime, limit: int = 100) -> list[Series]:
    """Return series still ``RECEIVING`` whose last instance arrived before ``received_before``.

    The listener's sweeper calls this with ``now - quiet_period`` to find complete series.
    """
    statement = (
        select(Series)
        .where(
            Series.status == SeriesStatus.RECEIVING,
            Series.last_received_at <= _utc(received_before),
        )
        .order_by(Series.last_received_at, Series.id)
        .limit(limit)
    )
    return list(session.execute(statement).scalars())


def get_series(*, session: Session, series_instance_uid: str) -> Series:
    """Return the series with this UID.

    Raises:
        NotFoundError: No such series.
    """
    statement = select(Series).where(Series.series_instance_uid == series_instance_uid)
    return _one(session, statement, f"series with Series Instance UID {series_instance_uid}")


def series_instances(*, session: Session, series_instance_uid: str) -> list[Instance]:
    """Return the instances of a series in the order they were first received."""
    statement = (
        select(Instance)
        .join(Series, Instance.series_id == Series.id)
        .where(Series.series_instance_uid == series_instance_uid)
        .order_by(Instance.id)
    )
    return list(session.execute(statement).scalars())


_ENDED_SERIES = (SeriesStatus.DONE, SeriesStatus.FAILED, SeriesStatus.SKIPPED)


def _purgeable(received_before: datetime) -> ColumnElement[bool]:
    active = select(Job.id).where(Job.series_id == Series.id, Job.status.in_(ACTIVE_JOB_STATUSES))
    return and_(
        Series.purged_at.is_(None),
        Series.last_received_at < _utc(received_before),
        Series.status.in_(_ENDED_SERIES),
        ~active.exists(),
    )


def purgeable_series(*, session: Session, received_before: datetime) -> list[str]:
    """UIDs of the series whose stored instances the retention policy may delete, oldest first.

    A series qualifies when its last instance arrived before ``received_before``, it is not
    purged yet, it has reached an end (done, failed or skipped) and none of its jobs is still
    active, so that no worker is about to read its files.
    """
    statement = (
        select(Series.series_instance_uid)
        .where(_purgeable(received_before))
        .order_by(Series.last_received_at, Series.id)
    )
    return list(session.execute(statement).scalars())


def claim_series_for_purge(
    *,
    session: Session,
    series_instance_uid: str,
    received_before: datetime,
    now: datetime | None = None,
) -> bool:
    """Mark the series purged if it still qualifies, holding its row lock until commit.

    The check runs again under the lock, so an instance that arrived since
    :func:`purgeable_series` listed it (which makes the series receive again) keeps it.

    Returns:
        Whether the series is now marked purged; delete its files, then commit.
    """
    series = _series_for_update(session, series_instance_uid)
    still = session.execute(
        select(Series.id).where(Series.id == series.id, _purgeable(received_before))
    ).scalar_one_or_none()
    if still is None:
        return False
    series.purged_at = _utc(now)
    session.flush()
    return True


def skip_series(
    *, session: Session, series_instance_uid: str, reason: str, now: datetime | None = None
) -> Series:
    """Mark a series as not eligible for inference; its unfinished jobs are skipped too."""
    now = _utc(now)
    series = _series_for_update(session, series_instance_uid)
    series.status = SeriesStatus.SKIPPED
    series.skip_reason = reason
    series.completed_at = now
    session.execute(
        update(Job)
        .where(Job.series_id == series.id, Job.status.in_(ACTIVE_JOB_STATUSES))
        .values(status=JobStatus.SKIPPED, last_error=reason, updated_at=now)
    )
    session.flush()
    logger.info("Series %s skipped: %s", series_instance_uid, reason)
    return series


# --- Jobs ----------------------------------------------------------------------------------------


def create_job(*, session: Session, series_instance_uid: str, now: datetime | None = None) -> Job:
    """Mark a series complete and put a new ``PENDING`` job for it in the outbox.

    Unfinished older jobs of the series become ``SUPERSEDED``.
    """
    now = _utc(now)
    series = _series_for_update(session, series_instance_uid)
    superseded = session.execute(
        update(Job)
        .where(Job.series_id == series.id, Job.status.in_(ACTIVE_JOB_STATUSES))
        .values(status=JobStatus.SUPERSEDED, updated_at=now)
        .returning(Job.id)
    ).all()
    series.status = SeriesStatus.COMPLETE
    series.completed_at = now
    series.skip_reason = None
    job = Job(
        series=series,
        status=JobStatus.PENDING,
        attempts=0,
        instance_count=series.instance_count,
        received_at=series.first_received_at,
        completed_at=now,
        created_at=now,
        updated_at=now,
    )
    session.add(job)
    session.flush()
    logger.info(
        "Job %s created for series %s with %s instances (%s older jobs superseded).",
        job.id,
        series_instance_uid,
        job.instance_count,
        len(superseded),
    )
    return job


def get_job(*, session: Session, job_id: int) -> Job:
    """Return the job with this id.

    Raises:
        NotFoundError: No such job.
    """
    return _one(session, select(Job).where(Job.id == job_id), f"job with id {job_id}")


def pending_jobs(
    *, session: Session, older_than: datetime | None = None, limit: int = 100
) -> list[Job]:
    """Return outbox jobs (``PENDING``), oldest first; optionally only those created earlier."""
    statement = select(Job).where(Job.status == JobStatus.PENDING)
    if older_than is not None:
        statement = statement.where(Job.created_at < _utc(older_than))
    statement = statement.order_by(Job.created_at, Job.id).limit(limit)
    return list(session.execute(statement).scalars())


def mark_job_queued(
    *, session: Session, job_id: int, task_id: str | None = None, now: datetime | None = None
) -> Job:
    """Record that a job was sent to the broker.

    A job that a worker already picked up keeps its later status.
    """
    now = _utc(now)
    job = _job_for_update(session, job_id)
    if job.queued_at is None:
        job.queued_at = now if job.started_at is None else min(now, job.started_at)
    if task_id is not None:
        job.task_id = task_id
    if job.status == JobStatus.PENDING:
        job.status = JobStatus.QUEUED
        _set_series_status(session, job, SeriesStatus.QUEUED, only_from=[SeriesStatus.COMPLETE])
    job.updated_at = now
    session.flush()
    return job


def start_job(
    *, session: Session, job_id: int, worker: str | None = None, now: datetime | None = None
) -> Job:
    """Record that a worker starts (or retries) a job.

    Args:
        session: Database session.
        job_id: The job.
        worker: Name of the worker taking it (e.g. ``node@host pid 123``); kept when None.
        now: Current time.

    Raises:
        NotFoundError: No such job.
        JobStateError: The job is done, failed, skipped or superseded; do not run it.
    """
    now = _utc(now)
    job = _job_for_update(session, job_id)
    if job.status not in ACTIVE_JOB_STATUSES:
        raise JobStateError(f"Job {job_id} is {job.status} and cannot be started.")
    job.attempts += 1
    job.status = JobStatus.STARTED
    if worker is not None:
        job.worker = worker[:128]
    job.started_at = now
    job.updated_at = now
    _set_series_status(session, job, SeriesStatus.PROCESSING)
    session.flush()
    return job


def record_result(
    *,
    session: Session,
    job_id: int,
    probability: float,
    suspected: bool,
    threshold: float,
    model_name: str,
    model_version: str,
    model_sha256: str,
    input_fingerprint: str,
    precision: str,
    device: str,
    slice_scores: Sequence[tuple[str, float]],
    now: datetime | None = None,
) -> Result:
    """Store the result of a job, once.

    If the series already has a result for the same input fingerprint and model, that result is
    returned unchanged. Otherwise the result and its slice scores (ranked, 1 = most suspicious)
    are inserted and every other result of the series is marked superseded. The job becomes
    ``INFERRED``.

    Args:
        session: Database session.
        job_id: The job.
        probability: Series-level probability of stroke.
        suspected: Whether ``probability`` reached ``threshold``.
        threshold: Decision threshold used.
        model_name: Model name.
        model_version: Model version.
        model_sha256: SHA-256 of the weights.
        input_fingerprint: SHA-256 of the sorted SOP Instance UIDs used as input.
        precision: ``fp32`` or ``bf16``.
        device: Device that ran the model (e.g. ``cpu``).
        slice_scores: ``(sop_instance_uid, probability)`` per slice, in any order.
        now: Current time.

    Returns:
        The stored result.

    Raises:
        NotFoundError: No such job.
        JobStateError: The job is superseded, failed or skipped and has no such result yet.
        ResultConflictError: The job already has a result for another input or model.
    """
    now = _utc(now)
    job = _job_for_update(session, job_id)
    identity = and_(
        Result.series_id == job.series_id,
        Result.input_fingerprint == input_fingerprint,
        Result.model_sha256 == model_sha256,
    )
    result = session.execute(select(Result).where(identity)).scalar_one_or_none()
    if result is None:
        if job.status not in (*ACTIVE_JOB_STATUSES, JobStatus.DONE):
            raise JobStateError(f"Job {job_id} is {job.status}; its result is not stored.")
        result_id = session.execute(
            _insert(session, Result)
            .values(
                job_id=job.id,
                series_id=job.series_id,
                probability=probability,
                suspected=suspected,
                threshold=threshold,
                model_name=model_name,
                model_version=model_version,
                model_sha256=model_sha256,
                input_fingerprint=input_fingerprint,
                precision=precision,
                device=device,
                created_at=now,
                superseded=False,
            )
            .on_conflict_do_nothing()
            .returning(Result.id)
        ).scalar_one_or_none()
        if result_id is None:
            # Lost a race with another worker, or this job already has a different result.
            result = session.execute(select(Result).where(identity)).scalar_one_or_none()
            if result is None:
                raise ResultConflictError(
                    f"Job {job_id} already has a result for another input or model."
                )
        else:
            ranked = sorted(slice_scores, key=lambda score: -score[1])
            for chunk in _chunks(list(enumerate(ranked, start=1))):
                session.execute(
                    _insert(session, SliceScore).values(
                        [
                            {
                                "result_id": result_id,
                                "sop_instance_uid": uid,
                                "probability": score,
                                "rank": rank,
                            }
                            for rank, (uid, score) in chunk
                        ]
                    )
                )
            superseded = session.execute(
                update(Result)
                .where(
                    Result.series_id == job.series_id,
                    Result.id != result_id,
                    Result.superseded.is_(False),
                )
                .values(superseded=True)
                .returning(Result.id)
            ).all()
            result = _one(session, select(Result).where(Result.id == result_id), "new result")
            logger.info(
                "Result %s stored for job %s (p=%.3f, suspected=%s, %s slices, %s superseded).",
                result.id,
                job_id,
                probability,
                suspected,
                len(ranked),
                len(superseded),
            )
    _set_inferred(job, now)
    session.flush()
    return result


def mark_inferred(*, session: Session, job_id: int, now: datetime | None = None) -> Job:
    """Mark a job inferred whose result is already stored (a retry or a duplicate delivery).

    Jobs past inference (reported, done, failed, superseded, skipped) are left as they are.

    Raises:
        NotFoundError: No such job.
    """
    job = _job_for_update(session, job_id)
    _set_inferred(job, _utc(now))
    session.flush()
    return job


def _set_inferred(job: Job, now: datetime) -> None:
    if job.status in (JobStatus.PENDING, JobStatus.QUEUED, JobStatus.STARTED):
        job.status = JobStatus.INFERRED
        job.inferred_at = now
        job.updated_at = now


def get_result(*, session: Session, job_id: int) -> Result | None:
    """Return the result stored by a job, or None."""
    return session.execute(select(Result).where(Result.job_id == job_id)).scalar_one_or_none()


def finish_job(*, session: Session, job_id: int, now: datetime | None = None) -> Job:
    """Mark a job ``DONE`` (exported) and its series ``DONE``.

    A superseded job only gets its export time; finishing twice is harmless.

    Raises:
        NotFoundError: No such job.
        JobStateError: The job failed or was skipped.
    """
    now = _utc(now)
    job = _job_for_update(session, job_id)
    if job.status in (JobStatus.FAILED, JobStatus.SKIPPED):
        raise JobStateError(f"Job {job_id} is {job.status} and cannot be finished.")
    if job.exported_at is None or job.status != JobStatus.DONE:
        job.exported_at = now
        job.updated_at = now
    if job.status != JobStatus.SUPERSEDED:
        job.status = JobStatus.DONE
        _set_series_status(session, job, SeriesStatus.DONE)
    session.flush()
    return job


def fail_job(
    *, session: Session, job_id: int, error: str, final: bool, now: datetime | None = None
) -> Job:
    """Record a job failure.

    Args:
        session: Database session.
        job_id: The job.
        error: What went wrong (no patient data).
        final: True when no retry follows: the job becomes ``FAILED`` (dead letter) and so does
            its series. False keeps the job ``STARTED`` for a retry.
        now: Current time.

    Returns:
        The job.
    """
    now = _utc(now)
    job = _job_for_update(session, job_id)
    job.last_error = error
    job.updated_at = now
    if job.status in FINAL_JOB_STATUSES and job.status != JobStatus.FAILED:
        logger.warning("Job %s failed after it became %s: %s", job_id, job.status, error)
    elif final:
        job.status = JobStatus.FAILED
        _set_series_status(session, job, SeriesStatus.FAILED)
        logger.error("Job %s failed for good after %s attempts: %s", job_id, job.attempts, error)
    else:
        if job.status in (JobStatus.PENDING, JobStatus.QUEUED):
            job.status = JobStatus.STARTED
        logger.warning("Job %s failed (attempt %s), will retry: %s", job_id, job.attempts, error)
    session.flush()
    return job


def skip_job(*, session: Session, job_id: int, reason: str, now: datetime | None = None) -> Job:
    """Mark a job ``SKIPPED`` (the worker found the series not eligible) and its series too."""
    now = _utc(now)
    job = _job_for_update(session, job_id)
    if job.status in FINAL_JOB_STATUSES:
        raise JobStateError(f"Job {job_id} is {job.status} and cannot be skipped.")
    job.status = JobStatus.SKIPPED
    job.last_error = reason
    job.updated_at = now
    if _is_current(session, job):
        job.series.status = SeriesStatus.SKIPPED
        job.series.skip_reason = reason
    session.flush()
    return job


def requeue_job(*, session: Session, job_id: int, now: datetime | None = None) -> Job:
    """Put a job back in the outbox (admin action, typically for a ``FAILED`` job).

    Its attempts restart at zero and its queue, start, inference and export times are cleared.

    Raises:
        NotFoundError: No such job.
        JobStateError: The job was superseded by a newer one.
    """
    now = _utc(now)
    job = _job_for_update(session, job_id)
    if job.status == JobStatus.SUPERSEDED:
        raise JobStateError(f"Job {job_id} was superseded by a newer job and cannot be re-queued.")
    job.status = JobStatus.PENDING
    job.attempts = 0
    job.task_id = None
    job.queued_at = job.started_at = job.inferred_at = job.exported_at = None
    job.updated_at = now
    _set_series_status(session, job, SeriesStatus.COMPLETE)
    session.flush()
    logger.info("Job %s re-queued.", job_id)
    return job


def list_jobs(*, session: Session, status: JobStatus | None = None, limit: int = 50) -> list[Job]:
    """Return jobs, newest first, optionally of one status."""
    statement = select(Job)
    if status is not None:
        statement = statement.where(Job.status == status)
    return list(session.execute(statement.order_by(Job.id.desc()).limit(limit)).scalars())


def stage_timings(*, session: Session, job_id: int) -> dict[str, float | None]:
    """Return the seconds between consecutive stages of a job, and in total.

    Keys are ``received_to_completed``, ``completed_to_queued``, ``queued_to_started``,
    ``started_to_inferred``, ``inferred_to_exported`` and ``total`` (received to exported).
    A value is None when either timestamp is missing.
    """
    job = get_job(session=session, job_id=job_id)
    times = [getattr(job, f"{stage}_at") for stage in STAGES]

    def seconds(start: datetime | None, end: datetime | None) -> float | None:
        return None if start is None or end is None else (end - start).total_seconds()

    timings = {
        f"{STAGES[i]}_to_{STAGES[i + 1]}": seconds(times[i], times[i + 1])
        for i in range(len(STAGES) - 1)
    }
    timings["total"] = seconds(times[0], times[-1])
    return timings


# --- Exports -------------------------------------------------------------------------------------


def ensure_export(
    *,
    session: Session,
    result_id: int,
    kind: ExportKind,
    destination: str,
    sop_instance_uid: str,
    path: str,
) -> Export:
    """Return the export of a result to a destination, creating it ``PENDING`` if new.

    An existing row is returned unchanged, so a retried task re-sends the same SOP Instance UID.
    """
    now = _utc(None)
    session.execute(
        _insert(session, Export)
        .values(
            result_id=result_id,
            kind=kind,
            destination=destination,
            sop_instance_uid=sop_instance_uid,
            path=path,
            status=ExportStatus.PENDING,
            attempts=0,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=[Export.result_id, Export.kind, Export.destination])
    )
    statement = select(Export).where(
        Export.result_id == result_id, Export.kind == kind, Export.destination == destination
    )
    return _one(session, statement, f"export of result {result_id}")


def get_export(*, session: Session, export_id: int) -> Export:
    """Return the export with this id.

    Raises:
        NotFoundError: No such export.
    """
    return _one(session, select(Export).where(Export.id == export_id), f"export {export_id}")


def mark_export_sent(*, session: Session, export_id: int, now: datetime | None = None) -> Export:
    """Record that the destination accepted the object."""
    now = _utc(now)
    export = _export_for_update(session, export_id)
    export.attempts += 1
    export.status = ExportStatus.SENT
    export.sent_at = now
    export.next_attempt_at = None
    export.updated_at = now
    session.flush()
    return export


def mark_export_failed(
    *,
    session: Session,
    export_id: int,
    error: str,
    max_attempts: int,
    backoff_s: float,
    now: datetime | None = None,
) -> Export:
    """Record a failed send and schedule the next one with exponential backoff.

    After ``max_attempts`` failures the export is ``DEAD``; otherwise it is ``FAILED`` with
    ``next_attempt_at = now + backoff_s * 2 ** (attempts - 1)``. A sent export stays sent.
    """
    now = _utc(now)
    export = _export_for_update(session, export_id)
    if export.status == ExportStatus.SENT:
        logger.warning("Export %s failed after it was sent; kept as sent: %s", export_id, error)
        return export
    export.attempts += 1
    export.last_error = error
    export.updated_at = now
    if export.attempts >= max_attempts:
        export.status = ExportStatus.DEAD
        export.next_attempt_at = None
        logger.error(
            "Export %s to %s is dead after %s attempts: %s",
            export_id,
            export.destination,
            export.attempts,
            error,
        )
    else:
        export.status = ExportStatus.FAILED
        export.next_attempt_at = now + timedelta(seconds=backoff_s * 2 ** (export.attempts - 1))
        logger.warning(
            "Export %s to %s failed (attempt %s), next try at %s: %s",
            export_id,
            export.destination,
            export.attempts,
            export.next_attempt_at.isoformat(),
            error,
        )
    session.flush()
    return export


def due_exports(
    *,
    session: Session,
    now: datetime | None = None,
    limit: int = 100,
    pending_older_than: datetime | None = None,
) -> list[Export]:
    """Return exports to (re)send: ``PENDING`` ones and ``FAILED`` ones whose time has come.

    Args:
        session: Database session.
        now: Current time.
        limit: Most rows returned.
        pending_older_than: If given, only ``PENDING`` exports created before this time (so that a
            sweeper leaves alone the ones a worker is sending right now).

    Returns:
        The exports, the longest waiting first.
    """
    now = _utc(now)
    # A pending export with a future next_attempt_at is claimed by a sender (see claim_export).
    pending: ColumnElement[bool] = and_(
        Export.status == ExportStatus.PENDING,
        or_(Export.next_attempt_at.is_(None), Export.next_attempt_at <= now),
    )
    if pending_older_than is not None:
        pending = and_(pending, Export.created_at < _utc(pending_older_than))
    statement = (
        select(Export)
        .where(
            or_(
                pending,
                and_(Export.status == ExportStatus.FAILED, Export.next_attempt_at <= now),
            )
        )
        .order_by(func.coalesce(Export.next_attempt_at, Export.created_at), Export.id)
        .limit(limit)
    )
    return list(session.execute(statement).scalars())


def claim_export(
    *, session: Session, export_id: int, lease_s: float, now: datetime | None = None
) -> bool:
    """Claim a due export for one sender, so that two workers never send it at once.

    The claim is one conditional ``UPDATE``: it moves ``next_attempt_at`` to ``now + lease_s``
    if the export is ``PENDING`` (and not claimed) or ``FAILED`` and due. Exactly one of several
    racing callers wins. A sender that dies leaves the claim to expire after ``lease_s``.

    Returns:
        True if this caller may send the export now.
    """
    now = _utc(now)
    due = or_(
        and_(
            Export.status == ExportStatus.PENDING,
            or_(Export.next_attempt_at.is_(None), Export.next_attempt_at <= now),
        ),
        and_(Export.status == ExportStatus.FAILED, Export.next_attempt_at <= now),
    )
    claimed = session.execute(
        update(Export)
        .where(Export.id == export_id, due)
        .values(next_attempt_at=now + timedelta(seconds=lease_s), updated_at=now)
        .returning(Export.id)
    ).all()
    session.flush()
    return bool(claimed)


def retry_export(*, session: Session, export_id: int, now: datetime | None = None) -> Export:
    """Give a dead (or failed) export a fresh start: ``PENDING``, no attempts (admin action).

    Raises:
        NotFoundError: No such export.
        DbError: The export was already sent.
    """
    now = _utc(now)
    export = _export_for_update(session, export_id)
    if export.status == ExportStatus.SENT:
        raise DbError(f"Export {export_id} was already sent and cannot be retried.")
    export.status = ExportStatus.PENDING
    export.attempts = 0
    export.next_attempt_at = None
    export.updated_at = now
    session.flush()
    logger.info("Export %s to %s put back in the outbox.", export_id, export.destination)
    return export


def result_exports(*, session: Session, result_id: int) -> list[Export]:
    """Return every export of one result, oldest first."""
    statement = select(Export).where(Export.result_id == result_id).order_by(Export.id)
    return list(session.execute(statement).scalars())


def superseded_report_paths(*, session: Session, result_id: int) -> list[str]:
    """Files of the SRs that earlier, now superseded results of this result's series produced.

    One path per SR instance (several destinations share one file), oldest result first.
    """
    result = _one(session, select(Result).where(Result.id == result_id), f"result {result_id}")
    rows = session.execute(
        select(Export.sop_instance_uid, Export.path)
        .join(Result, Export.result_id == Result.id)
        .where(
            Result.series_id == result.series_id,
            Result.id != result_id,
            Result.superseded.is_(True),
            Export.kind == ExportKind.SR,
        )
        .order_by(Result.id, Export.id)
    ).all()
    paths: dict[str, str] = {}
    for uid, path in rows:
        paths.setdefault(uid, path)
    return list(paths.values())


def list_exports(
    *, session: Session, status: ExportStatus | None = None, limit: int = 50
) -> list[Export]:
    """Return exports, newest first, optionally of one status."""
    statement = select(Export)
    if status is not None:
        statement = statement.where(Export.status == status)
    return list(session.execute(statement.order_by(Export.id.desc()).limit(limit)).scalars())


# --- Overview ------------------------------------------------------------------------------------


def list_results(*, session: Session, limit: int = 50) -> list[ResultRow]:
    """Return the current (non-superseded) results, newest first, with their best export status.

    The best export status is the first of sent, pending, failed, dead found among the result's
    exports; None when it has none.
    """
    statement = (
        select(
            Study.study_instance_uid,
            Series.series_instance_uid,
            Series.series_description,
            Job.instance_count,
            Result.probability,
            Result.suspected,
            Result.threshold,
            Result.model_version,
            Job.status,
            Result.created_at,
            Result.id,
            Job.id,
        )
        .join(Job, Result.job_id == Job.id)
        .join(Series, Result.series_id == Series.id)
        .join(Study, Series.study_id == Study.id)
        .where(Result.superseded.is_(False))
        .order_by(Result.created_at.desc(), Result.id.desc())
        .limit(limit)
    )
    rows = session.execute(statement).all()
    statuses: dict[int, set[ExportStatus]] = {}
    result_ids = [row[10] for row in rows]
    for chunk in _chunks(result_ids):
        for result_id, status in session.execute(
            select(Export.result_id, Export.status).where(Export.result_id.in_(chunk))
        ):
            statuses.setdefault(result_id, set()).add(status)

    def best(result_id: int) -> ExportStatus | None:
        present = statuses.get(result_id, set())
        return next((status for status in _EXPORT_PREFERENCE if status in present), None)

    return [
        ResultRow(
            study_instance_uid=row[0],
            series_instance_uid=row[1],
            series_description=row[2],
            instance_count=row[3],
            probability=row[4],
            suspected=row[5],
            threshold=row[6],
            model_version=row[7],
            job_status=row[8],
            created_at=row[9],
            export_status=best(row[10]),
            result_id=row[10],
            job_id=row[11],
        )
        for row in rows
    ]
