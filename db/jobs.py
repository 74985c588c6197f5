"""Jobs: the outbox of completed series and each job's life cycle.

Every function takes the caller's ``session``, flushes, and never commits: the caller owns the
transaction. State changes take the job's row lock first.
"""

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db._query import (
    ACTIVE_JOB_STATUSES,
    job_for_update,
    one,
    series_for_update,
    set_inferred,
    set_series_status,
    utc,
)
from db.enums import FINAL_JOB_STATUSES, JobStatus, SeriesStatus
from db.errors import JobStateError
from db.leases import is_lost
from db.models import Job

logger = logging.getLogger(__name__)

#: Stage timestamps of a job, in the order the stages happen.
STAGES = ("received", "completed", "queued", "started", "inferred", "exported")


def create_job(*, session: Session, series_instance_uid: str, now: datetime | None = None) -> Job:
    """Mark a series complete and put a new ``PENDING`` job for it in the outbox.

    Unfinished older jobs of the series become ``SUPERSEDED``.
    """
    now = utc(now)
    series = series_for_update(session, series_instance_uid)
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
    return one(session, select(Job).where(Job.id == job_id), f"job with id {job_id}")


def pending_jobs(
    *, session: Session, older_than: datetime | None = None, limit: int = 100
) -> list[Job]:
    """Return outbox jobs (``PENDING``), oldest first; optionally only those created earlier."""
    statement = select(Job).where(Job.status == JobStatus.PENDING)
    if older_than is not None:
        statement = statement.where(Job.created_at < utc(older_than))
    statement = statement.order_by(Job.created_at, Job.id).limit(limit)
    return list(session.execute(statement).scalars())


def count_waiting_jobs(*, session: Session) -> int:
    """Return how many jobs wait for a worker: in the outbox (``PENDING``) or on the broker."""
    statement = select(func.count(Job.id)).where(
        Job.status.in_((JobStatus.PENDING, JobStatus.QUEUED))
    )
    return int(session.execute(statement).scalar_one())


def mark_job_queued(
    *,
    session: Session,
    job_id: int,
    task_id: str | None = None,
    lease_s: float | None = None,
    now: datetime | None = None,
) -> Job:
    """Record that a job was sent (or sent again) to the broker, and give it a lease.

    A job that a worker already picked up, and still holds, keeps its later status. A started
    job whose lease expired (its worker was lost) is ``QUEUED`` again.

    Args:
        session: Database session.
        job_id: The job.
        task_id: Id of the published task.
        lease_s: How long the job may wait on the broker before the reconciler publishes it
            again. A job published again waits at least as long as it has waited already, so
            a long backlog is not flooded with copies. None: no lease (published again at the
            reconciler's next pass unless a worker takes it).
        now: Current time.
    """
    now = utc(now)
    job = job_for_update(session, job_id)
    if job.queued_at is None:
        job.queued_at = now if job.started_at is None else min(now, job.started_at)
    if job.status in (JobStatus.PENDING, JobStatus.QUEUED) or is_lost(job, now):
        if task_id is not None:
            job.task_id = task_id
        if job.status != JobStatus.QUEUED:
            job.status = JobStatus.QUEUED
            set_series_status(
                session,
                job,
                SeriesStatus.QUEUED,
                only_from=[SeriesStatus.COMPLETE, SeriesStatus.PROCESSING],
            )
        job.heartbeat_at = None
        job.lease_expires_at = (
            None
            if lease_s is None
            else now + max(timedelta(seconds=lease_s), now - utc(job.queued_at))
        )
    job.updated_at = now
    session.flush()
    return job


def set_export_failed(
    *, session: Session, job_id: int, failed: bool, now: datetime | None = None
) -> Job:
    """Flag an inferred job ``EXPORT_FAILED`` (an export of its result is a dead letter), or
    put a flagged one back to ``INFERRED`` (its exports are retried); other states stay."""
    job = job_for_update(session, job_id)
    before, after = (
        (JobStatus.INFERRED, JobStatus.EXPORT_FAILED)
        if failed
        else (JobStatus.EXPORT_FAILED, JobStatus.INFERRED)
    )
    if job.status == before:
        job.status = after
        job.updated_at = utc(now)
        session.flush()
        if failed:
            logger.error("Job %s: an export gave up; the job is %s.", job_id, job.status)
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
    now = utc(now)
    job = job_for_update(session, job_id)
    if job.status not in ACTIVE_JOB_STATUSES:
        raise JobStateError(f"Job {job_id} is {job.status} and cannot be started.")
    job.attempts += 1
    job.status = JobStatus.STARTED
    if worker is not None:
        job.worker = worker[:128]
    job.started_at = now
    job.updated_at = now
    set_series_status(session, job, SeriesStatus.PROCESSING)
    session.flush()
    return job


def mark_inferred(*, session: Session, job_id: int, now: datetime | None = None) -> Job:
    """Mark a job inferred whose result is already stored (a retry or a duplicate delivery).

    Jobs past inference (reported, done, failed, superseded, skipped) are left as they are.

    Raises:
        NotFoundError: No such job.
    """
    job = job_for_update(session, job_id)
    set_inferred(job, utc(now))
    session.flush()
    return job


def finish_job(*, session: Session, job_id: int, now: datetime | None = None) -> Job:
    """Mark a job ``DONE`` (exported) and its series ``DONE``.

    A superseded job only gets its export time; finishing twice is harmless.

    Raises:
        NotFoundError: No such job.
        JobStateError: The job failed or was skipped.
    """
    now = utc(now)
    job = job_for_update(session, job_id)
    if job.status in (JobStatus.FAILED, JobStatus.SKIPPED):
        raise JobStateError(f"Job {job_id} is {job.status} and cannot be finished.")
    if job.exported_at is None or job.status != JobStatus.DONE:
        job.exported_at = now
        job.updated_at = now
    if job.status != JobStatus.SUPERSEDED:
        job.status = JobStatus.DONE
        set_series_status(session, job, SeriesStatus.DONE)
    session.flush()
    return job


def fail_job(
    *, session: Session, job_id: int, error: str, final: bool, now: datetime | None = None
) -> Job:
    """Record a job failure.

    Args:
        session: Database session.
        job_id: The job.
        error: What went wrong, as ``code: message`` in our words: never an exception's own
            text, which may quote the data (it goes to the log only).
        final: True when no retry follows: the job becomes ``FAILED`` (dead letter) and so does
            its series. False keeps the job ``STARTED`` for a retry.
        now: Current time.

    Returns:
        The job.
    """
    now = utc(now)
    job = job_for_update(session, job_id)
    job.last_error = error
    job.updated_at = now
    if job.status in FINAL_JOB_STATUSES and job.status != JobStatus.FAILED:
        logger.warning("Job %s failed after it became %s: %s", job_id, job.status, error)
    elif final:
        job.status = JobStatus.FAILED
        job.lease_expires_at = None
        set_series_status(session, job, SeriesStatus.FAILED)
        logger.error("Job %s failed for good after %s attempts: %s", job_id, job.attempts, error)
    else:
        if job.status in (JobStatus.PENDING, JobStatus.QUEUED):
            job.status = JobStatus.STARTED
        logger.warning("Job %s failed (attempt %s), will retry: %s", job_id, job.attempts, error)
    session.flush()
    return job


def requeue_job(*, session: Session, job_id: int, now: datetime | None = None) -> Job:
    """Put a job back in the outbox (admin action, typically for a ``FAILED`` job).

    Its attempts restart at zero and its queue, start, inference and export times are cleared.

    Raises:
        NotFoundError: No such job.
        JobStateError: The job was superseded by a newer one.
    """
    now = utc(now)
    job = job_for_update(session, job_id)
    if job.status == JobStatus.SUPERSEDED:
        raise JobStateError(f"Job {job_id} was superseded by a newer job and cannot be re-queued.")
    job.status = JobStatus.PENDING
    job.attempts = 0
    job.task_id = None
    job.queued_at = job.started_at = job.inferred_at = job.exported_at = None
    job.lease_expires_at = job.heartbeat_at = None
    job.updated_at = now
    set_series_status(session, job, SeriesStatus.COMPLETE)
    session.flush()
    logger.info("Job %s re-queued.", job_id)
    return job


def list_jobs(
    *,
    session: Session,
    status: JobStatus | None = None,
    statuses: Sequence[JobStatus] = (),
    limit: int = 50,
) -> list[Job]:
    """Return jobs, newest first, optionally of one status (or of any of ``statuses``)."""
    statement = select(Job)
    wanted = [*statuses, *([status] if status is not None else [])]
    if wanted:
        statement = statement.where(Job.status.in_(wanted))
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
