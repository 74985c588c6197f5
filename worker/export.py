"""C-STORE SCU that sends the worker's DICOM outputs to the PACS.

A failure says its cause in our words (:class:`ExportError` with an :class:`ErrorCode`): the
connection refused or unanswered, the host unknown, the association rejected (with the PACS's
result, source and reason) or aborted, no answer in time, or the C-STORE status and its
meaning. pynetdicom keeps the cause of a failed TCP connection to its log; when no connection
was made, the connection is tried once more, plainly, to learn why.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import Comprehensive3DSRStorage, SecondaryCaptureImageStorage
from pynetdicom import AE, evt
from pynetdicom.pdu_primitives import A_ABORT, A_ASSOCIATE, A_P_ABORT
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS

from dicom_edge import PacsDestination, set_tcp_nodelay
from worker.errors import ErrorCode, ExportError, describe_network_error

__all__ = ["ExportError", "send_datasets"]

logger = logging.getLogger(__name__)

STORAGE_SOP_CLASSES = (Comprehensive3DSRStorage, SecondaryCaptureImageStorage)
"""The SOP classes the worker emits: the report and the heat-map capture."""
TRANSFER_SYNTAXES = (pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.ImplicitVRLittleEndian)
_SUCCESS = 0x0000
_WARNING_STATUSES = frozenset({0x0001, 0xB000, 0xB006, 0xB007})
#: A connection attempt that took this share of the timeout or more timed out.
_TIMED_OUT_SHARE = 0.9


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
        ExportError: If the association fails, or any C-STORE does not succeed; its code and
            message say why.
    """
    if not datasets:
        return
    ae = AE(ae_title=calling_ae_title)
    ae.connection_timeout = timeout_s
    ae.acse_timeout = timeout_s
    ae.dimse_timeout = timeout_s
    ae.network_timeout = timeout_s
    watch = _AssociationWatch()
    started = time.monotonic()
    try:
        assoc = ae.associate(
            destination.host,
            destination.port,
            contexts=_requested_contexts(),
            ae_title=destination.ae_title,
            evt_handlers=[
                (evt.EVT_CONN_OPEN, set_tcp_nodelay),
                (evt.EVT_CONN_OPEN, watch.connected),
                (evt.EVT_ACSE_RECV, watch.acse_received),
            ],
        )
    except OSError as exc:  # the host name is resolved before pynetdicom's own handling
        code, cause = describe_network_error(exc)
        raise ExportError(
            f"No association with {destination}: {cause}.", code=code, detail=repr(exc)
        ) from exc
    if not assoc.is_established:
        code, cause = watch.refusal(destination, timeout_s, time.monotonic() - started)
        raise ExportError(f"No association with {destination}: {cause}.", code=code)
    try:
        for item in datasets:
            _store(assoc, item, destination, timeout_s)
    finally:
        if assoc.is_established:
            assoc.release()
    logger.info("Sent %d instances to %s", len(datasets), destination)


def _requested_contexts() -> list[PresentationContext]:
    return [build_context(sop_class, list(TRANSFER_SYNTAXES)) for sop_class in STORAGE_SOP_CLASSES]


@dataclass
class _AssociationWatch:
    """What pynetdicom's events said while an association was being made."""

    tcp_connected: bool = False
    answers: list[Any] = field(default_factory=list)
    """The A-ASSOCIATE (accept or reject), A-ABORT and A-P-ABORT primitives received."""

    def connected(self, event: evt.Event) -> None:
        self.tcp_connected = True

    def acse_received(self, event: evt.Event) -> None:
        # EVT_ACSE_RECV sets ``primitive`` (pynetdicom's documented handler attribute).
        self.answers.append(getattr(event, "primitive", None))

    def refusal(
        self, destination: PacsDestination, timeout_s: float, elapsed_s: float
    ) -> tuple[ErrorCode, str]:
        """Why the association was not established, in our words."""
        for answer in self.answers:
            if isinstance(answer, A_ASSOCIATE) and answer.result in (0x01, 0x02):
                return ErrorCode.ASSOCIATION_REJECTED, (
                    f"the PACS rejected the association ({answer.result_str}; "
                    f"{answer.source_str}: {answer.reason_str})"
                )
        for answer in self.answers:
            if isinstance(answer, A_ASSOCIATE) and answer.result == 0x00:
                return ErrorCode.ASSOCIATION_ABORTED, (
                    "the PACS accepted none of our presentation contexts (Comprehensive 3D SR "
                    "and Secondary Capture Image Storage, Explicit or Implicit VR Little Endian)"
                )
            if isinstance(answer, A_ABORT | A_P_ABORT):
                return ErrorCode.ASSOCIATION_ABORTED, "the PACS aborted the association request"
        if self.tcp_connected:
            return ErrorCode.TIMEOUT, (
                f"the PACS accepted the connection but did not answer the association request "
                f"within {timeout_s:g} s"
            )
        if elapsed_s >= _TIMED_OUT_SHARE * timeout_s:
            return ErrorCode.TIMEOUT, f"no answer to the connection within {timeout_s:g} s"
        return _connection_failure(destination, timeout_s)


def _connection_failure(destination: PacsDestination, timeout_s: float) -> tuple[ErrorCode, str]:
    """Connect once more, plainly, to learn why pynetdicom's connection failed."""
    try:
        with socket.create_connection((destination.host, destination.port), timeout=timeout_s):
            pass
    except OSError as exc:
        return describe_network_error(exc)
    return ErrorCode.NETWORK_ERROR, "the connection failed (a second attempt connected)"


def _store(
    assoc: Any, item: pydicom.Dataset | Path, destination: PacsDestination, timeout_s: float
) -> None:
    dataset = pydicom.dcmread(item) if isinstance(item, Path) else item
    uid = dataset.SOPInstanceUID
    sop_class = str(dataset.get("SOPClassUID", ""))
    if not any(context.abstract_syntax == sop_class for context in assoc.accepted_contexts):
        raise ExportError(
            f"Instance {uid} could not be sent to {destination}: no accepted presentation "
            f"context fits its SOP class {sop_class or '(none)'}.",
            code=ErrorCode.ASSOCIATION_ABORTED,
        )
    try:
        status = assoc.send_c_store(dataset)
    except (ValueError, AttributeError) as error:
        # pynetdicom raises these when the dataset cannot be encoded (damaged or truncated
        # content, missing file meta) or its transfer syntax was not accepted.
        raise ExportError(
            f"Instance {uid} could not be encoded for {destination} (damaged or truncated "
            "content, or a transfer syntax the PACS did not accept); it is not sent.",
            code=ErrorCode.ENCODE_FAILED,
            detail=str(error),
        ) from error
    if "Status" not in status:
        if assoc.is_aborted:
            raise ExportError(
                f"Instance {uid} got no C-STORE response from {destination}: the PACS aborted "
                "the association.",
                code=ErrorCode.ASSOCIATION_ABORTED,
            )
        raise ExportError(
            f"Instance {uid} got no C-STORE response from {destination} within {timeout_s:g} s.",
            code=ErrorCode.TIMEOUT,
        )
    code = int(status.Status)
    if code in _WARNING_STATUSES:
        logger.warning("C-STORE of %s to %s returned warning 0x%04X", uid, destination, code)
    elif code != _SUCCESS:
        raise ExportError(
            f"The C-STORE of instance {uid} to {destination} failed with status 0x{code:04X} "
            f"({_meaning(code)}).",
            status=code,
            code=ErrorCode.STORE_FAILED,
            detail=str(status.get("ErrorComment", "")),
        )


def _meaning(code: int) -> str:
    """The standard meaning of a C-STORE status (PS3.4 Table B.2-1), ranges included."""
    if code in STORAGE_SERVICE_CLASS_STATUS:
        return STORAGE_SERVICE_CLASS_STATUS[code][1]
    for prefix, meaning in _STATUS_RANGES:
        if code >> 8 == prefix or code >> 12 == prefix:
            return meaning
    return "a failure status"


_STATUS_RANGES = (
    (0xA7, "Refused: Out of Resources"),
    (0xA9, "Error: Data Set does not match SOP Class"),
    (0xC, "Error: Cannot understand"),
)
