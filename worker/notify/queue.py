"""Write notification outbox rows: for a result (in its transaction) and for failures."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import db.notifications
import db.receiving
from db.engine import Session
from db.enums import NotificationChannel, NotificationEvent
from db.rows import Job, Result
from dicom_edge import CLASSIFIABLE_SOP_CLASSES
from worker.config import WorkerConfig
from worker.notify.config import NotificationDestination, Trigger
from worker.notify.message import build_payload, idempotency_key

log = logging.getLogger(__name__)

FAILURE_WINDOW = timedelta(hours=24)
"""Failures older than this when first seen (before a destination existed) are not told."""


def station_name_of(datasets: Sequence[object]) -> str:
    """The Station Name (0008,1010) of the first dataset, or ``""``."""
    if not datasets:
        return ""
    return str(getattr(datasets[0], "StationName", "") or "")


def _event_of(result: Result) -> NotificationEvent:
    return NotificationEvent.SUSPECTED if result.suspected else NotificationEvent.NOT_SUSPECTED


def queue_result_notifications(
    session: Session,
    *,
    destinations: Sequence[NotificationDestination],
    storage_dir: Path,
    result: Result,
    station_name: str,
) -> int:
    """Put the notifications of a result in the outbox, in the caller's transaction.

    Returns:
        How many destinations want this result (rows that already existed included).
    """
    job = result.job
    series = job.series
    event = _event_of(result)
    wanted = [
        d
        for d in destinations
        if d.accepts(
            Trigger(event), calling_ae_title=series.calling_ae_title, station_name=station_name
        )
    ]
    if not wanted:
        return 0
    source = _first_instance_path(session, storage_dir, series.series_instance_uid)
    event_key = f"result:{result.id}"
    for destination in wanted:
        _enqueue(
            session,
            destination,
            job=job,
            result=result,
            event=event,
            event_key=event_key,
            source=source,
            reported_at=result.created_at,
        )
    log.info("Result %d: %d notification(s) in the outbox", result.id, len(wanted))
    return len(wanted)


def _first_instance_path(session: Session, storage_dir: Path, series_uid: str) -> str | None:
    for instance in db.receiving.series_instances(session=session, series_instance_uid=series_uid):
        if instance.sop_class_uid in CLASSIFIABLE_SOP_CLASSES:
            return str(storage_dir / instance.path)
    return None


def queue_failure_notifications(
    session: Session,
    *,
    destinations: Sequence[NotificationDestination],
    now: datetime | None = None,
) -> int:
    """Put notifications of recent failures (dead jobs, dead exports) in the outbox.

    Idempotent (one row per failure and destination), so the sweeper calls it every round.

    Returns:
        How many (failure, destination) pairs are wanted.
    """
    wanted = [d for d in destinations if Trigger.FAILED in d.on]
    if not wanted:
        return 0
    since = (now or datetime.now(UTC)) - FAILURE_WINDOW
    count = 0
    for job in db.notifications.failed_jobs_since(session=session, since=since):
        count += _queue_failure(
            session,
            wanted,
            job=job,
            result=None,
            event_key=f"job:{job.id}",
            source=None,
            reason=f"The series could not be classified: {(job.last_error or '')[:200]}",
        )
    for export in db.notifications.dead_exports_since(session=session, since=since):
        count += _queue_failure(
            session,
            wanted,
            job=export.result.job,
            result=export.result,
            event_key=f"export:{export.id}",
            source=export.path if export.kind == "sr" else None,
            reason=f"The {export.kind.upper()} could not be delivered to {export.destination}.",
        )
    return count


def _queue_failure(
    session: Session,
    destinations: Sequence[NotificationDestination],
    *,
    job: Job,
    result: Result | None,
    event_key: str,
    source: str | None,
    reason: str,
) -> int:
    series = job.series
    count = 0
    for destination in destinations:
        # The Station Name of a failed series is not known here: a station filter lets it pass.
        if destination.calling_ae_titles and (
            series.calling_ae_title not in destination.calling_ae_titles
        ):
            continue
        _enqueue(
            session,
            destination,
            job=job,
            result=result,
            event=NotificationEvent.FAILED,
            event_key=event_key,
            source=source,
            reason=reason,
        )
        count += 1
    return count


def _enqueue(
    session: Session,
    destination: NotificationDestination,
    *,
    job: Job,
    result: Result | None,
    event: NotificationEvent,
    event_key: str,
    source: str | None,
    reported_at: datetime | None = None,
    reason: str | None = None,
) -> None:
    """Write (if new) the outbox row of one event to one destination, with its payload."""
    series = job.series
    key = idempotency_key(
        event_key=event_key,
        destination=destination.name,
        series_instance_uid=series.series_instance_uid,
    )
    db.notifications.ensure_notification(
        session=session,
        job_id=job.id,
        result_id=result.id if result is not None else None,
        event=event,
        event_key=event_key,
        destination=destination.name,
        channel=NotificationChannel(destination.kind),
        idempotency_key=key,
        source_path=source,
        payload=build_payload(
            key=key,
            event=event,
            study_instance_uid=series.study.study_instance_uid,
            series_instance_uid=series.series_instance_uid,
            calling_ae_title=series.calling_ae_title,
            probability=result.probability if result is not None else None,
            threshold=result.threshold if result is not None else None,
            model_name=result.model_name if result is not None else None,
            model_version=result.model_version if result is not None else None,
            received_at=series.last_received_at,
            reported_at=reported_at,
            reason=reason,
        ),
    )


def notify_result(
    session: Session,
    *,
    config: WorkerConfig,
    storage_dir: Path,
    result: Result,
    datasets: Sequence[object],
) -> int:
    """Queue a result's notifications (none in shadow mode: shadow results are never sent)."""
    if config.mode == "shadow":
        return 0
    return queue_result_notifications(
        session,
        destinations=config.notifications,
        storage_dir=storage_dir,
        result=result,
        station_name=station_name_of(datasets),
    )
