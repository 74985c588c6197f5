"""Logging in to the dashboard with a token, and out again; both audited."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Depends, Form, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from console import actions
from console.auth import COOKIE_MAX_AGE_S, COOKIE_NAME
from console.security import State, Viewer, form_sender
from console.templating import templates

router = APIRouter(include_in_schema=False)


#: The query parameter (and form field) that carries the page to open after the login.
NEXT = "next"


def local_page(target: str | None) -> str | None:
    """``target`` if it is a page of this console (a path, with its query); otherwise None.

    A link that sends the browser on after the login must never lead to another site
    (``//host``, ``https://host``, ``/\\host`` that browsers read as ``//host``).
    """
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    if any(ord(character) < 0x20 or character == "\x7f" for character in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or parts.path in ("/login", "/logout"):
        return None
    return target


def login_redirect(then: str | None = None) -> RedirectResponse:
    """Send the browser to the login page; after it, to ``then`` (a page of this console)."""
    page = local_page(then)
    location = "/login" if page in (None, "/") else f"/login?{urlencode({NEXT: page})}"
    return RedirectResponse(location, status_code=status.HTTP_303_SEE_OTHER)


@router.get("/login", response_class=HTMLResponse)
def login_form(
    request: Request, then: Annotated[str | None, Query(alias=NEXT)] = None
) -> HTMLResponse:
    """The login form: paste a token; then the page asked for (``?next=``), or the worklist."""
    return templates.TemplateResponse(
        request, "login.html", {"error": None, "next": local_page(then)}
    )


@router.post("/login", response_model=None)
def login(
    request: Request,
    state: State,
    token: Annotated[str, Form()],
    then: Annotated[str | None, Form(alias=NEXT)] = None,
) -> Response:
    """Check the token, start a session on the server and set its HttpOnly cookie.

    The browser then opens the page it asked for before the login (``next``, a page of this
    console only), or the worklist.
    """
    page = local_page(then)
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
            {"error": "This token is not valid (unknown or revoked).", "next": page},
            status_code=status.HTTP_401_UNAUTHORIZED,
        )
    actions.record(
        sessions=state.sessions,
        actor=principal.name,
        action="console.login",
        target="dashboard",
        outcome=actions.Outcome("ok", f"Logged in ({principal.scope})."),
    )
    response = RedirectResponse(page or "/", status_code=status.HTTP_303_SEE_OTHER)
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
