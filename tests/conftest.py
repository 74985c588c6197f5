"""Shared fixtures: where the third-party data lives, free ports, real services."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """The folder of third-party data (never committed), from STROKE_TRIAGE_SHARED_DATA."""
    configured = os.environ.get("STROKE_TRIAGE_SHARED_DATA")
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder; skips the test where it is absent (a user's fresh clone)."""
    path = shared_data_dir()
    if not (path / "dicom").is_dir():
        pytest.skip(
            f"shared test data not found at {path}: set STROKE_TRIAGE_SHARED_DATA to the folder "
            "holding dicom/ and brain-stroke-ct/"
        )
    return path


@pytest.fixture(scope="session")
def ge_head_ct(shared_data: Path) -> Path:
    """The 28-slice real GE head CT series."""
    return shared_data / "dicom" / "ge-head-ct"


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


POSTGRES_URL = os.environ.get(
    "STROKE_TRIAGE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
"""The real PostgreSQL that tests use (``.ci/run`` starts it); its schemas are throwaway."""


@contextmanager
def postgres_schema(prefix: str) -> Iterator[str]:
    """URL of a new, empty schema in the real PostgreSQL, dropped afterwards.

    Skips the test, saying why, when PostgreSQL is not reachable.
    """
    admin = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with admin.connect():
            pass
    except OperationalError as exc:
        admin.dispose()
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_URL} ({exc.orig}).")
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
