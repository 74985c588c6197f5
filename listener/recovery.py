"""Startup recovery: every stored file gets its database record; half files are removed.

Success is answered once a file is durable, and its record is committed a moment later by
the recorder. A process that dies in between leaves a file without a record; this scan, run
before the listener accepts associations, records it.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

import db.receiving
from db.engine import SessionFactory
from dicom_edge.durable import host_tag, writer_tag
from listener.errors import ListenerError
from listener.incoming import STALE_AFTER_S
from listener.inspection import ReceivedInstance
from listener.recorder import PendingRecord, commit_records
from listener.storage import PART_SUFFIX, instance_relpath
from listener.text import recordable

log = logging.getLogger(__name__)

#: Calling AE title recorded for instances found by the scan (the sender is not known).
RECOVERED_AE_TITLE = "RECOVERED"
BATCH = 200


def remove_partial_files(storage_dir: Path, pid: int | None = None) -> int:
    """Delete temporary files left by interrupted writes of this host; return how many.

    Their names carry the writer's host and pid (:func:`dicom_edge.durable.writer_tag`).
    With ``pid`` (a receiving process died), that process's files only; without (at
    start-up, before this listener receives), every file of this host, and another host's (a
    listener in another container sharing the volume, which may be writing it right now) only
    once it is :data:`listener.incoming.STALE_AFTER_S` old.
    """
    if pid is not None:
        parts = list(storage_dir.glob(f"*/*/.*.{writer_tag(pid)}.*{PART_SUFFIX}"))
    else:
        ours = f".{host_tag()}_"
        stale_before = time.time() - STALE_AFTER_S
        parts = [
            part
            for part in storage_dir.glob(f"*/*/.*{PART_SUFFIX}")
            if ours in part.name or _modified_before(part, stale_before)
        ]
    for part in parts:
        part.unlink(missing_ok=True)
    if parts:
        log.warning("Removed %d partial files left by interrupted writes", len(parts))
    return len(parts)


def _modified_before(path: Path, when: float) -> bool:
    try:
        return path.stat().st_mtime < when
    except OSError:
        return False


def record_unrecorded(storage_dir: Path, session_factory: SessionFactory) -> int:
    """Record every stored instance that has no database row; return how many."""
    with session_factory() as session:
        known = db.receiving.instance_paths(session=session)
    pending: list[PendingRecord] = []
    recovered = 0
    for path in sorted(storage_dir.glob("*/*/*.dcm")):
        relpath = path.relative_to(storage_dir)
        if relpath.as_posix() in known:
            continue
        item = _pending_record(storage_dir, relpath)
        if item is None:
            continue
        pending.append(item)
        if len(pending) >= BATCH:
            recovered += len(pending) - len(commit_records(session_factory, pending))
            pending = []
    if pending:
        recovered += len(pending) - len(commit_records(session_factory, pending))
    if recovered:
        log.warning("Recorded %d stored instances that had no database record", recovered)
    return recovered


def _pending_record(storage_dir: Path, relpath: Path) -> PendingRecord | None:
    path = storage_dir / relpath
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        sop_instance_uid = str(header.SOPInstanceUID)
        expected = instance_relpath(
            str(header.StudyInstanceUID), str(header.SeriesInstanceUID), sop_instance_uid
        )
    except (OSError, InvalidDicomError, AttributeError, ValueError, ListenerError) as exc:
        log.error("Stored file %s cannot be recovered: %s", relpath, exc)
        return None
    if expected != relpath:
        log.error("Stored file %s does not match its own UIDs; left alone", relpath)
        return None
    description = header.get("SeriesDescription")
    instance = ReceivedInstance(
        study_instance_uid=str(header.StudyInstanceUID),
        series_instance_uid=str(header.SeriesInstanceUID),
        sop_instance_uid=sop_instance_uid,
        sop_class_uid=str(header.SOPClassUID),
        modality=recordable(str(header.get("Modality", "")), 16),
        series_description=None if description is None else recordable(str(description), 64),
        relpath=relpath,
    )
    stat = path.stat()
    return PendingRecord(
        instance=instance,
        calling_ae_title=RECOVERED_AE_TITLE,
        record=db.receiving.InstanceRecord(
            sop_instance_uid=sop_instance_uid,
            sop_class_uid=instance.sop_class_uid,
            path=relpath.as_posix(),
            transfer_syntax_uid=str(header.file_meta.TransferSyntaxUID),
            size_bytes=stat.st_size,
            received_at=datetime.fromtimestamp(stat.st_mtime, UTC),
        ),
    )
