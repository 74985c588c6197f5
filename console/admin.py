"""Admin views of the results database: results, jobs (dead letters) and re-queueing."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import timedelta

import db.exports
import db.jobs
import db.notifications
import db.results
from console.config import ConsoleRuntime
from console.sessions import read_only_sessions, writing_sessions
from db.enums import ExportStatus, JobStatus

# The read-only commands (results, jobs, exports) import this module: Celery, pynetdicom and
# pydicom (listener.publish) and the retention code are imported by the one command each that
# needs them, so that those commands start in well under a second.


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain text table with aligned columns."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def print_results(runtime: ConsoleRuntime, *, limit: int) -> int:
    """Print the newest results as a table."""
    with read_only_sessions(runtime.database_url)() as session:
        rows = db.results.list_results(session=session, limit=limit)
    if not rows:
        print("No results yet.")
        return 0
    print(
        format_table(
            [
                "created (UTC)",
                "series instance UID",
                "slices",
                "probability",
                "verdict",
                "threshold",
                "model",
                "mode",
                "job",
                "export",
            ],
            [
                [
                    f"{row.created_at:%Y-%m-%d %H:%M:%S}",
                    row.series_instance_uid,
                    row.instance_count,
                    f"{row.probability:.3f}",
                    "SUSPECTED" if row.suspected else "not suspected",
                    f"{row.threshold:.3f}",
                    row.model_version,
                    "shadow" if row.shadow else "live",
                    row.job_status,
                    row.export_status or "-",
                ]
                for row in rows
            ],
        )
    )
    return 0


def print_jobs(runtime: ConsoleRuntime, *, status: str | None, limit: int) -> int:
    """Print jobs, optionally only those in one state.

    ``failed`` lists every dead letter: failed jobs, and jobs whose result could not be
    exported (``export_failed``, which ``retry-export`` sends again).
    """
    wanted = [JobStatus(status.lower())] if status else []
    if wanted == [JobStatus.FAILED]:
        wanted.append(JobStatus.EXPORT_FAILED)
    with read_only_sessions(runtime.database_url)() as session:
        jobs = db.jobs.list_jobs(session=session, statuses=wanted, limit=limit)
        rows = [
            [
                job.id,
                job.series.series_instance_uid,
                job.status,
                job.attempts,
                job.instance_count,
                job.worker or "-",
                (job.last_error or "")[:80],
            ]
            for job in jobs
        ]
    if not rows:
        print("No jobs.")
        return 0
    print(
        format_table(
            [
                "job",
                "series instance UID",
                "status",
                "attempts",
                "instances",
                "worker",
                "last error",
            ],
            rows,
        )
    )
    return 0


def requeue(runtime: ConsoleRuntime, *, job_id: int) -> int:
    """Put a failed job back in the outbox and publish it (audited, as from the console)."""
    import getpass

    from console import actions

    sessions = writing_sessions(runtime.database_url)
    outcome = actions.requeue_job(
        sessions=sessions,
        open_publisher=actions.publisher_opener(runtime, sessions),
        job_id=job_id,
        actor=f"cli:{getpass.getuser()}",
    )
    print(f"Job {job_id}: {outcome.detail}", file=sys.stdout if outcome.ok else sys.stderr)
    return 0 if outcome.ok else 1


def purge(runtime: ConsoleRuntime, *, older_than_days: float, dry_run: bool) -> int:
    """Apply the retention policy to the stored DICOM and say what it deleted."""
    if older_than_days < 0:
        print("--older-than-days must not be negative.", file=sys.stderr)
        return 2
    from console.retention import purge_storage

    report = purge_storage(
        writing_sessions(runtime.database_url),
        runtime.storage_dir,
        older_than=timedelta(days=older_than_days),
        dry_run=dry_run,
    )
    verb = "Would delete" if dry_run else "Deleted"
    print(
        f"{verb} {report.files} stored instances ({report.bytes / 1e6:.1f} MB) of "
        f"{report.series} finished series last received over {older_than_days:g} days ago"
        + (f"; {report.missing} were already missing." if report.missing else ".")
    )
    return 0


def print_exports(runtime: ConsoleRuntime, *, status: str | None, limit: int) -> int:
    """Print exports, optionally only those in one state (``dead`` lists dead letters)."""
    wanted = ExportStatus(status.lower()) if status else None
    with read_only_sessions(runtime.database_url)() as session:
        rows = [
            [
                export.id,
                export.kind,
                export.destination,
                export.status,
                export.attempts,
                export.sop_instance_uid,
                f"{export.next_attempt_at:%Y-%m-%d %H:%M:%S}" if export.next_attempt_at else "-",
                (export.last_error or "")[:80],
            ]
            for export in db.exports.list_exports(session=session, status=wanted, limit=limit)
        ]
    if not rows:
        print("No exports.")
        return 0
    headers = ["export", "kind", "destination", "status", "attempts", "SOP instance UID"]
    print(format_table([*headers, "next try (UTC)", "last error"], rows))
    return 0


def retry_exports(runtime: ConsoleRuntime, *, export_ids: Sequence[int], all_dead: bool) -> int:
    """Put dead (or failed) exports back in the outbox; a running worker sends them soon.

    Returns:
        0, or 2 when neither export ids nor ``all_dead`` say which exports to retry.
    """
    if not export_ids and not all_dead:
        print(
            "Say which exports to send again: `stroke-triage retry-export EXPORT [EXPORT ...]` "
            "with ids from `stroke-triage exports --status dead`, or "
            "`stroke-triage retry-export --all-dead`.",
            file=sys.stderr,
        )
        return 2
    with writing_sessions(runtime.database_url)() as session:
        ids = list(export_ids)
        if all_dead:
            dead = db.exports.list_exports(session=session, status=ExportStatus.DEAD, limit=10_000)
            ids += [export.id for export in dead]
        for export_id in ids:
            db.exports.retry_export(session=session, export_id=export_id)
        session.commit()
    print(f"{len(ids)} export(s) back in the outbox.")
    return 0


def retry_outbox(
    runtime: ConsoleRuntime,
    *,
    export_ids: Sequence[int],
    notification_ids: Sequence[int],
    all_dead: bool,
) -> int:
    """``retry-export``: put exports and notifications (webhook, e-mail, HL7) back in the outbox.

    ``all_dead`` takes every dead export and every dead notification.
    """
    status = 0
    if export_ids or all_dead or not notification_ids:
        status = retry_exports(runtime, export_ids=export_ids, all_dead=all_dead)
    if status or not (notification_ids or all_dead):
        return status
    with writing_sessions(runtime.database_url)() as session:
        ids = list(notification_ids)
        if all_dead:
            dead = db.notifications.list_notifications(
                session=session, status=ExportStatus.DEAD, limit=10_000
            )
            ids += [row.id for row in dead]
        for notification_id in ids:
            db.notifications.retry_notification(session=session, notification_id=notification_id)
        session.commit()
    print(f"{len(ids)} notification(s) back in the outbox.")
    return 0


def print_notifications(runtime: ConsoleRuntime, *, status: str | None, limit: int) -> int:
    """Print notifications (webhook, e-mail, HL7), optionally of one state (``dead``)."""
    wanted = ExportStatus(status.lower()) if status else None
    with read_only_sessions(runtime.database_url)() as session:
        rows = [
            [
                row.id,
                row.channel,
                row.destination,
                row.event,
                row.status,
                row.attempts,
                row.idempotency_key,
                f"{row.next_attempt_at:%Y-%m-%d %H:%M:%S}" if row.next_attempt_at else "-",
                (row.last_error or "")[:80],
            ]
            for row in db.notifications.list_notifications(
                session=session, status=wanted, limit=limit
            )
        ]
    if not rows:
        print("No notifications.")
        return 0
    headers = ["notification", "channel", "destination", "event", "status", "attempts", "key"]
    print(format_table([*headers, "next try (UTC)", "last error"], rows))
    return 0
