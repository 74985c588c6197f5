"""Durable, atomic storage of received instances: temp file, fsync, rename."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from listener.errors import InvalidUIDError

_UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
UID_MAX_LENGTH = 64
#: Suffix of temporary files; they are never counted as received.
PART_SUFFIX = ".part"


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


def write_atomic(
    root: Path, relpath: Path, data: bytes | Sequence[bytes | memoryview], *, fsync: bool = True
) -> Path:
    """Write ``data`` (bytes, or pieces in order) to ``root / relpath``, whole or not at all.

    The bytes go to a temporary file in the same folder, are flushed to disk, and the
    file is renamed over the target. A crash or an aborted association leaves at most a
    ``.part`` file, which is never counted as received.
    """
    target = root / relpath
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    temp = folder / f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}{PART_SUFFIX}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    pieces = [data] if isinstance(data, bytes) else data
    try:
        for piece in pieces:
            view = memoryview(piece)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(temp, target)
    if fsync:
        _fsync_dir(folder)
    return target


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
