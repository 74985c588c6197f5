"""C-STORE SCU that sends the worker's DICOM outputs to the PACS."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import Comprehensive3DSRStorage, SecondaryCaptureImageStorage
from pynetdicom import AE, evt
from pynetdicom.presentation import PresentationContext, build_context

from dicom_edge import PacsDestination, set_tcp_nodelay
from worker.errors import ExportError

__all__ = ["ExportError", "send_datasets"]

logger = logging.getLogger(__name__)

STORAGE_SOP_CLASSES = (Comprehensive3DSRStorage, SecondaryCaptureImageStorage)
"""The SOP classes the worker emits: the report and the heat-map capture."""
TRANSFER_SYNTAXES = (pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.ImplicitVRLittleEndian)
_SUCCESS = 0x0000
_WARNING_STATUSES = frozenset({0x0001, 0xB000, 0xB006, 0xB007})


def send_datasets(
    *,
    datasets: Sequence[pydicom.Dataset] | Sequence[Path],
    destination: PacsDestination,
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
        evt_handlers=[(evt.EVT_CONN_OPEN, set_tcp_nodelay)],
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


def _refusal(assoc: Any) -> str:
    if assoc.is_rejected:
        return "the association was rejected"
    if assoc.is_aborted:
        return "the association was aborted"
    return "the connection failed or timed out"


def _store(assoc: Any, item: pydicom.Dataset | Path, destination: PacsDestination) -> None:
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
