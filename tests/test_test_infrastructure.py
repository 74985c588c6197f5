"""The test suite's own rules: missing peers fail in CI, DICOM is validated strictly."""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
from pathlib import Path

import pydicom
import pydicom.config
import pytest
from pydicom.dataset import Dataset

from tests.helpers import (
    REPO_ROOT,
    _test_ports,
    free_port,
    own_redis_database,
    relaxed_dicom_validation,
    require_peer,
    require_tool,
)


def test_missing_peer_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="Orthanc is not available: gone"):
        require_peer("Orthanc", "gone")


def test_missing_peer_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"Orthanc is not available: gone.*CI=true"):
        require_peer("Orthanc", "gone")


def test_missing_tool_names_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("PATH", "")
    with pytest.raises(pytest.fail.Exception, match=r"apt-get install dcmtk"):
        require_tool("storescu", "dcmtk")


def test_present_tool_is_found() -> None:
    assert Path(require_tool("sh", "dash")).name == "sh"


PROBE = """
def test_probe(shared_data):
    pass
"""


@pytest.mark.parametrize(
    ("ci", "outcome", "returncode"), [("true", "1 error", 1), ("", "1 skipped", 0)]
)
def test_missing_shared_data_fixture_fails_only_in_ci(
    tmp_path: Path, ci: str, outcome: str, returncode: int
) -> None:
    """The real fixture, loaded from tests/conftest.py into a separate pytest run."""
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = {**os.environ, "CI": ci, "STROKE_TRIAGE_SHARED_DATA": str(tmp_path / "absent")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rfs",
            "-p",
            "no:cacheprovider",
            "-p",
            "tests.conftest",
            f"--rootdir={tmp_path}",
            str(tmp_path / "test_probe.py"),
        ],
        cwd=REPO_ROOT,
        env={**env, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert outcome in done.stdout, done.stdout + done.stderr
    assert done.returncode == returncode
    assert "the shared test data is not available" in done.stdout


def test_dicom_validation_is_strict_in_the_session() -> None:
    settings = pydicom.config.settings
    assert settings.reading_validation_mode == pydicom.config.RAISE
    assert settings.writing_validation_mode == pydicom.config.RAISE
    ds = Dataset()
    with pytest.raises(ValueError, match=r"SeriesDescription|LO"):
        ds.SeriesDescription = "x" * 65  # LO holds at most 64 characters


def test_relaxed_validation_is_local() -> None:
    ds = Dataset()
    with relaxed_dicom_validation(), pytest.warns(UserWarning):
        ds.SeriesDescription = "x" * 65
    assert pydicom.config.settings.writing_validation_mode == pydicom.config.RAISE


@pytest.mark.parametrize(
    ("worker", "url", "own"),
    [
        (None, "redis://127.0.0.1:6379/9", "redis://127.0.0.1:6379/9"),
        ("gw0", "redis://127.0.0.1:6379/9", "redis://127.0.0.1:6379/9"),
        ("gw1", "redis://127.0.0.1:6379/9", "redis://127.0.0.1:6379/10"),
        ("gw1", "redis://127.0.0.1:6379", "redis://127.0.0.1:6379/1"),
        ("gw3", "redis://:pw@redis:6379/15", "redis://:pw@redis:6379/2"),
    ],
)
def test_each_test_process_has_a_redis_database_of_its_own(
    monkeypatch: pytest.MonkeyPatch, worker: str | None, url: str, own: str
) -> None:
    """Two test processes never share Celery's queues (pytest-xdist names them gw0, gw1...)."""
    if worker is None:
        monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    else:
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
    assert own_redis_database(url) == own


def test_free_ports_are_never_ephemeral_and_each_worker_has_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An ephemeral port can be taken by any outgoing connection before the server binds it.
    ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(20)]
    assert len(set(ports)) == 20 and max(ports) < ephemeral
    for port in ports[:3]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # free indeed
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    drawn = {}
    for worker in ("gw0", "gw1"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        drawn[worker] = set(itertools.islice(_test_ports(), 20000))
    assert drawn["gw0"] and drawn["gw1"] and not drawn["gw0"] & drawn["gw1"]
    assert max(drawn["gw0"] | drawn["gw1"]) < ephemeral
