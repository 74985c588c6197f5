"""The notification outbox on SQLite and PostgreSQL: when a verdict's message is due."""

from __future__ import annotations

import db.exports
import db.jobs
import db.notifications
from db.engine import SessionFactory
from db.enums import NotificationChannel, NotificationEvent
from tests.helpers import record_head_ct_series, seed_export, seed_job

SERIES = "1.2.826.0.1.3680043.10.5.1"


def test_a_verdict_is_due_only_once_its_sr_was_tried(sessions: SessionFactory) -> None:
    """The message never goes before the SR: sent, or tried and failed (an outage does not
    hold it back); while the SR waits for its first try, the message waits too."""
    with sessions() as session:
        record_head_ct_series(session, series=SERIES, count=3)
        job_id, result_id = seed_job(session, series=SERIES, stage="inferred")
        assert result_id is not None
        exports = [
            seed_export(session, result_id=result_id, destination=destination)
            for destination in ("PACS@127.0.0.1:104", "PACS2@127.0.0.1:104")
        ]
        db.notifications.ensure_notification(
            session=session,
            job_id=job_id,
            result_id=result_id,
            event=NotificationEvent.SUSPECTED,
            event_key=f"result:{result_id}",
            destination="pager",
            channel=NotificationChannel.WEBHOOK,
            idempotency_key="K1",
            payload="{}",
            source_path=None,
        )
        session.commit()

        def due() -> list[int]:
            return [n.id for n in db.notifications.due_notifications(session=session)]

        assert due() == []  # neither SR tried yet
        db.exports.mark_export_sent(session=session, export_id=exports[0].id)
        assert due() == []  # one destination still waits for its first try
        db.exports.mark_export_failed(
            session=session, export_id=exports[1].id, error="x: y", max_attempts=5, backoff_s=1
        )
        assert len(due()) == 1  # tried everywhere: sent to one PACS, failed at the other
        session.rollback()


def test_a_verdict_is_not_due_before_its_reports_are_queued(sessions: SessionFactory) -> None:
    """Between the result's transaction and the queueing of its SR (and preview), a sweeper
    must not send the message: it would announce a report that is not there yet."""
    with sessions() as session:
        record_head_ct_series(session, series=SERIES, count=3)
        job_id, result_id = seed_job(session, series=SERIES, stage="inferred")
        assert result_id is not None
        db.notifications.ensure_notification(
            session=session,
            job_id=job_id,
            result_id=result_id,
            event=NotificationEvent.SUSPECTED,
            event_key=f"result:{result_id}",
            destination="pager",
            channel=NotificationChannel.WEBHOOK,
            idempotency_key="K2",
            payload="{}",
            source_path=None,
        )
        session.commit()

        def due() -> list[int]:
            return [n.id for n in db.notifications.due_notifications(session=session)]

        assert due() == []  # the worker is still writing the SR
        export = seed_export(session, result_id=result_id)
        assert due() == []  # queued, not tried
        db.exports.mark_export_sent(session=session, export_id=export.id)
        assert len(due()) == 1
        session.rollback()
        # Without any PACS there is no export: the job's export time says the outputs are done.
        assert due() == []
        db.jobs.finish_job(session=session, job_id=job_id)
        assert len(due()) == 1
        session.rollback()
