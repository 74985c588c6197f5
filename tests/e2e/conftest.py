"""Fixtures for end-to-end tests: a stand-in PACS, a tiny model, service processes.

Their classes and the scanner (``storescu``) are in ``tests/e2e/helpers.py``.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import PacsStub, Service
from tests.helpers import free_port


@pytest.fixture
def test_pacs(tmp_path: Path) -> Iterator[PacsStub]:
    folder = tmp_path / "pacs"
    folder.mkdir()
    pacs = PacsStub(folder)
    yield pacs
    pacs.server.shutdown()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly initialised ViT, explicitly asked for by the tests."""
    from model.checkpoint import create_random_checkpoint

    return create_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", seed=0)


@pytest.fixture
def service_env(tmp_path: Path, tiny_checkpoint: Path, test_pacs: PacsStub) -> dict[str, str]:
    """Environment for a service on embedded defaults, pointed at the test PACS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STROKE_TRIAGE_")}
    env.update(
        {
            "STROKE_TRIAGE_DATA_DIR": str(tmp_path / "data"),
            "STROKE_TRIAGE_LISTENER__HOST": "127.0.0.1",
            "STROKE_TRIAGE_LISTENER__PORT": str(free_port()),
            "STROKE_TRIAGE_LISTENER__QUIET_PERIOD_S": "1.5",
            "STROKE_TRIAGE_API__PORT": str(free_port()),
            "STROKE_TRIAGE_WORKER__CHECKPOINT": str(tiny_checkpoint),
            "STROKE_TRIAGE_WORKER__PACS": json.dumps(
                [{"ae_title": test_pacs.ae_title, "host": "127.0.0.1", "port": test_pacs.port}]
            ),
            "STROKE_TRIAGE_TASK_QUEUE": f"test-{uuid.uuid4().hex[:8]}",
        }
    )
    return env


@pytest.fixture
def service(tmp_path: Path, service_env: dict[str, str]) -> Iterator[Service]:
    svc = Service(workdir=tmp_path, env=service_env)
    yield svc
    svc.stop()
