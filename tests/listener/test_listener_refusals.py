"""What the listener refuses: unknown callers, too many associations, no room, bad input."""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import _config as pynetdicom_config
from pynetdicom.dsutils import split_dataset

import db.jobs
import db.receiving
from listener.status import StoreStatus
from tests.helpers import relaxed_dicom_validation, require_tool
from tests.listener.helpers import (
    DCMTK_ENV,
    RunningListener,
    ct_dataset,
    dcmtk,
    echoscu,
    scu,
    storescu,
    write_series,
)

Start = Callable[..., RunningListener]


def test_unknown_calling_ae_gets_associate_rj(start_listener_for_test: Start) -> None:
    running = start_listener_for_test(allowed_calling_ae_titles=["CT1"])
    assert echoscu(running.port, calling_ae="CT1").returncode == 0
    refused = echoscu(running.port, calling_ae="INTRUDER")
    assert refused.returncode != 0
    assert "Association Rejected" in refused.stderr + refused.stdout

    assoc = scu("INTRUDER").associate("127.0.0.1", running.port, ae_title="STROKETRIAGE")
    assert assoc.is_rejected
    assert assoc.acceptor.primitive.result == 0x01  # permanent
    assert assoc.acceptor.primitive.diagnostic == 0x03  # calling AE title not recognised


def _echo_to(port: int, called_ae: str) -> subprocess.CompletedProcess[str]:
    """C-ECHO with DCMTK's echoscu, addressed to ``called_ae``."""
    return subprocess.run(
        [dcmtk("echoscu"), "-v", "-aet", "SCANNER", "-aec", called_ae, "127.0.0.1", str(port)],
        capture_output=True,
        text=True,
        check=False,
        env=DCMTK_ENV,
        timeout=60,
    )


def test_any_called_ae_title_is_accepted_by_default(start_listener_for_test: Start) -> None:
    running = start_listener_for_test()
    assert _echo_to(running.port, "WRONG").returncode == 0


def test_a_wrong_called_ae_title_is_refused_when_required(start_listener_for_test: Start) -> None:
    running = start_listener_for_test(require_called_ae_title=True)
    assert _echo_to(running.port, "STROKETRIAGE").returncode == 0
    refused = _echo_to(running.port, "WRONG")
    assert refused.returncode != 0
    output = refused.stderr + refused.stdout
    assert "Association Rejected" in output
    assert "Called AE Title Not Recognized" in output

    assoc = scu().associate("127.0.0.1", running.port, ae_title="WRONG")
    assert assoc.is_rejected
    assert assoc.acceptor.primitive.result == 0x01  # permanent
    assert assoc.acceptor.primitive.result_source == 0x01  # service user
    assert assoc.acceptor.primitive.diagnostic == 0x07  # called AE title not recognised


def test_ip_pinning(start_listener_for_test: Start) -> None:
    running = start_listener_for_test(
        calling_ae_addresses={"CT1": ["127.0.0.1/32"], "CT2": ["10.0.0.0/8"]}
    )
    assert echoscu(running.port, calling_ae="CT1").returncode == 0
    assert echoscu(running.port, calling_ae="CT2").returncode != 0  # right name, wrong address
    assert echoscu(running.port, calling_ae="ANYONE").returncode == 0  # not pinned


def test_maximum_associations(start_listener_for_test: Start) -> None:
    running = start_listener_for_test(max_associations=1)
    first = scu().associate("127.0.0.1", running.port, ae_title="STROKETRIAGE")
    assert first.is_established
    try:
        second = scu().associate("127.0.0.1", running.port, ae_title="STROKETRIAGE")
        assert second.is_rejected
        assert second.acceptor.primitive.result == 0x02  # transient: try again later
    finally:
        first.release()
    time.sleep(0.3)
    third = scu().associate("127.0.0.1", running.port, ae_title="STROKETRIAGE")
    assert third.is_established
    third.release()


def test_maximum_associations_across_processes(start_listener_for_test: Start) -> None:
    running = start_listener_for_test(max_associations=2, processes=2)
    held = [scu().associate("127.0.0.1", running.port, ae_title="STROKETRIAGE") for _ in range(2)]
    try:
        assert all(assoc.is_established for assoc in held)  # one in each process
        third = scu().associate("127.0.0.1", running.port, ae_title="STROKETRIAGE")
        assert third.is_rejected
        assert third.acceptor.primitive.result == 0x02  # transient: try again later
        assert third.acceptor.primitive.diagnostic == 0x02  # local limit exceeded
    finally:
        for assoc in held:
            assoc.release()


def test_low_disk_refuses_associations(start_listener_for_test: Start, tmp_path: Path) -> None:
    running = start_listener_for_test(min_free_disk_mb=1e12)
    assoc = scu().associate("127.0.0.1", running.port, ae_title="STROKETRIAGE")
    assert assoc.is_rejected
    assert assoc.acceptor.primitive.result == 0x02  # transient
    sent = storescu(write_series(tmp_path / "s", 1), running.port)
    assert sent.returncode != 0
    assert running.stored_files() == []


def test_queue_high_water_refuses_associations(start_listener_for_test: Start) -> None:
    running = start_listener_for_test(queue_high_water=2)
    assert echoscu(running.port).returncode == 0
    with running.sessions() as session:
        for _ in range(2):
            series_uid = generate_uid()
            db.receiving.record_instances(
                session=session,
                study_instance_uid=generate_uid(),
                series_instance_uid=series_uid,
                modality="CT",
                series_description=None,
                calling_ae_title="CT1",
                instances=[
                    db.receiving.InstanceRecord(
                        sop_instance_uid=generate_uid(),
                        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                        path="x.dcm",
                        transfer_syntax_uid="1.2.840.10008.1.2.1",
                        size_bytes=1,
                        received_at=datetime.now(UTC),
                    )
                ],
            )
            db.jobs.create_job(session=session, series_instance_uid=series_uid)
        session.commit()
    time.sleep(1.1)  # the queue length is measured at most once a second
    refused = echoscu(running.port)
    assert refused.returncode != 0


def test_acse_timeout_closes_a_silent_connection(start_listener_for_test: Start) -> None:
    running = start_listener_for_test(acse_timeout_s=0.5)
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
        assert sock.recv(1024) == b""  # closed by the listener, nothing sent
    assert echoscu(running.port).returncode == 0


def test_network_timeout_aborts_an_idle_association(start_listener_for_test: Start) -> None:
    running = start_listener_for_test(network_timeout_s=0.5)
    assoc = scu().associate("127.0.0.1", running.port, ae_title="STROKETRIAGE")
    assert assoc.is_established
    deadline = time.monotonic() + 10
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not assoc.is_established
    assert assoc.is_aborted


def _make_certificate(folder: Path) -> tuple[Path, Path]:
    openssl = require_tool("openssl", "openssl")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.parametrize("processes", [1, 2])
def test_dicom_tls(start_listener_for_test: Start, tmp_path: Path, processes: int) -> None:
    cert, key = _make_certificate(tmp_path)
    running = start_listener_for_test(tls_cert_file=cert, tls_key_file=key, processes=processes)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
    assoc = scu().associate(
        "127.0.0.1", running.port, ae_title="STROKETRIAGE", tls_args=(client, "localhost")
    )
    assert assoc.is_established
    dataset = ct_dataset(study_uid=generate_uid(), series_uid=generate_uid(), number=1)
    assert assoc.send_c_store(dataset).Status == StoreStatus.SUCCESS
    assoc.release()
    assert len(running.stored_files()) == 1

    plain = scu().associate("127.0.0.1", running.port, ae_title="STROKETRIAGE")
    assert not plain.is_established  # no TLS, no association


@pytest.mark.parametrize("processes", [1, 2])
def test_a_silent_connection_does_not_hold_up_tls_associations(
    start_listener_for_test: Start, tmp_path: Path, processes: int
) -> None:
    # A port scanner, or a client that never starts its TLS handshake, must not block the
    # listener from accepting anyone else.
    cert, key = _make_certificate(tmp_path)
    running = start_listener_for_test(tls_cert_file=cert, tls_key_file=key, processes=processes)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
    with contextlib.ExitStack() as silent:
        for _ in range(processes):
            silent.enter_context(socket.create_connection(("127.0.0.1", running.port)))
        time.sleep(0.5)  # every process has accepted one of them
        ae = scu()
        ae.acse_timeout = ae.network_timeout = 10
        start = time.monotonic()
        assoc = ae.associate(
            "127.0.0.1", running.port, ae_title="STROKETRIAGE", tls_args=(client, "localhost")
        )
        assert assoc.is_established
        assert time.monotonic() - start < 10
        assoc.release()


def _status(running: RunningListener, dataset: object) -> int:
    ae = scu()
    if isinstance(dataset, Path):  # sent as stored: Explicit VR Little Endian
        ae.requested_contexts = []
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", running.port, ae_title="STROKETRIAGE")
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(dataset).Status)
    finally:
        assoc.release()


def test_bad_input_gets_failure_statuses(
    start_listener_for_test: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = start_listener_for_test(max_image_pixels=10_000_000)
    study, series = generate_uid(), generate_uid()

    no_pixels = ct_dataset(study_uid=study, series_uid=series, number=1)
    del no_pixels.PixelData
    assert _status(running, no_pixels) == StoreStatus.NOT_AN_IMAGE

    not_an_image = ct_dataset(study_uid=study, series_uid=series, number=2)
    for keyword in ("Rows", "Columns", "PixelData"):
        delattr(not_an_image, keyword)
    assert _status(running, not_an_image) == StoreStatus.NOT_AN_IMAGE

    absurd = ct_dataset(study_uid=study, series_uid=series, number=3)
    absurd.Rows = absurd.Columns = 65535
    absurd.NumberOfFrames = 500
    assert _status(running, absurd) == StoreStatus.IMAGE_TOO_LARGE

    short_pixels = ct_dataset(study_uid=study, series_uid=series, number=8)
    short_pixels.PixelData = short_pixels.PixelData[: len(short_pixels.PixelData) // 2]
    assert _status(running, short_pixels) == StoreStatus.NOT_AN_IMAGE

    no_series = ct_dataset(study_uid=study, series_uid=series, number=4)
    del no_series.SeriesInstanceUID
    assert _status(running, no_series) == StoreStatus.CANNOT_UNDERSTAND

    # An invalid UI value on purpose (a path traversal): the session's strict validation would
    # refuse to build it, and the in-process listener must be seen with pydicom's default (warn),
    # which is what it runs with in production.
    with relaxed_dicom_validation():
        bad_uid = ct_dataset(study_uid=study, series_uid="1.2.3/../../../etc", number=5)
        assert _status(running, bad_uid) == StoreStatus.INVALID_UID

    # Garbage after a valid file meta: sent as is, never parsed by the sender.
    good = tmp_path / "good.dcm"
    ct_dataset(study_uid=study, series_uid=series, number=6).save_as(good, enforce_file_format=True)
    raw = good.read_bytes()
    corrupt = tmp_path / "corrupt.dcm"
    _, meta_end = split_dataset(good)  # where the data set starts
    corrupt.write_bytes(raw[:meta_end] + b"\x08\x00\x16\x00UI\xff\xff" + b"\x01" * 40)
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(raw[: len(raw) - 3000])
    monkeypatch.setattr(pynetdicom_config, "STORE_SEND_CHUNKED_DATASET", True)
    assert _status(running, corrupt) == StoreStatus.CANNOT_UNDERSTAND
    assert _status(running, truncated) == StoreStatus.CANNOT_UNDERSTAND

    assert running.stored_files() == []
    assert running.instance_count() == 0
    assert echoscu(running.port).returncode == 0  # still alive
    valid = ct_dataset(study_uid=study, series_uid=series, number=7)
    assert _status(running, valid) == StoreStatus.SUCCESS
