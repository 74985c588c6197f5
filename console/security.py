"""The console's FastAPI security dependencies: who may read, act, or see a page.

- The API reads with a bearer token, or with the dashboard's session cookie.
- The API acts (POST) with a bearer token only: a browser attaches cookies to a form posted
  from any page of the same site (another port of the same host included), so a cookie alone
  never authorises an action there.
- The dashboard's pages need a live session; its forms also send the session's CSRF token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Form, HTTPException, Request, Security, status
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from console.auth import COOKIE_NAME, Principal
from console.state import Console, console

bearer_scheme = HTTPBearer(
    auto_error=False,
    description="An API token (`stroke-triage token create --name NAME --scope read|admin`).",
)
cookie_scheme = APIKeyCookie(
    name=COOKIE_NAME,
    auto_error=False,
    description="The dashboard's session (log in at /login). Reads only: actions need a "
    "bearer token.",
)

State = Annotated[Console, Depends(console)]
Bearer = Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)]
Cookie = Annotated[str | None, Security(cookie_scheme)]


class LoginRequiredError(Exception):
    """A dashboard page was asked for without a live session (answered with the login page)."""


def _unauthorised(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
    )


def api_reader(state: State, bearer: Bearer, cookie: Cookie) -> Principal:
    """The caller of a read-only API route: a bearer token, or the dashboard's session.

    Raises:
        HTTPException: 401 without a valid token or live session.
    """
    principal = None
    if bearer is not None:
        principal = state.auth.from_token(bearer.credentials)
    elif cookie is not None:
        principal = state.auth.from_session(cookie)
    if principal is None:
        raise _unauthorised("A valid bearer token is required.")
    return principal


def api_actor(request: Request, state: State, bearer: Bearer) -> Principal:
    """The caller of an API action: a bearer token only (the cookie is no defence against CSRF).

    Raises:
        HTTPException: 401 without a valid bearer token.
    """
    if bearer is None and COOKIE_NAME in request.cookies:
        raise _unauthorised(
            "API actions take a bearer token (Authorization: Bearer st_...); the dashboard's "
            "session cookie is not accepted here. Use the buttons on the series page instead."
        )
    principal = None if bearer is None else state.auth.from_token(bearer.credentials)
    if principal is None:
        raise _unauthorised("A valid bearer token is required.")
    return principal


@dataclass(frozen=True)
class Viewer:
    """Who looks at a dashboard page, and the CSRF token of their session."""

    principal: Principal
    cookie: str
    csrf: str


def page_viewer(state: State, cookie: Cookie) -> Viewer:
    """The logged-in viewer of a dashboard page.

    Raises:
        LoginRequiredError: No live session (the app answers with a redirect to /login).
    """
    if cookie is None or (principal := state.auth.from_session(cookie)) is None:
        raise LoginRequiredError
    return Viewer(principal, cookie, state.auth.csrf_token(cookie))


def form_sender(
    state: State,
    viewer: Annotated[Viewer, Depends(page_viewer)],
    csrf: Annotated[str, Form()],
) -> Viewer:
    """The viewer who sent a dashboard form, with the session's CSRF token.

    Raises:
        HTTPException: 403 when the form's CSRF token is not the session's.
    """
    if not state.auth.check_csrf(viewer.cookie, csrf):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "The form is stale; reload the page.")
    return viewer


def require_admin(principal: Principal) -> None:
    """Raise 403 unless the caller has the admin scope."""
    if not principal.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "This action needs the admin scope.")
