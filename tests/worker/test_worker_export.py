"""The C-STORE SCU, against a real pynetdicom Storage SCP on a free port."""

from __future__ import annotations

import copy
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.uid import Comprehensive3DSRStorage, SecondaryCaptureImageStorage, generate_uid
from pynetdicom import AE, evt

import db.engine
import db.exports
from db.enums import ExportStatus
from dicom_edge import PacsDestination
from model.phantom import write_phantom_series
from tests.helpers import free_port, migrated_sqlite, record_head_ct_series, seed_export, seed_job
from tests.worker.helpers import Pacs
from worker.capture import build_heatmap_capture
from worker.config import WorkerConfig
from worker.errors import ErrorCode
from worker.export import ExportError, send_datasets
from worker.outbox import sweep
from worker.report import AlgorithmInfo, Finding, build_structured_report

SCP_AE_TITLE = "TESTPACS"


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> list[pydicom.Dataset]:
    """A report and a heat-map capture built from a small phantom series."""
    paths = write_phantom_series(tmp_path_factory.mktemp("phantom"), n_slices=3, size=32)
    sources = [pydicom.dcmread(path) for path in paths]
    report = build_structured_report(
        source_datasets=sources,
        finding=Finding(
            probability=0.9,
            suspected=True,
            threshold=0.5,
            top_instance_uids=[sources[1].SOPInstanceUID],
        ),
        algorithm=AlgorithmInfo(
            name="tiny", version="0", software_version="0.1.0", model_sha256="00" * 32
        ),
    )
    capture = build_heatmap_capture(
        source_datasets=sources[1:2],
        images=[np.linspace(0.0, 1.0, 32 * 32).reshape(32, 32)],
        heatmaps=[np.eye(8)],
        probability=0.9,
        suspected=True,
        series_instance_uid=generate_uid(),
        sop_instance_uid=generate_uid(),
    )
    return [report, capture]


StoreHandler = Callable[[evt.Event], int]


@pytest.fixture
def storage_scp() -> Iterator[Callable[[StoreHandler], PacsDestination]]:
    """Starts Storage SCPs on free ports; each answers C-STORE with the given handler."""
    servers: list[Any] = []

    def start(handler: StoreHandler) -> PacsDestination:
        ae = AE(ae_title=SCP_AE_TITLE)
        ae.require_called_aet = True
        for sop_class in (Comprehensive3DSRStorage, SecondaryCaptureImageStorage):
            ae.add_supported_context(sop_class)
        server = ae.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, handler)]
        )
        assert server is not None
        servers.append(server)
        return PacsDestination(
            ae_title=SCP_AE_TITLE, host="127.0.0.1", port=int(server.server_address[1])
        )

    yield start
    for server in servers:
        server.shutdown()


def test_delivers_report_and_capture(
    tmp_path: Path,
    outputs: list[pydicom.Dataset],
    storage_scp: Callable[[StoreHandler], PacsDestination],
) -> None:
    received: list[str] = []

    def handle(event: evt.Event) -> int:
        received.append(str(event.dataset.SOPInstanceUID))
        return 0x0000

    destination = storage_scp(handle)
    send_datasets(datasets=outputs, destination=destination, timeout_s=10)
    assert received == [ds.SOPInstanceUID for ds in outputs]

    path = tmp_path / "report.dcm"
    outputs[0].save_as(path, enforce_file_format=True)
    send_datasets(datasets=[path], destination=destination, timeout_s=10)
    assert received[-1] == outputs[0].SOPInstanceUID


def test_client_socket_has_tcp_nodelay(
    monkeypatch: pytest.MonkeyPatch,
    outputs: list[pydicom.Dataset],
    storage_scp: Callable[[StoreHandler], PacsDestination],
) -> None:
    associations: list[Any] = []
    original = AE.associate

    def recording_associate(self: AE, *args: Any, **kwargs: Any) -> Any:
        assoc = original(self, *args, **kwargs)
        associations.append(assoc)
        return assoc

    monkeypatch.setattr(AE, "associate", recording_associate)
    nodelay: list[int] = []

    def handle(event: evt.Event) -> int:
        # Runs while the client's association is open: read the option off its live socket.
        client_socket = associations[0].dul.socket.socket
        nodelay.append(client_socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        return 0x0000

    send_datasets(datasets=outputs[:1], destination=storage_scp(handle), timeout_s=10)
    assert len(nodelay) == 1
    assert nodelay[0] != 0


def test_failure_status_raises_with_the_code(
    outputs: list[pydicom.Dataset], storage_scp: Callable[[StoreHandler], PacsDestination]
) -> None:
    destination = storage_scp(lambda event: 0xA700)
    with pytest.raises(ExportError, match="0xA700") as caught:
        send_datasets(datasets=outputs[:1], destination=destination, timeout_s=10)
    assert caught.value.status == 0xA700


def test_closed_port_raises(outputs: list[pydicom.Dataset]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    destination = PacsDestination(ae_title="NOBODY", host="127.0.0.1", port=port)
    with pytest.raises(ExportError, match=r"No association with NOBODY@127\.0\.0\.1"):
        send_datasets(datasets=outputs[:1], destination=destination, timeout_s=5)


def test_rejected_association_raises(
    outputs: list[pydicom.Dataset], storage_scp: Callable[[StoreHandler], PacsDestination]
) -> None:
    served = storage_scp(lambda event: 0x0000)
    destination = PacsDestination(ae_title="WRONGAET", host=served.host, port=served.port)
    with pytest.raises(ExportError, match="rejected"):
        send_datasets(datasets=outputs[:1], destination=destination, timeout_s=10)


def test_destination_parses_and_prints() -> None:
    destination = PacsDestination.parse("ORTHANC@pacs.example.org:4242")
    assert destination == PacsDestination(ae_title="ORTHANC", host="pacs.example.org", port=4242)
    assert str(destination) == "ORTHANC@pacs.example.org:4242"
    assert PacsDestination.parse(str(destination)) == destination


@pytest.mark.parametrize(
    "text", ["ORTHANC", "ORTHANC@host", "@host:4242", "ORTHANC@host:port", "A@h:70000"]
)
def test_destination_refuses_malformed_text(text: str) -> None:
    with pytest.raises(ValueError, match=r"AE@host:port|outside"):
        PacsDestination.parse(text)


def test_closed_port_says_the_connection_was_refused(outputs: list[pydicom.Dataset]) -> None:
    destination = PacsDestination(ae_title="PACS", host="127.0.0.1", port=free_port())
    with pytest.raises(ExportError) as caught:
        send_datasets(datasets=outputs[:1], destination=destination, timeout_s=5)
    assert caught.value.code == ErrorCode.CONNECTION_REFUSED
    assert str(caught.value) == (f"No association with {destination}: the connection was refused.")


def test_an_unknown_host_is_named(outputs: list[pydicom.Dataset]) -> None:
    destination = PacsDestination(ae_title="PACS", host="pacs.invalid", port=104)
    with pytest.raises(ExportError) as caught:
        send_datasets(datasets=outputs[:1], destination=destination, timeout_s=5)
    assert caught.value.code == ErrorCode.HOST_NOT_FOUND
    assert "the host name does not resolve" in str(caught.value)


def test_a_rejection_says_the_pacs_reason(
    outputs: list[pydicom.Dataset], storage_scp: Callable[[StoreHandler], PacsDestination]
) -> None:
    served = storage_scp(lambda event: 0x0000)
    destination = PacsDestination(ae_title="WRONGAET", host=served.host, port=served.port)
    with pytest.raises(ExportError) as caught:
        send_datasets(datasets=outputs[:1], destination=destination, timeout_s=10)
    assert caught.value.code == ErrorCode.ASSOCIATION_REJECTED
    assert "Called AE title not recognised" in str(caught.value)


def test_a_pacs_that_never_answers_is_a_timeout(outputs: list[pydicom.Dataset]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, then says nothing
        port = int(silent.getsockname()[1])
        destination = PacsDestination(ae_title="PACS", host="127.0.0.1", port=port)
        with pytest.raises(ExportError) as caught:
            send_datasets(datasets=outputs[:1], destination=destination, timeout_s=1)
    assert caught.value.code == ErrorCode.TIMEOUT
    assert "did not answer the association request within 1 s" in str(caught.value)


def test_a_failure_status_is_told_with_its_meaning(
    outputs: list[pydicom.Dataset], storage_scp: Callable[[StoreHandler], PacsDestination]
) -> None:
    destination = storage_scp(lambda event: 0xA700)
    with pytest.raises(ExportError) as caught:
        send_datasets(datasets=outputs[:1], destination=destination, timeout_s=10)
    assert caught.value.code == ErrorCode.STORE_FAILED
    assert "status 0xA700 (Refused: Out of Resources)" in str(caught.value)


def test_poison_report_files_are_failed_attempts_and_the_sweep_goes_on(
    tmp_path: Path, outputs: list[pydicom.Dataset]
) -> None:
    """An SR that is empty or truncated is a counted failure (then a dead letter), with its
    reason; the good SR behind it is sent in the same sweep."""
    pacs = Pacs()
    engine = db.engine.create_engine_for(migrated_sqlite(tmp_path / "triage.db"))
    sessions = db.engine.make_session_factory(engine)
    reports = tmp_path / "reports"
    reports.mkdir()
    good = reports / f"{outputs[0].SOPInstanceUID}.dcm"
    outputs[0].save_as(good, enforce_file_format=True)
    empty = reports / "1.2.826.0.1.3680043.10.6.1.dcm"
    empty.write_bytes(b"")
    truncated = reports / "1.2.826.0.1.3680043.10.6.2.dcm"
    truncated.write_bytes(good.read_bytes()[:300])  # DICM and file meta, then cut
    config = WorkerConfig(export_max_attempts=2, export_backoff_s=0.01)
    try:
        with sessions() as session:
            ids = []
            for n, path in enumerate((empty, truncated, good), start=1):
                series = f"1.2.826.0.1.3680043.10.6.{n}0"
                record_head_ct_series(session, series=series)
                _, result_id = seed_job(session, series=series, stage="inferred")
                assert result_id is not None
                export = seed_export(
                    session,
                    result_id=result_id,
                    destination=str(pacs.destination),
                    sop_instance_uid=path.stem,
                    path=str(path),
                )
                ids.append(export.id)
            session.commit()
        assert sweep(sessions, config=config) == 1
        assert pacs.uids("SR") == [str(outputs[0].SOPInstanceUID)]
        time.sleep(0.05)
        assert sweep(sessions, config=config) == 0
        with sessions() as session:
            rows = [db.exports.get_export(session=session, export_id=i) for i in ids]
    finally:
        pacs.stop()
        engine.dispose()
    for row, path in zip(rows[:2], (empty, truncated), strict=True):
        assert row.status == ExportStatus.DEAD and row.attempts == 2
        assert row.last_error == (
            f"file_unreadable: The file {path} of instance {path.stem} is not readable DICOM "
            "(empty, truncated or damaged); it is not sent."
        )
    assert rows[2].status == ExportStatus.SENT


def test_an_object_that_cannot_be_encoded_is_told_apart_from_a_missing_context(
    outputs: list[pydicom.Dataset], tmp_path: Path
) -> None:
    """A dataset pydicom cannot encode is ``encode_failed``, and says so; a SOP class the PACS
    has no context for is ``association_aborted``. Against a real Storage SCP."""
    pacs = Pacs()
    try:
        damaged = copy.deepcopy(outputs[0])
        # Text in an unsigned-short element: read from a damaged file, it cannot be written.
        damaged[0x00091010] = pydicom.DataElement(
            0x00091010, "US", "not a number", validation_mode=pydicom.config.IGNORE
        )
        with pytest.raises(ExportError) as caught:
            send_datasets(datasets=[damaged], destination=pacs.destination)
        assert caught.value.code == ErrorCode.ENCODE_FAILED
        assert "could not be encoded" in str(caught.value)
        ct = pydicom.dcmread(write_phantom_series(tmp_path / "ct", n_slices=1, size=16)[0])
        with pytest.raises(ExportError) as caught:
            send_datasets(datasets=[ct], destination=pacs.destination)
        assert caught.value.code == ErrorCode.ASSOCIATION_ABORTED
        assert "no accepted presentation context" in str(caught.value)
        assert pacs.uids("SR") == []
    finally:
        pacs.stop()
