"""An interrupted delivery is not judged complete at once (issue 11, item 3).

A crash of the listener mid-series, or an association that ends with an abort, gives the
series a fresh quiet period, so that the sender's retry completes it before it is classified.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

import db.jobs
import db.receiving
from db.engine import create_engine_for, make_session_factory
from db.enums import JobStatus, SeriesStatus
from listener.status import StoreStatus
from tests.helpers import REPO_ROOT, free_port
from tests.listener.helpers import (
    RunningListener,
    ct_dataset,
    echoscu,
    established_on,
    read_header,
    scu,
    storescu,
    wait_until,
    write_series,
)

Start = Callable[..., RunningListener]


def _send(running: RunningListener, series_uid: str, *, abort: bool, pause_s: float) -> datetime:
    """Store three slices on one association, wait, then abort or release it; return when."""
    assoc = scu().associate("127.0.0.1", running.port, ae_title="STROKETRIAGE")
    assert assoc.is_established
    study = generate_uid()
    for number in (1, 2, 3):
        dataset = ct_dataset(study_uid=study, series_uid=series_uid, number=number)
        assert assoc.send_c_store(dataset).Status == StoreStatus.SUCCESS
    time.sleep(pause_s)
    ended = datetime.now(UTC)
    if abort:
        assoc.abort()
    else:
        assoc.release()
    return ended


def _jobs(running: RunningListener, series_uid: str) -> list[tuple[JobStatus, int]]:
    with running.sessions() as session:
        return [
            (job.status, job.instance_count)
            for job in sorted(db.jobs.list_jobs(session=session, limit=100), key=lambda j: j.id)
            if job.series.series_instance_uid == series_uid
        ]


def test_an_aborted_association_restarts_the_quiet_period(start_listener_for_test: Start) -> None:
    # Judged by hand below, with times an hour ahead (no forced cut-off meanwhile).
    running = start_listener_for_test(quiet_period_s=3600.0, max_series_wait_s=86400.0)
    quiet = timedelta(seconds=3600)
    monitor, periods = running.listener.monitor, running.listener.monitor.quiet_periods
    aborted, released = generate_uid(), generate_uid()
    _send(running, released, abort=False, pause_s=1.0)
    aborted_at = _send(running, aborted, abort=True, pause_s=1.0)
    wait_until(lambda: periods.restarted_at(aborted) is not None)
    assert periods.restarted_at(released) is None
    running.listener.recorder.flush(30)
    with running.sessions() as session:
        last = {
            uid: db.receiving.get_series(session=session, series_instance_uid=uid).last_received_at
            for uid in (aborted, released)
        }

    # Quiet since the last instance (a second before the abort): only the released one is due.
    monitor.judge_quiet_series(now=max(last.values()) + quiet + timedelta(seconds=0.5))
    assert _jobs(running, released) == [(JobStatus.QUEUED, 3)]
    assert _jobs(running, aborted) == []
    # Quiet since the abort: now it is due.
    monitor.judge_quiet_series(now=aborted_at + quiet + timedelta(seconds=1))
    assert _jobs(running, aborted) == [(JobStatus.QUEUED, 3)]


def test_an_abort_on_a_child_process_restarts_the_leaders_quiet_period(
    start_listener_for_test: Start,
) -> None:
    running = start_listener_for_test(processes=2, quiet_period_s=3600.0, max_series_wait_s=86400.0)
    assert running.listener.receivers is not None
    (child,) = running.listener.receivers.pids()
    quiet = timedelta(seconds=3600)
    # Either idle process may take a connection: open associations until one
    # is served by the child (it holds the connection), releasing the others unused.
    for _ in range(40):
        assoc = scu().associate("127.0.0.1", running.port, ae_title="STROKETRIAGE")
        assert assoc.is_established
        if established_on(child, running.port):
            break
        assoc.release()
    else:
        pytest.fail("no association landed on the child in 40 tries")
    series_uid, study = generate_uid(), generate_uid()
    for number in (1, 2, 3):
        dataset = ct_dataset(study_uid=study, series_uid=series_uid, number=number)
        assert assoc.send_c_store(dataset).Status == StoreStatus.SUCCESS
    time.sleep(1.0)
    aborted_at = datetime.now(UTC)
    assoc.abort()

    def interrupted() -> datetime | None:
        with running.sessions() as session:
            return db.receiving.get_series(
                session=session, series_instance_uid=series_uid
            ).interrupted_at

    wait_until(lambda: interrupted() is not None, timeout_s=30)
    # The abort was seen by the child only: the leader knows it from the database alone.
    assert running.listener.monitor.quiet_periods.restarted_at(series_uid) is None
    with running.sessions() as session:
        last = db.receiving.get_series(session=session, series_instance_uid=series_uid)
        last_received = last.last_received_at
    monitor = running.listener.monitor
    monitor.judge_quiet_series(now=last_received + quiet + timedelta(seconds=0.5))
    assert _jobs(running, series_uid) == []
    monitor.judge_quiet_series(now=aborted_at + quiet + timedelta(seconds=1))
    assert _jobs(running, series_uid) == [(JobStatus.QUEUED, 3)]


@pytest.fixture
def listener_process(tmp_path: Path) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Start ``stroke-triage listen`` as a separate process (SIGKILLed by the test)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STROKE_TRIAGE_")}
    env.update(
        {
            "STROKE_TRIAGE_DATA_DIR": str(tmp_path / "data"),
            "STROKE_TRIAGE_LISTENER__HOST": "127.0.0.1",
            "STROKE_TRIAGE_LISTENER__PORT": str(port),
            "STROKE_TRIAGE_LISTENER__QUIET_PERIOD_S": str(QUIET_S),
            "STROKE_TRIAGE_LISTENER__MIN_FREE_DISK_MB": "0",
            "STROKE_TRIAGE_TASK_QUEUE": f"interrupted-{generate_uid()[-8:]}",
        }
    )
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-m", "stroke_triage", "listen"],
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / f"listener{len(started)}.log").open("wb"),
        )
        started.append(process)
        wait_until(lambda: echoscu(port).returncode == 0, timeout_s=60)
        return process

    start.port = port  # type: ignore[attr-defined]
    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(10)


QUIET_S = 3.0


def test_a_crash_mid_series_waits_for_the_senders_retry(
    listener_process: Callable[[], subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    files = write_series(tmp_path / "scanner", 100)
    first = listener_process()
    port = listener_process.port  # type: ignore[attr-defined]
    assert storescu(files[:34], port).returncode == 0
    first.send_signal(signal.SIGKILL)  # the whole service dies, mid-series
    first.wait(10)
    time.sleep(QUIET_S + 0.5)  # down for longer than the quiet period

    listener_process()
    time.sleep(0.5)  # the sender retries a little later (well within the quiet period)
    retried = storescu(files, port)
    assert retried.returncode == 0, retried.stderr

    engine = create_engine_for(f"sqlite:///{tmp_path / 'data' / 'stroke-triage.db'}")
    sessions = make_session_factory(engine)
    series_uid = str(read_header(files[0]).SeriesInstanceUID)

    def queued() -> bool:
        with sessions() as session:
            series = db.receiving.get_series(session=session, series_instance_uid=series_uid)
            return bool(series.status == SeriesStatus.QUEUED)

    wait_until(queued, timeout_s=QUIET_S + 30)
    with sessions() as session:
        jobs = [
            (job.status, job.instance_count) for job in db.jobs.list_jobs(session=session, limit=10)
        ]
    engine.dispose()
    # One job on the whole series; never one on the 34 slices received before the crash.
    assert jobs == [(JobStatus.QUEUED, 100)]


def test_a_release_noted_late_by_the_association_is_still_a_release(
    start_listener_for_test: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On a busy machine pynetdicom's network thread can send the A-RELEASE-RP, see the sender
    # close and trigger EVT_CONN_CLOSE before the association's thread sets is_released: that
    # released association was taken for an aborted one (a warning, a needless fresh quiet
    # period). The association's thread is made slow right after it queues the answer.
    from pynetdicom.acse import ACSE

    send_release = ACSE.send_release

    def slow_send_release(self: ACSE, is_response: bool = False) -> None:
        send_release(self, is_response)
        if is_response:
            time.sleep(0.5)

    monkeypatch.setattr(ACSE, "send_release", slow_send_release)
    running = start_listener_for_test(quiet_period_s=3600.0, max_series_wait_s=86400.0)
    periods = running.listener.monitor.quiet_periods
    released, aborted = generate_uid(), generate_uid()
    _send(running, released, abort=False, pause_s=0.0)
    _send(running, aborted, abort=True, pause_s=0.0)
    wait_until(lambda: periods.restarted_at(aborted) is not None)
    time.sleep(1.0)  # the slowed association thread has long noted its release by now
    assert periods.restarted_at(released) is None
