"""The service's health as the console sees it: the status page and ``GET /api/status``.

The listener and the workers are other processes, often on other hosts: they write heartbeats
to the database (``db.heartbeats``) with what each one knows, and this page reads them, with
the queue, the dead letters and the last instance received, from the same database.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel

import db.heartbeats
import db.statistics
from console.health import broker_problem
from console.state import Console
from db.engine import check_revision
from db.enums import ProcessKind
from db.errors import DatabaseAccessError, SchemaRevisionError
from db.rows import Heartbeat

#: Processes not seen for this long are no longer listed.
SHOWN_FOR = timedelta(hours=24)
MB = 1024 * 1024


class ProcessOut(BaseModel):
    """A listener or worker process, from its heartbeats."""

    kind: ProcessKind
    name: str
    up: bool
    """Beating now: seen within the last few heartbeats, and not stopped."""
    started_at: datetime
    seen_at: datetime
    stopped_at: datetime | None
    details: dict[str, Any]
    """What it said: for a worker its model and whether it is loaded; for the listener its AE
    title, port and the free disk space of its storage folder."""


class DiskOut(BaseModel):
    """Free space on the storage folder's file system, and the listener's refusal threshold."""

    free_mb: float
    min_free_mb: float | None
    """Below this, the listener refuses new instances (``listener.min_free_disk_mb``)."""
    measured_by: str
    """``listener`` (its last heartbeat) or ``console`` (this process, on its own host)."""
    low: bool


class ServiceStatus(BaseModel):
    """The facts of the health page."""

    checked_at: datetime
    problems: list[str]
    """What needs a person, in one line each; empty when all is well."""
    listeners: list[ProcessOut]
    workers: list[ProcessOut]
    workers_up: int
    workers_with_model: int
    queue_depth: int
    last_instance_at: datetime | None
    disk: DiskOut | None
    failed_jobs: int
    dead_exports: int
    dead_notifications: int


def _process(heartbeat: Heartbeat, now: datetime) -> ProcessOut:
    silent = now - heartbeat.seen_at > timedelta(seconds=db.heartbeats.SILENT_AFTER_S)
    return ProcessOut(
        kind=heartbeat.kind,
        name=heartbeat.name,
        up=heartbeat.stopped_at is None and not silent,
        started_at=heartbeat.started_at,
        seen_at=heartbeat.seen_at,
        stopped_at=heartbeat.stopped_at,
        details=db.heartbeats.details_of(heartbeat),
    )


def _disk(listeners: list[ProcessOut], storage_dir: Path) -> DiskOut | None:
    for listener in listeners:
        details = listener.details
        if listener.up and isinstance(details.get("free_disk_mb"), int | float):
            free = float(details["free_disk_mb"])
            threshold = details.get("min_free_disk_mb")
            minimum = float(threshold) if isinstance(threshold, int | float) else None
            low = minimum is not None and free < minimum * 1.2
            return DiskOut(free_mb=free, min_free_mb=minimum, measured_by="listener", low=low)
    try:
        stats = os.statvfs(storage_dir)
    except OSError:
        return None
    free = stats.f_bavail * stats.f_frsize / MB
    return DiskOut(free_mb=round(free, 1), min_free_mb=None, measured_by="console", low=False)


def _problems(found: ServiceStatus, database: str | None, broker: str | None) -> list[str]:
    problems = [p for p in (database, broker) if p]
    if not any(listener.up for listener in found.listeners):
        problems.append("No listener is up: no instance is received or judged complete.")
    if found.workers_up == 0:
        problems.append("No worker is up: no series is classified.")
    elif found.workers_with_model == 0:
        problems.append("No worker has its model loaded yet.")
    if found.disk is not None and found.disk.low:
        problems.append(
            f"The storage folder has {found.disk.free_mb:.0f} MB free; the listener refuses "
            f"instances below {found.disk.min_free_mb:.0f} MB (listener.min_free_disk_mb)."
        )
    letters = found.failed_jobs + found.dead_exports + found.dead_notifications
    if letters:
        problems.append(
            f"{letters} dead letters wait: {found.failed_jobs} jobs, {found.dead_exports} "
            f"exports, {found.dead_notifications} notifications (see Failures and "
            "Notifications)."
        )
    return problems


def _broker(state: Console) -> list[str]:
    problem = broker_problem(state)
    return [problem] if problem else []


def _nothing_known(now: datetime, problems: list[str]) -> ServiceStatus:
    return ServiceStatus(
        checked_at=now,
        problems=problems,
        listeners=[],
        workers=[],
        workers_up=0,
        workers_with_model=0,
        queue_depth=0,
        last_instance_at=None,
        disk=None,
        failed_jobs=0,
        dead_exports=0,
        dead_notifications=0,
    )


def service_status(state: Console, *, now: datetime | None = None) -> ServiceStatus:
    """Read the health facts: processes, queue, disk, last instance, dead letters."""
    now = now or datetime.now(UTC)
    database: str | None = None
    try:
        check_revision(state.engine)
    except SchemaRevisionError as exc:
        database = str(exc)
    except DatabaseAccessError as exc:
        # Nothing else can be read: the page says so rather than failing.
        unreachable = f"The database is not reachable: {type(exc).__name__}."
        return _nothing_known(now, [unreachable, *_broker(state)])
    with state.sessions() as session:
        beats = db.heartbeats.recent(session=session, since=now - SHOWN_FOR)
        facts = db.statistics.service_facts(session=session)
    processes = [_process(beat, now) for beat in beats]
    listeners = [p for p in processes if p.kind is ProcessKind.LISTENER]
    workers = [p for p in processes if p.kind is ProcessKind.WORKER]
    found = ServiceStatus(
        checked_at=now,
        problems=[],
        listeners=listeners,
        workers=workers,
        workers_up=sum(1 for w in workers if w.up),
        workers_with_model=sum(1 for w in workers if w.up and w.details.get("model_loaded")),
        queue_depth=facts.queue_depth,
        last_instance_at=facts.last_instance_at,
        disk=_disk(listeners, state.storage_dir),
        failed_jobs=facts.failed_jobs,
        dead_exports=facts.dead_exports,
        dead_notifications=facts.dead_notifications,
    )
    return found.model_copy(update={"problems": _problems(found, database, broker_problem(state))})
