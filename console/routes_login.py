"""Logging in to the dashboard with a token, and out again; both audited."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from console import actions
from console.auth import COOKIE_MAX_AGE_S, COOKIE_NAME
from console.security import State, Viewer, form_sender
from console.templating import templates

router = APIRouter(include_in_schema=False)


def login_redirect() -> RedirectResponse:
    """Send the browser to the login page."""
    return RedirectResponse("/login", status_code=status.HTTP_303_SEE_OTHER)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> HTMLResponse:
    """The login form: paste a token."""
    return templates.TemplateResponse(request, "login.html", {"error": None})


@router.post("/login", response_model=None)
def login(request: Request, state: State, token: Annotated[str, Form()]) -> Response:
    """Check the token, start a session on the server and set its HttpOnly cookie."""
    principal = state.auth.from_token(token.strip())
    if principal is None:
        actions.record(
            sessions=state.sessions,
            actor="unknown",
            action="console.login",
            target="dashboard",
            outcome=actions.Outcome("refused", "The token is unknown or revoked."),
        )
        return templates.TemplateResponse(
            request,
            "login.html",
            {"error": "This token is not valid (unknown or revoked)."},
            status_code=status.HTTP_401_UNAUTHORIZED,
        )
    actions.record(
        sessions=state.sessions,
        actor=principal.name,
        action="console.login",
        target="dashboard",
        outcome=actions.Outcome("ok", f"Logged in ({principal.scope})."),
    )
    response = RedirectResponse("/", status_code=status.HTTP_303_SEE_OTHER)
    response.set_cookie(
        COOKIE_NAME,
        state.auth.start_session(principal),
        max_age=COOKIE_MAX_AGE_S,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https" or state.config.tls_by_proxy,
    )
    return response


@router.post("/logout")
def logout(state: State, viewer: Annotated[Viewer, Depends(form_sender)]) -> RedirectResponse:
    """End the session on the server (the cookie no longer works anywhere) and forget it."""
    state.auth.end_session(viewer.cookie)
    actions.record(
        sessions=state.sessions,
        actor=viewer.principal.name,
        action="console.logout",
        target="dashboard",
        outcome=actions.Outcome("ok", "Logged out; the session is ended."),
    )
    response = login_redirect()
    response.delete_cookie(COOKIE_NAME)
    return response
