"""The dashboard's pages: worklist, series (audited), heat maps, failures and statistics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, Response
from pydicom.errors import InvalidDicomError

import db.exports
import db.overview
import db.statistics
from console import actions, dicom_view, series_page, svg
from console.lookup import series_or_404
from console.security import State, Viewer, page_viewer
from console.templating import page
from db.enums import ExportKind, ExportStatus, JobStatus
from db.errors import NotFoundError
from db.overview import Filters

router = APIRouter(include_in_schema=False)

Viewing = Annotated[Viewer, Depends(page_viewer)]


@router.get("/", response_class=HTMLResponse)
def worklist(request: Request, state: State, viewer: Viewing) -> HTMLResponse:
    """Newest series first, recent suspected ones on top."""
    with state.sessions() as session:
        rows = db.overview.worklist(
            session=session,
            suspected_within=timedelta(hours=state.config.suspected_window_h),
            limit=100,
        )
    return page(
        request,
        viewer,
        "worklist.html",
        rows=rows,
        refresh_s=state.config.refresh_s,
        window_h=state.config.suspected_window_h,
    )


@router.get("/series/{series_instance_uid}", response_class=HTMLResponse)
def series(
    series_instance_uid: str, request: Request, state: State, viewer: Viewing
) -> HTMLResponse:
    """Stage timeline, slice scores, heat maps, report, exports and admin actions (audited)."""
    with state.sessions() as session:
        detail = series_or_404(session, series_instance_uid)
    shown = series_page.build(state.runtime, detail, with_patient=viewer.principal.is_admin)
    actions.record(
        sessions=state.sessions,
        actor=viewer.principal.name,
        action="series.view",
        target=f"series {series_instance_uid}",
        outcome=actions.Outcome(
            "ok",
            "Patient name and ID shown." if viewer.principal.is_admin else "No patient data.",
        ),
    )
    return page(
        request,
        viewer,
        "series.html",
        detail=detail,
        row=detail.row,
        header=shown.header,
        plot=shown.plot,
        heatmaps=shown.heatmaps,
        retryable={ExportStatus.DEAD, ExportStatus.FAILED},
        requeueable=actions.REQUEUEABLE,
        message=request.query_params.get("message"),
    )


@router.get("/exports/{export_id}/frames/{frame}.png")
def heatmap_png(export_id: int, frame: int, state: State, _: Viewing) -> Response:
    """One frame of an exported Secondary Capture (the heat map), as PNG."""
    with state.sessions() as session:
        try:
            found = db.exports.get_export(session=session, export_id=export_id)
        except NotFoundError:
            found = None
        path = None if found is None or found.kind is not ExportKind.SC else found.path
    if path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"No heat map export {export_id}.")
    try:
        png = dicom_view.image_png(series_page.stored(path, state.reports_dir), frame=frame)
    except (OSError, InvalidDicomError, IndexError) as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "The image is not available.") from exc
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})


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
