"""Read-only rows of the notification outbox for the console: each with its series and finding.

Every function takes the caller's ``session`` and only reads.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session

from db.enums import ExportStatus, NotificationChannel, NotificationEvent
from db.models import Job, Notification, Result, Series

AnySelect = TypeVar("AnySelect", bound=Select[*tuple[Any, ...]])


@dataclass(frozen=True)
class NotificationRow:
    """One message (webhook, e-mail, HL7) about one event, to one destination."""

    id: int
    series_instance_uid: str
    job_id: int
    event: NotificationEvent
    destination: str
    channel: NotificationChannel
    status: ExportStatus
    attempts: int
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime | None
    sent_at: datetime | None
    finding_name: str | None
    """What the model looks for (``ICH``), when the message is about a result."""


def _conditions(
    status: ExportStatus | None, event: NotificationEvent | None
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if status is not None:
        conditions.append(Notification.status == status)
    if event is not None:
        conditions.append(Notification.event == event)
    return conditions


def _joined(statement: AnySelect) -> AnySelect:
    return (
        statement.select_from(Notification)
        .join(Job, Notification.job_id == Job.id)
        .join(Series, Job.series_id == Series.id)
        .outerjoin(Result, Notification.result_id == Result.id)
    )


def list_notifications(
    *,
    session: Session,
    status: ExportStatus | None = None,
    event: NotificationEvent | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[NotificationRow]:
    """Notifications, newest first, optionally of one state and one event."""
    statement = (
        _joined(select(Notification, Series.series_instance_uid, Result.finding_name))
        .where(*_conditions(status, event))
        .order_by(Notification.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return [
        NotificationRow(
            id=n.id,
            series_instance_uid=uid,
            job_id=n.job_id,
            event=n.event,
            destination=n.destination,
            channel=n.channel,
            status=n.status,
            attempts=n.attempts,
            last_error=n.last_error,
            created_at=n.created_at,
            next_attempt_at=n.next_attempt_at,
            sent_at=n.sent_at,
            finding_name=finding,
        )
        for n, uid, finding in session.execute(statement)
    ]


def count_notifications(
    *,
    session: Session,
    status: ExportStatus | None = None,
    event: NotificationEvent | None = None,
) -> int:
    """How many notifications :func:`list_notifications` lists, over all pages."""
    statement = _joined(select(func.count(Notification.id))).where(*_conditions(status, event))
    return int(session.execute(statement).scalar_one())
