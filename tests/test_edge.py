"""The edge contract shared by the listener and the worker: AE titles, PACS nodes, durable files."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest
from pydantic import BaseModel, ValidationError

from dicom_edge import PacsDestination, check_ae_title, write_atomic
from dicom_edge.durable import move_into_place
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


@contextmanager
def _fsynced() -> Iterator[list[str]]:
    """The paths flushed inside the block (files and folders), in order."""
    flushed: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        flushed.append(os.readlink(f"/proc/self/fd/{fd}").removesuffix(" (deleted)"))
        real_fsync(fd)

    with mock.patch("dicom_edge.durable.os.fsync", recording_fsync):
        yield flushed


def test_write_atomic_writes_whole_files_and_flushes_them(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "x.dcm"
    with _fsynced() as flushed:
        assert write_atomic(target, [b"ab", memoryview(b"cd")]) == target
    assert target.read_bytes() == b"abcd"
    # The parent of each folder made for it (their entries), top down; the file; its folder.
    temp = flushed[2]
    assert Path(temp).parent == target.parent and temp.endswith(".part")
    assert flushed == [str(tmp_path), str(tmp_path / "a"), temp, str(target.parent)]
    assert [p.name for p in target.parent.iterdir()] == ["x.dcm"]
    # The folder's next file: the file and its folder only.
    with _fsynced() as flushed:
        write_atomic(target.with_name("y.dcm"), b"y")
    assert flushed[1:] == [str(target.parent)]
    with _fsynced() as flushed:
        write_atomic(tmp_path / "c" / "z.dcm", b"z", fsync=False)
    assert flushed == []


def test_a_file_moved_into_a_new_folder_makes_the_folder_durable_too(tmp_path: Path) -> None:
    """The listener's path: a received file renamed into a new study's series folder."""
    storage = tmp_path / "storage"
    storage.mkdir()
    first, second = storage / "x.part", storage / "y.part"
    first.write_bytes(b"x")
    second.write_bytes(b"y")
    series = storage / "study" / "series"
    with _fsynced() as flushed:
        move_into_place(first, series / "x.dcm")
    assert flushed == [str(first), str(storage), str(storage / "study"), str(series)]
    with _fsynced() as flushed:
        move_into_place(second, series / "y.dcm", flushed=True)
    assert flushed == [str(series)]


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
