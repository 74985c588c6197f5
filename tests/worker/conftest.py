"""Fixtures for the worker tests: a tiny checkpoint, a SQLite runtime (helpers: helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.checkpoint import create_random_checkpoint
from tests.helpers import migrated_sqlite
from worker.config import WorkerRuntime


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny ViT checkpoint (seed 0), one per test module."""
    return create_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", seed=0)


@pytest.fixture
def runtime(tmp_path: Path) -> WorkerRuntime:
    """A worker runtime in ``tmp_path``: a migrated SQLite database and the in-memory broker."""
    url = migrated_sqlite(tmp_path / "triage.db")
    return WorkerRuntime(
        storage_dir=tmp_path / "storage",
        reports_dir=tmp_path / "reports",
        database_url=url,
        broker_url="memory://",
    )
