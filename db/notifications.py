"""Notifications: the outbox of messages (webhook, e-mail, HL7) about results and failures.

The same life cycle as :mod:`db.exports`: a row is written ``PENDING`` (for a result, in the
transaction that stores the result), claimed by one sender, then ``SENT``, or ``FAILED`` with
exponential backoff and ``DEAD`` after the last attempt. One row per event and destination.
Every function takes the caller's ``session``, flushes, and never commits.
"""

import logging
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.orm import Session

from db._query import insert, one, utc
from db.enums import ExportStatus, JobStatus, NotificationChannel, NotificationEvent
from db.errors import DbError
from db.models import Export, Job, Notification

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
    statement = (
        select(Notification)
        .where(Notification.id == notification_id)
        .with_for_update(of=Notification)
    )
    return one(session, statement, f"notification with id {notification_id}")


def _due(now: datetime) -> ColumnElement[bool]:
    # A pending row with a future next_attempt_at is claimed by a sender.
    return or_(
        and_(
            Notification.status == ExportStatus.PENDING,
            or_(Notification.next_attempt_at.is_(None), Notification.next_attempt_at <= now),
        ),
        and_(Notification.status == ExportStatus.FAILED, Notification.next_attempt_at <= now),
    )


def due_notifications(
    *,
    session: Session,
    now: datetime | None = None,
    result_id: int | None = None,
    limit: int = 100,
) -> list[Notification]:
    """Return notifications to (re)send, the longest waiting first; optionally of one result."""
    statement = select(Notification).where(_due(utc(now)))
    if result_id is not None:
        statement = statement.where(Notification.result_id == result_id)
    statement = statement.order_by(
        func.coalesce(Notification.next_attempt_at, Notification.created_at), Notification.id
    ).limit(limit)
    return list(session.execute(statement).scalars())


def claim_notification(
    *, session: Session, notification_id: int, lease_s: float, now: datetime | None = None
) -> bool:
    """Claim a due notification for one sender (one conditional ``UPDATE``; one caller wins).

    Returns:
        True if this caller may send it now.
    """
    now = utc(now)
    claimed = session.execute(
        update(Notification)
        .where(Notification.id == notification_id, _due(now))
        .values(next_attempt_at=now + timedelta(seconds=lease_s), updated_at=now)
        .returning(Notification.id)
    ).all()
    session.flush()
    return bool(claimed)


def mark_notification_sent(
    *, session: Session, notification_id: int, now: datetime | None = None
) -> Notification:
    """Record that the destination accepted the message."""
    now = utc(now)
    notification = _for_update(session, notification_id)
    notification.attempts += 1
    notification.status = ExportStatus.SENT
    notification.sent_at = now
    notification.next_attempt_at = None
    notification.updated_at = now
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
    now = utc(now)
    notification = _for_update(session, notification_id)
    if notification.status == ExportStatus.SENT:
        return notification
    notification.attempts += 1
    notification.last_error = error
    notification.updated_at = now
    if notification.attempts >= max_attempts:
        notification.status = ExportStatus.DEAD
        notification.next_attempt_at = None
        logger.error(
            "Notification %s to %s is dead after %s attempts: %s",
            notification_id,
            notification.destination,
            notification.attempts,
            error,
        )
    else:
        notification.status = ExportStatus.FAILED
        notification.next_attempt_at = now + timedelta(
            seconds=backoff_s * 2 ** (notification.attempts - 1)
        )
        logger.warning(
            "Notification %s to %s failed (attempt %s), next try at %s: %s",
            notification_id,
            notification.destination,
            notification.attempts,
            notification.next_attempt_at.isoformat(),
            error,
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
    now = utc(now)
    notification = _for_update(session, notification_id)
    if notification.status == ExportStatus.SENT:
        raise DbError(f"Notification {notification_id} was already sent and cannot be retried.")
    notification.status = ExportStatus.PENDING
    notification.attempts = 0
    notification.next_attempt_at = None
    notification.updated_at = now
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


def failed_jobs_since(*, session: Session, since: datetime, limit: int = 100) -> list[Job]:
    """Jobs that failed for good (dead letters) since ``since``, oldest first."""
    statement = (
        select(Job)
        .where(Job.status == JobStatus.FAILED, Job.updated_at >= utc(since))
        .order_by(Job.id)
        .limit(limit)
    )
    return list(session.execute(statement).scalars())


def dead_exports_since(*, session: Session, since: datetime, limit: int = 100) -> list[Export]:
    """Exports that became dead letters since ``since``, oldest first."""
    statement = (
        select(Export)
        .where(Export.status == ExportStatus.DEAD, Export.updated_at >= utc(since))
        .order_by(Export.id)
        .limit(limit)
    )
    return list(session.execute(statement).scalars())
