"""The admin commands on the pipeline: list results, jobs, exports, notifications; act on them."""

from __future__ import annotations

import getpass
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta

import db.exports
import db.jobs
import db.notifications
import db.results
from console.config import ConsoleRuntime
from console.sessions import read_only_sessions, writing_sessions
from console.table import format_table
from db.enums import ExportStatus, JobStatus
from db.rows import Export, Notification

# The read-only commands (results, jobs, exports) import this module: Celery, pynetdicom and
# pydicom (listener.publish) and the retention code are imported by the one command each that
# needs them, so that those commands start in well under a second.


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
                job.last_error or "",
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
            wrap_last=True,
        )
    )
    return 0


def cli_actor() -> str:
    """Who acts from the command line, as the audit log names them."""
    return f"cli:{getpass.getuser()}"


def requeue(runtime: ConsoleRuntime, *, job_id: int) -> int:
    """Put a failed job back in the outbox and publish it (audited, as from the console)."""
    from console import actions

    sessions = writing_sessions(runtime.database_url)
    outcome = actions.requeue_job(
        sessions=sessions,
        open_publisher=actions.publisher_opener(runtime, sessions),
        job_id=job_id,
        actor=cli_actor(),
    )
    print(outcome.detail, file=sys.stdout if outcome.ok else sys.stderr)
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


def _when(at: datetime | None) -> str:
    return f"{at:%Y-%m-%d %H:%M:%S}" if at else "-"


def _print_outbox(
    rows: Sequence[Export] | Sequence[Notification],
    *,
    what: str,
    headers: Sequence[str],
    columns: Sequence[str],
) -> int:
    """Print outbox rows (exports or notifications): id, ``columns``, next try, last error."""
    if not rows:
        print(f"No {what}.")
        return 0
    table = [
        [
            row.id,
            *(getattr(row, column) for column in columns),
            _when(row.next_attempt_at),
            row.last_error or "",
        ]
        for row in rows
    ]
    print(format_table([*headers, "next try (UTC)", "last error"], table, wrap_last=True))
    return 0


def print_exports(runtime: ConsoleRuntime, *, status: str | None, limit: int) -> int:
    """Print exports, optionally only those in one state (``dead`` lists dead letters)."""
    wanted = ExportStatus(status.lower()) if status else None
    with read_only_sessions(runtime.database_url)() as session:
        return _print_outbox(
            db.exports.list_exports(session=session, status=wanted, limit=limit),
            what="exports",
            headers=["export", "kind", "destination", "status", "attempts", "SOP instance UID"],
            columns=["kind", "destination", "status", "attempts", "sop_instance_uid"],
        )


def print_notifications(runtime: ConsoleRuntime, *, status: str | None, limit: int) -> int:
    """Print notifications (webhook, e-mail, HL7), optionally of one state (``dead``)."""
    wanted = ExportStatus(status.lower()) if status else None
    with read_only_sessions(runtime.database_url)() as session:
        return _print_outbox(
            db.notifications.list_notifications(session=session, status=wanted, limit=limit),
            what="notifications",
            headers=[
                "notification",
                "channel",
                "destination",
                "event",
                "status",
                "attempts",
                "key",
            ],
            columns=["channel", "destination", "event", "status", "attempts", "idempotency_key"],
        )


def retry_outbox(
    runtime: ConsoleRuntime,
    *,
    export_ids: Sequence[int],
    notification_ids: Sequence[int],
    all_dead: bool,
) -> int:
    """``retry-export``: put exports and notifications (webhook, e-mail, HL7) back in the outbox.

    All or none, each audited; ``all_dead`` takes every dead export and every dead notification.

    Returns:
        0; 2 when nothing says what to retry, or one of them cannot be retried (none is).
    """
    if not (export_ids or notification_ids or all_dead):
        print(
            "Say which exports to send again: `stroke-triage retry-export EXPORT [EXPORT ...]` "
            "with ids from `stroke-triage exports --status dead`, or "
            "`stroke-triage retry-export --all-dead`.",
            file=sys.stderr,
        )
        return 2
    from console import actions

    sessions = writing_sessions(runtime.database_url)
    exports, notifications = list(export_ids), list(notification_ids)
    if all_dead:
        with sessions() as session:
            dead = ExportStatus.DEAD
            exports += [
                row.id
                for row in db.exports.list_exports(session=session, status=dead, limit=10_000)
            ]
            notifications += [
                row.id
                for row in db.notifications.list_notifications(
                    session=session, status=dead, limit=10_000
                )
            ]
    outcome = actions.retry_outbox(
        sessions=sessions, actor=cli_actor(), export_ids=exports, notification_ids=notifications
    )
    if not outcome.ok:
        print(f"Nothing was retried: {outcome.detail}", file=sys.stderr)
        return 2
    if export_ids or all_dead:
        print(f"{len(exports)} export(s) back in the outbox.")
    if notification_ids or all_dead:
        print(f"{len(notifications)} notification(s) back in the outbox.")
    return 0
