"""Liveness and readiness, without a token, for the hospital's monitoring."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from kombu.connection import Connection

from console.state import Console, console
from db.engine import check_revision
from db.errors import DatabaseAccessError, SchemaRevisionError

router = APIRouter(tags=["health"])


@router.get("/health")
def health() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


def broker_problem(state: Console) -> str | None:
    """Why the broker is not reachable, or None when it is (or needs no server)."""
    if state.runtime.broker_url.startswith("filesystem://"):
        return None  # the folder queue needs no server
    try:
        with Connection(  # type: ignore[no-untyped-call]
            state.runtime.broker_url,
            transport_options=dict(state.runtime.broker_transport_options),
            connect_timeout=state.config.broker_timeout_s,
        ) as connection:
            connection.ensure_connection(max_retries=1, timeout=state.config.broker_timeout_s)
    except Exception as exc:  # kombu raises many kinds; all mean "not reachable"
        return f"broker not reachable: {type(exc).__name__}"
    return None


@router.get("/ready")
def ready(state: Annotated[Console, Depends(console)]) -> JSONResponse:
    """The database is reachable with its schema at head, and the broker is reachable."""
    started = time.monotonic()
    problems: list[str] = []
    try:
        check_revision(state.engine)
    except SchemaRevisionError as exc:
        problems.append(str(exc))
    except DatabaseAccessError as exc:
        problems.append(f"database not reachable: {type(exc).__name__}")
    broker = broker_problem(state)
    if broker:
        problems.append(broker)
    body: dict[str, Any] = {
        "status": "not ready" if problems else "ready",
        "problems": problems,
        "checked_in_ms": round((time.monotonic() - started) * 1000, 1),
    }
    return JSONResponse(body, status_code=503 if problems else 200)
