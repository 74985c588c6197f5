"""Helpers shared by the data-access modules: times, chunking, upserts and row locks.

Private to the db package; callers outside db use the subject modules (``db.receiving``,
``db.jobs``, ``db.results``, ``db.exports``, ``db.retention``).
"""

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, Table, func, inspect, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from db import clock
from db.enums import JobStatus, SeriesStatus
from db.errors import DbError, NotFoundError
from db.models import Export, Job, Series

T = TypeVar("T")

utc = clock.utc
"""The db modules' name for :func:`db.clock.utc` (the one set of UTC helpers)."""

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


def chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    """Yield ``items`` in slices of at most :data:`CHUNK_SIZE`."""
    for start in range(0, len(items), CHUNK_SIZE):
        yield items[start : start + CHUNK_SIZE]


def insert(session: Session, model: type[Any] | Table) -> Any:
    """Return the dialect's INSERT (with ``on_conflict_*``) for ``model`` (or its table)."""
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


def locked_row(session: Session, model: type[T], *where: ColumnElement[bool], what: str) -> T:
    """Return the single row of ``model`` matching ``where``, locked until the transaction ends.

    A read-check-write must hold its lock before it reads. PostgreSQL locks the row with
    ``SELECT ... FOR UPDATE``. SQLite has no row locks, and pysqlite opens no transaction
    before a SELECT, so the row is first written to itself: the ``UPDATE`` opens the
    transaction and takes the database's write lock (waiting out another writer), and the
    SELECT that follows reads what no other writer can change before this transaction ends.

    Raises:
        NotFoundError: No row; the message names ``what``.
    """
    if session.get_bind().dialect.name == "sqlite":
        table = inspect(model).local_table
        # Every column that an UPDATE would stamp (``onupdate``) keeps its value too.
        unchanged = [c for c in table.columns if c.primary_key or c.onupdate is not None]
        session.execute(
            update(model)
            .where(*where)
            .values({column.name: column for column in unchanged})
            .execution_options(synchronize_session=False)
        )
    statement = select(model).where(*where).with_for_update(of=model)
    return one(session, statement, what)


def series_for_update(session: Session, series_instance_uid: str) -> Series:
    """Return the series with this UID, holding its row lock until the transaction ends."""
    return locked_row(
        session,
        Series,
        Series.series_instance_uid == series_instance_uid,
        what=f"series with Series Instance UID {series_instance_uid}",
    )


def job_for_update(session: Session, job_id: int) -> Job:
    """Return the job with this id, holding its row lock until the transaction ends."""
    return locked_row(session, Job, Job.id == job_id, what=f"job with id {job_id}")


def export_for_update(session: Session, export_id: int) -> Export:
    """Return the export with this id, holding its row lock until the transaction ends."""
    return locked_row(session, Export, Export.id == export_id, what=f"export with id {export_id}")


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
