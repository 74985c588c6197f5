"""The dashboard's admin buttons (re-queue, re-send, retry a notification): forms with the
session's CSRF token."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, HTTPException, status
from fastapi.responses import RedirectResponse

from console import actions
from console.security import State, Viewer, form_sender

router = APIRouter(include_in_schema=False)

Sender = Annotated[Viewer, Depends(form_sender)]
SeriesUid = Annotated[str, Form()]


def _admin(state: State, sender: Viewer, *, action: str, target: str) -> str:
    """The admin behind a form; a refusal is audited and answered 403."""
    principal = sender.principal
    if not principal.is_admin:
        actions.audit_refusal(
            sessions=state.sessions, actor=principal.name, action=action, target=target
        )
        raise HTTPException(status.HTTP_403_FORBIDDEN, "This action needs the admin scope.")
    return principal.name


def _back(state: State, page: str, outcome: actions.Outcome) -> RedirectResponse:
    """Back to ``page``, which shows how the action ended (signed: a link cannot fake it)."""
    return RedirectResponse(
        f"{page}?message={quote(state.flash.sign(outcome.detail))}",
        status_code=status.HTTP_303_SEE_OTHER,
    )


@router.post("/jobs/{job_id}/requeue")
def requeue(job_id: int, state: State, sender: Sender, series: SeriesUid) -> RedirectResponse:
    """The series page's re-queue button (admin)."""
    actor = _admin(state, sender, action="job.requeue", target=f"job {job_id}")
    outcome = actions.requeue_job(
        sessions=state.sessions, open_publisher=state.open_publisher, job_id=job_id, actor=actor
    )
    return _back(state, f"/series/{quote(series)}", outcome)


@router.post("/exports/{export_id}/retry")
def retry(export_id: int, state: State, sender: Sender, series: SeriesUid) -> RedirectResponse:
    """The series page's re-send button (admin)."""
    actor = _admin(state, sender, action="export.retry", target=f"export {export_id}")
    outcome = actions.retry_export(sessions=state.sessions, export_id=export_id, actor=actor)
    return _back(state, f"/series/{quote(series)}", outcome)


@router.post("/notifications/{notification_id}/retry")
def retry_notification(notification_id: int, state: State, sender: Sender) -> RedirectResponse:
    """The notifications page's retry button (admin)."""
    target = f"notification {notification_id}"
    actor = _admin(state, sender, action="notification.retry", target=target)
    outcome = actions.retry_outbox(
        sessions=state.sessions, actor=actor, notification_ids=[notification_id]
    )
    return _back(state, "/notifications", outcome)
