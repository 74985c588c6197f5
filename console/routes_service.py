"""The dashboard's service pages: health, failures, notifications, statistics and the audit log."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse

import db.audit
import db.notification_rows
import db.overview
import db.statistics
from console import svg
from console.listing import PAGE_SIZES
from console.security import State, Viewer, page_viewer
from console.status import service_status
from console.templating import page
from db.enums import ExportStatus, JobStatus, NotificationEvent
from db.overview import Filters

router = APIRouter(include_in_schema=False)

E = TypeVar("E", bound=StrEnum)

Viewing = Annotated[Viewer, Depends(page_viewer)]
PageNumber = Annotated[int, Query(ge=1)]
PageSize = Annotated[int, Query(ge=1, le=max(PAGE_SIZES))]


def _member(enum: type[E], value: str) -> E | None:
    """The member of ``enum`` with this value; None for an empty or unknown one."""
    try:
        return enum(value) if value else None
    except ValueError:
        return None


def _pages(number: int, size: int, total: int) -> dict[str, int | None]:
    """The paging of a simple list: first and last row shown, neighbours' page numbers."""
    last_page = max(1, -(-total // size))
    return {
        "first": (number - 1) * size + 1 if total else 0,
        "last": min(number * size, total),
        "total": total,
        "previous": number - 1 if number > 1 else None,
        "next": number + 1 if number < last_page else None,
    }


@router.get("/status", response_class=HTMLResponse)
def status_page(request: Request, state: State, viewer: Viewing) -> HTMLResponse:
    """Listener, workers (model loaded?), queue, disk, last instance received, dead letters."""
    found = service_status(state)
    return page(request, viewer, "status.html", status=found, refresh_s=state.config.refresh_s)


@router.get("/failures", response_class=HTMLResponse)
def failures(request: Request, state: State, viewer: Viewing) -> HTMLResponse:
    """Dead jobs and dead exports."""
    with state.sessions() as session:
        jobs = db.overview.list_jobs(
            session=session, filters=Filters(job_status=JobStatus.FAILED), limit=200
        )
        exports = db.overview.list_exports(
            session=session, filters=Filters(export_status=ExportStatus.DEAD), limit=200
        )
        job_rows = [(j, j.series.series_instance_uid) for j in jobs]
        export_rows = [(e, e.result.job.series.series_instance_uid) for e in exports]
    return page(request, viewer, "failures.html", jobs=job_rows, exports=export_rows)


@router.get("/notifications", response_class=HTMLResponse)
def notifications(
    *,
    request: Request,
    state: State,
    viewer: Viewing,
    status_: Annotated[str, Query(alias="status")] = "",
    event_: Annotated[str, Query(alias="event")] = "",
    page_number: Annotated[int, Query(alias="page", ge=1)] = 1,
    size: PageSize = PAGE_SIZES[0],
) -> HTMLResponse:
    """Messages to the stroke team and IT (webhook, e-mail, HL7) and their states; dead ones
    can be sent again (admin). An empty or unknown state or event means any."""
    status_filter = _member(ExportStatus, status_)
    event = _member(NotificationEvent, event_)
    with state.sessions() as session:
        total = db.notification_rows.count_notifications(
            session=session, status=status_filter, event=event
        )
        rows = db.notification_rows.list_notifications(
            session=session,
            status=status_filter,
            event=event,
            limit=size,
            offset=(page_number - 1) * size,
        )
    return page(
        request,
        viewer,
        "notifications.html",
        rows=rows,
        status_filter=status_filter,
        event_filter=event,
        statuses=list(ExportStatus),
        events=list(NotificationEvent),
        size=size,
        paging=_pages(page_number, size, total),
        retryable={ExportStatus.DEAD, ExportStatus.FAILED},
        message=state.flash.read(request.query_params.get("message")),
    )


@router.get("/stats", response_class=HTMLResponse)
def stats(
    request: Request,
    state: State,
    viewer: Viewing,
    days: Annotated[int, Query(ge=1, le=366)] = 14,
) -> HTMLResponse:
    """Series per day over the last ``days`` calendar days (1: today), latency, failures."""
    now = datetime.now(UTC)
    with state.sessions() as session:
        found = db.statistics.stats(
            session=session, since=db.statistics.last_days(days, now), now=now
        )
    chart = svg.bar_chart(found.series_per_day, highlight=[n for _, n in found.suspected_per_day])
    return page(request, viewer, "stats.html", stats=found, chart=chart, days=days)


@router.get("/audit", response_class=HTMLResponse)
def audit(
    *,
    request: Request,
    state: State,
    viewer: Viewing,
    actor: str = "",
    action: str = "",
    page_number: Annotated[int, Query(alias="page", ge=1)] = 1,
    size: PageSize = PAGE_SIZES[0],
) -> HTMLResponse:
    """The audit log, newest first (admin): who did what, when, and how it ended."""
    if not viewer.principal.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "The audit log needs the admin scope.")
    with state.sessions() as session:
        total = db.audit.count_actions(session=session, actor=actor or None, action=action or None)
        entries = db.audit.list_actions(
            session=session,
            actor=actor or None,
            action=action or None,
            limit=size,
            offset=(page_number - 1) * size,
        )
    return page(
        request,
        viewer,
        "audit.html",
        entries=entries,
        actor=actor,
        action=action,
        size=size,
        paging=_pages(page_number, size, total),
    )
