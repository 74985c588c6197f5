"""The outbox life cycle shared by exports and notifications (private to ``db``).

A row is ``PENDING``, claimed by one sender (``next_attempt_at`` moved to the end of a lease),
then ``SENT``, or ``FAILED`` with exponential backoff and ``DEAD`` after the last attempt; an
admin may put a dead or failed row back to ``PENDING``. Nothing here commits.
"""

import logging
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import ColumnElement, ColumnExpressionArgument, and_, func, or_, update
from sqlalchemy.orm import Session

from db._query import locked_row
from db.enums import ExportStatus
from db.errors import DbError
from db.models import Export, Notification

logger = logging.getLogger(__name__)

Row = TypeVar("Row", Export, Notification)


def due(
    model: type[Row], now: datetime, *, pending_older_than: datetime | None = None
) -> ColumnElement[bool]:
    """Rows to (re)send now: unclaimed ``PENDING`` ones and ``FAILED`` ones whose time has come.

    A ``PENDING`` row with a future ``next_attempt_at`` is claimed by a sender (see :func:`claim`).
    """
    pending: ColumnElement[bool] = and_(
        model.status == ExportStatus.PENDING,
        or_(model.next_attempt_at.is_(None), model.next_attempt_at <= now),
    )
    if pending_older_than is not None:
        pending = and_(pending, model.created_at < pending_older_than)
    return or_(pending, and_(model.status == ExportStatus.FAILED, model.next_attempt_at <= now))


def longest_waiting_first(
    model: type[Row],
) -> tuple[ColumnExpressionArgument[datetime], ColumnExpressionArgument[int]]:
    """The order of :func:`due` rows: the longest waiting first."""
    return func.coalesce(model.next_attempt_at, model.created_at), model.id


def claim(
    session: Session, model: type[Row], row_id: int, *, lease_s: float, now: datetime
) -> bool:
    """Claim a due row for one sender: one conditional ``UPDATE``, so one racing caller wins.

    A sender that dies leaves the claim to expire after ``lease_s``.
    """
    claimed = session.execute(
        update(model)
        .where(model.id == row_id, due(model, now))
        .values(next_attempt_at=now + timedelta(seconds=lease_s), updated_at=now)
        .returning(model.id)
    ).all()
    session.flush()
    return bool(claimed)


def for_update(session: Session, model: type[Row], row_id: int, what: str) -> Row:
    """The row with this id, holding its lock until the transaction ends."""
    return locked_row(session, model, model.id == row_id, what=f"{what} with id {row_id}")


def record_sent(row: Row, *, now: datetime) -> None:
    """The destination accepted it."""
    row.attempts += 1
    row.status = ExportStatus.SENT
    row.sent_at = now
    row.next_attempt_at = None
    row.updated_at = now


def record_failure(
    row: Row, *, what: str, error: str, max_attempts: int, backoff_s: float, now: datetime
) -> bool:
    """A failed send of an unsent row: ``FAILED`` with backoff, or ``DEAD`` after the last try.

    ``error`` is ``code: message`` in our words (shown in the console and sent on to the
    notification destinations), never an exception's own text.

    The next try is at ``now + backoff_s * 2 ** (attempts - 1)``.

    Returns:
        True if the row is now ``DEAD``.
    """
    row.attempts += 1
    row.last_error = error
    row.updated_at = now
    if row.attempts >= max_attempts:
        row.status = ExportStatus.DEAD
        row.next_attempt_at = None
        logger.error(
            "%s %s to %s is dead after %s attempts: %s",
            what,
            row.id,
            row.destination,
            row.attempts,
            error,
        )
        return True
    row.status = ExportStatus.FAILED
    row.next_attempt_at = now + timedelta(seconds=backoff_s * 2 ** (row.attempts - 1))
    logger.warning(
        "%s %s to %s failed (attempt %s), next try at %s: %s",
        what,
        row.id,
        row.destination,
        row.attempts,
        row.next_attempt_at.isoformat(),
        error,
    )
    return False


def reset(row: Row, *, what: str, now: datetime) -> None:
    """Give a dead or failed row a fresh start: ``PENDING``, no attempts (admin action).

    Raises:
        DbError: It was already sent.
    """
    if row.status == ExportStatus.SENT:
        raise DbError(f"{what} {row.id} was already sent and cannot be retried.")
    row.status = ExportStatus.PENDING
    row.attempts = 0
    row.next_attempt_at = None
    row.updated_at = now
