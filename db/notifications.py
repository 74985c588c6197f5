"""Notifications: the outbox of messages (webhook, e-mail, HL7) about results and failures.

The same life cycle as :mod:`db.exports`, both from :mod:`db._outbox`: a row is written
``PENDING`` (for a result, in the transaction that stores the result), claimed by one sender,
then ``SENT``, or ``FAILED`` with exponential backoff and ``DEAD`` after the last attempt. One
row per event and destination.
Every function takes the caller's ``session``, flushes, and never commits.
"""

import logging
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, or_, select, true
from sqlalchemy.orm import Session

from db import _outbox
from db._query import insert, one, utc
from db.enums import ExportStatus, JobStatus, NotificationChannel, NotificationEvent
from db.models import Export, Job, Notification, Result, Series

logger = logging.getLogger(__name__)


def ensure_notification(
    *,
    session: Session,
    job_id: int,
    result_id: int | None,
    event: NotificationEvent,
    event_key: str,
    destination: str,
    channel: NotificationChannel,
    idempotency_key: str,
    payload: str,
    source_path: str | None,
) -> Notification:
    """Return the notification of an event to a destination, creating it ``PENDING`` if new.

    An existing row is returned unchanged: a re-run never queues a second message.
    """
    now = utc(None)
    session.execute(
        insert(session, Notification)
        .values(
            job_id=job_id,
            result_id=result_id,
            event=event,
            event_key=event_key,
            destination=destination,
            channel=channel,
            idempotency_key=idempotency_key,
            payload=payload,
            source_path=source_path,
            status=ExportStatus.PENDING,
            attempts=0,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing()
    )
    statement = select(Notification).where(
        Notification.event_key == event_key, Notification.destination == destination
    )
    return one(session, statement, f"notification of {event_key} to {destination}")


def get_notification(*, session: Session, notification_id: int) -> Notification:
    """Return the notification with this id.

    Raises:
        NotFoundError: No such notification.
    """
    statement = select(Notification).where(Notification.id == notification_id)
    return one(session, statement, f"notification {notification_id}")


def _for_update(session: Session, notification_id: int) -> Notification:
    return _outbox.for_update(session, Notification, notification_id, "notification")


def due_notifications(
    *,
    session: Session,
    now: datetime | None = None,
    result_id: int | None = None,
    without_reports: bool = False,
    limit: int = 100,
) -> list[Notification]:
    """Return notifications to (re)send, the longest waiting first; optionally of one result.

    A result's notification is due only once every export of that result was tried at least
    once (sent, or failed): the verdict never goes out before its SR was sent to the PACS,
    or tried and failed. An outage therefore does not hold the message back. Before its
    exports are queued (the worker is still writing the SR and the preview) it waits too,
    unless the job is exported already (no PACS: nothing to queue), or the job failed for
    good after its result was stored (no SR will come: the verdict goes alone).

    Args:
        without_reports: Do not wait for the reports (the caller's job has just failed after
            storing its result, so none will come).
    """
    untried = select(Export.id).where(
        Export.result_id == Notification.result_id,
        Export.status == ExportStatus.PENDING,
        Export.attempts == 0,
    )
    queued = select(Export.id).where(Export.result_id == Notification.result_id)
    exported = (
        select(Result.id)
        .join(Job, Result.job_id == Job.id)
        .where(Result.id == Notification.result_id, Job.exported_at.is_not(None))
    )
    reports_out = or_(Notification.result_id.is_(None), queued.exists(), exported.exists())
    failed = (
        select(Result.id)
        .join(Job, Result.job_id == Job.id)
        .where(Result.id == Notification.result_id, Job.status == JobStatus.FAILED)
    )
    ready = or_(failed.exists(), and_(~untried.exists(), reports_out))
    statement = select(Notification).where(
        _outbox.due(Notification, utc(now)), true() if without_reports else ready
    )
    if result_id is not None:
        statement = statement.where(Notification.result_id == result_id)
    statement = statement.order_by(*_outbox.longest_waiting_first(Notification)).limit(limit)
    return list(session.execute(statement).scalars())


def claim_notification(
    *, session: Session, notification_id: int, lease_s: float, now: datetime | None = None
) -> bool:
    """Claim a due notification for one sender (one conditional ``UPDATE``; one caller wins).

    Returns:
        True if this caller may send it now.
    """
    return _outbox.claim(session, Notification, notification_id, lease_s=lease_s, now=utc(now))


def mark_notification_sent(
    *, session: Session, notification_id: int, now: datetime | None = None
) -> Notification:
    """Record that the destination accepted the message."""
    notification = _for_update(session, notification_id)
    _outbox.record_sent(notification, now=utc(now))
    session.flush()
    return notification


def mark_notification_failed(
    *,
    session: Session,
    notification_id: int,
    error: str,
    max_attempts: int,
    backoff_s: float,
    now: datetime | None = None,
) -> Notification:
    """Record a failed send: ``FAILED`` with exponential backoff, ``DEAD`` after the last try."""
    notification = _for_update(session, notification_id)
    if notification.status == ExportStatus.SENT:
        return notification
    _outbox.record_failure(
        notification,
        what="Notification",
        error=error,
        max_attempts=max_attempts,
        backoff_s=backoff_s,
        now=utc(now),
    )
    session.flush()
    return notification


def retry_notification(
    *, session: Session, notification_id: int, now: datetime | None = None
) -> Notification:
    """Give a dead (or failed) notification a fresh start (admin action).

    Raises:
        NotFoundError: No such notification.
        DbError: It was already sent.
    """
    notification = _for_update(session, notification_id)
    _outbox.reset(notification, what="Notification", now=utc(now))
    session.flush()
    return notification


def list_notifications(
    *, session: Session, status: ExportStatus | None = None, limit: int = 50
) -> list[Notification]:
    """Return notifications, newest first, optionally of one status."""
    statement = select(Notification)
    if status is not None:
        statement = statement.where(Notification.status == status)
    statement = statement.order_by(Notification.id.desc()).limit(limit)
    return list(session.execute(statement).scalars())


def unannounced_failures(
    *,
    session: Session,
    destination: str,
    since: datetime,
    calling_ae_titles: Sequence[str] = (),
    limit: int = 100,
) -> list[Job]:
    """Jobs that failed since ``since`` and whose failure ``destination`` was not yet told of.

    A failure is a job that failed for good (not classified) or whose report is a dead letter
    (``EXPORT_FAILED``): one per series' job, however many of its objects died. Only failures
    without a notification row for this destination are returned (oldest first), so that each
    call gets the next ones: a long outage with more than ``limit`` failures is told in full.

    Args:
        session: Database session.
        destination: The destination's name.
        since: Failures last changed before this are not told.
        calling_ae_titles: Only series sent by these AE titles; empty: any.
        limit: Most jobs returned.
    """
    told = select(Notification.id).where(
        Notification.job_id == Job.id,
        Notification.event == NotificationEvent.FAILED,
        Notification.destination == destination,
    )
    statement = (
        select(Job)
        .join(Series, Job.series_id == Series.id)
        .where(
            Job.status.in_((JobStatus.FAILED, JobStatus.EXPORT_FAILED)),
            Job.updated_at >= utc(since),
            ~told.exists(),
        )
        .order_by(Job.id)
        .limit(limit)
    )
    if calling_ae_titles:
        statement = statement.where(Series.calling_ae_title.in_(list(calling_ae_titles)))
    return list(session.execute(statement).scalars())


def dead_exports(*, session: Session, job_id: int) -> list[Export]:
    """The dead exports of the results of a job, oldest first."""
    statement = (
        select(Export)
        .join(Result, Export.result_id == Result.id)
        .where(Result.job_id == job_id, Export.status == ExportStatus.DEAD)
        .order_by(Export.id)
    )
    return list(session.execute(statement).scalars())


def destinations_told(*, session: Session, result_id: int) -> set[str]:
    """The destinations that a result's verdict was queued for (sent or not)."""
    statement = select(Notification.destination).where(
        Notification.result_id == result_id, Notification.event != NotificationEvent.FAILED
    )
    return set(session.execute(statement).scalars())
