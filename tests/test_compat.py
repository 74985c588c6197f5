"""The third-party private attributes behind compat/ still exist, or an upgrade fails here.

Each check names the library, the attribute and the function of compat that relies on it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from kombu.transport.virtual.base import Transport
from pynetdicom import AE, Association
from pynetdicom.acse import ACSE
from pynetdicom.dul import DULServiceProvider

import compat
from tests.helpers import REPO_ROOT


def test_pynetdicom_keeps_its_server_list() -> None:
    ae = AE()
    assert isinstance(ae._servers, list), "pynetdicom AE._servers moved: fix compat.add_server"
    marker = object()
    compat.add_server(ae, marker)
    assert ae._servers == [marker]


def test_pynetdicom_reactor_delay_is_an_attribute_of_the_dul() -> None:
    ae = AE()
    assoc = Association(ae, mode="acceptor")
    assert isinstance(assoc.dul, DULServiceProvider)
    assert hasattr(assoc.dul, "_run_loop_delay"), (
        "pynetdicom DULServiceProvider._run_loop_delay moved: fix compat.set_reactor_delay"
    )
    compat.set_reactor_delay(assoc, 0.0002)
    assert assoc.dul._run_loop_delay == 0.0002


def test_pynetdicom_acse_can_still_send_a_rejection() -> None:
    assert callable(getattr(ACSE, "send_reject", None)), (
        "pynetdicom ACSE.send_reject moved: fix compat.reject_and_close"
    )
    assert callable(getattr(Association, "kill", None))


def test_kombu_polling_loop_is_recognised_by_its_code() -> None:
    assert callable(getattr(Transport, "drain_events", None)), (
        "kombu virtual Transport.drain_events moved: fix compat.is_idle_in_kombu_polling"
    )
    assert not compat.is_idle_in_kombu_polling(sys._getframe())
    assert not compat.is_idle_in_kombu_polling(None)


@pytest.mark.parametrize("multiprocess", [False, True])
def test_prometheus_multiprocess_mode_is_detected(tmp_path: object, multiprocess: bool) -> None:
    # prometheus_client decides at import time, so each case runs in a fresh interpreter.
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    if multiprocess:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    code = textwrap.dedent(
        """
        import compat
        from prometheus_client import values
        assert hasattr(values, "ValueClass"), "prometheus_client values.ValueClass moved"
        print(compat.prometheus_writes_to_files())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(multiprocess), (
        "prometheus_client ValueClass._multiprocess moved: fix compat.prometheus_writes_to_files"
    )


def test_pynetdicom_writes_c_store_data_sets_to_files_where_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """compat.receive_c_store_into_files: a real association's data set lands in our folder."""
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
    from pynetdicom import dimse_messages, evt

    # Whatever this test installs is undone afterwards.
    monkeypatch.setattr(dimse_messages, "_config", dimse_messages._config)
    monkeypatch.setattr(dimse_messages, "NamedTemporaryFile", dimse_messages.NamedTemporaryFile)
    assert hasattr(dimse_messages._config, "STORE_RECV_CHUNKED_DATASET"), (
        "pynetdicom dimse_messages._config moved: fix compat.receive_c_store_into_files"
    )
    assert callable(dimse_messages.NamedTemporaryFile), (
        "pynetdicom dimse_messages.NamedTemporaryFile moved: fix compat.receive_c_store_into_files"
    )
    receiving: set[object] = set()
    seen: list[tuple[Path, bytes]] = []

    def place() -> tuple[Path, str] | None:
        import threading

        return (tmp_path, ".in.") if threading.current_thread() in receiving else None

    def opened(event: Any) -> None:
        receiving.add(event.assoc.dul)
        compat.receive_c_store_into_files(place, suffix=".part", mode=0o640)

    def store(event: Any) -> int:
        path = Path(event.dataset_path)
        seen.append((path, path.read_bytes()))
        return 0x0000

    scp = AE(ae_title="SCP")
    scp.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)
    server = scp.start_server(
        ("127.0.0.1", 0),
        block=False,
        evt_handlers=[(evt.EVT_CONN_OPEN, opened), (evt.EVT_C_STORE, store)],
    )
    try:
        scu = AE(ae_title="SCU")
        scu.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        dataset = _small_ct()
        assoc = scu.associate("127.0.0.1", server.server_address[1], ae_title="SCP")
        assert assoc.is_established
        try:
            assert assoc.send_c_store(dataset).Status == 0x0000
        finally:
            assoc.release()
    finally:
        server.shutdown()
    ((path, content),) = seen
    assert path.parent == tmp_path and path.name.startswith(".in.") and path.suffix == ".part"
    assert content[128:132] == b"DICM" and content.endswith(dataset.PixelData)
    assert not path.exists()  # pynetdicom removed it after the handler
    # Other threads (another SCP in the process) keep data sets in memory.
    assert dimse_messages._config.STORE_RECV_CHUNKED_DATASET is False


def _small_ct() -> Any:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated = 16
    ds.PixelData = bytes(range(32))
    return ds


def test_pynetdicom_reactor_still_polls_its_dimse_queue_every_millisecond() -> None:
    """compat.wake_reactor_on_messages replaces exactly this sleep (pynetdicom.association)."""
    import inspect

    from pynetdicom import association

    source = inspect.getsource(Association._run_reactor)
    assert f"time.sleep({compat.REACTOR_POLL_S})" in source, (
        "pynetdicom Association._run_reactor no longer polls with time.sleep(0.001): "
        "fix compat.wake_reactor_on_messages"
    )
    assert "self.dimse.get_msg(block=False)" in source
    assert association.time is not None
    assoc = Association(AE(), mode="acceptor")
    assert hasattr(assoc.dimse.msg_queue, "not_empty"), "DIMSE msg_queue is no queue.Queue"


def test_the_reactor_of_a_named_association_waits_for_its_queue_instead_of_sleeping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import queue
    import threading
    import time
    from types import SimpleNamespace

    from pynetdicom import association

    # A fresh hook on the real module (one installed before stays untouched, and comes back).
    monkeypatch.setattr(association, "time", time)
    slept: list[float] = []
    real = SimpleNamespace(sleep=slept.append)

    class Reactor(threading.Thread):
        def __init__(self, ready: bool) -> None:
            super().__init__()
            self.dimse = SimpleNamespace(msg_queue=queue.Queue())
            if ready:
                self.dimse.msg_queue.put("a whole C-STORE request")

        def run(self) -> None:
            association.time.sleep(compat.REACTOR_POLL_S)
            association.time.sleep(0.1)  # any other sleep is the real one

    named, other = Reactor(ready=True), Reactor(ready=True)
    compat.wake_reactor_on_messages(named)
    association.time._real = real  # record the real sleeps instead of sleeping
    for thread in (named, other):
        thread.start()
        thread.join(5)
    # The named association's poll found its message and did not sleep; the other slept.
    assert slept == [0.1, compat.REACTOR_POLL_S, 0.1]
