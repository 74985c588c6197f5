"""Claim notifications from the outbox, deliver them through their channel, record the outcome.

Like the exports: one sender at a time per row (a conditional UPDATE claims it), failures
back off exponentially, and after ``export_max_attempts`` failures a row is dead. A crash
between delivery and the record sends again after the claim expires; the idempotency key
(HL7 MSH-10, webhook payload and header, e-mail Message-ID) lets the receiver drop it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import db.notifications
import db.studies
from db.engine import SessionFactory
from worker.config import WorkerConfig
from worker.errors import ErrorCode, WorkerError, error_detail, public_error
from worker.notify import email, hl7, webhook
from worker.notify.config import (
    EmailDestination,
    Hl7Destination,
    NotificationDestination,
    WebhookDestination,
)
from worker.notify.errors import NotificationError
from worker.notify.message import Notice, load_notice
from worker.notify.queue import queue_failure_notifications

log = logging.getLogger(__name__)

CLAIM_LEASE_S = 60.0
"""How long a claim keeps other senders off a notification."""


def dispatch(destination: NotificationDestination, notice: Notice) -> None:
    """Deliver one notice through the destination's channel.

    Raises:
        NotificationError: The destination did not accept it.
    """
    if isinstance(destination, WebhookDestination):
        webhook.post(destination, notice)
    elif isinstance(destination, EmailDestination):
        email.send(destination, notice)
    elif isinstance(destination, Hl7Destination):
        hl7.send(destination, notice)
    else:  # pragma: no cover - the settings' union is closed
        raise NotificationError(f"Unknown destination {destination!r}.")


def _find(destinations: Sequence[NotificationDestination], name: str) -> NotificationDestination:
    for destination in destinations:
        if destination.name == name:
            return destination
    raise NotificationError(
        f"The notification destination {name!r} is no longer configured.",
        code=ErrorCode.NOT_CONFIGURED,
    )


def deliver_notification(
    sessions: SessionFactory, *, notification_id: int, config: WorkerConfig
) -> bool:
    """Claim one notification, deliver it, and record the outcome.

    Returns:
        True if delivered now; False if held by another sender, not due, or it failed.
    """
    with sessions() as session:
        if not db.notifications.claim_notification(
            session=session, notification_id=notification_id, lease_s=CLAIM_LEASE_S
        ):
            session.commit()
            return False
        row = db.notifications.get_notification(session=session, notification_id=notification_id)
        name, payload, source = row.destination, row.payload, row.source_path
        preview = (
            None
            if row.result_id is None
            else db.studies.preview_path(session=session, result_id=row.result_id)
        )
        session.commit()
    try:
        notice = load_notice(payload, source, console_url=config.console_url, preview_path=preview)
        dispatch(_find(config.notifications, name), notice)
    except Exception as exc:
        # Whatever the failure (a refusal, or a message hl7apy will not build), it is counted,
        # so that the row backs off and dead-letters instead of coming back forever. The row
        # keeps our code and message; the library's own text goes to the log only.
        if isinstance(exc, WorkerError):
            log.warning(
                "Notification %d to %s failed: %s", notification_id, name, error_detail(exc)
            )
        else:
            log.exception("Notification %d to %s failed unexpectedly", notification_id, name)
        with sessions() as session:
            db.notifications.mark_notification_failed(
                session=session,
                notification_id=notification_id,
                error=str(public_error(exc)),
                max_attempts=config.export_max_attempts,
                backoff_s=config.export_backoff_s,
            )
            session.commit()
        return False
    with sessions() as session:
        db.notifications.mark_notification_sent(session=session, notification_id=notification_id)
        session.commit()
    log.info("Notification %d sent to %s", notification_id, name)
    return True


def send_notifications(
    sessions: SessionFactory,
    *,
    config: WorkerConfig,
    result_id: int | None = None,
    without_reports: bool = False,
) -> int:
    """Deliver the due notifications (of one result, or all); returns how many were sent.

    ``without_reports``: do not wait for the result's reports (see
    :func:`send_alerts_without_report`).
    """
    with sessions() as session:
        due = [
            row.id
            for row in db.notifications.due_notifications(
                session=session, result_id=result_id, without_reports=without_reports
            )
        ]
        session.commit()
    return sum(
        deliver_notification(sessions, notification_id=notification_id, config=config)
        for notification_id in due
    )


def send_alerts_without_report(
    sessions: SessionFactory, *, config: WorkerConfig, result_id: int
) -> int:
    """Deliver a result's notifications now, though its reports could not be made or queued.

    The job failed after its result was stored (the SR, its capture or the outbox failed): the
    verdict still goes to the stroke team. Never raises: the caller is already handling the
    failure. What is not delivered now is retried by the sweeper once the job has failed for
    good (or by the job's retry).

    Returns:
        How many were sent.
    """
    try:
        sent = send_notifications(
            sessions, config=config, result_id=result_id, without_reports=True
        )
    except Exception:  # the database may be what failed
        log.exception("Result %d: its notifications could not be sent", result_id)
        return 0
    if sent:
        log.warning("Result %d: %d notification(s) sent without the report", result_id, sent)
    return sent


def sweep_notifications(
    sessions: SessionFactory, *, config: WorkerConfig, storage_dir: Path | None = None
) -> int:
    """Queue notifications of new failures, then deliver every due notification.

    ``storage_dir`` (the worker's) lets a failure's message name the series' accession number.

    Returns:
        How many were sent.
    """
    if not config.notifications:
        return 0
    with sessions() as session:
        queue_failure_notifications(
            session, destinations=config.notifications, storage_dir=storage_dir
        )
        session.commit()
    sent = send_notifications(sessions, config=config)
    if sent:
        log.info("Notification sweep: %d sent", sent)
    return sent
