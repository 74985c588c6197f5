"""What every request of the console needs, built once by the app factory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import Request

from console.actions import OpenPublisher
from console.auth import Authenticator
from console.config import ApiConfig, ConsoleRuntime
from console.flash import Flash
from console.search import SearchKey
from db.engine import Engine, SessionFactory


@dataclass(frozen=True)
class Console:
    """The console's dependencies (held on ``app.state.console``)."""

    runtime: ConsoleRuntime
    engine: Engine
    sessions: SessionFactory
    auth: Authenticator
    open_publisher: OpenPublisher
    search_key: SearchKey
    """Keys the search index's hashes of accession numbers and patient identifiers."""
    flash: Flash
    """Signs the admin buttons' results shown on the next page."""

    @property
    def config(self) -> ApiConfig:
        """The console's own settings."""
        return self.runtime.config

    @property
    def storage_dir(self) -> Path:
        """Where received instances are stored."""
        return self.runtime.storage_dir

    @property
    def reports_dir(self) -> Path:
        """Where the reports we create are kept."""
        return self.runtime.reports_dir


def console(request: Request) -> Console:
    """FastAPI dependency: the console's dependencies."""
    found: Console = request.app.state.console
    return found
