"""The REST API under /api: read with any token, act with an admin bearer token."""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import PlainTextResponse, Response

import db.audit
import db.notification_rows
import db.overview
import db.statistics
from console import actions
from console.auth import Principal
from console.lookup import series_or_404
from console.records import ResultRecord, result_records, to_csv
from console.schemas import (
    ActionOut,
    AuditEntryOut,
    ExportOut,
    JobOut,
    SeriesDetailOut,
)
from console.search import refresh_index, search_of
from console.security import State, api_actor, api_reader, require_admin
from console.status import ServiceStatus, service_status
from db.enums import ExportStatus, JobStatus, NotificationEvent
from db.notification_rows import NotificationRow
from db.overview import Filters, SeriesRow, SeriesState
from db.statistics import Stats

router = APIRouter(prefix="/api", tags=["api"])

Reader = Annotated[Principal, Depends(api_reader)]
Actor = Annotated[Principal, Depends(api_actor)]
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0)]


def filters(
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    verdict: Annotated[str | None, Query(pattern="^(suspected|not_suspected|none)$")] = None,
    series_status: SeriesState | None = None,
    job_status: JobStatus | None = None,
    calling_ae: str | None = None,
    model_version: str | None = None,
) -> Filters:
    """The list filters shared by every route, from the query string."""
    return Filters(
        since=since,
        until=until,
        suspected={"suspected": True, "not_suspected": False}.get(verdict or ""),
        without_result=verdict == "none",
        series_status=series_status,
        job_status=job_status,
        calling_ae_title=calling_ae,
        model_version=model_version,
    )


Filtered = Annotated[Filters, Depends(filters)]


def series_filters(
    *,
    caller: Reader,
    state: State,
    where: Filtered,
    q: Annotated[
        str | None,
        Query(
            max_length=200,
            description="Study or Series Instance UID, or Accession Number (exact); with an "
            "admin token also Patient ID, or parts of the Patient's Name.",
        ),
    ] = None,
    station: Annotated[
        str | None, Query(description="Station Name, else calling AE title, as shown.")
    ] = None,
) -> Filters:
    """The filters of the series lists: the shared ones, a search and the sender."""
    refresh_index(state.sessions, state.storage_dir, state.search_key)
    return replace(
        where,
        station=station,
        search=search_of(state.search_key, q or "", with_patient=caller.is_admin),
    )


SeriesFiltered = Annotated[Filters, Depends(series_filters)]


@router.get("/series", response_model=list[SeriesRow])
def list_series(
    *,
    response: Response,
    caller: Reader,
    state: State,
    where: SeriesFiltered,
    limit: Limit = 50,
    offset: Offset = 0,
) -> list[SeriesRow]:
    """Series, newest first, with their current job and result; ``X-Total-Count`` says how
    many match over all pages. Our own reports sent back by a PACS are not listed."""
    with state.sessions() as session:
        total = db.overview.count_series(session=session, filters=where)
        rows = db.overview.list_series(session=session, filters=where, limit=limit, offset=offset)
    response.headers["X-Total-Count"] = str(total)
    if where.search is not None:
        actions.audit_search(sessions=state.sessions, actor=caller, where="api", found=total)
    return rows


@router.get("/series/{series_instance_uid}", response_model=SeriesDetailOut)
def get_series(series_instance_uid: str, _: Reader, state: State) -> SeriesDetailOut:
    """One series: counts, stages, result, slice scores, reports and exports, skip reason."""
    refresh_index(state.sessions, state.storage_dir, state.search_key)
    with state.sessions() as session:
        detail = series_or_404(session, series_instance_uid)
        return SeriesDetailOut(
            **{f.name: getattr(detail.row, f.name) for f in fields(SeriesRow)},
            stages=detail.stages,
            jobs=[JobOut.of(job) for job in detail.jobs],
            slice_scores=detail.slice_scores,
            exports=[ExportOut.model_validate(e) for e in detail.exports],
            own_report_of=detail.own_report_of,
        )


@router.get(
    "/results",
    response_model=list[ResultRecord],
    responses={200: {"content": {"text/csv": {}}}},
)
def list_results(
    *,
    request: Request,
    caller: Reader,
    state: State,
    where: SeriesFiltered,
    limit: Limit = 50,
    offset: Offset = 0,
    format: Annotated[str | None, Query(pattern="^(json|csv)$")] = None,
) -> Response | list[ResultRecord]:
    """Current results as JSON, or as CSV (``Accept: text/csv`` or ``?format=csv``)."""
    with state.sessions() as session:
        records = result_records(session=session, filters=where, limit=limit, offset=offset)
    if where.search is not None:
        actions.audit_search(sessions=state.sessions, actor=caller, where="api", found=len(records))
    wants_csv = format == "csv" or (
        format is None and "text/csv" in request.headers.get("accept", "")
    )
    if wants_csv:
        return PlainTextResponse(to_csv(records), media_type="text/csv")
    return records


@router.get("/jobs", response_model=list[JobOut])
def list_jobs(
    _: Reader,
    state: State,
    where: Filtered,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> list[JobOut]:
    """Jobs, newest first (``status=failed`` lists the dead letters)."""
    wanted = replace(where, job_status=status_ or where.job_status)
    with state.sessions() as session:
        jobs = db.overview.list_jobs(session=session, filters=wanted, limit=limit, offset=offset)
        return [JobOut.of(job) for job in jobs]


@router.get("/exports", response_model=list[ExportOut])
def list_exports(
    _: Reader,
    state: State,
    where: Filtered,
    status_: Annotated[ExportStatus | None, Query(alias="status")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> list[ExportOut]:
    """Exports, newest first, dead letters included (``status=dead``)."""
    wanted = replace(where, export_status=status_)
    with state.sessions() as session:
        exports = db.overview.list_exports(
            session=session, filters=wanted, limit=limit, offset=offset
        )
        return [ExportOut.model_validate(export) for export in exports]


@router.get("/stats", response_model=Stats)
def get_stats(_: Reader, state: State, days: Annotated[int, Query(ge=1, le=3660)] = 7) -> Stats:
    """Series per day over the last ``days`` calendar days (1: today), latency, failures.

    ``failed_jobs`` and ``dead_exports`` count the dead letters of the window;
    ``failed_jobs_now`` and ``dead_exports_now`` every dead letter waiting now, of any age.
    """
    now = datetime.now(UTC)
    with state.sessions() as session:
        return db.statistics.stats(
            session=session, since=db.statistics.last_days(days, now), now=now
        )


@router.get("/audit", response_model=list[AuditEntryOut])
def list_audit(
    *,
    caller: Reader,
    state: State,
    actor: str | None = None,
    action: Annotated[str | None, Query(description="e.g. job.requeue, or job for all")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[AuditEntryOut]:
    """The audit log, newest first (admin only)."""
    require_admin(caller)
    with state.sessions() as session:
        entries = db.audit.list_actions(
            session=session, actor=actor, action=action, limit=limit, offset=offset
        )
        return [AuditEntryOut.model_validate(entry) for entry in entries]


@router.get("/notifications", response_model=list[NotificationRow])
def list_notifications(
    *,
    _: Reader,
    state: State,
    status_: Annotated[ExportStatus | None, Query(alias="status")] = None,
    event: NotificationEvent | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> list[NotificationRow]:
    """Notifications (webhook, e-mail, HL7), newest first (``status=dead``: dead letters)."""
    with state.sessions() as session:
        return db.notification_rows.list_notifications(
            session=session, status=status_, event=event, limit=limit, offset=offset
        )


@router.get("/status", response_model=ServiceStatus)
def get_status(_: Reader, state: State) -> ServiceStatus:
    """Listener and workers (from their heartbeats), queue depth, disk free, last instance
    received, dead letters waiting, and what needs a person (``problems``)."""
    return service_status(state)


_STATUS_OF = {
    "ok": status.HTTP_200_OK,
    "not_found": status.HTTP_404_NOT_FOUND,
    "refused": status.HTTP_409_CONFLICT,
}


def _answer(outcome: actions.Outcome) -> ActionOut:
    code = _STATUS_OF.get(outcome.result, status.HTTP_500_INTERNAL_SERVER_ERROR)
    if code != status.HTTP_200_OK:
        raise HTTPException(code, outcome.detail)
    return ActionOut(result=outcome.result, detail=outcome.detail)


def _admin_or_audit(state: State, caller: Principal, action: str, target: str) -> None:
    """Refuse (403) a caller without the admin scope, and audit the refusal."""
    if not caller.is_admin:
        actions.audit_refusal(
            sessions=state.sessions, actor=caller.name, action=action, target=target
        )
    require_admin(caller)


@router.post("/jobs/{job_id}/requeue", response_model=ActionOut)
def requeue(job_id: int, caller: Actor, state: State) -> ActionOut:
    """Put a failed or skipped job back in the outbox and on the broker (admin).

    Any other state is refused with 409: a queued or running job is the workers' own.
    """
    _admin_or_audit(state, caller, "job.requeue", f"job {job_id}")
    return _answer(
        actions.requeue_job(
            sessions=state.sessions,
            open_publisher=state.open_publisher,
            job_id=job_id,
            actor=caller.name,
        )
    )


@router.post("/exports/{export_id}/retry", response_model=ActionOut)
def retry(export_id: int, caller: Actor, state: State) -> ActionOut:
    """Put a dead or failed export back in the outbox; a worker re-sends it (admin)."""
    _admin_or_audit(state, caller, "export.retry", f"export {export_id}")
    return _answer(
        actions.retry_export(sessions=state.sessions, export_id=export_id, actor=caller.name)
    )


@router.post("/notifications/{notification_id}/retry", response_model=ActionOut)
def retry_notification(notification_id: int, caller: Actor, state: State) -> ActionOut:
    """Put a dead or failed notification back in the outbox; a worker sends it again (admin)."""
    target = f"notification {notification_id}"
    _admin_or_audit(state, caller, "notification.retry", target)
    return _answer(
        actions.retry_outbox(
            sessions=state.sessions, actor=caller.name, notification_ids=[notification_id]
        )
    )
