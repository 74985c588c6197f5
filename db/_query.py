"""Helpers shared by the data-access modules: times, chunking, upserts and row locks.

Private to the db package; callers outside db use the subject modules (``db.receiving``,
``db.jobs``, ``db.results``, ``db.exports``, ``db.retention``).
"""

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from db.enums import JobStatus, SeriesStatus
from db.errors import DbError, NotFoundError
from db.models import Export, Job, Series

T = TypeVar("T")

#: Rows per multi-row INSERT (keeps SQLite under its bound-parameter limit).
CHUNK_SIZE = 500

#: Job states in which a job may still do work.
ACTIVE_JOB_STATUSES = (
    JobStatus.PENDING,
    JobStatus.QUEUED,
    JobStatus.STARTED,
    JobStatus.INFERRED,
    JobStatus.EXPORT_FAILED,
)


def utc(now: datetime | None) -> datetime:
    """Return ``now`` as an aware UTC datetime (naive is taken as UTC); None is the current time."""
    if now is None:
        return datetime.now(UTC)
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    """Yield ``items`` in slices of at most :data:`CHUNK_SIZE`."""
    for start in range(0, len(items), CHUNK_SIZE):
        yield items[start : start + CHUNK_SIZE]


def insert(session: Session, model: type[Any]) -> Any:
    """Return the dialect's INSERT (with ``on_conflict_*``) for ``model``."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(model)
    if dialect == "sqlite":
        return sqlite.insert(model)
    raise DbError(f"The database dialect {dialect!r} is not supported; use SQLite or PostgreSQL.")


def one(session: Session, statement: Select[T], what: str) -> T:
    """Return the single row of ``statement``, freshly loaded.

    Raises:
        NotFoundError: No row; the message names ``what``.
    """
    row = session.execute(statement.execution_options(populate_existing=True)).scalar_one_or_none()
    if row is None:
        raise NotFoundError(f"No {what} exists.")
    return row


def series_for_update(session: Session, series_instance_uid: str) -> Series:
    """Return the series with this UID, holding its row lock until the transaction ends."""
    statement = (
        select(Series)
        .where(Series.series_instance_uid == series_instance_uid)
        .with_for_update(of=Series)
    )
    return one(session, statement, f"series with Series Instance UID {series_instance_uid}")


def job_for_update(session: Session, job_id: int) -> Job:
    """Return the job with this id, holding its row lock until the transaction ends."""
    statement = select(Job).where(Job.id == job_id).with_for_update(of=Job)
    return one(session, statement, f"job with id {job_id}")


def export_for_update(session: Session, export_id: int) -> Export:
    """Return the export with this id, holding its row lock until the transaction ends."""
    statement = select(Export).where(Export.id == export_id).with_for_update(of=Export)
    return one(session, statement, f"export with id {export_id}")


def is_current(session: Session, job: Job) -> bool:
    """Return whether ``job`` is the newest, non-superseded job of its series."""
    if job.status == JobStatus.SUPERSEDED:
        return False
    newest = session.execute(
        select(func.max(Job.id)).where(Job.series_id == job.series_id)
    ).scalar_one()
    return newest == job.id


def set_series_status(
    session: Session, job: Job, status: SeriesStatus, *, only_from: Sequence[SeriesStatus] = ()
) -> None:
    """Move the job's series to ``status`` if the job is its current job."""
    if not is_current(session, job):
        return
    series = job.series
    if only_from and series.status not in only_from:
        return
    series.status = status


def set_inferred(job: Job, now: datetime) -> None:
    """Mark a job ``INFERRED`` unless it is already past inference."""
    if job.status in (JobStatus.PENDING, JobStatus.QUEUED, JobStatus.STARTED):
        job.status = JobStatus.INFERRED
        job.inferred_at = now
        job.updated_at = now
