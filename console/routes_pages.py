"""The dashboard: server-rendered pages behind a token login and a signed cookie."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydicom.errors import InvalidDicomError

import db.exports
import db.overview
import db.statistics
from console import actions, dicom_view, svg
from console.auth import COOKIE_MAX_AGE_S, COOKIE_NAME, Principal
from console.records import verdict
from console.state import Console, console
from db.enums import ExportKind, ExportStatus, JobStatus
from db.errors import NotFoundError
from db.overview import Filters

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.globals["verdict"] = verdict

State = Annotated[Console, Depends(console)]


def _principal(request: Request, state: Console) -> Principal | None:
    cookie = request.cookies.get(COOKIE_NAME)
    return None if cookie is None else state.auth.from_cookie(cookie)


def _page(
    request: Request, state: Console, principal: Principal, name: str, **context: Any
) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        name,
        {
            "principal": principal,
            "csrf": state.auth.csrf_token(principal),
            **context,
        },
        headers={"Cache-Control": "no-store"},
    )


def _login_redirect() -> RedirectResponse:
    return RedirectResponse("/login", status_code=status.HTTP_303_SEE_OTHER)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> HTMLResponse:
    """The login form: paste a token."""
    return templates.TemplateResponse(request, "login.html", {"error": None})


@router.post("/login", response_model=None)
def login(request: Request, state: State, token: Annotated[str, Form()]) -> Response:
    """Check the token and set the signed, HttpOnly, SameSite=Strict session cookie."""
    principal = state.auth.from_token(token.strip())
    if principal is None:
        return templates.TemplateResponse(
            request,
            "login.html",
            {"error": "This token is not valid (unknown or revoked)."},
            status_code=status.HTTP_401_UNAUTHORIZED,
        )
    response = RedirectResponse("/", status_code=status.HTTP_303_SEE_OTHER)
    response.set_cookie(
        COOKIE_NAME,
        state.auth.cookie_for(principal),
        max_age=COOKIE_MAX_AGE_S,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https",
    )
    return response


@router.post("/logout")
def logout() -> RedirectResponse:
    """Forget the session cookie."""
    response = _login_redirect()
    response.delete_cookie(COOKIE_NAME)
    return response


@router.get("/", response_class=HTMLResponse, response_model=None)
def worklist(request: Request, state: State) -> Response:
    """Newest series first, recent suspected ones on top."""
    principal = _principal(request, state)
    if principal is None:
        return _login_redirect()
    with state.sessions() as session:
        rows = db.overview.worklist(
            session=session,
            suspected_within=timedelta(hours=state.config.suspected_window_h),
            limit=100,
        )
    return _page(
        request,
        state,
        principal,
        "worklist.html",
        rows=rows,
        refresh_s=state.config.refresh_s,
        window_h=state.config.suspected_window_h,
    )


def _stored(state: Console, path: str, root: Path) -> Path:
    candidate = Path(path)
    return candidate if candidate.is_absolute() else root / candidate


@router.get("/series/{series_instance_uid}", response_class=HTMLResponse, response_model=None)
def series_page(series_instance_uid: str, request: Request, state: State) -> Response:
    """Stage timeline, slice scores, heat maps, report, exports and admin actions."""
    principal = _principal(request, state)
    if principal is None:
        return _login_redirect()
    with state.sessions() as session:
        try:
            detail = db.overview.series_detail(
                session=session, series_instance_uid=series_instance_uid
            )
        except NotFoundError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    paths = [_stored(state, p, state.storage_dir) for p in detail.instance_paths]
    header = None
    if paths:
        header = dicom_view.read_header(paths[0], with_patient=principal.is_admin)
    scores = {s.sop_instance_uid: s.probability for s in detail.slice_scores}
    numbers = dicom_view.instance_numbers(paths) if scores else []
    ordered = sorted(
        (
            (number if number is not None else index, uid)
            for index, (number, uid) in enumerate(zip(numbers, detail.instance_uids, strict=False))
            if uid in scores
        ),
    )
    plot = svg.line_plot([scores[uid] for _, uid in ordered], threshold=detail.row.threshold)
    heatmaps: list[tuple[int, int]] = []
    shown: set[str] = set()  # one SC file has an export row per destination: show it once
    for export in detail.exports:
        if export.kind is ExportKind.SC and export.path not in shown:
            shown.add(export.path)
            sc_path = _stored(state, export.path, state.reports_dir)
            try:
                frames = dicom_view.frame_count(sc_path)
            except (OSError, InvalidDicomError):
                continue
            heatmaps += [(export.id, frame) for frame in range(min(frames, 8))]
    return _page(
        request,
        state,
        principal,
        "series.html",
        detail=detail,
        row=detail.row,
        header=header,
        plot=plot,
        heatmaps=heatmaps,
        retryable={ExportStatus.DEAD, ExportStatus.FAILED},
        requeueable={JobStatus.FAILED, JobStatus.DONE, JobStatus.SKIPPED},
        message=request.query_params.get("message"),
    )


@router.get("/exports/{export_id}/frames/{frame}.png")
def heatmap_png(export_id: int, frame: int, request: Request, state: State) -> Response:
    """One frame of an exported Secondary Capture (the heat map), as PNG."""
    if _principal(request, state) is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Log in first.")
    with state.sessions() as session:
        try:
            found = db.exports.get_export(session=session, export_id=export_id)
        except NotFoundError:
            found = None
        path = None if found is None or found.kind is not ExportKind.SC else found.path
    if path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"No heat map export {export_id}.")
    try:
        png = dicom_view.image_png(_stored(state, path, state.reports_dir), frame=frame)
    except (OSError, InvalidDicomError, IndexError) as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "The image is not available.") from exc
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})


def _acting(request: Request, state: Console, csrf: str) -> Principal:
    principal = _principal(request, state)
    if principal is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Log in first.")
    if not state.auth.check_csrf(principal, csrf):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "The form is stale; reload the page.")
    return principal


def _back(series_instance_uid: str, outcome: actions.Outcome) -> RedirectResponse:
    from urllib.parse import quote

    return RedirectResponse(
        f"/series/{quote(series_instance_uid)}?message={quote(outcome.detail)}",
        status_code=status.HTTP_303_SEE_OTHER,
    )


def _acting_admin(
    request: Request, state: Console, csrf: str, *, action: str, target: str
) -> Principal:
    """The admin behind a form (CSRF-checked); a refusal is audited and answered 403."""
    principal = _acting(request, state, csrf)
    if not principal.is_admin:
        actions.audit_refusal(
            sessions=state.sessions, actor=principal.name, action=action, target=target
        )
        raise HTTPException(status.HTTP_403_FORBIDDEN, "This action needs the admin scope.")
    return principal


@router.post("/jobs/{job_id}/requeue")
def requeue_form(
    job_id: int,
    request: Request,
    state: State,
    csrf: Annotated[str, Form()],
    series: Annotated[str, Form()],
) -> RedirectResponse:
    """The series page's re-queue button (admin, CSRF-checked)."""
    principal = _acting_admin(request, state, csrf, action="job.requeue", target=f"job {job_id}")
    outcome = actions.requeue_job(
        sessions=state.sessions,
        open_publisher=state.open_publisher,
        job_id=job_id,
        actor=principal.name,
    )
    return _back(series, outcome)


@router.post("/exports/{export_id}/retry")
def retry_form(
    export_id: int,
    request: Request,
    state: State,
    csrf: Annotated[str, Form()],
    series: Annotated[str, Form()],
) -> RedirectResponse:
    """The series page's re-send button (admin, CSRF-checked)."""
    principal = _acting_admin(
        request, state, csrf, action="export.retry", target=f"export {export_id}"
    )
    outcome = actions.retry_export(
        sessions=state.sessions, export_id=export_id, actor=principal.name
    )
    return _back(series, outcome)


@router.get("/failures", response_class=HTMLResponse, response_model=None)
def failures(request: Request, state: State) -> Response:
    """Dead jobs and dead exports."""
    principal = _principal(request, state)
    if principal is None:
        return _login_redirect()
    with state.sessions() as session:
        jobs = db.overview.list_jobs(
            session=session, filters=Filters(job_status=JobStatus.FAILED), limit=200
        )
        exports = db.overview.list_exports(
            session=session, filters=Filters(export_status=ExportStatus.DEAD), limit=200
        )
        job_rows = [(j, j.series.series_instance_uid) for j in jobs]
        export_rows = [(e, e.result.job.series.series_instance_uid) for e in exports]
    return _page(request, state, principal, "failures.html", jobs=job_rows, exports=export_rows)


@router.get("/stats", response_class=HTMLResponse, response_model=None)
def stats_page(request: Request, state: State, days: int = 14) -> Response:
    """Series per day, suspected share, latency percentiles, failures."""
    principal = _principal(request, state)
    if principal is None:
        return _login_redirect()
    days = min(max(days, 1), 366)
    now = datetime.now(UTC)
    with state.sessions() as session:
        found = db.statistics.stats(session=session, since=now - timedelta(days=days - 1), now=now)
    chart = svg.bar_chart(found.series_per_day, highlight=[n for _, n in found.suspected_per_day])
    return _page(request, state, principal, "stats.html", stats=found, chart=chart, days=days)
