"""The retention policy: delete the stored DICOM of series that are finished and old enough.

The listener keeps every instance it accepts, so without this the disk fills and the listener
starts refusing images (0xA700). Only the image files go: the database keeps the series, its
instances (UIDs, sizes, times), results and exports, so the record of what was received and
what was reported stays. Reports in the reports folder are kept; they are small and are the
evidence of what was sent to the PACS.

Run it from cron or a systemd timer, for example daily: ``stroke-triage purge
--older-than-days 30``. A series is only purged once it has reached an end (done, failed or
skipped) with no job still active; a series sent again later is received and classified anew.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import db.receiving
import db.retention
from db.engine import SessionFactory

logger = logging.getLogger(__name__)


@dataclass
class PurgeReport:
    """What one purge did (or, in a dry run, would do)."""

    series: int = 0
    files: int = 0
    bytes: int = 0
    missing: int = 0
    """Files already gone (deleted by hand, or a purge interrupted before it was recorded)."""


def purge_storage(
    sessions: SessionFactory,
    storage_dir: Path,
    *,
    older_than: timedelta,
    dry_run: bool = False,
    now: datetime | None = None,
) -> PurgeReport:
    """Delete the stored instances of every finished series last received before the cut-off.

    Each series is purged in its own transaction, holding its row lock, so an instance of the
    series that arrives meanwhile waits and then revives the series (it is received again).

    Args:
        sessions: Session factory of the results database.
        storage_dir: The listener's storage root (instance paths are relative to it).
        older_than: How long after its last instance a finished series is kept.
        dry_run: Count what would be deleted, delete nothing.
        now: The current time (tests).

    Returns:
        The counts of series, files and bytes deleted.
    """
    if older_than < timedelta(0):
        raise ValueError(f"The retention period must not be negative, got {older_than}.")
    cutoff = (now or datetime.now(UTC)) - older_than
    report = PurgeReport()
    root = storage_dir.resolve()
    with sessions() as session:
        candidates = db.retention.purgeable_series(session=session, received_before=cutoff)
    for uid in candidates:
        with sessions() as session:
            if not db.retention.claim_series_for_purge(
                session=session, series_instance_uid=uid, received_before=cutoff, now=now
            ):
                continue  # an instance arrived meanwhile: the series is live again
            instances = db.receiving.series_instances(session=session, series_instance_uid=uid)
            files = size = missing = 0
            for instance in instances:
                path = (root / instance.path).resolve()
                if not path.is_relative_to(root):
                    logger.warning("Instance path %s is outside the storage root; kept.", path)
                    continue
                try:
                    size += path.stat().st_size
                except FileNotFoundError:
                    missing += 1
                    continue
                files += 1
                if not dry_run:
                    path.unlink(missing_ok=True)
            if dry_run:
                session.rollback()
            else:
                # Files first, then the record: a crash in between leaves files counted as
                # missing at the next purge, never a purged series whose files remain.
                session.commit()
                _remove_empty_folders(root, {(root / i.path).parent for i in instances})
        report.series += 1
        report.files += files
        report.bytes += size
        report.missing += missing
        logger.info(
            "%s series %s: %d files, %d bytes (%d already missing)",
            "Would purge" if dry_run else "Purged",
            uid,
            files,
            size,
            missing,
        )
    return report


def _remove_empty_folders(root: Path, folders: set[Path]) -> None:
    """Remove the series' folders, and their parents up to the root, where now empty."""
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        current = folder
        while current != root and current.is_relative_to(root):
            try:
                current.rmdir()
            except OSError:
                break
            current = current.parent
