"""Studies in the console: which series the model read and why not the others, the study's
reports, and the alert's preview image.

- ``GET /api/studies`` and ``GET /api/studies/{study_instance_uid}``: read with any token.
- ``GET /studies/{study_instance_uid}``: the dashboard's study page (audited).
- ``GET /previews/{result_id}.jpg``: the preview the alerts link to, for a bearer token or a
  dashboard login (audited): it shows the patient's images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, Response

import db.studies
from console import actions
from console.auth import Principal
from console.security import (
    Bearer,
    Cookie,
    LoginRequiredError,
    State,
    Viewer,
    api_reader,
    page_viewer,
)
from console.series_page import stored
from console.templating import page
from db.errors import NotFoundError
from db.studies import StudyDetail, StudyReport, StudyRow, StudySeries

router = APIRouter()

Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0)]


Reader = Annotated[Principal, Depends(api_reader)]


@dataclass(frozen=True)
class StudyReportOut(StudyReport):
    """One report of the study, with the console path of its preview (None without one)."""

    preview_url: str | None


@dataclass(frozen=True)
class StudyOut:
    """A study: the series the model read, every series and why (not), and its reports."""

    study_instance_uid: str
    chosen: StudySeries | None
    """The series the model reads for this study (None before a study is judged, or when no
    series of it is a soft-tissue reconstruction)."""
    current_result_id: int | None
    """The study's report now; the others in ``reports`` were revised by a later one."""
    series: list[StudySeries]
    reports: list[StudyReportOut]
    """Newest first."""


def preview_path_of(result_id: int) -> str:
    """The console path of a result's preview."""
    return f"/previews/{result_id}.jpg"


def _study_out(detail: StudyDetail) -> StudyOut:
    current = detail.current_report
    return StudyOut(
        study_instance_uid=detail.study_instance_uid,
        chosen=detail.chosen,
        current_result_id=None if current is None else current.result_id,
        series=detail.series,
        reports=[
            StudyReportOut(
                **asdict(report),
                preview_url=preview_path_of(report.result_id) if report.has_preview else None,
            )
            for report in detail.reports
        ],
    )


def _detail_or_404(state: State, study_instance_uid: str) -> StudyDetail:
    with state.sessions() as session:
        try:
            return db.studies.study_detail(session=session, study_instance_uid=study_instance_uid)
        except NotFoundError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc


@router.get("/api/studies", response_model=list[StudyRow], tags=["api"])
def list_studies(_: Reader, state: State, limit: Limit = 50, offset: Offset = 0) -> list[StudyRow]:
    """Studies, the newest instance first, with the series chosen and the current report."""
    with state.sessions() as session:
        return db.studies.list_studies(session=session, limit=limit, offset=offset)


@router.get("/api/studies/{study_instance_uid}", response_model=StudyOut, tags=["api"])
def get_study(study_instance_uid: str, _: Reader, state: State) -> StudyOut:
    """One study: the chosen series and why, every other series and why not, its reports."""
    return _study_out(_detail_or_404(state, study_instance_uid))


@router.get("/studies/{study_instance_uid}", response_class=HTMLResponse, include_in_schema=False)
def study_page(
    study_instance_uid: str,
    request: Request,
    state: State,
    viewer: Annotated[Viewer, Depends(page_viewer)],
) -> HTMLResponse:
    """The study page: the series read, the others and why, the reports, the preview."""
    shown = _study_out(_detail_or_404(state, study_instance_uid))
    current = next((r for r in shown.reports if r.result_id == shown.current_result_id), None)
    actions.record(
        sessions=state.sessions,
        actor=viewer.principal.name,
        action="study.view",
        target=f"study {study_instance_uid}",
        outcome=actions.Outcome(
            "ok", "Preview shown." if current and current.preview_url else "No preview."
        ),
    )
    return page(request, viewer, "study.html", study=shown, current=current)


def preview_viewer(request: Request, state: State, bearer: Bearer, cookie: Cookie) -> Principal:
    """Who asks for a preview: a bearer token (any scope) or a dashboard login.

    Raises:
        HTTPException: 401 for a token that is not valid, or no credential from a program.
        LoginRequiredError: No credential from a browser (answered with the login page).
    """
    if bearer is not None:
        principal = state.auth.from_token(bearer.credentials)
        if principal is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "A valid bearer token is required.",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return principal
    if cookie is not None and (principal := state.auth.from_session(cookie)) is not None:
        return principal
    if "text/html" in request.headers.get("accept", ""):
        raise LoginRequiredError
    raise HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        "The preview needs a bearer token (Authorization: Bearer st_...) or a console login.",
        headers={"WWW-Authenticate": "Bearer"},
    )


@router.get(
    "/previews/{result_id}.jpg",
    tags=["api"],
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}, "description": "The preview, JPEG."}},
)
def preview(
    result_id: int, state: State, principal: Annotated[Principal, Depends(preview_viewer)]
) -> Response:
    """The non-diagnostic preview of a report's key slices, as the alerts link it (audited)."""
    with state.sessions() as session:
        try:
            path = db.studies.preview_path(session=session, result_id=result_id)
        except NotFoundError:
            path = None
    try:
        image = None if path is None else stored(path, state.reports_dir).read_bytes()
    except OSError:
        image = None
    actions.record(
        sessions=state.sessions,
        actor=principal.name,
        action="preview.view",
        target=f"result {result_id}",
        outcome=actions.Outcome("ok", "Shown.")
        if image is not None
        else actions.Outcome("not_found", "No preview (none made, or deleted by retention)."),
    )
    if image is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"No preview of result {result_id}.")
    return Response(image, media_type="image/jpeg", headers={"Cache-Control": "private, no-store"})
