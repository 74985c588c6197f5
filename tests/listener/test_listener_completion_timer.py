"""The completion monitor wakes when a series' quiet period ends, not on the next tick."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pydicom
import pytest

import db.jobs
import db.receiving
from listener.completion import MIN_WAIT_S
from tests.listener.helpers import RunningListener, storescu, wait_until, write_series

Start = Callable[..., RunningListener]


def _last_received(running: RunningListener, uid: str) -> datetime:
    with running.sessions() as session:
        last = db.receiving.get_series(session=session, series_instance_uid=uid).last_received_at
    return last if last.tzinfo else last.replace(tzinfo=UTC)


def test_the_monitor_sleeps_until_the_earliest_due_series(
    start_listener_for_test: Start, tmp_path: Path
) -> None:
    # A check interval of an hour: only the due time of a known series can wake the monitor.
    running = start_listener_for_test(quiet_period_s=30.0, check_interval_s=3600.0)
    monitor = running.listener.monitor
    files = write_series(tmp_path / "s", 3)
    assert storescu(files, running.port).returncode == 0
    uid = str(pydicom.dcmread(files[0]).SeriesInstanceUID)
    running.listener.recorder.flush(30)
    now = datetime.now(UTC)
    assert monitor.seconds_to_next_pass(now=now) == pytest.approx(3600.0)  # no series seen yet

    assert monitor.judge_quiet_series(now=now) == []
    due = _last_received(running, uid) + timedelta(seconds=30)
    assert monitor.seconds_to_next_pass(now=now) == pytest.approx(
        (due - now).total_seconds(), abs=0.01
    )
    # Past the due time it never waits less than MIN_WAIT_S (no busy loop, no negative wait).
    assert monitor.seconds_to_next_pass(now=due + timedelta(seconds=5)) == MIN_WAIT_S

    assert len(monitor.judge_quiet_series(now=due + timedelta(milliseconds=5))) == 1
    assert monitor.seconds_to_next_pass(now=due) == pytest.approx(3600.0)  # nothing left


def test_a_series_is_judged_as_soon_as_its_quiet_period_ends(
    start_listener_for_test: Start, tmp_path: Path
) -> None:
    # Ticks every 1.0 s would judge a 1.5 s quiet period 0 to 1 s late; the due time is exact.
    running = start_listener_for_test(quiet_period_s=1.5, check_interval_s=1.0)
    files = write_series(tmp_path / "s", 3)
    assert storescu(files, running.port).returncode == 0
    uid = str(pydicom.dcmread(files[0]).SeriesInstanceUID)

    def completed() -> datetime | None:
        with running.sessions() as session:
            jobs = [
                job
                for job in db.jobs.list_jobs(session=session, limit=100)
                if job.series.series_instance_uid == uid
            ]
        return jobs[0].completed_at if jobs else None

    wait_until(lambda: completed() is not None)
    at = completed()
    assert at is not None
    late = (at.replace(tzinfo=at.tzinfo or UTC) - _last_received(running, uid)).total_seconds()
    assert 1.5 <= late < 1.5 + 0.3, late
