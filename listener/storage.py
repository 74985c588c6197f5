"""Where received instances are stored: validated UIDs make the path.

The bytes are written by :func:`stroke_triage.edge.write_atomic` (temp file, fsync, rename).
"""

from __future__ import annotations

import re
from pathlib import Path

from listener.errors import InvalidUIDError
from stroke_triage.edge import PART_SUFFIX

_UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
UID_MAX_LENGTH = 64

__all__ = ["PART_SUFFIX", "UID_MAX_LENGTH", "instance_relpath", "validate_uid"]


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
