"""The receive path: data sets go to a file as they arrive and are renamed, never copied.

pynetdicom writes each data set of the listener's associations to a file in
``<storage>/.incoming`` while its fragments arrive; the handler checks that file and renames
it into place. Other SCPs in the same process keep theirs in memory. pynetdicom's logging of
every message is off (unless its logger is at DEBUG): one line per association instead.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from dicom_edge.durable import move_into_place, writer_tag
from dicom_edge.peers import FolderPacs
from listener import handlers, incoming
from listener.status import StoreStatus
from tests.listener.helpers import (
    LISTENER_AE,
    RunningListener,
    ct_dataset,
    echoscu,
    scu,
    storescu,
    wait_until,
    write_series,
)

Start = Callable[..., RunningListener]


def _incoming_folders(running: RunningListener) -> list[Path]:
    root = running.storage_dir / incoming.INCOMING_DIR
    return sorted(root.iterdir()) if root.exists() else []


@pytest.mark.parametrize("durability", ["fsync", "os"])
def test_data_sets_are_written_as_they_arrive_and_renamed_not_copied(
    start_listener_for_test: Start,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    durability: str,
) -> None:
    moved: list[tuple[Path, Path]] = []

    def recording_move(
        temp: Path, path: Path, *, fsync: bool = True, flushed: bool = False
    ) -> Path:
        moved.append((temp, path))
        assert fsync == (durability == "fsync")
        return move_into_place(temp, path, fsync=fsync, flushed=flushed)

    def no_copy(*args: object, **kwargs: object) -> None:
        raise AssertionError("the data set was copied out of memory")

    monkeypatch.setattr(handlers, "move_into_place", recording_move)
    monkeypatch.setattr(handlers, "write_atomic", no_copy)
    running = start_listener_for_test(durability=durability)
    files = write_series(tmp_path / "s", 3)

    assert storescu(files, running.port).returncode == 0

    assert running.instance_count() == 3
    stored = running.stored_files()
    assert [path for _, path in moved] == [running.storage_dir / p for p in _relpaths(files)]
    incoming_root = running.storage_dir / incoming.INCOMING_DIR
    for temp, _ in moved:
        assert temp.parent.parent == incoming_root
        assert temp.name.startswith(incoming.file_prefix()) and temp.suffix == ".part"
    # Whole files, with the file meta pynetdicom wrote.
    by_uid = {path.stem: path for path in stored}
    for sent in files:
        original = pydicom.dcmread(sent)
        kept = by_uid[original.SOPInstanceUID]
        received = pydicom.dcmread(kept)
        assert received.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
        assert received.PixelData == original.PixelData
        assert kept.stat().st_mode & 0o777 == incoming.FILE_MODE
    # The association's folder went with it.
    wait_until(lambda: _incoming_folders(running) == [])
    assert running.partial_files() == []


def _relpaths(files: list[Path]) -> list[Path]:
    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in files]
    return [
        Path(h.StudyInstanceUID) / h.SeriesInstanceUID / f"{h.SOPInstanceUID}.dcm" for h in headers
    ]


def test_refused_data_sets_leave_no_file(start_listener_for_test: Start) -> None:
    running = start_listener_for_test()
    dataset = ct_dataset(study_uid=generate_uid(), series_uid=generate_uid(), number=1)
    del dataset.RescaleSlope
    assoc = scu().associate("127.0.0.1", running.port, ae_title=LISTENER_AE)
    assert assoc.is_established
    try:
        assert assoc.send_c_store(dataset).Status == StoreStatus.MISSING_CT_ATTRIBUTE
        folders = _incoming_folders(running)
        assert len(folders) == 1 and list(folders[0].iterdir()) == []  # removed by pynetdicom
    finally:
        assoc.release()
    wait_until(lambda: _incoming_folders(running) == [])
    assert running.stored_files() == [] and running.partial_files() == []


def test_another_scp_in_the_process_keeps_its_data_sets_in_memory(
    start_listener_for_test: Start, tmp_path: Path
) -> None:
    """The hook is per association: the demo's PACS, in the same process, is unchanged."""
    running = start_listener_for_test()
    pacs = FolderPacs(tmp_path / "pacs", ae_title="PACS")
    try:
        dataset = ct_dataset(study_uid=generate_uid(), series_uid=generate_uid(), number=1)
        for port, title in ((running.port, LISTENER_AE), (pacs.port, "PACS")):
            assoc = scu().associate("127.0.0.1", port, ae_title=title)
            assert assoc.is_established
            try:
                assert assoc.send_c_store(dataset).Status == StoreStatus.SUCCESS
            finally:
                assoc.release()
        (received,) = pacs.received()
        assert pydicom.dcmread(received).PixelData == dataset.PixelData
        assert running.instance_count() == 1
    finally:
        pacs.stop()


#: A listener in another container on the same storage volume: another host name, same pids.
PEER = "peer-container"


def _incoming_folder(storage: Path, name: str, *, age_s: float = 0.0) -> Path:
    folder = storage / incoming.INCOMING_DIR / name
    folder.mkdir(parents=True)
    (folder / f".c-store.{name.rsplit('.', 1)[0]}.abc.part").write_bytes(b"half a data set")
    if age_s:
        when = time.time() - age_s
        os.utime(folder, (when, when))
    return folder


def test_leftovers_of_a_crash_are_removed_at_start_and_a_peers_live_ones_kept(
    start_listener_for_test: Start, tmp_path: Path
) -> None:
    storage = tmp_path / "storage"
    _incoming_folder(storage, f"{writer_tag(4242)}.7")
    live = _incoming_folder(storage, f"{PEER}_4242.7")
    _incoming_folder(storage, f"{PEER}_5151.3", age_s=incoming.STALE_AFTER_S + 60)

    running = start_listener_for_test()

    assert _incoming_folders(running) == [live]


def test_a_dead_receivers_incoming_folders_are_removed_and_a_peers_kept(tmp_path: Path) -> None:
    """Same pid, another container (host name): the peer's in-flight files stay."""
    for name in (f"{writer_tag(4242)}.1", f"{writer_tag(4242)}.2", f"{writer_tag(5151)}.1"):
        _incoming_folder(tmp_path, name)
    _incoming_folder(tmp_path, f"{PEER}_4242.1")
    _incoming_folder(tmp_path, f"{writer_tag(42)}.1")

    incoming.remove_leftovers(tmp_path, 4242)

    assert sorted(p.name for p in (tmp_path / incoming.INCOMING_DIR).iterdir()) == sorted(
        [f"{writer_tag(5151)}.1", f"{PEER}_4242.1", f"{writer_tag(42)}.1"]
    )


def test_an_association_without_a_data_set_makes_no_incoming_folder(
    start_listener_for_test: Start, tmp_path: Path
) -> None:
    """A C-ECHO (a health check), a TCP probe and a refused association: no folder is made
    (and none removed); the first data set of an association makes its folder."""
    running = start_listener_for_test(allowed_calling_ae_titles=["SCANNER"])
    root = running.storage_dir / incoming.INCOMING_DIR
    assert not root.exists()
    assert echoscu(running.port).returncode == 0
    with socket.create_connection(("127.0.0.1", running.port)):
        pass  # a load balancer's TCP check
    refused = scu().associate("127.0.0.1", running.port, ae_title=LISTENER_AE)
    assert refused.is_rejected
    assert not root.exists()

    assoc = scu("SCANNER").associate("127.0.0.1", running.port, ae_title=LISTENER_AE)
    try:
        assert assoc.send_c_echo().Status == 0
        assert not root.exists()
        dataset = ct_dataset(study_uid=generate_uid(), series_uid=generate_uid(), number=1)
        assert assoc.send_c_store(dataset).Status == StoreStatus.SUCCESS
        (folder,) = _incoming_folders(running)
        assert folder.name.startswith(f"{writer_tag()}.")
    finally:
        assoc.release()
    wait_until(lambda: _incoming_folders(running) == [])


def test_one_log_line_per_association_instead_of_per_image(
    start_listener_for_test: Start, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    running = start_listener_for_test()
    files = write_series(tmp_path / "s", 3)

    assert storescu(files, running.port, calling_ae="CT1").returncode == 0
    wait_until(lambda: any("ended" in r.getMessage() for r in caplog.records))

    per_image = [r for r in caplog.records if "Store Request" in r.getMessage()]
    assert per_image == []
    (summary,) = [r for r in caplog.records if r.name == "listener.tally"]
    assert "Association from CT1 ended: 3 instances stored, 0 refused" in summary.getMessage()


def test_pynetdicom_message_logging_stays_at_debug(
    start_listener_for_test: Start, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="pynetdicom")
    running = start_listener_for_test()

    assert storescu(write_series(tmp_path / "s", 2), running.port).returncode == 0

    received = [r for r in caplog.records if r.getMessage() == "Received Store Request"]
    assert len(received) == 2


def test_without_an_incoming_folder_data_sets_are_received_in_memory_and_stored(
    start_listener_for_test: Start, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The incoming folder cannot be made (a file has its name): nothing is refused."""
    storage = tmp_path / "storage"
    storage.mkdir()
    (storage / incoming.INCOMING_DIR).write_bytes(b"not a folder")
    running = start_listener_for_test()
    files = write_series(tmp_path / "s", 3)

    assert storescu(files, running.port).returncode == 0

    assert running.instance_count() == 3
    stored = {path.stem: path for path in running.stored_files()}
    for sent in files:
        original = pydicom.dcmread(sent)
        assert pydicom.dcmread(stored[original.SOPInstanceUID]).PixelData == original.PixelData
    assert any("data sets stay in memory" in r.getMessage() for r in caplog.records)
    assert running.partial_files() == []
