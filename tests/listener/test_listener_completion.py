"""When a series is complete, what is classified, and what happens to late instances."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

import db.jobs
import db.receiving
from db.enums import JobStatus, SeriesStatus
from db.models import Series
from tests.listener.helpers import RunningListener, storescu, wait_until, write_series

Start = Callable[..., RunningListener]


def _series(running: RunningListener, uid: str) -> tuple[SeriesStatus, str | None, int]:
    with running.sessions() as session:
        series = db.receiving.get_series(session=session, series_instance_uid=uid)
        return series.status, series.skip_reason, series.instance_count


def _jobs(running: RunningListener, uid: str) -> list[tuple[JobStatus, int]]:
    with running.sessions() as session:
        return [
            (job.status, job.instance_count)
            for job in sorted(db.jobs.list_jobs(session=session, limit=100), key=lambda j: j.id)
            if job.series.series_instance_uid == uid
        ]


def test_quiet_period_per_calling_ae(start_listener_for_test: Start, tmp_path: Path) -> None:
    running = start_listener_for_test(quiet_period_s=3600.0, quiet_period_overrides={"FAST": 0.3})
    slow = write_series(tmp_path / "slow", 3)
    fast = write_series(tmp_path / "fast", 3)
    assert storescu(slow, running.port, calling_ae="SLOW").returncode == 0
    assert storescu(fast, running.port, calling_ae="FAST").returncode == 0
    slow_uid, fast_uid = (str(pydicom.dcmread(p[0]).SeriesInstanceUID) for p in (slow, fast))
    running.listener.recorder.flush(30)
    wait_until(lambda: _series(running, fast_uid)[0] == SeriesStatus.QUEUED)
    assert _jobs(running, fast_uid) == [(JobStatus.QUEUED, 3)]
    assert _series(running, slow_uid)[0] == SeriesStatus.RECEIVING


def test_forced_cut_off(start_listener_for_test: Start, tmp_path: Path) -> None:
    running = start_listener_for_test(quiet_period_s=3600.0, max_series_wait_s=60.0)
    files = write_series(tmp_path / "s", 4)
    assert storescu(files, running.port).returncode == 0
    uid = str(pydicom.dcmread(files[0]).SeriesInstanceUID)
    running.listener.monitor.judge_quiet_series(now=datetime.now(UTC) + timedelta(seconds=30))
    assert _series(running, uid)[0] == SeriesStatus.RECEIVING
    running.listener.monitor.judge_quiet_series(now=datetime.now(UTC) + timedelta(seconds=61))
    assert _jobs(running, uid) == [(JobStatus.QUEUED, 4)]


def test_series_over_several_associations_and_a_late_instance(
    start_listener_for_test: Start, tmp_path: Path
) -> None:
    running = start_listener_for_test()
    study, series = generate_uid(), generate_uid()
    files = write_series(tmp_path / "s", 6, study_uid=study, series_uid=series)
    assert storescu(files[:2], running.port).returncode == 0
    assert storescu(files[2:4], running.port).returncode == 0
    assert storescu(files[2:4], running.port).returncode == 0  # re-sent: idempotent
    later = datetime.now(UTC) + timedelta(hours=2)
    running.listener.monitor.judge_quiet_series(now=later)
    assert _series(running, series)[2] == 4
    assert _jobs(running, series) == [(JobStatus.QUEUED, 4)]

    # Two late slices after the series was judged: it is judged again; the new job supersedes.
    assert storescu(files[4:], running.port).returncode == 0
    running.listener.recorder.flush(30)
    assert _series(running, series)[0] == SeriesStatus.RECEIVING
    running.listener.monitor.judge_quiet_series(now=later + timedelta(hours=2))
    assert _jobs(running, series) == [(JobStatus.SUPERSEDED, 4), (JobStatus.QUEUED, 6)]
    assert running.instance_count() == 6


def test_philips_study_classifies_exactly_one_series(
    start_listener_for_test: Start, shared_data: Path
) -> None:
    running = start_listener_for_test(min_slices=5)
    study = shared_data / "dicom" / "philips-head-phantom"
    files = sorted(p for p in study.rglob("I*") if p.is_file())
    sent = storescu(files, running.port, "-R")
    assert sent.returncode == 0, sent.stderr
    running.listener.monitor.judge_quiet_series(now=datetime.now(UTC) + timedelta(hours=2))

    with running.sessions() as session:
        jobs = db.jobs.list_jobs(session=session)
        all_series = {job.series.series_instance_uid for job in jobs}
        assert len(jobs) == 1
        classified = db.receiving.get_series(
            session=session, series_instance_uid=next(iter(all_series))
        )
        assert classified.instance_count == 28
        assert jobs[0].instance_count == 28
        skipped = session.scalars(select(Series).where(Series.status == SeriesStatus.SKIPPED)).all()
    reasons = sorted(str(s.skip_reason) for s in skipped)
    assert len(reasons) == 2
    assert any("localizer" in reason for reason in reasons)
    assert any("Secondary Capture" in reason for reason in reasons)


def test_a_series_that_cannot_be_judged_is_skipped_and_blocks_no_other(
    start_listener_for_test: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import listener.study

    running = start_listener_for_test(quiet_period_s=3600.0)
    odd, fine = write_series(tmp_path / "odd", 3), write_series(tmp_path / "fine", 3)
    assert storescu(odd, running.port).returncode == 0
    assert storescu(fine, running.port).returncode == 0
    odd_uid, fine_uid = (str(pydicom.dcmread(p[0]).SeriesInstanceUID) for p in (odd, fine))
    running.listener.recorder.flush(30)
    select = listener.study.select_instances

    def fails_on_odd(headers: list[pydicom.Dataset], *, min_slices: int) -> object:
        if str(headers[0].SeriesInstanceUID) == odd_uid:
            raise ArithmeticError("an unforeseen header")
        return select(headers, min_slices=min_slices)

    monkeypatch.setattr(listener.study, "select_instances", fails_on_odd)
    running.listener.monitor.judge_quiet_series(now=datetime.now(UTC) + timedelta(hours=2))
    status, reason, _ = _series(running, odd_uid)
    assert status == SeriesStatus.SKIPPED
    assert reason == "cannot be judged (ArithmeticError)"
    assert _jobs(running, fine_uid) == [(JobStatus.QUEUED, 3)]


def test_a_series_of_two_reconstructions_is_judged_and_read_by_its_soft_stack(
    start_listener_for_test: Start, tmp_path: Path
) -> None:
    from worker.inputs import read_series  # the worker's own reading, on the stored files

    running = start_listener_for_test(min_slices=5)
    study, series = generate_uid(), generate_uid()
    soft = write_series(tmp_path / "soft", 8, study_uid=study, series_uid=series)
    bone = write_series(tmp_path / "bone", 10, study_uid=study, series_uid=series)
    for paths, kernel in ((soft, "H31s"), (bone, "H70h")):
        for path in paths:  # the same positions, two kernels: two stacks in one series
            ds = pydicom.dcmread(path)
            ds.ConvolutionKernel = kernel
            ds.save_as(path)
    assert storescu(bone + soft, running.port).returncode == 0
    running.listener.monitor.judge_quiet_series(now=datetime.now(UTC) + timedelta(hours=2))

    with running.sessions() as session:
        row = db.receiving.get_series(session=session, series_instance_uid=series)
        assert (row.convolution_kernel, row.axial_slices) == ("H31s", 8)
        paths = [
            running.storage_dir / i.path
            for i in db.receiving.series_instances(session=session, series_instance_uid=series)
        ]
    assert _jobs(running, series) == [(JobStatus.QUEUED, 18)]
    read = read_series(paths, series_instance_uid=series)
    assert sorted(str(ds.SOPInstanceUID) for ds in read) == sorted(
        str(pydicom.dcmread(path).SOPInstanceUID) for path in soft
    )
