"""C-STORE SCU that sends the worker's DICOM outputs to the PACS."""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import Comprehensive3DSRStorage, SecondaryCaptureImageStorage
from pynetdicom import AE, evt
from pynetdicom.presentation import PresentationContext, build_context

from worker.errors import ExportError

__all__ = ["Destination", "ExportError", "send_datasets"]

logger = logging.getLogger(__name__)

STORAGE_SOP_CLASSES = (Comprehensive3DSRStorage, SecondaryCaptureImageStorage)
"""The SOP classes the worker emits: the report and the heat-map capture."""
TRANSFER_SYNTAXES = (pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.ImplicitVRLittleEndian)
_SUCCESS = 0x0000
_WARNING_STATUSES = frozenset({0x0001, 0xB000, 0xB006, 0xB007})


@dataclass(frozen=True)
class Destination:
    """A DICOM peer that receives C-STORE requests.

    Attributes:
        ae_title: Called AE title.
        host: Host name or IP address.
        port: TCP port.
    """

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Destination:
        """Parses ``AE@host:port``, for example ``ORTHANC@127.0.0.1:4242``.

        Raises:
            ValueError: If the text is not of that form.
        """
        ae_title, at, address = text.strip().partition("@")
        host, colon, port = address.rpartition(":")
        if not (at and colon and ae_title and host and port.isdigit()):
            raise ValueError(f"The destination {text!r} is not of the form AE@host:port.")
        if len(ae_title) > 16:
            raise ValueError(f"The AE title {ae_title!r} is longer than 16 characters.")
        if not 0 < int(port) < 65536:
            raise ValueError(f"The port {port} lies outside 1-65535.")
        return cls(ae_title=ae_title, host=host.strip("[]"), port=int(port))


def send_datasets(
    *,
    datasets: Sequence[pydicom.Dataset] | Sequence[Path],
    destination: Destination,
    calling_ae_title: str = "STROKETRIAGE",
    timeout_s: float = 30,
) -> None:
    """Sends datasets to a destination over one association, with TCP_NODELAY on.

    Args:
        datasets: Datasets, or paths of DICOM files, of the SOP classes the worker emits.
        destination: The peer to send to.
        calling_ae_title: Our AE title.
        timeout_s: Limit for connecting, for each network read and for each DIMSE response.

    Raises:
        ExportError: If the association fails, or any C-STORE does not succeed.
    """
    if not datasets:
        return
    ae = AE(ae_title=calling_ae_title)
    ae.connection_timeout = timeout_s
    ae.acse_timeout = timeout_s
    ae.dimse_timeout = timeout_s
    ae.network_timeout = timeout_s
    assoc = ae.associate(
        destination.host,
        destination.port,
        contexts=_requested_contexts(),
        ae_title=destination.ae_title,
        evt_handlers=[(evt.EVT_CONN_OPEN, _set_tcp_nodelay)],
    )
    if not assoc.is_established:
        raise ExportError(f"No association with {destination}: {_refusal(assoc)}.")
    try:
        for item in datasets:
            _store(assoc, item, destination)
    finally:
        if assoc.is_established:
            assoc.release()
    logger.info("Sent %d instances to %s", len(datasets), destination)


def _requested_contexts() -> list[PresentationContext]:
    return [build_context(sop_class, list(TRANSFER_SYNTAXES)) for sop_class in STORAGE_SOP_CLASSES]


def _set_tcp_nodelay(event: evt.Event) -> None:
    """Turns Nagle's algorithm off, so small PDUs such as C-STORE requests go out at once.

    pynetdicom has no socket-option setting; EVT_CONN_OPEN fires once the socket is
    connected and before the A-ASSOCIATE-RQ is sent.
    """
    association_socket = event.assoc.dul.socket
    if association_socket is not None and association_socket.socket is not None:
        association_socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _refusal(assoc: Any) -> str:
    if assoc.is_rejected:
        return "the association was rejected"
    if assoc.is_aborted:
        return "the association was aborted"
    return "the connection failed or timed out"


def _store(assoc: Any, item: pydicom.Dataset | Path, destination: Destination) -> None:
    dataset = pydicom.dcmread(item) if isinstance(item, Path) else item
    uid = dataset.SOPInstanceUID
    try:
        status = assoc.send_c_store(dataset)
    except (ValueError, AttributeError) as error:
        # pynetdicom raises these when no presentation context fits the dataset.
        raise ExportError(f"Instance {uid} could not be sent to {destination}: {error}") from error
    if "Status" not in status:
        raise ExportError(
            f"Instance {uid} got no C-STORE response from {destination}: the association "
            "was aborted or timed out."
        )
    code = int(status.Status)
    if code in _WARNING_STATUSES:
        logger.warning("C-STORE of %s to %s returned warning 0x%04X", uid, destination, code)
    elif code != _SUCCESS:
        raise ExportError(
            f"The C-STORE of instance {uid} to {destination} failed with status 0x{code:04X}.",
            status=code,
        )
