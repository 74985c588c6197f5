"""Several receiving processes on one port: nothing lost, one leader, a crash survived."""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pydicom
import pytest
from prometheus_client import CollectorRegistry
from pydicom.uid import generate_uid
from sqlalchemy import func, select

import listener.metrics
import listener.supervisor
from db.models import Instance, Job, Series
from listener.status import StoreStatus
from listener.supervisor import ReceiverGroup
from tests.listener.helpers import (
    DCMTK_ENV,
    LISTENER_AE,
    RunningListener,
    ct_dataset,
    dcmtk,
    established_count,
    established_on,
    scu,
    wait_until,
    write_series,
)

Start = Callable[..., RunningListener]


def _send_all(port: int, series: list[list[Path]]) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            [
                dcmtk("storescu"),
                "-v",
                *("-aet", f"CT{i}", "-aec", LISTENER_AE, "127.0.0.1", str(port)),
                *map(str, files),
            ],
            env=DCMTK_ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i, files in enumerate(series)
    ]


def _db_count(running: RunningListener) -> int:
    with running.sessions() as session:
        return int(session.execute(select(func.count(Instance.id))).scalar_one())


def _answered_success(output: str, files: list[Path]) -> set[str]:
    """SOP Instance UIDs of the files storescu -v saw answered with Success."""
    uids = {str(p): str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files}
    answered, current = set(), None
    for line in output.splitlines():
        if "Sending file: " in line:
            current = line.split("Sending file: ", 1)[1].strip()
        elif "Received Store Response (Success)" in line and current is not None:
            answered.add(uids[current])
            current = None
    return answered


def test_two_processes_share_the_port_and_lose_nothing(
    start_listener_for_test: Start, tmp_path: Path
) -> None:
    running = start_listener_for_test(processes=2)
    assert running.listener.receivers is not None
    assert len(running.listener.receivers.pids()) == 1
    study = generate_uid()
    series = [write_series(tmp_path / f"s{i}", 200, study_uid=study) for i in range(4)]
    for process in _send_all(running.port, series):
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output.decode()[-2000:]

    # The child's recorder commits on its own; wait for it as the leader would.
    wait_until(lambda: _db_count(running) == 800, timeout_s=30)
    assert len(running.stored_files()) == 800
    assert running.partial_files() == []
    with running.sessions() as session:
        counts = session.execute(select(Series.instance_count)).scalars().all()
    assert sorted(counts) == [200, 200, 200, 200]


def test_each_association_goes_to_the_least_busy_process(start_listener_for_test: Start) -> None:
    running = start_listener_for_test(processes=2)
    receivers, balance = running.listener.receivers, running.listener.balance
    assert receivers is not None
    assert balance is not None
    (child,) = receivers.pids()
    # With SO_REUSEPORT the kernel would hash the four connections onto the two processes:
    # two and two only three times in eight, all four on one process once in eight.
    held = []
    for _ in range(4):
        assoc = scu().associate("127.0.0.1", running.port, ae_title=LISTENER_AE)
        assert assoc.is_established
        held.append(assoc)
    assert balance.snapshot() == [2, 2]
    assert established_count(os.getpid(), running.port) == 2  # this process's listener
    assert established_count(child, running.port) == 2
    for assoc in held:
        assoc.release()
    wait_until(lambda: balance.snapshot() == [0, 0], timeout_s=10)


def test_the_children_log_through_the_listener(
    start_listener_for_test: Start, caplog: pytest.LogCaptureFixture
) -> None:
    # A fork server starts the children: without forwarding, their lines were lost.
    caplog.set_level("INFO")
    running = start_listener_for_test(processes=2)
    assert running.listener.receivers is not None
    (child,) = running.listener.receivers.pids()
    held = [scu().associate("127.0.0.1", running.port, ae_title=LISTENER_AE) for _ in range(4)]
    assert all(assoc.is_established for assoc in held)
    assert established_count(child, running.port) == 2  # two of them in the child
    study = generate_uid()
    for number, assoc in enumerate(held, 1):
        slice_ = ct_dataset(study_uid=study, series_uid=generate_uid(), number=number)
        assert assoc.send_c_store(slice_).Status == StoreStatus.SUCCESS
        assoc.release()

    def ended() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "Association from" in r.getMessage()]

    wait_until(lambda: len(ended()) == 4, timeout_s=10)
    assert {record.process for record in ended()} == {os.getpid(), child}


def test_one_leader_per_data_folder_and_a_standby_takes_over(
    start_listener_for_test: Start,
) -> None:
    first = start_listener_for_test()
    second = start_listener_for_test()  # same storage folder and database
    assert first.listener.is_leader
    assert not second.listener.is_leader
    assert second.listener.monitor._thread is None  # no completion in the standby
    first.listener.stop()
    wait_until(lambda: second.listener.is_leader, timeout_s=10)
    # Elected first (it holds the lock), then it recovers and starts completion.
    wait_until(lambda: second.listener.monitor._thread is not None, timeout_s=10)


def test_killed_receiver_loses_no_answered_instance_and_series_completes_once(
    start_listener_for_test: Start, tmp_path: Path
) -> None:
    running = start_listener_for_test(processes=2)
    receivers = running.listener.receivers
    assert receivers is not None
    (child,) = receivers.pids()
    # Four associations over two processes: two reach the child (the least busy process
    # accepts). Send rounds of four series until the child holds one while it receives, then
    # kill it mid-association.
    earlier: list[list[Path]] = []
    for attempt in range(6):
        series = [write_series(tmp_path / f"r{attempt}s{i}", 150) for i in range(4)]
        senders = _send_all(running.port, series)
        while not (established_on(child, running.port) and len(running.stored_files()) >= 40):
            if all(s.poll() is not None for s in senders):
                break
            time.sleep(0.02)
        else:
            break
        for sender in senders:
            output = sender.communicate(timeout=300)[0].decode()
            assert sender.returncode == 0, output[-2000:]
        earlier.extend(series)
    else:
        pytest.fail("no round of four associations reached the child in 6 tries")
    os.kill(child, signal.SIGKILL)
    outputs = [s.communicate(timeout=300)[0].decode() for s in senders]
    assert any(s.returncode != 0 for s in senders), "no association was cut by the kill"

    wait_until(lambda: receivers.restarts == 1, timeout_s=30)
    assert child not in receivers.pids()
    answered = set().union(*(_answered_success(o, f) for o, f in zip(outputs, series, strict=True)))
    stored = {p.stem for p in running.stored_files()}
    assert answered <= stored
    with running.sessions() as session:
        recorded = set(session.execute(select(Instance.sop_instance_uid)).scalars())
    assert answered <= recorded
    assert running.partial_files() == []

    # The sender retries what failed; the series then complete, each exactly once.
    for sender, files in zip(senders, series, strict=True):
        if sender.returncode != 0:
            (retry,) = _send_all(running.port, [files])
            output, _ = retry.communicate(timeout=300)
            assert retry.returncode == 0, output.decode()[-2000:]
    total = len(earlier) + len(series)
    wait_until(lambda: _db_count(running) == 150 * total, timeout_s=30)
    later = datetime.now(UTC) + timedelta(hours=2)
    running.listener.monitor.judge_quiet_series(now=later)
    running.listener.monitor.judge_quiet_series(now=later + timedelta(hours=1))
    with running.sessions() as session:
        jobs = session.execute(select(Job.series_id, Job.instance_count)).all()
        counts = session.execute(select(Series.instance_count)).scalars().all()
    assert sorted(counts) == [150] * total
    assert len(jobs) == total
    assert len({series_id for series_id, _ in jobs}) == total
    assert all(count == 150 for _, count in jobs)


def _held_by(pid: int, port: int, assoc: Any) -> bool:
    """Whether process ``pid`` holds the listener's end of the SCU association ``assoc``."""
    peer_port = int(assoc.dul.socket.socket.getsockname()[1])
    return established_count(pid, port, peer_port=peer_port) == 1


def _received(registry: CollectorRegistry) -> float:
    value = registry.get_sample_value(
        "stroke_triage_listener_instances_received_total", {"status": "success"}
    )
    return value or 0.0


def test_the_metrics_port_counts_what_a_child_received(start_listener_for_test: Start) -> None:
    running = start_listener_for_test(processes=2)
    assert running.listener.receivers is not None
    (child,) = running.listener.receivers.pids()
    before_served = _received(listener.metrics.serving_registry(listener.metrics.REGISTRY))
    before_own = _received(listener.metrics.REGISTRY)
    # The first association goes to either process; while it is open, the second goes to the
    # other one. Keep the one the child holds.
    first = scu().associate("127.0.0.1", running.port, ae_title="STROKETRIAGE")
    second = scu().associate("127.0.0.1", running.port, ae_title="STROKETRIAGE")
    assert first.is_established
    assert second.is_established
    assert established_on(child, running.port)
    assoc, other = (first, second) if _held_by(child, running.port, first) else (second, first)
    other.release()
    study, series_uid = generate_uid(), generate_uid()
    for number in (1, 2, 3):
        dataset = ct_dataset(study_uid=study, series_uid=series_uid, number=number)
        assert assoc.send_c_store(dataset).Status == StoreStatus.SUCCESS
    assoc.release()

    # Stored by the child only: this process's own samples did not move, the served ones did.
    assert _received(listener.metrics.REGISTRY) == before_own
    served = listener.metrics.serving_registry(listener.metrics.REGISTRY)
    assert _received(served) == before_served + 3
    assert "stroke_triage_listener_store_seconds_count" in {
        sample.name for family in served.collect() for sample in family.samples
    }


def crash_after_first_start(folder: Path, slot: int, control: Connection) -> None:
    """A receiving process that serves once, dies, and then fails at every start-up.

    Runs in the fork server's child (importable here by module name): each start appends a
    line to ``folder/starts``.
    """
    starts = folder / "starts"
    with starts.open("a") as log_file:
        log_file.write(f"{time.monotonic()}\n")
    if len(starts.read_text().splitlines()) > 1:
        os._exit(3)  # start-up fails: the port, the database, a bad setting...
    control.send("serving")
    time.sleep(0.2)
    os._exit(1)  # then it dies, once


def test_a_receiver_that_fails_at_start_up_is_restarted_with_backoff(tmp_path: Path) -> None:
    deaths: list[int] = []
    group = ReceiverGroup(
        count=1,
        target=crash_after_first_start,
        args=(tmp_path,),
        on_death=lambda pid, slot: deaths.append(slot),
    )
    group.start()
    try:
        time.sleep(4.0)
    finally:
        group.stop()
    starts = [float(line) for line in (tmp_path / "starts").read_text().splitlines()]
    # The death is recovered once (a full storage scan), not at every failed restart.
    assert deaths == [1]
    # Started, died, restarted at once, then again after 1 s and 2 s: not in a tight loop.
    assert 3 <= len(starts) <= 5, starts
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts[2:])]
    assert all(gap >= 0.9 for gap in gaps), gaps


def serve_then_die(folder: Path, lifetime_s: float, slot: int, control: Connection) -> None:
    """A receiving process that serves for ``lifetime_s`` and dies, at every start.

    As a child that crashes on its first association, or runs out of memory, does. Each start
    appends a line to ``folder/starts``.
    """
    with (folder / "starts").open("a") as log_file:
        log_file.write(f"{time.monotonic()}\n")
    control.send("serving")
    time.sleep(lifetime_s)
    os._exit(1)


def _starts_of(group: ReceiverGroup, folder: Path, running_s: float) -> list[float]:
    group.start()
    try:
        time.sleep(running_s)
    finally:
        group.stop()
    return [float(line) for line in (folder / "starts").read_text().splitlines()]


def test_a_receiver_that_dies_after_serving_is_restarted_with_backoff(tmp_path: Path) -> None:
    deaths: list[int] = []
    group = ReceiverGroup(
        count=1,
        target=serve_then_die,
        args=(tmp_path, 0.1),
        on_death=lambda pid, slot: deaths.append(slot),
    )
    starts = _starts_of(group, tmp_path, 4.0)
    # Started, died, restarted at once, then after 1 s and 2 s: the failures count on through
    # the starts that served (each death runs a full storage scan on the leader).
    assert 3 <= len(starts) <= 5, starts
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert all(gap >= 1.0 for gap in gaps[1:]), gaps
    assert gaps[2:3] == [] or gaps[2] >= 2.0, gaps
    assert deaths and set(deaths) == {1}


def test_a_receiver_that_served_long_enough_before_it_died_is_restarted_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listener.supervisor, "RESTART_BACKOFF_S", 5.0)
    monkeypatch.setattr(listener.supervisor, "HEALTHY_AFTER_S", 0.2)
    group = ReceiverGroup(
        count=1, target=serve_then_die, args=(tmp_path, 0.4), on_death=lambda pid, slot: None
    )
    starts = _starts_of(group, tmp_path, 3.0)
    # Each child lived longer than HEALTHY_AFTER_S: its death is a first failure, restarted at
    # once (without the reset the third start would wait 5 s).
    assert len(starts) >= 3, starts
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert all(gap < 5.0 for gap in gaps), gaps
