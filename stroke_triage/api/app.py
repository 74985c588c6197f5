"""The console's app factory: REST API, dashboard, health and /metrics in one FastAPI app."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from db.engine import create_engine_for, make_session_factory
from stroke_triage.api import health, metrics, routes_api, routes_pages
from stroke_triage.api.actions import Publisher, dispatcher_publisher
from stroke_triage.api.auth import Authenticator
from stroke_triage.api.session_key import session_secret
from stroke_triage.api.state import Console
from stroke_triage.settings import Settings

STATIC_DIR = Path(__file__).parent / "static"


def create_app(settings: Settings, *, publish: Publisher | None = None) -> FastAPI:
    """Build the console for these settings.

    The database schema is not migrated here: the listener and the workers do that, and /ready
    says whether it is at head.

    Args:
        settings: The service settings.
        publish: How a re-queued job reaches the workers; default: the settings' broker.
    """
    config = settings.api
    engine = create_engine_for(settings.resolved_database_url)
    sessions = make_session_factory(engine)
    runtime = settings.listener_runtime()
    state = Console(
        config=config,
        engine=engine,
        sessions=sessions,
        auth=Authenticator(
            sessions=sessions, secret=session_secret(config.session_secret, settings.data_dir)
        ),
        publish=publish
        or dispatcher_publisher(
            sessions=sessions,
            broker_url=runtime.broker_url,
            transport_options=runtime.broker_transport_options,
            queue=runtime.task_queue,
            lease_s=settings.listener.queued_lease_s,
        ),
        storage_dir=settings.storage_dir.resolve(),
        reports_dir=settings.reports_dir.resolve(),
        broker_url=runtime.broker_url,
        broker_transport_options=dict(runtime.broker_transport_options),
    )
    app = FastAPI(
        title="stroke-triage admin console",
        description="Results, jobs, exports and admin actions of stroke-triage. "
        "Not for clinical use.",
        version="1",
    )
    app.state.console = state
    app.state.auth = state.auth
    app.state.metrics_registry = metrics.build_registry(sessions)
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=config.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization"],
        )
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(routes_api.router)
    app.include_router(routes_pages.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
