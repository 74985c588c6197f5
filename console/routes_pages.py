"""The dashboard's case pages: the worklist (search, filters, paging), a series, its heat maps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import HTMLResponse, Response
from pydicom.errors import InvalidDicomError

import db.exports
import db.overview
from console import actions, dicom_view, series_page
from console.listing import PAGE_SIZES, Paging, WorklistQuery, shown_rows
from console.lookup import series_or_404
from console.search import refresh_index
from console.security import State, Viewer, page_viewer
from console.templating import page
from console.viewer import viewer_link
from db.enums import ExportKind, ExportStatus
from db.errors import NotFoundError
from db.overview import Filters, SeriesState

router = APIRouter(include_in_schema=False)

Viewing = Annotated[Viewer, Depends(page_viewer)]


@router.get("/", response_class=HTMLResponse)
def worklist(request: Request, state: State, viewer: Viewing) -> HTMLResponse:
    """The series, newest first: search, filters and paging; recent suspected ones on top."""
    query, errors = WorklistQuery.parse(dict(request.query_params))
    refresh_index(state.sessions, state.storage_dir, state.search_key)
    admin = viewer.principal.is_admin
    filters = query.filters(state.search_key, with_patient=admin)
    recent = datetime.now(UTC) - timedelta(hours=state.config.suspected_window_h)
    with state.sessions() as session:
        total = db.overview.count_series(session=session, filters=filters)
        rows = db.overview.list_series(
            session=session, filters=filters, limit=query.size, offset=query.offset
        )
        urgent = (
            []
            if query.narrowed or query.page > 1
            else db.overview.list_series(
                session=session, filters=Filters(since=recent, suspected=True), limit=query.size
            )
        )
        shown, urgent_shown = (
            shown_rows(
                session,
                found,
                storage_dir=state.storage_dir,
                viewer_template=state.config.viewer_url,
                with_patient=admin,
            )
            for found in (rows, urgent)
        )
        stations = db.overview.stations(session=session)
    if query.q:
        actions.audit_search(
            sessions=state.sessions, actor=viewer.principal, where="worklist", found=total
        )
    return page(
        request,
        viewer,
        "worklist.html",
        query=query,
        errors=errors,
        rows=shown,
        urgent=urgent_shown,
        paging=Paging.of(query, shown=len(shown), total=total),
        stations=stations,
        states=list(SeriesState),
        sizes=PAGE_SIZES,
        # A search or a filter is not refreshed (nor audited again every few seconds).
        refresh_s=0 if query.narrowed else state.config.refresh_s,
        window_h=state.config.suspected_window_h,
    )


@router.get("/series/{series_instance_uid}", response_class=HTMLResponse)
def series(
    series_instance_uid: str, request: Request, state: State, viewer: Viewing
) -> HTMLResponse:
    """Stage timeline, slice scores, heat maps, report, exports and admin actions (audited)."""
    refresh_index(state.sessions, state.storage_dir, state.search_key)
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
    row = detail.row
    return page(
        request,
        viewer,
        "series.html",
        detail=detail,
        row=row,
        header=shown.header,
        plot=shown.plot,
        heatmaps=shown.heatmaps,
        viewer_url=viewer_link(
            state.config.viewer_url,
            study_instance_uid=row.study_instance_uid,
            series_instance_uid=row.series_instance_uid,
            accession_number=None if shown.header is None else shown.header.accession_number,
        ),
        retryable={ExportStatus.DEAD, ExportStatus.FAILED},
        requeueable=actions.REQUEUEABLE,
        message=state.flash.read(request.query_params.get("message")),
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
