"""What every request of the console needs, built once by the app factory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import Request

from db.engine import Engine, SessionFactory
from stroke_triage.api.actions import Publisher
from stroke_triage.api.auth import Authenticator
from stroke_triage.api.config import ApiConfig


@dataclass(frozen=True)
class Console:
    """The console's dependencies (held on ``app.state.console``)."""

    config: ApiConfig
    engine: Engine
    sessions: SessionFactory
    auth: Authenticator
    publish: Publisher
    storage_dir: Path
    reports_dir: Path
    broker_url: str
    broker_transport_options: dict[str, object]


def console(request: Request) -> Console:
    """FastAPI dependency: the console's dependencies."""
    found: Console = request.app.state.console
    return found
