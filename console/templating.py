"""The dashboard's Jinja2 templates and how a page is rendered for its viewer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from console.dicom_view import display_name
from console.records import verdict, verdict_text
from console.security import Viewer

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.globals["verdict"] = verdict
templates.env.globals["verdict_text"] = verdict_text
templates.env.globals["display_name"] = display_name


def page(request: Request, viewer: Viewer, name: str, **context: Any) -> HTMLResponse:
    """Render a dashboard page for a logged-in viewer (never cached)."""
    return templates.TemplateResponse(
        request,
        name,
        {"principal": viewer.principal, "csrf": viewer.csrf, **context},
        headers={"Cache-Control": "no-store"},
    )
