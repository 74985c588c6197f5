"""Interrupted deliveries: a series' quiet period starts again after a crash or an abort.

A series is judged complete after a quiet period with no new instance. When the delivery was
cut short (our process died mid-series, or the sender's association ended with an abort rather
than a release), the sender will send the rest again, and the quiet period must be counted from
the interruption, not from the last instance that happened to arrive: otherwise the first part
of the series is classified at once and its report reaches the PACS before the full one.

With several receiving processes the abort may land on any of them while only the leader judges
completion, so the database is the source of truth: the receiving process commits its queued
records, then ``series.interrupted_at`` (:func:`db.receiving.record_interruption`); the leader
counts the quiet period from the latest of the last instance, the interruption and its own
start-up (or take-over).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from pynetdicom.events import Event

import db.receiving
from db.clock import utcnow
from db.engine import SessionFactory
from db.errors import DatabaseAccessError

log = logging.getLogger(__name__)

#: How long the connection's close waits for the association's own thread to say how it ended.
ENDING_NOTED_WITHIN_S = 2.0

#: How long an interrupted association waits for its records before recording the interruption.
RECORD_TIMEOUT_S = 10.0


class QuietPeriods:
    """When each series' quiet period starts, if later than its last instance.

    Every series' quiet period starts no earlier than this object's creation (the listener's
    start-up), and again whenever :meth:`restart` names it.
    """

    def __init__(
        self,
        started_at: datetime | None = None,
        *,
        session_factory: SessionFactory | None = None,
        flush_records: Callable[[float], object] | None = None,
    ) -> None:
        """Start counting; series still receiving at start-up get a fresh quiet period.

        With ``session_factory``, :meth:`restart` also records the interruption in the database
        (for the leader, whichever process saw it), after ``flush_records(timeout_s)`` has
        committed this process's queued instance records (so that the series rows exist).
        """
        self.started_at = started_at or utcnow()
        self._sessions = session_factory
        self._flush_records = flush_records
        self._restarted: dict[str, datetime] = {}
        self._lock = threading.Lock()

    def restart_all(self, at: datetime | None = None) -> None:
        """Every series' quiet period starts no earlier than ``at`` (a take-over as leader)."""
        self.started_at = at or utcnow()

    def restart(self, series_instance_uids: Iterable[str], at: datetime | None = None) -> None:
        """Start the quiet period of these series again, at ``at`` (now)."""
        at = at or utcnow()
        uids = list(series_instance_uids)
        with self._lock:
            for uid in uids:
                self._restarted[uid] = max(at, self._restarted.get(uid, at))
        if self._sessions is not None and uids:
            self._record(uids, at)

    def _record(self, uids: list[str], at: datetime) -> None:
        assert self._sessions is not None
        if self._flush_records is not None:
            self._flush_records(RECORD_TIMEOUT_S)
        try:
            with self._sessions() as session:
                db.receiving.record_interruption(session=session, series_instance_uids=uids, at=at)
                session.commit()
        except DatabaseAccessError as exc:
            log.error(
                "Could not record the interruption of %d series (their quiet period counts "
                "from their last instance): %s",
                len(uids),
                exc,
            )

    def restarted_at(self, series_instance_uid: str) -> datetime | None:
        """When the quiet period of a series was last restarted, if it was."""
        with self._lock:
            return self._restarted.get(series_instance_uid)

    def quiet_since(
        self,
        series_instance_uid: str,
        last_received_at: datetime,
        interrupted_at: datetime | None = None,
    ) -> datetime:
        """The moment from which a series' quiet period is counted.

        ``interrupted_at`` is the database's record of the latest interruption (any process).
        """
        with self._lock:
            restarted = self._restarted.get(series_instance_uid, self.started_at)
        return max(last_received_at, self.started_at, restarted, interrupted_at or restarted)

    def forget(self, series_instance_uid: str) -> None:
        """Drop a judged series (a new instance makes it receive again, with its own time)."""
        with self._lock:
            self._restarted.pop(series_instance_uid, None)


class AssociationSeries:
    """Which series each open association stored instances of, and how it ended."""

    def __init__(self, quiet_periods: QuietPeriods) -> None:
        """Restart ``quiet_periods`` for the series of associations that end without release."""
        self._quiet_periods = quiet_periods
        self._series: dict[int, set[str]] = {}
        self._released: set[int] = set()
        self._lock = threading.Lock()

    def stored(self, event: Event, series_instance_uid: str) -> None:
        """An instance of this series was stored on the event's association."""
        with self._lock:
            self._series.setdefault(id(event.assoc), set()).add(series_instance_uid)

    def released(self, event: Event) -> None:
        """EVT_RELEASED: the association ended normally."""
        with self._lock:
            self._released.add(id(event.assoc))

    def closed(self, event: Event) -> None:
        """EVT_CONN_CLOSE: without a release first, its series get a fresh quiet period."""
        key = id(event.assoc)
        with self._lock:
            series = self._series.pop(key, set())
            released = key in self._released
            self._released.discard(key)
        if series and not released:
            released = _ended_by_release(event.assoc)
        if series and not released:
            self._quiet_periods.restart(series)
            log.warning(
                "Association from %s ended without release (aborted): %d series get a fresh "
                "quiet period",
                str(event.assoc.requestor.ae_title).strip(),
                len(series),
            )


def _ended_by_release(assoc: Any) -> bool:
    """Whether the closed connection's association ended with a release, once its thread knows.

    pynetdicom answers a release request from the association's own thread (it queues the
    A-RELEASE-RP, then sets ``is_released`` and triggers EVT_RELEASED), while the network
    thread sends that answer, sees the sender close the connection and triggers EVT_CONN_CLOSE.
    On a busy machine the close can come first: wait, briefly, for the association's thread to
    set ``is_released`` or ``is_aborted`` before judging. Only a connection closed after an
    answer went out (state Sta13: awaiting the close, after an A-RELEASE-RP or our A-ABORT)
    waits; a dropped or aborted one is judged at once.
    """
    if assoc.is_released or assoc.dul.state_machine.current_state != "Sta13":
        return bool(assoc.is_released)
    deadline = time.monotonic() + ENDING_NOTED_WITHIN_S
    while not (assoc.is_released or assoc.is_aborted) and time.monotonic() < deadline:
        time.sleep(0.005)
    return bool(assoc.is_released)
