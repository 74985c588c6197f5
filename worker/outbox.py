"""The persisted export outbox: queue reports for each destination, claim, send, record.

Every object to send is an ``exports`` row first. A sender claims a row (so that two workers
never send it at once), sends it, and records the outcome; a failure schedules the next try
with exponential backoff, and after ``export_max_attempts`` failures the row is a dead letter.
Deterministic SOP Instance UIDs and one row per result, kind and destination mean a retry can
never put a second copy into the PACS.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from db import crud
from db.enums import ExportKind, ExportStatus
from db.errors import JobStateError
from worker.config import WorkerConfig
from worker.export import Destination, ExportError, send_datasets

log = logging.getLogger(__name__)

CLAIM_LEASE_S = 120.0
"""How long a claim keeps other senders off an export; a crashed sender's claim then expires."""


@dataclass(frozen=True)
class OutputFile:
    """One DICOM object the worker made for a result."""

    kind: ExportKind
    path: Path

    @property
    def sop_instance_uid(self) -> str:
        """The object's SOP Instance UID (the file is named after it)."""
        return self.path.stem


def destinations(config: WorkerConfig) -> list[Destination]:
    """The configured PACS destinations."""
    return [Destination(ae_title=d.ae_title, host=d.host, port=d.port) for d in config.pacs]


def queue_exports(
    session: Session,
    *,
    result_id: int,
    outputs: Sequence[OutputFile],
    targets: Sequence[Destination],
) -> list[int]:
    """Put every output for every destination in the outbox (existing rows are kept).

    Returns:
        Ids of the exports not yet sent.
    """
    unsent: list[int] = []
    for target in targets:
        for output in outputs:
            export = crud.ensure_export(
                session=session,
                result_id=result_id,
                kind=output.kind,
                destination=str(target),
                sop_instance_uid=output.sop_instance_uid,
                path=str(output.path),
            )
            if export.status != ExportStatus.SENT:
                unsent.append(export.id)
    return unsent


def deliver(sessions: sessionmaker[Session], *, export_id: int, config: WorkerConfig) -> bool:
    """Claim one export, send it, and record the outcome.

    When the last export of a result is sent, its job is finished (``exported_at``).

    Returns:
        True if the object was sent now; False if another sender holds it, it is not due, or
        the send failed (then it is rescheduled or dead).
    """
    with sessions() as session:
        if not crud.claim_export(session=session, export_id=export_id, lease_s=CLAIM_LEASE_S):
            session.commit()
            return False
        export = crud.get_export(session=session, export_id=export_id)
        path, destination, uid = Path(export.path), export.destination, export.sop_instance_uid
        session.commit()
    try:
        if not path.is_file():
            raise ExportError(f"The file {path} of instance {uid} is missing.")
        send_datasets(
            datasets=[path],
            destination=Destination.parse(destination),
            calling_ae_title=config.calling_ae_title,
        )
    except (ExportError, ValueError, OSError) as exc:
        with sessions() as session:
            crud.mark_export_failed(
                session=session,
                export_id=export_id,
                error=f"{type(exc).__name__}: {exc}",
                max_attempts=config.export_max_attempts,
                backoff_s=config.export_backoff_s,
            )
            session.commit()
        return False
    with sessions() as session:
        export = crud.mark_export_sent(session=session, export_id=export_id)
        log.info("Export %d: %s %s sent to %s", export_id, export.kind, uid, destination)
        _finish_if_all_sent(session, export.result_id)
        session.commit()
    return True


def _finish_if_all_sent(session: Session, result_id: int) -> None:
    exports = crud.result_exports(session=session, result_id=result_id)
    if exports and all(export.status == ExportStatus.SENT for export in exports):
        job_id = exports[0].result.job_id
        try:
            crud.finish_job(session=session, job_id=job_id)
        except JobStateError as exc:
            log.info("Job %d not finished after its exports: %s", job_id, exc)


def sweep(sessions: sessionmaker[Session], *, config: WorkerConfig, limit: int = 50) -> int:
    """Send the exports that are due: pending and unclaimed, or failed and past their backoff.

    Returns:
        How many were sent.
    """
    with sessions() as session:
        due = [export.id for export in crud.due_exports(session=session, limit=limit)]
        session.commit()
    sent = sum(deliver(sessions, export_id=export_id, config=config) for export_id in due)
    if due:
        log.info("Outbox sweep: %d of %d due exports sent", sent, len(due))
    return sent
