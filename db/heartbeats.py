"""Heartbeats: each listener and worker process writes a row every few seconds.

The console's health page reads them: which processes are up, since when, and what each one
knows (its model and whether it is loaded, the free disk space of the storage folder), without
calling their metrics ports. A process that dies just stops beating; one that stops cleanly says
so. The data functions take the caller's ``session``, flush and never commit; the writers commit
their own short transactions and never raise (the database may be away for a while).
"""

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from db._query import insert, utc
from db.enums import ProcessKind
from db.models import Heartbeat

logger = logging.getLogger(__name__)

#: How often a process writes its heartbeat.
INTERVAL_S = 5.0
#: A process not seen for this long is shown as silent (it may have died).
SILENT_AFTER_S = 4 * INTERVAL_S
#: Rows of processes not seen for this long are deleted by the next writer.
KEEP = timedelta(days=7)

#: What a process knows, for its heartbeat (JSON-serialisable; no patient data).
Details = Mapping[str, Any]


def process_name(node: str | None = None) -> str:
    """This process as the health page names it: node (default: host name) and process id."""
    return f"{node or socket.gethostname()} pid {os.getpid()}"


def beat(
    *,
    session: Session,
    kind: ProcessKind,
    name: str,
    details: Details,
    now: datetime | None = None,
) -> None:
    """Record that a process is alive now, with what it knows (the first beat starts it)."""
    now = utc(now)
    document = json.dumps(dict(details), default=str, sort_keys=True)
    statement = insert(session, Heartbeat).values(
        kind=kind, name=name, started_at=now, seen_at=now, stopped_at=None, details=document
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[Heartbeat.kind, Heartbeat.name],
            set_={"seen_at": now, "stopped_at": None, "details": document},
        )
    )
    session.flush()


def stop(*, session: Session, kind: ProcessKind, name: str, now: datetime | None = None) -> None:
    """Record that a process stopped cleanly."""
    session.execute(
        update(Heartbeat)
        .where(Heartbeat.kind == kind, Heartbeat.name == name)
        .values(stopped_at=utc(now))
    )
    session.flush()


def recent(*, session: Session, since: datetime) -> list[Heartbeat]:
    """Processes seen since ``since``: listeners first, then workers, oldest start first."""
    statement = (
        select(Heartbeat)
        .where(Heartbeat.seen_at >= utc(since))
        .order_by(Heartbeat.kind, Heartbeat.started_at, Heartbeat.id)
    )
    return list(session.execute(statement).scalars())


def prune(*, session: Session, before: datetime) -> int:
    """Delete the rows of processes last seen before ``before``; return how many."""
    result = session.execute(delete(Heartbeat).where(Heartbeat.seen_at < utc(before)))
    session.flush()
    return int(getattr(result, "rowcount", 0) or 0)


def details_of(heartbeat: Heartbeat) -> dict[str, Any]:
    """The details a heartbeat carries (empty if unreadable)."""
    try:
        found = json.loads(heartbeat.details)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


class HeartbeatWriter:
    """Writes one process's heartbeat, at most every ``interval_s``, from a loop it already has."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        kind: ProcessKind,
        details: Callable[[], Details],
        name: str | None = None,
        interval_s: float = INTERVAL_S,
    ) -> None:
        """Prepare the writer; ``details`` is called at each beat."""
        self._sessions = sessions
        self.kind = kind
        self.name = name or process_name()
        self._details = details
        self._interval_s = interval_s
        self._last = float("-inf")

    def beat_if_due(self) -> bool:
        """Write the heartbeat if ``interval_s`` has passed since the last; return whether."""
        if time.monotonic() - self._last < self._interval_s:
            return False
        self._last = time.monotonic()
        try:
            details = self._details()
            with self._sessions() as session:
                beat(session=session, kind=self.kind, name=self.name, details=details)
                prune(session=session, before=utc(None) - KEEP)
                session.commit()
        except Exception:  # never let monitoring break the process it monitors
            logger.warning("Heartbeat of %s %s not written", self.kind, self.name, exc_info=True)
            return False
        return True

    def stopped(self) -> None:
        """Record a clean stop."""
        try:
            with self._sessions() as session:
                stop(session=session, kind=self.kind, name=self.name)
                session.commit()
        except Exception:
            logger.warning("Stop of %s %s not recorded", self.kind, self.name, exc_info=True)


class HeartbeatThread(HeartbeatWriter):
    """A :class:`HeartbeatWriter` in a daemon thread of its own, for processes without a loop."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        kind: ProcessKind,
        details: Callable[[], Details],
        name: str | None = None,
        interval_s: float = INTERVAL_S,
    ) -> None:
        """Prepare the thread; :meth:`start` runs it."""
        super().__init__(sessions, kind=kind, details=details, name=name, interval_s=interval_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{kind}-heartbeat", daemon=True)

    def start(self) -> "HeartbeatThread":
        """Beat now, then every ``interval_s`` until :meth:`stop`."""
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop beating and record the clean stop."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self.stopped()

    def _run(self) -> None:
        while True:
            self.beat_if_due()
            if self._stop.wait(self._interval_s):
                return
