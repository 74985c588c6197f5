"""Shared fixtures: strict DICOM validation, the third-party data, real services.

Plain helper functions (``require_peer``, ``free_port``, ``postgres_schema``...) live in
``tests/helpers.py``; tests import them from there, never from a ``conftest``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom.config
import pytest

from tests.helpers import REDIS_URL, postgres_schema, require_peer, shared_data_dir


def pytest_configure(config: pytest.Config) -> None:
    """Validate DICOM strictly while reading and writing, as highdicom's test suite does.

    A test that must read or write an invalid value on purpose relaxes this locally with
    ``tests.helpers.relaxed_dicom_validation``, saying why.
    """
    pydicom.config.settings.reading_validation_mode = pydicom.config.RAISE
    pydicom.config.settings.writing_validation_mode = pydicom.config.RAISE


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder; skips the test where it is absent (fails in CI)."""
    path = shared_data_dir()
    if not (path / "dicom").is_dir():
        require_peer(
            "the shared test data",
            f"it was not found at {path}: set STROKE_TRIAGE_SHARED_DATA to the folder "
            "holding dicom/ and brain-stroke-ct/.",
        )
    return path


@pytest.fixture(scope="session")
def ge_head_ct(shared_data: Path) -> Path:
    """The 28-slice real GE head CT series."""
    return shared_data / "dicom" / "ge-head-ct"


@pytest.fixture
def postgres_schema_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of a fresh schema in the real PostgreSQL, dropped afterwards."""
    with postgres_schema(request.node.module.__name__.rsplit(".", 1)[-1][:20]) as url:
        yield url


@pytest.fixture
def redis_url() -> str:
    """The real Redis, checked reachable (skip, or fail in CI, when it is not)."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.exceptions.ConnectionError as exc:
        require_peer("Redis", f"it is not reachable at {REDIS_URL} ({exc}).")
    return REDIS_URL
