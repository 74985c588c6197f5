"""Fixtures for the listener: a real listener on a free port (helpers: tests/listener/helpers)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from db.engine import create_engine_for, make_session_factory
from listener.config import ListenerConfig, ListenerRuntime
from listener.server import Listener, start_listener
from tests.helpers import free_port
from tests.listener.helpers import RunningListener


@pytest.fixture
def start_listener_for_test(tmp_path: Path) -> Iterator[Callable[..., RunningListener]]:
    """A factory: start a listener with config overrides; all are stopped at the end.

    The database is a SQLite file in ``tmp_path`` unless ``database_url`` names another.
    """
    started: list[tuple[Listener, Any]] = []

    def start(
        *, broker_url: str = "memory://", database_url: str | None = None, **overrides: Any
    ) -> RunningListener:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": free_port(),
            "quiet_period_s": 3600.0,
            "check_interval_s": 0.1,
            "min_free_disk_mb": 0.0,
            "min_slices": 3,
            "processes": 1,
        }
        values.update(overrides)
        config = ListenerConfig(**values)
        runtime = ListenerRuntime(
            storage_dir=tmp_path / "storage",
            database_url=database_url or f"sqlite:///{tmp_path / 'listener.db'}",
            broker_url=broker_url,
            task_queue="listener-test",
        )
        listener = start_listener(config, runtime)
        engine = create_engine_for(runtime.database_url)
        started.append((listener, engine))
        return RunningListener(listener, config, runtime, make_session_factory(engine))

    yield start
    for listener, engine in started:
        listener.stop()
        engine.dispose()
