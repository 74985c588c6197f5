"""Job leases: a queued or running job is held, and a job whose lease expired is lost.

A queued job's lease covers its time on the broker; a running job's worker renews its lease
with a heartbeat. The reconciler publishes lost jobs again. Every function takes the caller's
``session``, flushes, and never commits.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from db._query import job_for_update, utc
from db.enums import JobStatus
from db.models import Job

#: Job states that hold a lease: the job is on the broker or a worker runs it.
LEASED_JOB_STATUSES = (JobStatus.QUEUED, JobStatus.STARTED)


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
    if running and job.task_id != task_id and not lease_expired(job, now):
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


def lease_expired(job: Job, now: datetime) -> bool:
    return job.lease_expires_at is None or utc(job.lease_expires_at) < now


def is_lost(job: Job, now: datetime) -> bool:
    """Whether a running job's worker is gone: its lease expired.

    An inferred job without a lease is not lost: its task ended and the export outbox
    sends what is left.
    """
    if job.status == JobStatus.STARTED:
        return lease_expired(job, now)
    if job.status == JobStatus.INFERRED:
        return job.lease_expires_at is not None and lease_expired(job, now)
    return False
