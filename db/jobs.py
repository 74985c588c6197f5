"""Jobs: the outbox of completed series and each job's life cycle.

Every function takes the caller's ``session``, flushes, and never commits: the caller owns the
transaction. State changes take the job's row lock first.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select, update
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
from db.models import Job

logger = logging.getLogger(__name__)

#: Stage timestamps of a job, in the order the stages happen.
STAGES = ("received", "completed", "queued", "started", "inferred", "exported")

#: Job states that hold a lease: the job is on the broker or a worker runs it.
LEASED_JOB_STATUSES = (JobStatus.QUEUED, JobStatus.STARTED)


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
    if job.status in (JobStatus.PENDING, JobStatus.QUEUED) or _is_lost(job, now):
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


@dataclass(frozen=True)
class LostJob:
    """A queued or started job whose lease expired: its message or its worker is gone."""

    job_id: int
    series_instance_uid: str
    status: JobStatus
    attempts: int


def lost_jobs(*, session: Session, now: datetime | None = None, limit: int = 100) -> list[LostJob]:
    """Return the jobs whose lease expired, oldest first.

    They are queued or started jobs whose lease expired (or that never had one), and inferred
    jobs whose worker died before it queued their exports (lease set and expired).
    """
    now = utc(now)
    statement = (
        select(Job)
        .where(
            or_(
                and_(
                    Job.status.in_(LEASED_JOB_STATUSES),
                    or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now),
                ),
                and_(Job.status == JobStatus.INFERRED, Job.lease_expires_at < now),
            )
        )
        .order_by(Job.id)
        .limit(limit)
    )
    return [
        LostJob(job.id, job.series.series_instance_uid, job.status, job.attempts)
        for job in session.execute(statement).scalars()
    ]


def take_lease(
    *,
    session: Session,
    job_id: int,
    task_id: str,
    lease_s: float,
    worker: str | None = None,
    now: datetime | None = None,
) -> str | None:
    """Take the job's lease for the task about to run it (the job becomes ``STARTED``).

    A job that another task holds (started, lease not expired) is left alone: this delivery is
    a stale copy. Jobs past the broker (inferred, done, failed...) are left to the pipeline,
    which knows what to do with them.

    Args:
        session: Database session.
        job_id: The job.
        task_id: Id of the task about to run it (a Celery retry keeps its id).
        lease_s: Lease length; the worker renews it with :func:`renew_lease`.
        worker: Name of the worker, recorded on the job.
        now: Current time.

    Returns:
        None when the task may run the job; otherwise why it must not (a full sentence).

    Raises:
        NotFoundError: No such job.
    """
    now = utc(now)
    job = job_for_update(session, job_id)
    if job.status == JobStatus.EXPORT_FAILED:
        return (
            f"Job {job_id} is {job.status}: its result is stored and `stroke-triage "
            "retry-export` sends its reports again."
        )
    if job.status not in (JobStatus.PENDING, *LEASED_JOB_STATUSES, JobStatus.INFERRED):
        return None
    running = job.status in (JobStatus.STARTED, JobStatus.INFERRED)
    if running and job.task_id != task_id and not _lease_expired(job, now):
        return (
            f"Job {job_id} is held by task {job.task_id} until "
            f"{utc(job.lease_expires_at):%H:%M:%S} UTC; this copy of it is dropped."
        )
    if job.status != JobStatus.INFERRED:  # the pipeline reuses an inferred job's result
        job.status = JobStatus.STARTED
    job.task_id = task_id
    if worker is not None:
        job.worker = worker[:128]
    job.lease_expires_at = now + timedelta(seconds=lease_s)
    job.heartbeat_at = now
    job.updated_at = now
    session.flush()
    return None


def renew_lease(
    *, session: Session, job_id: int, task_id: str, lease_s: float, now: datetime | None = None
) -> bool:
    """Extend the lease of a job that ``task_id`` still runs (the worker's heartbeat).

    Returns:
        False when the task no longer holds it: the job ended or another task took it.
    """
    now = utc(now)
    renewed = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.task_id == task_id,
            Job.status.in_((JobStatus.STARTED, JobStatus.INFERRED)),
        )
        .values(lease_expires_at=now + timedelta(seconds=lease_s), heartbeat_at=now)
        .returning(Job.id)
    ).all()
    session.flush()
    return bool(renewed)


def release_lease(
    *,
    session: Session,
    job_id: int,
    task_id: str,
    hold_s: float | None = None,
    now: datetime | None = None,
) -> None:
    """End the lease of ``task_id`` on the job when its task returns.

    Args:
        session: Database session.
        job_id: The job.
        task_id: The task that held the lease; a lease taken since by another task is kept.
        hold_s: Keep the lease this much longer (a Celery retry comes back after a countdown);
            None clears it.
        now: Current time.
    """
    now = utc(now)
    expires = None if hold_s is None else now + timedelta(seconds=hold_s)
    session.execute(
        update(Job).where(Job.id == job_id, Job.task_id == task_id).values(lease_expires_at=expires)
    )
    session.flush()


def flag_export_failed(*, session: Session, job_id: int, now: datetime | None = None) -> Job:
    """Mark an inferred job ``EXPORT_FAILED``: one of its exports is a dead letter."""
    job = job_for_update(session, job_id)
    if job.status == JobStatus.INFERRED:
        job.status = JobStatus.EXPORT_FAILED
        job.updated_at = utc(now)
        session.flush()
        logger.error("Job %s: an export gave up; the job is %s.", job_id, job.status)
    return job


def clear_export_failed(*, session: Session, job_id: int, now: datetime | None = None) -> Job:
    """Put an ``EXPORT_FAILED`` job back to ``INFERRED`` (its exports are retried)."""
    job = job_for_update(session, job_id)
    if job.status == JobStatus.EXPORT_FAILED:
        job.status = JobStatus.INFERRED
        job.updated_at = utc(now)
        session.flush()
    return job


def _lease_expired(job: Job, now: datetime) -> bool:
    return job.lease_expires_at is None or utc(job.lease_expires_at) < now


def _is_lost(job: Job, now: datetime) -> bool:
    """Whether a running job's worker is gone: its lease expired.

    An inferred job without a lease is not lost: its task ended and the export outbox
    sends what is left.
    """
    if job.status == JobStatus.STARTED:
        return _lease_expired(job, now)
    if job.status == JobStatus.INFERRED:
        return job.lease_expires_at is not None and _lease_expired(job, now)
    return False


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
        error: What went wrong (no patient data).
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
