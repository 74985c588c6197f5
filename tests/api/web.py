"""Talking to the console as a client does: bearer headers, a dashboard login, a form's CSRF."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from console.auth import COOKIE_NAME


def bearer(token: str) -> dict[str, str]:
    """The Authorization header of an API token."""
    return {"Authorization": f"Bearer {token}"}


def login(client: TestClient, token: str) -> str:
    """Log in to the dashboard with ``token``; return the session cookie's value."""
    done = client.post("/login", data={"token": token}, follow_redirects=False)
    assert done.status_code == 303, done.text
    cookie = client.cookies.get(COOKIE_NAME)
    assert cookie
    return cookie


def csrf_of(html: str) -> str:
    """The CSRF token in a dashboard page's forms."""
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)
