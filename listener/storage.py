"""Where received instances are stored: validated UIDs make the path.

The bytes are written by :func:`dicom_edge.write_atomic` (temp file, fsync, rename).
"""

from __future__ import annotations

import re
from pathlib import Path

from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

from dicom_edge import PART_SUFFIX
from listener.errors import InvalidUIDError

_UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
UID_MAX_LENGTH = 64

__all__ = [
    "PART_SUFFIX",
    "UID_MAX_LENGTH",
    "file_meta_bytes",
    "instance_relpath",
    "validate_uid",
]

PREAMBLE = b"\x00" * 128 + b"DICM"


def file_meta_bytes(
    *, sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str
) -> bytes:
    """The preamble, ``DICM`` and the File Meta Information of a stored instance (PS3.10 7.1).

    The same bytes as pynetdicom's ``encode_file_meta(event.file_meta)``, written by pydicom
    from only the elements the group needs, without building the event's data sets.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax_uid)
    meta.ImplementationClassUID = UID(PYNETDICOM_IMPLEMENTATION_UID)
    meta.ImplementationVersionName = PYNETDICOM_IMPLEMENTATION_VERSION
    buffer = DicomBytesIO()
    buffer.write(PREAMBLE)
    write_file_meta_info(buffer, meta, enforce_standard=True)
    return buffer.getvalue()


def validate_uid(uid: str, *, what: str) -> str:
    """Return ``uid`` stripped if it is a valid DICOM UID, else raise.

    A UID becomes a folder or file name, so this is what keeps writes inside storage.
    """
    text = uid.strip().rstrip("\x00")
    if not text or len(text) > UID_MAX_LENGTH or not _UID_PATTERN.match(text):
        raise InvalidUIDError(f"The {what} {uid!r} is not a valid DICOM UID.")
    return text


def instance_relpath(
    study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str
) -> Path:
    """The path of an instance relative to the storage root (UIDs are validated)."""
    return (
        Path(validate_uid(study_instance_uid, what="Study Instance UID"))
        / validate_uid(series_instance_uid, what="Series Instance UID")
        / f"{validate_uid(sop_instance_uid, what='SOP Instance UID')}.dcm"
    )
