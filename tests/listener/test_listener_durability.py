"""Nothing accepted is lost or duplicated: concurrency, aborted associations, crash recovery."""

from __future__ import annotations

import errno
import os
import socket
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from db.models import Instance, Series
from dicom_edge.durable import writer_tag
from dicom_edge.peers import echo
from listener import incoming
from listener.recovery import record_unrecorded, remove_partial_files
from listener.status import StoreStatus
from tests.listener.helpers import (
    DCMTK_ENV,
    LISTENER_AE,
    RunningListener,
    ct_dataset,
    dcmtk,
    scu,
    storescu,
    wait_until,
    write_series,
)

Start = Callable[..., RunningListener]


def test_four_associations_at_once_lose_and_duplicate_nothing(
    start_listener_for_test: Start, tmp_path: Path
) -> None:
    running = start_listener_for_test()
    study = generate_uid()
    series = [write_series(tmp_path / f"s{i}", 200, study_uid=study) for i in range(4)]
    processes = [
        subprocess.Popen(
            [
                dcmtk("storescu"),
                *("-aet", f"CT{i}", "-aec", LISTENER_AE, "127.0.0.1", str(running.port)),
                *map(str, files),
            ],
            env=DCMTK_ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for i, files in enumerate(series)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr.decode()

    assert running.instance_count() == 800
    assert len(running.stored_files()) == 800
    assert running.partial_files() == []
    with running.sessions() as session:
        counts = session.execute(select(Series.instance_count)).scalars().all()
        distinct = session.execute(
            select(func.count(func.distinct(Instance.sop_instance_uid)))
        ).scalar_one()
    assert sorted(counts) == [200, 200, 200, 200]
    assert distinct == 800
    sent = {
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for s in series for p in s
    }
    assert {p.stem for p in running.stored_files()} == sent


def test_aborted_association_leaves_no_half_instance(start_listener_for_test: Start) -> None:
    running = start_listener_for_test()
    study, series = generate_uid(), generate_uid()
    assoc = scu().associate("127.0.0.1", running.port, ae_title="STROKETRIAGE")
    for number in (1, 2):
        dataset = ct_dataset(study_uid=study, series_uid=series, number=number)
        assert assoc.send_c_store(dataset).Status == StoreStatus.SUCCESS
    assoc.abort()
    assert running.instance_count() == 2
    assert len(running.stored_files()) == 2


def _pdu(pdu_type: int, body: bytes) -> bytes:
    return struct.pack(">BBI", pdu_type, 0, len(body)) + body


def test_connection_cut_mid_dataset_stores_nothing(start_listener_for_test: Start) -> None:
    """A raw socket sends a C-STORE command and half a data set, then cuts the connection."""
    running = start_listener_for_test()
    # Negotiate with pynetdicom's own encoder, then speak raw PDUs on the socket.
    from pynetdicom.pdu import A_ASSOCIATE_RQ
    from pynetdicom.pdu_primitives import A_ASSOCIATE
    from pynetdicom.presentation import build_context

    primitive = A_ASSOCIATE()
    primitive.calling_ae_title = "RAW"
    primitive.called_ae_title = LISTENER_AE
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    context = build_context("1.2.840.10008.5.1.4.1.1.2", ["1.2.840.10008.1.2"])
    context.context_id = 1
    primitive.presentation_context_definition_list = [context]
    from pynetdicom.pdu_primitives import MaximumLengthNotification

    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = 0
    primitive.user_information = [max_length]
    request = A_ASSOCIATE_RQ()
    request.from_primitive(primitive)

    dataset = ct_dataset(study_uid=generate_uid(), series_uid=generate_uid(), number=1)
    from pynetdicom.dsutils import encode

    body = encode(dataset, True, True)
    assert body is not None
    from pynetdicom.dimse_primitives import C_STORE

    store = C_STORE()
    store.MessageID = 1
    store.AffectedSOPClassUID = dataset.SOPClassUID
    store.AffectedSOPInstanceUID = dataset.SOPInstanceUID
    store.Priority = 2
    from pynetdicom.dimse_messages import C_STORE_RQ

    message = C_STORE_RQ()
    message.primitive_to_message(store)
    command = encode(message.command_set, True, True)
    assert command is not None

    def pdv(control: int, data: bytes) -> bytes:
        item = bytes([1, control]) + data  # context 1
        return _pdu(0x04, struct.pack(">I", len(item)) + item)

    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
        sock.sendall(request.encode())
        assert sock.recv(1)[0] == 0x02  # A-ASSOCIATE-AC
        sock.sendall(pdv(0x03, command))  # command, last fragment
        sock.sendall(pdv(0x00, body[: len(body) // 2]))  # data, not the last fragment
    wait_until(lambda: echo(host="127.0.0.1", port=running.port, called_ae_title="STROKETRIAGE"))
    assert running.instance_count() == 0
    assert running.stored_files() == []
    assert running.partial_files() == []


def test_startup_records_files_that_missed_their_record(
    start_listener_for_test: Start, tmp_path: Path
) -> None:
    """A crash between the rename and the batch commit leaves a file without a row."""
    running = start_listener_for_test()
    files = write_series(tmp_path / "s", 3)
    headers = [pydicom.dcmread(p) for p in files]
    folder = running.storage_dir / headers[0].StudyInstanceUID / headers[0].SeriesInstanceUID
    folder.mkdir(parents=True)
    for path, header in zip(files, headers, strict=True):
        (folder / f"{header.SOPInstanceUID}.dcm").write_bytes(path.read_bytes())
    (folder / f".x.dcm.{writer_tag(1)}.ab.part").write_bytes(b"half")

    assert remove_partial_files(running.storage_dir) == 1
    assert record_unrecorded(running.storage_dir, running.sessions) == 3
    assert record_unrecorded(running.storage_dir, running.sessions) == 0
    assert running.instance_count() == 3


def test_durability_fsync_flushes_file_and_folder_and_os_does_not(
    start_listener_for_test: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    real_fsync = os.fsync
    flushed: list[int] = []

    def counting_fsync(fd: int) -> None:
        flushed.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    for durability, expected in (("fsync", 6), ("os", 0)):
        files = write_series(tmp_path / durability, 3)  # a new series per mode
        flushed.clear()
        running = start_listener_for_test(durability=durability)
        before = len(running.stored_files())
        assert storescu(files, running.port).returncode == 0
        # Every instance is stored whole either way (temporary file and rename).
        assert len(running.stored_files()) == before + 3
        assert running.partial_files() == []
        assert len(flushed) >= expected if expected else flushed == []
        running.listener.stop()


def test_a_file_the_disk_cannot_flush_is_refused_and_nothing_of_it_is_kept(
    start_listener_for_test: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An fsync that fails (EIO) is answered 0xA700 while the header is read beside it: no file
    under its name, no record; once the disk flushes again, the sender's retry is stored."""
    real_fsync = os.fsync
    disk_ok = False

    def fsync(fd: int) -> None:
        if not disk_ok:
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    running = start_listener_for_test()
    files = write_series(tmp_path / "s", 2)
    monkeypatch.setattr(os, "fsync", fsync)
    assoc = scu().associate("127.0.0.1", running.port, ae_title=LISTENER_AE)
    assert assoc.is_established
    try:
        statuses = [int(assoc.send_c_store(pydicom.dcmread(path)).Status) for path in files]
    finally:
        assoc.release()
    assert statuses == [StoreStatus.OUT_OF_RESOURCES] * 2
    assert running.stored_files() == [] and running.partial_files() == []
    assert running.instance_count() == 0

    disk_ok = True
    assert storescu(files, running.port).returncode == 0
    assert len(running.stored_files()) == 2 and running.partial_files() == []
    assert running.instance_count() == 2


def test_partial_files_of_a_dead_process_or_of_this_host_go_and_a_peers_live_ones_stay(
    tmp_path: Path,
) -> None:
    """A listener in another container sharing the volume may have the same pid (and a UID
    may hold the pid's digits): only the files its own tag names are removed."""
    folder = tmp_path / "1.2.3" / "1.2.3.4"
    folder.mkdir(parents=True)
    uid = "1.2.840.10008.5.1.4.1.1.2.42"  # holds ".42." and ".5."

    def part(tag: str, *, age_s: float = 0.0) -> Path:
        path = folder / f".{uid}.dcm.{tag}.{os.urandom(4).hex()}.part"
        path.write_bytes(b"half")
        if age_s:
            os.utime(path, (time.time() - age_s, time.time() - age_s))
        return path

    dead, ours, peer = part(writer_tag(42)), part(writer_tag(5)), part("peer-container_42")
    assert remove_partial_files(tmp_path, 42) == 1
    assert not dead.exists() and ours.exists() and peer.exists()

    stale_peer = part("peer-container_7", age_s=incoming.STALE_AFTER_S + 60)
    legacy = part("5", age_s=incoming.STALE_AFTER_S + 60)  # named before the host was
    assert remove_partial_files(tmp_path) == 3  # at start-up: this host's, and stale ones
    assert [path.exists() for path in (ours, peer, stale_peer, legacy)] == [
        False,
        True,
        False,
        False,
    ]
