"""Receiving: studies, series and instances as the listener stores them.

Every function takes the caller's ``session``, flushes, and never commits: the caller owns the
transaction. Instances that two receivers may race on are upserted (``INSERT ... ON CONFLICT``).
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, func, or_, select, update
from sqlalchemy.orm import Session

from db._query import ACTIVE_JOB_STATUSES, chunks, insert, one, series_for_update, utc
from db.enums import JobStatus, SeriesStatus
from db.models import Instance, Job, Series, Study

logger = logging.getLogger(__name__)

#: Length of Series Description (VR LO).
SERIES_DESCRIPTION_LENGTH = 64


def _instance_upsert(session: Session) -> Any:
    """``INSERT`` of one instance row that updates the row already there (same SOP UID)."""
    statement = insert(session, cast(Table, Instance.__table__))
    excluded = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=[Instance.sop_instance_uid],
        set_={
            "sop_class_uid": excluded.sop_class_uid,
            "path": excluded.path,
            "transfer_syntax_uid": excluded.transfer_syntax_uid,
            "size_bytes": excluded.size_bytes,
            "received_at": excluded.received_at,
        },
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
    times = [record.received_at for record in records] or [utc(None)]
    batch_first, batch_last = utc(min(times)), utc(max(times))
    description = (
        None if series_description is None else series_description[:SERIES_DESCRIPTION_LENGTH]
    )

    session.execute(
        insert(session, Study)
        .values(study_instance_uid=study_instance_uid)
        .on_conflict_do_nothing(index_elements=[Study.study_instance_uid])
    )
    study_id = session.execute(
        select(Study.id).where(Study.study_instance_uid == study_instance_uid)
    ).scalar_one()
    session.execute(
        insert(session, Series)
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
    series = series_for_update(session, series_instance_uid)

    existing: set[str] = set()
    for chunk in chunks(list(by_uid)):
        existing.update(
            session.execute(
                select(Instance.sop_instance_uid).where(Instance.sop_instance_uid.in_(chunk))
            ).scalars()
        )
    # One statement, compiled once and cached, executed with every row's parameters
    # (executemany). A multi-row VALUES built and compiled per batch cost about 0.1 ms of CPU
    # per row (SQLite, 200 rows: 23 ms, now 4.3: benchmarks/recorder_commit.py), CPU and GIL
    # that the receivers need.
    if records:
        session.execute(
            _instance_upsert(session),
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
                for record in records
            ],
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


def get_series(*, session: Session, series_instance_uid: str) -> Series:
    """Return the series with this UID.

    Raises:
        NotFoundError: No such series.
    """
    statement = select(Series).where(Series.series_instance_uid == series_instance_uid)
    return one(session, statement, f"series with Series Instance UID {series_instance_uid}")


def receiving_series(*, session: Session) -> list[Series]:
    """Return every series still ``RECEIVING`` (the listener judges which are complete)."""
    statement = select(Series).where(Series.status == SeriesStatus.RECEIVING)
    return list(session.scalars(statement).all())


def series_instances(*, session: Session, series_instance_uid: str) -> list[Instance]:
    """Return the instances of a series in the order they were first received."""
    statement = (
        select(Instance)
        .join(Series, Instance.series_id == Series.id)
        .where(Series.series_instance_uid == series_instance_uid)
        .order_by(Instance.id)
    )
    return list(session.execute(statement).scalars())


def record_interruption(
    *, session: Session, series_instance_uids: Sequence[str], at: datetime | None = None
) -> int:
    """Record that a delivery of these series was cut short (an aborted association) at ``at``.

    The completion monitor counts a series' quiet period from the latest of its last instance and
    this time, whichever receiving process saw the abort. An earlier time never replaces a later
    one; series not (yet) recorded are left alone.

    Args:
        session: Database session.
        series_instance_uids: The series the interrupted association stored instances of.
        at: When the delivery ended (now).

    Returns:
        How many series rows were updated.
    """
    at = utc(at)
    updated = 0
    for chunk in chunks(list(dict.fromkeys(series_instance_uids))):
        result = session.execute(
            update(Series)
            .where(
                Series.series_instance_uid.in_(chunk),
                or_(Series.interrupted_at.is_(None), Series.interrupted_at < at),
            )
            .values(interrupted_at=at)
            .execution_options(synchronize_session=False)
        )
        updated += int(getattr(result, "rowcount", 0) or 0)
    session.flush()
    logger.debug("Interrupted delivery recorded at %s for %s series.", at.isoformat(), updated)
    return updated


def instance_paths(*, session: Session) -> set[str]:
    """Return the stored path of every recorded instance (relative to the storage root)."""
    return set(session.scalars(select(Instance.path)))


def skip_series(
    *, session: Session, series_instance_uid: str, reason: str, now: datetime | None = None
) -> Series:
    """Mark a series as not eligible for inference; its unfinished jobs are skipped too."""
    now = utc(now)
    series = series_for_update(session, series_instance_uid)
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
