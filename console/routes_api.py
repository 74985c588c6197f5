"""The REST API under /api: read with any token, act with an admin token."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import PlainTextResponse, Response

import db.audit
import db.overview
import db.statistics
from console import actions
from console.auth import Principal, bearer_principal, require_admin
from console.records import result_records, to_csv
from console.state import Console, console
from db.enums import ExportStatus, JobStatus, SeriesStatus
from db.errors import NotFoundError
from db.overview import Filters, SeriesRow
from db.rows import Export, Job

router = APIRouter(prefix="/api", tags=["api"])

Caller = Annotated[Principal, Depends(bearer_principal)]
State = Annotated[Console, Depends(console)]
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0)]


def filters(
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    verdict: Annotated[str | None, Query(pattern="^(suspected|not_suspected)$")] = None,
    series_status: SeriesStatus | None = None,
    job_status: JobStatus | None = None,
    calling_ae: str | None = None,
    model_version: str | None = None,
) -> Filters:
    """The list filters shared by every route, from the query string."""
    return Filters(
        since=since,
        until=until,
        suspected=None if verdict is None else verdict == "suspected",
        series_status=series_status,
        job_status=job_status,
        calling_ae_title=calling_ae,
        model_version=model_version,
    )


Filtered = Annotated[Filters, Depends(filters)]


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def series_json(row: SeriesRow) -> dict[str, Any]:
    """One series row as JSON."""
    body: dict[str, Any] = _jsonable(asdict(row))
    return body


def job_json(job: Job) -> dict[str, Any]:
    """One job as JSON (no patient data)."""
    body: dict[str, Any] = _jsonable(
        {
            "id": job.id,
            "series_instance_uid": job.series.series_instance_uid,
            "status": str(job.status),
            "attempts": job.attempts,
            "instance_count": job.instance_count,
            "worker": job.worker,
            "last_error": job.last_error,
            "created_at": job.created_at,
            "queued_at": job.queued_at,
            "started_at": job.started_at,
            "inferred_at": job.inferred_at,
            "exported_at": job.exported_at,
        }
    )
    return body


def export_json(export: Export) -> dict[str, Any]:
    """One export as JSON."""
    body: dict[str, Any] = _jsonable(
        {
            "id": export.id,
            "result_id": export.result_id,
            "kind": str(export.kind),
            "destination": export.destination,
            "sop_instance_uid": export.sop_instance_uid,
            "status": str(export.status),
            "attempts": export.attempts,
            "last_error": export.last_error,
            "next_attempt_at": export.next_attempt_at,
            "sent_at": export.sent_at,
        }
    )
    return body


@router.get("/series")
def list_series(
    _: Caller, state: State, where: Filtered, limit: Limit = 50, offset: Offset = 0
) -> list[dict[str, Any]]:
    """Series, newest first, with their current job and result."""
    with state.sessions() as session:
        rows = db.overview.list_series(session=session, filters=where, limit=limit, offset=offset)
    return [series_json(row) for row in rows]


@router.get("/series/{series_instance_uid}")
def get_series(series_instance_uid: str, _: Caller, state: State) -> dict[str, Any]:
    """One series: counts, stages, result, slice scores, reports and exports, skip reason."""
    with state.sessions() as session:
        try:
            detail = db.overview.series_detail(
                session=session, series_instance_uid=series_instance_uid
            )
        except NotFoundError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
        body = series_json(detail.row)
        body["stages"] = [{"name": s.name, "at": _jsonable(s.at)} for s in detail.stages]
        body["jobs"] = [job_json(job) for job in detail.jobs]
        body["slice_scores"] = [asdict(s) for s in detail.slice_scores]
        body["exports"] = [export_json(e) for e in detail.exports]
    return body


@router.get("/results", response_model=None)
def list_results(
    *,
    request: Request,
    _: Caller,
    state: State,
    where: Filtered,
    limit: Limit = 50,
    offset: Offset = 0,
    format: Annotated[str | None, Query(pattern="^(json|csv)$")] = None,
) -> Response | list[dict[str, Any]]:
    """Current results as JSON, or as CSV (``Accept: text/csv`` or ``?format=csv``)."""
    with state.sessions() as session:
        records = result_records(session=session, filters=where, limit=limit, offset=offset)
    wants_csv = format == "csv" or (
        format is None and "text/csv" in request.headers.get("accept", "")
    )
    if wants_csv:
        return PlainTextResponse(to_csv(records), media_type="text/csv")
    return records


@router.get("/jobs")
def list_jobs(
    _: Caller,
    state: State,
    where: Filtered,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> list[dict[str, Any]]:
    """Jobs, newest first (``status=failed`` lists the dead letters)."""
    wanted = Filters(
        since=where.since,
        until=where.until,
        job_status=status_ or where.job_status,
        calling_ae_title=where.calling_ae_title,
    )
    with state.sessions() as session:
        return [
            job_json(job)
            for job in db.overview.list_jobs(
                session=session, filters=wanted, limit=limit, offset=offset
            )
        ]


@router.get("/exports")
def list_exports(
    _: Caller,
    state: State,
    where: Filtered,
    status_: Annotated[ExportStatus | None, Query(alias="status")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> list[dict[str, Any]]:
    """Exports, newest first, dead letters included (``status=dead``)."""
    wanted = Filters(
        since=where.since,
        until=where.until,
        export_status=status_,
        model_version=where.model_version,
    )
    with state.sessions() as session:
        return [
            export_json(export)
            for export in db.overview.list_exports(
                session=session, filters=wanted, limit=limit, offset=offset
            )
        ]


@router.get("/stats")
def get_stats(
    _: Caller, state: State, days: Annotated[int, Query(ge=1, le=3660)] = 7
) -> dict[str, Any]:
    """Series per day, suspected share, p50/p95 last instance to SR, failures.

    ``failed_jobs`` and ``dead_exports`` count the dead letters of the window;
    ``failed_jobs_now`` and ``dead_exports_now`` every dead letter waiting now, of any age.
    """
    now = datetime.now(UTC)
    with state.sessions() as session:
        found = db.statistics.stats(session=session, since=now - timedelta(days=days - 1), now=now)
    body: dict[str, Any] = _jsonable(asdict(found))
    body["suspected_share"] = found.suspected_share
    return body


@router.get("/audit")
def list_audit(
    caller: Caller, state: State, limit: Limit = 100, offset: Offset = 0
) -> list[dict[str, Any]]:
    """The audit log, newest first (admin only)."""
    require_admin(caller)
    with state.sessions() as session:
        return [
            _jsonable(
                {
                    "at": e.at,
                    "actor": e.actor,
                    "action": e.action,
                    "target": e.target,
                    "result": e.result,
                    "detail": e.detail,
                }
            )
            for e in db.audit.list_actions(session=session, limit=limit, offset=offset)
        ]


_STATUS_OF = {
    "ok": status.HTTP_200_OK,
    "not_found": status.HTTP_404_NOT_FOUND,
    "refused": status.HTTP_409_CONFLICT,
}


def _answer(outcome: actions.Outcome) -> dict[str, str]:
    code = _STATUS_OF.get(outcome.result, status.HTTP_500_INTERNAL_SERVER_ERROR)
    if code != status.HTTP_200_OK:
        raise HTTPException(code, outcome.detail)
    return {"result": outcome.result, "detail": outcome.detail}


def _admin_or_audit(state: Console, caller: Principal, action: str, target: str) -> None:
    """Refuse (403) a caller without the admin scope, and audit the refusal."""
    if not caller.is_admin:
        actions.audit_refusal(
            sessions=state.sessions, actor=caller.name, action=action, target=target
        )
    require_admin(caller)


@router.post("/jobs/{job_id}/requeue")
def requeue(job_id: int, caller: Caller, state: State) -> dict[str, str]:
    """Put a job back in the outbox and on the broker (admin)."""
    _admin_or_audit(state, caller, "job.requeue", f"job {job_id}")
    return _answer(
        actions.requeue_job(
            sessions=state.sessions,
            open_publisher=state.open_publisher,
            job_id=job_id,
            actor=caller.name,
        )
    )


@router.post("/exports/{export_id}/retry")
def retry(export_id: int, caller: Caller, state: State) -> dict[str, str]:
    """Put an export back in the outbox; a worker re-sends it (admin)."""
    _admin_or_audit(state, caller, "export.retry", f"export {export_id}")
    return _answer(
        actions.retry_export(sessions=state.sessions, export_id=export_id, actor=caller.name)
    )
