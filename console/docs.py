"""The API's documentation: /openapi.json behind a token, and Swagger UI served from here.

Swagger UI's files come from the ``swagger-ui-py`` package, never from a CDN, so /docs works
on a hospital network without internet access. /docs needs a dashboard login; the page then
fetches /openapi.json with the session's cookie. "Authorize" takes a bearer token for trying
the admin actions.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import FileResponse, HTMLResponse

from console.auth import Principal
from console.security import Viewer, api_reader, page_viewer
from console.templating import page

router = APIRouter(include_in_schema=False)

#: The Swagger UI files the /docs page loads, and their media types.
ASSETS = {"swagger-ui.css": "text/css", "swagger-ui-bundle.js": "text/javascript"}


def swagger_ui_dir() -> Path | None:
    """The folder of Swagger UI's files (package ``swagger-ui-py``), or None if not installed."""
    spec = importlib.util.find_spec("swagger_ui")  # located, not imported
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "static"
    return folder if all((folder / name).is_file() for name in ASSETS) else None


@router.get("/openapi.json")
def openapi(request: Request, _: Annotated[Principal, Depends(api_reader)]) -> dict[str, Any]:
    """The OpenAPI document (any token, or the dashboard's session)."""
    document: dict[str, Any] = request.app.openapi()
    return document


@router.get("/docs", response_class=HTMLResponse)
def docs(request: Request, viewer: Annotated[Viewer, Depends(page_viewer)]) -> HTMLResponse:
    """Swagger UI on /openapi.json."""
    return page(request, viewer, "docs.html", available=swagger_ui_dir() is not None)


@router.get("/docs/assets/{name}")
def asset(name: str) -> FileResponse:
    """One of Swagger UI's files (no token: they are the library's own)."""
    folder = swagger_ui_dir()
    if folder is None or name not in ASSETS:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"No asset {name}.")
    return FileResponse(
        folder / name,
        media_type=ASSETS[name],
        headers={"Cache-Control": "public, max-age=86400"},
    )
