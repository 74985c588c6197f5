"""Small DICOM peers for the demo: a store SCU that sends a series, a folder-backed PACS."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import pydicom
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from dicom_edge import set_tcp_nodelay, write_atomic

log = logging.getLogger(__name__)


class PeerError(Exception):
    """A DICOM exchange with a peer failed."""


def echo(*, host: str, port: int, called_ae_title: str, timeout_s: float = 5.0) -> bool:
    """True if the peer answers C-ECHO with success."""
    ae = AE(ae_title="STROKEDEMO")
    ae.add_requested_context(Verification)
    ae.acse_timeout = timeout_s
    ae.network_timeout = timeout_s
    assoc = ae.associate(host, port, ae_title=called_ae_title)
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return bool(status) and status.Status == 0
    finally:
        assoc.release()


def send_files(
    paths: Sequence[Path],
    *,
    host: str,
    port: int,
    called_ae_title: str,
    calling_ae_title: str = "STROKEDEMO",
) -> int:
    """Send DICOM files by C-STORE on one association; return how many were stored."""
    datasets = [pydicom.dcmread(path) for path in paths]
    ae = AE(ae_title=calling_ae_title)
    for sop_class, syntax in sorted(
        {(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets}
    ):
        ae.add_requested_context(sop_class, [syntax])
    assoc = ae.associate(
        host, port, ae_title=called_ae_title, evt_handlers=[(evt.EVT_CONN_OPEN, set_tcp_nodelay)]
    )
    if not assoc.is_established:
        raise PeerError(f"{called_ae_title}@{host}:{port} refused the association.")
    stored = 0
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            if status and status.Status == 0:
                stored += 1
            else:
                code = getattr(status, "Status", None)
                log.warning("C-STORE of %s answered %s", ds.SOPInstanceUID, code)
    finally:
        assoc.release()
    return stored


class FolderPacs:
    """A minimal storage SCP that keeps what it receives in a folder (stands in for a PACS)."""

    def __init__(self, folder: Path, *, ae_title: str = "DEMOPACS", port: int = 0) -> None:
        self.folder = folder
        self.ae_title = ae_title
        folder.mkdir(parents=True, exist_ok=True)
        ae = AE(ae_title=ae_title)
        ae.add_supported_context(Verification)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(cast(str, context.abstract_syntax), ALL_TRANSFER_SYNTAXES)
        server = ae.start_server(
            ("127.0.0.1", port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._store), (evt.EVT_C_ECHO, lambda e: 0x0000)],
        )
        assert server is not None
        self._server: ThreadedAssociationServer = server

    @property
    def port(self) -> int:
        """The port this PACS listens on."""
        return int(self._server.server_address[1])

    def _store(self, event: Event) -> int:
        uid = str(cast(C_STORE, event.request).AffectedSOPInstanceUID)
        write_atomic(self.folder / f"{uid}.dcm", event.encoded_dataset(), fsync=False)
        return 0x0000

    def received(self) -> list[Path]:
        """Files received so far."""
        return sorted(self.folder.glob("*.dcm"))

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
