"""Exports: the outbox of DICOM objects (SR, Secondary Capture) sent back to the PACS.

Every function takes the caller's ``session``, flushes, and never commits: the caller owns the
transaction. Senders claim an export before sending it, so two workers never send it at once.
The life cycle (due, claim, backoff, dead, retry) is :mod:`db._outbox`, shared with
:mod:`db.notifications`.
"""

import logging
from datetime import datetime

from sqlalchemy import and_, select
from sqlalchemy.orm import Session, aliased

import db.jobs
from db import _outbox
from db._query import export_for_update, insert, one, utc
from db.enums import ExportKind, ExportStatus
from db.errors import NotFoundError
from db.models import Export, Result, Series

logger = logging.getLogger(__name__)


def ensure_export(
    *,
    session: Session,
    result_id: int,
    kind: ExportKind,
    destination: str,
    sop_instance_uid: str,
    path: str,
    sha256: str | None = None,
    size_bytes: int | None = None,
) -> Export:
    """Return the export of a result to a destination, creating it ``PENDING`` if new.

    An existing row keeps its SOP Instance UID, so a retried task re-sends the same object.
    Args ``sha256`` and ``size_bytes`` describe the file as just written: a row not yet sent
    takes them (a re-run rewrote the file), a sent row keeps what it sent.
    """
    now = utc(None)
    session.execute(
        insert(session, Export)
        .values(
            result_id=result_id,
            kind=kind,
            destination=destination,
            sop_instance_uid=sop_instance_uid,
            path=path,
            sha256=sha256,
            size_bytes=size_bytes,
            status=ExportStatus.PENDING,
            attempts=0,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=[Export.result_id, Export.kind, Export.destination])
    )
    statement = select(Export).where(
        Export.result_id == result_id, Export.kind == kind, Export.destination == destination
    )
    export = one(session, statement, f"export of result {result_id}")
    if sha256 is not None and export.status != ExportStatus.SENT and export.sha256 != sha256:
        export.sha256, export.size_bytes, export.updated_at = sha256, size_bytes, now
        session.flush()
    return export


def get_export(*, session: Session, export_id: int) -> Export:
    """Return the export with this id.

    Raises:
        NotFoundError: No such export.
    """
    return one(session, select(Export).where(Export.id == export_id), f"export {export_id}")


def mark_export_sent(*, session: Session, export_id: int, now: datetime | None = None) -> Export:
    """Record that the destination accepted the object."""
    export = export_for_update(session, export_id)
    _outbox.record_sent(export, now=utc(now))
    session.flush()
    return export


def mark_export_failed(
    *,
    session: Session,
    export_id: int,
    error: str,
    max_attempts: int,
    backoff_s: float,
    now: datetime | None = None,
) -> Export:
    """Record a failed send and schedule the next one with exponential backoff.

    After ``max_attempts`` failures the export is ``DEAD``; otherwise it is ``FAILED`` with
    ``next_attempt_at = now + backoff_s * 2 ** (attempts - 1)``. A sent export stays sent.
    """
    now = utc(now)
    export = export_for_update(session, export_id)
    if export.status == ExportStatus.SENT:
        logger.warning("Export %s failed after it was sent; kept as sent: %s", export_id, error)
        return export
    dead = _outbox.record_failure(
        export,
        what="Export",
        error=error,
        max_attempts=max_attempts,
        backoff_s=backoff_s,
        now=now,
    )
    if dead:
        # The job shows it (`jobs --status export_failed`) until retry-export clears it.
        db.jobs.set_export_failed(
            session=session, job_id=export.result.job_id, failed=True, now=now
        )
    session.flush()
    return export


def due_exports(
    *,
    session: Session,
    now: datetime | None = None,
    limit: int = 100,
    pending_older_than: datetime | None = None,
) -> list[Export]:
    """Return exports to (re)send: ``PENDING`` ones and ``FAILED`` ones whose time has come.

    Args:
        session: Database session.
        now: Current time.
        limit: Most rows returned.
        pending_older_than: If given, only ``PENDING`` exports created before this time (so that a
            sweeper leaves alone the ones a worker is sending right now).

    Returns:
        The exports, the longest waiting first.
    """
    older = None if pending_older_than is None else utc(pending_older_than)
    statement = (
        select(Export)
        .where(_outbox.due(Export, utc(now), pending_older_than=older))
        .order_by(*_outbox.longest_waiting_first(Export))
        .limit(limit)
    )
    return list(session.execute(statement).scalars())


def claim_export(
    *, session: Session, export_id: int, lease_s: float, now: datetime | None = None
) -> bool:
    """Claim a due export for one sender, so that two workers never send it at once.

    The claim is one conditional ``UPDATE``: it moves ``next_attempt_at`` to ``now + lease_s``
    if the export is ``PENDING`` (and not claimed) or ``FAILED`` and due. Exactly one of several
    racing callers wins. A sender that dies leaves the claim to expire after ``lease_s``.

    Returns:
        True if this caller may send the export now.
    """
    return _outbox.claim(session, Export, export_id, lease_s=lease_s, now=utc(now))


def retry_export(*, session: Session, export_id: int, now: datetime | None = None) -> Export:
    """Give a dead (or failed) export a fresh start: ``PENDING``, no attempts (admin action).

    Raises:
        NotFoundError: No such export.
        DbError: The export was already sent.
    """
    now = utc(now)
    export = export_for_update(session, export_id)
    _outbox.reset(export, what="Export", now=now)
    session.flush()
    job_id = export.result.job_id
    still_dead = session.execute(
        select(Export.id)
        .join(Result, Export.result_id == Result.id)
        .where(Result.job_id == job_id, Export.status == ExportStatus.DEAD)
        .limit(1)
    ).first()
    if still_dead is None:  # the job stays flagged while another of its exports is dead
        db.jobs.set_export_failed(session=session, job_id=job_id, failed=False, now=now)
        session.flush()
    logger.info("Export %s to %s put back in the outbox.", export_id, export.destination)
    return export


def result_exports(*, session: Session, result_id: int) -> list[Export]:
    """Return every export of one result, oldest first."""
    statement = select(Export).where(Export.result_id == result_id).order_by(Export.id)
    return list(session.execute(statement).scalars())


def superseded_report_paths(*, session: Session, result_id: int) -> list[str]:
    """Files of the SRs that earlier, now superseded results of this result's study produced.

    A study has one report at a time (see :func:`db.results.record_result`), whichever of its
    series made it, so the SRs of every series of the study count. One path per SR instance
    (several destinations share one file), oldest result first. One query: the result itself,
    outer-joined to its study's series, their superseded results and those results' SRs.

    Raises:
        NotFoundError: No result has this id.
    """
    current, earlier = aliased(Result), aliased(Result)
    current_series, study_series = aliased(Series), aliased(Series)
    rows = session.execute(
        select(Export.sop_instance_uid, Export.path)
        .select_from(current)
        .join(current_series, current_series.id == current.series_id)
        .outerjoin(study_series, study_series.study_id == current_series.study_id)
        .outerjoin(
            earlier,
            and_(
                earlier.series_id == study_series.id,
                earlier.id < current.id,  # only what came before it
                earlier.superseded.is_(True),
            ),
        )
        .outerjoin(Export, and_(Export.result_id == earlier.id, Export.kind == ExportKind.SR))
        .where(current.id == result_id)
        .order_by(earlier.id, Export.id)
    ).all()
    if not rows:
        raise NotFoundError(f"No result {result_id} exists.")
    paths: dict[str, str] = {}
    for uid, path in rows:
        if uid is not None:
            paths.setdefault(uid, path)
    return list(paths.values())


def list_exports(
    *, session: Session, status: ExportStatus | None = None, limit: int = 50
) -> list[Export]:
    """Return exports, newest first, optionally of one status."""
    statement = select(Export)
    if status is not None:
        statement = statement.where(Export.status == status)
    return list(session.execute(statement.order_by(Export.id.desc()).limit(limit)).scalars())
