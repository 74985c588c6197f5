"""Retention queries: which series may have their stored files deleted, and claiming them.

The file deletion itself is :func:`console.retention.purge_storage`.
"""

from datetime import datetime

from sqlalchemy import ColumnElement, and_, select
from sqlalchemy.orm import Session

from db._query import ACTIVE_JOB_STATUSES, series_for_update, utc
from db.enums import SeriesStatus
from db.models import Job, Series

_ENDED_SERIES = (SeriesStatus.DONE, SeriesStatus.FAILED, SeriesStatus.SKIPPED)


def _purgeable(received_before: datetime) -> ColumnElement[bool]:
    active = select(Job.id).where(Job.series_id == Series.id, Job.status.in_(ACTIVE_JOB_STATUSES))
    return and_(
        Series.purged_at.is_(None),
        Series.last_received_at < utc(received_before),
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
    series = series_for_update(session, series_instance_uid)
    still = session.execute(
        select(Series.id).where(Series.id == series.id, _purgeable(received_before))
    ).scalar_one_or_none()
    if still is None:
        return False
    series.purged_at = utc(now)
    session.flush()
    return True
