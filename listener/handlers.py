"""DICOM event handlers: C-ECHO and C-STORE. They receive their dependencies as arguments."""

from __future__ import annotations

import errno
import logging
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import cast

import pydicom
from pydicom.errors import InvalidDicomError
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from db import crud
from listener.errors import InvalidInstanceError, ListenerError
from listener.storage import instance_relpath, write_atomic

log = logging.getLogger(__name__)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC210
PROCESSING_FAILURE = 0x0110


@dataclass(frozen=True)
class StoreContext:
    """What the C-STORE handler needs, bound once when the server starts."""

    storage_dir: Path
    session_factory: sessionmaker[Session]
    fsync: bool = True


def handle_echo(event: Event) -> int:
    """Answer C-ECHO with success."""
    return SUCCESS


def handle_connection_open(event: Event) -> None:
    """Turn Nagle's algorithm off: otherwise every small PDU waits for a delayed ACK."""
    transport = event.assoc.dul.socket
    try:
        if transport is not None and transport.socket is not None:
            transport.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:
        log.debug("Could not set TCP_NODELAY: %s", exc)


def handle_store(event: Event, context: StoreContext) -> int:
    """Store one instance durably, record it, and only then answer success."""
    calling_ae = _calling_ae_title(event)
    request = cast(C_STORE, event.request)
    try:
        encoded = event.encoded_dataset(include_meta=True)
        header = _read_header(encoded)
        relpath = instance_relpath(
            str(header.get("StudyInstanceUID", "")),
            str(header.get("SeriesInstanceUID", "")),
            str(request.AffectedSOPInstanceUID),
        )
        write_atomic(context.storage_dir, relpath, encoded, fsync=context.fsync)
    except ListenerError as exc:
        log.warning("C-STORE from %s refused: %s", calling_ae, exc)
        return CANNOT_UNDERSTAND
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            log.error("C-STORE from %s refused: storage is full (%s)", calling_ae, exc)
            return OUT_OF_RESOURCES
        log.error("C-STORE from %s failed to write: %s", calling_ae, exc)
        return OUT_OF_RESOURCES

    try:
        with context.session_factory() as session:
            crud.record_instances(
                session=session,
                study_instance_uid=str(header.StudyInstanceUID),
                series_instance_uid=str(header.SeriesInstanceUID),
                modality=str(header.get("Modality", "")),
                series_description=_text(header.get("SeriesDescription")),
                calling_ae_title=calling_ae,
                instances=[
                    crud.InstanceRecord(
                        sop_instance_uid=str(request.AffectedSOPInstanceUID),
                        sop_class_uid=str(request.AffectedSOPClassUID),
                        path=relpath.as_posix(),
                        transfer_syntax_uid=str(event.context.transfer_syntax),
                        size_bytes=len(encoded),
                        received_at=datetime.now(UTC),
                    )
                ],
            )
            session.commit()
    except SQLAlchemyError as exc:
        # The file is on disk; without its record the series would never be judged.
        log.error("C-STORE of %s not recorded: %s", relpath.name, exc)
        return OUT_OF_RESOURCES
    return SUCCESS


def _read_header(encoded: bytes) -> pydicom.Dataset:
    try:
        header = pydicom.dcmread(BytesIO(encoded), stop_before_pixels=True)
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInstanceError(f"The dataset cannot be parsed: {exc}") from exc
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
        if keyword not in header:
            raise InvalidInstanceError(f"The dataset has no {keyword}.")
    return header


def _calling_ae_title(event: Event) -> str:
    title = event.assoc.requestor.ae_title
    return str(title).strip()


def _text(value: object) -> str | None:
    return None if value is None else str(value)[:64]
