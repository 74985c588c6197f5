"""The edge contract shared by the listener and the worker: AE titles, PACS nodes, durable files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
from pydantic import BaseModel, ValidationError

from dicom_edge import PacsDestination, check_ae_title, write_atomic
from stroke_triage.settings import Settings
from tests.helpers import REPO_ROOT


@pytest.mark.parametrize("title", ["", "   ", "A" * 17, "BAD\\AE", "TAB\tAE", "NUL\x00"])
def test_invalid_ae_titles_are_refused(title: str) -> None:
    with pytest.raises(ValueError, match="AE title"):
        check_ae_title(title)
    with pytest.raises(ValidationError):
        PacsDestination(ae_title=title, host="h", port=104)


def test_ae_titles_are_stripped() -> None:
    assert check_ae_title(" ORTHANC ") == "ORTHANC"
    assert PacsDestination(ae_title="A" * 16 + " ", host="h", port=1).ae_title == "A" * 16


def test_pacs_destinations_come_from_the_same_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "STROKE_TRIAGE_WORKER__PACS", '[{"ae_title": "ORTHANC", "host": "pacs", "port": 4242}]'
    )
    (destination,) = Settings().worker.pacs
    assert destination == PacsDestination.parse("ORTHANC@pacs:4242")
    assert str(destination) == "ORTHANC@pacs:4242"


def test_settings_validate_ports_and_listener_ae_titles() -> None:
    class Holder(BaseModel):
        pacs: list[PacsDestination]

    with pytest.raises(ValidationError):
        Holder.model_validate({"pacs": [{"ae_title": "X", "host": "h", "port": 0}]})
    with pytest.raises(ValidationError, match="AE title"):
        Settings.model_validate({"listener": {"allowed_calling_ae_titles": ["OK", "BAD\\"]}})
    with pytest.raises(ValidationError, match="AE title"):
        Settings.model_validate({"listener": {"calling_ae_addresses": {"": ["10.0.0.0/8"]}}})


def test_write_atomic_writes_whole_files_and_flushes_them(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "x.dcm"
    with mock.patch("dicom_edge.durable.os.fsync", wraps=os.fsync) as fsync:
        assert write_atomic(target, [b"ab", memoryview(b"cd")]) == target
    assert target.read_bytes() == b"abcd"
    assert fsync.call_count == 2  # the file, then its folder
    assert [p.name for p in target.parent.iterdir()] == ["x.dcm"]


def test_write_atomic_leaves_the_old_file_when_a_write_fails(tmp_path: Path) -> None:
    target = tmp_path / "x.dcm"
    target.write_bytes(b"old")
    with (
        mock.patch("dicom_edge.durable.os.fsync", side_effect=OSError("disk full")),
        pytest.raises(OSError, match="disk full"),
    ):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.dcm"]


def test_importing_the_edge_pulls_in_nothing_heavy() -> None:
    code = (
        "import sys, dicom_edge; "
        "bad = [m for m in ('torch', 'sqlalchemy', 'celery', 'highdicom', 'db', 'listener', "
        "'worker', 'model', 'stroke_triage.settings') if m in sys.modules]; "
        "print(bad); raise SystemExit(1 if bad else 0)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
