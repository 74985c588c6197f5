"""The console's app factory: REST API, dashboard, docs, health and /metrics in one FastAPI app."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from console import (
    docs,
    health,
    metrics,
    routes_api,
    routes_forms,
    routes_login,
    routes_pages,
    routes_service,
    routes_studies,
)
from console.actions import OpenPublisher, publisher_opener
from console.auth import Authenticator
from console.config import ConsoleRuntime
from console.flash import Flash
from console.headers import SecurityHeaders
from console.search import SearchKey
from console.security import LoginRequiredError
from console.session_key import session_secret
from console.state import Console
from db.engine import create_engine_for, make_session_factory
from db.site_key import site_key

STATIC_DIR = Path(__file__).parent / "static"


def _to_login(request: Request, _: Exception) -> RedirectResponse:
    """The login page; after it, the page asked for (a form sent without a session cannot be
    sent again, so it leads to the worklist)."""
    if request.method != "GET":
        return routes_login.login_redirect()
    query = request.url.query
    return routes_login.login_redirect(request.url.path + (f"?{query}" if query else ""))


def create_app(runtime: ConsoleRuntime, *, open_publisher: OpenPublisher | None = None) -> FastAPI:
    """Build the console.

    The database schema is not migrated here: the listener and the workers do that, and /ready
    says whether it is at head.

    Args:
        runtime: The console's settings and the service's resolved paths and URLs.
        open_publisher: How a re-queued job reaches the workers; default: the runtime's broker.
    """
    config = runtime.config
    engine = create_engine_for(runtime.database_url)
    sessions = make_session_factory(engine)
    secret = session_secret(config.session_secret, runtime.data_dir)
    state = Console(
        runtime=runtime,
        engine=engine,
        sessions=sessions,
        auth=Authenticator(sessions=sessions, secret=secret),
        flash=Flash(secret),
        open_publisher=open_publisher or publisher_opener(runtime, sessions),
        search_key=SearchKey.derive(site_key(runtime.data_dir)),
    )
    app = FastAPI(
        title="stroke-triage admin console",
        description="Results, jobs, exports and admin actions of stroke-triage. "
        "Not for clinical use.",
        version="1",
        # Served by console.docs: the document behind a token, Swagger UI without a CDN.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.console = state
    app.state.metrics_registry = metrics.build_registry(sessions)
    app.add_exception_handler(LoginRequiredError, _to_login)
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=config.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization"],
        )
    app.add_middleware(SecurityHeaders)
    for module in (
        health,
        metrics,
        routes_api,
        docs,
        routes_login,
        routes_pages,
        routes_service,
        routes_forms,
    ):
        app.include_router(module.router)
    app.include_router(routes_studies.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
