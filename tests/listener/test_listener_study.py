"""One study, one job: the listener chooses the series the model was made for once the study is
quiet, records why not each other one, and judges a later series against the chosen one."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

import db.jobs
import db.receiving
import db.results
import db.retention
import db.studies
from db.enums import JobStatus, SeriesChoice, SeriesStatus
from db.studies import StudyDetail
from tests.helpers import seed_verdict
from tests.listener.helpers import RunningListener, ct_dataset, storescu

Start = Callable[..., RunningListener]


def write_variant(
    folder: Path,
    study: str,
    *,
    number: int,
    description: str,
    kernel: str | None = "STANDARD",
    thickness: float = 5.0,
    slices: int = 24,
    orientation: str = "axial",
) -> tuple[str, list[Path]]:
    """A series of ``study`` as a scanner sends it: kernel, thickness and orientation given."""
    folder.mkdir(parents=True)
    series = generate_uid()
    paths = []
    for index in range(1, slices + 1):
        ds = ct_dataset(study_uid=study, series_uid=series, number=index, description=description)
        ds.SeriesNumber = number
        ds.SliceThickness = thickness
        ds.ImagePositionPatient = [0.0, 0.0, thickness * index]
        if kernel is not None:
            ds.ConvolutionKernel = kernel
        if orientation == "coronal":
            ds.ImageType = ["DERIVED", "SECONDARY", "REFORMATTED"]
            ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]
            ds.ImagePositionPatient = [0.0, thickness * index, 0.0]
        elif orientation == "localizer":
            ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        path = folder / f"{index:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return series, paths


def _detail(running: RunningListener, study: str) -> StudyDetail:
    with running.sessions() as session:
        return db.studies.study_detail(session=session, study_instance_uid=study)


def _jobs(running: RunningListener) -> list[tuple[str, JobStatus]]:
    with running.sessions() as session:
        return [
            (job.series.series_instance_uid, job.status)
            for job in sorted(db.jobs.list_jobs(session=session, limit=100), key=lambda j: j.id)
        ]


def _reported_thin_series(
    running: RunningListener, study: str, tmp_path: Path
) -> tuple[tuple[str, list[Path]], datetime, int]:
    """A 1.25 mm series of 98 slices, of which 96 were sent, judged and reported.

    Returns the series (UID and files), the time it was judged, and its job.
    """
    thin = write_variant(
        tmp_path / "thin", study, number=4, description="HEAD 1.25mm", thickness=1.25, slices=98
    )
    _send(running, (thin[0], thin[1][:96]))
    later = datetime.now(UTC) + timedelta(hours=2)
    (thin_job,) = running.listener.monitor.judge_quiet_series(now=later)
    with running.sessions() as session:
        db.jobs.start_job(session=session, job_id=thin_job)
        db.results.record_result(
            session=session, job_id=thin_job, verdict=seed_verdict(), slice_scores=[]
        )
        db.jobs.finish_job(session=session, job_id=thin_job)
        session.commit()
    return thin, later, thin_job


def _send(running: RunningListener, *series: tuple[str, list[Path]]) -> None:
    files = [path for _, paths in series for path in paths]
    sent = storescu(files, running.port)
    assert sent.returncode == 0, sent.stderr
    running.listener.recorder.flush(30)


def test_a_study_of_five_series_gets_one_job_on_the_brain_series(
    start_listener_for_test: Start, tmp_path: Path
) -> None:
    running = start_listener_for_test(min_slices=5)
    study = generate_uid()
    brain = write_variant(tmp_path / "brain", study, number=2, description="HEAD 5mm STND")
    bone = write_variant(
        tmp_path / "bone", study, number=3, description="HEAD 5mm BONE", kernel="BONEPLUS"
    )
    thin = write_variant(
        tmp_path / "thin", study, number=4, description="HEAD 1.25mm", thickness=1.25, slices=96
    )
    coronal = write_variant(
        tmp_path / "cor", study, number=5, description="COR MPR", orientation="coronal"
    )
    scout = write_variant(
        tmp_path / "scout", study, number=1, description="SCOUT", orientation="localizer", slices=2
    )
    _send(running, scout, thin, bone, brain, coronal)
    start = datetime.now(UTC) + timedelta(hours=2)
    assert running.listener.monitor.judge_quiet_series(now=start)

    assert _jobs(running) == [(brain[0], JobStatus.QUEUED)]
    detail = _detail(running, study)
    assert detail.chosen is not None and detail.chosen.series_instance_uid == brain[0]
    by_uid = {s.series_instance_uid: s for s in detail.series}
    assert by_uid[brain[0]].choice is SeriesChoice.CHOSEN
    assert by_uid[brain[0]].choice_reason.startswith("chosen: soft-tissue kernel STANDARD")
    assert by_uid[brain[0]].status is SeriesStatus.QUEUED
    expected = {
        bone[0]: (SeriesChoice.PASSED_OVER, "bone kernel BONEPLUS"),
        thin[0]: (SeriesChoice.PASSED_OVER, "thinner slices than the chosen series (1.25 mm"),
        coronal[0]: (SeriesChoice.NOT_ELIGIBLE, "not an axial series (reformat"),
        scout[0]: (SeriesChoice.NOT_ELIGIBLE, "localizer"),
    }
    for uid, (choice, words) in expected.items():
        series = by_uid[uid]
        assert (series.choice, series.status) == (choice, SeriesStatus.SKIPPED), series
        assert series.choice_reason is not None and words in series.choice_reason
        assert series.skip_reason == series.choice_reason
    assert by_uid[bone[0]].choice_reason == (
        "another series of this study was chosen: bone kernel BONEPLUS; "
        "chosen: series 2 HEAD 5mm STND"
    )
    assert by_uid[thin[0]].axial_slices == 96 and by_uid[thin[0]].slice_thickness_mm == 1.25


def test_a_later_better_series_replaces_the_chosen_one_and_a_worse_one_changes_nothing(
    start_listener_for_test: Start, tmp_path: Path
) -> None:
    running = start_listener_for_test(min_slices=5)
    study = generate_uid()
    monitor = running.listener.monitor
    thin = write_variant(
        tmp_path / "thin", study, number=4, description="HEAD 1.25mm", thickness=1.25, slices=96
    )
    bone = write_variant(
        tmp_path / "bone", study, number=3, description="HEAD 5mm BONE", kernel="BONEPLUS"
    )
    _send(running, thin, bone)
    later = datetime.now(UTC) + timedelta(hours=2)
    monitor.judge_quiet_series(now=later)
    assert _jobs(running) == [(thin[0], JobStatus.QUEUED)]

    # The 5 mm brain series arrives after the thin one was queued: it is chosen, and the thin
    # series' job (no result yet) is superseded.
    brain = write_variant(tmp_path / "brain", study, number=2, description="HEAD 5mm")
    _send(running, brain)
    monitor.judge_quiet_series(now=later + timedelta(hours=2))
    assert _jobs(running) == [(thin[0], JobStatus.SUPERSEDED), (brain[0], JobStatus.QUEUED)]
    by_uid = {s.series_instance_uid: s for s in _detail(running, study).series}
    assert by_uid[brain[0]].choice is SeriesChoice.CHOSEN
    assert by_uid[thin[0]].choice is SeriesChoice.PASSED_OVER
    assert by_uid[thin[0]].status is SeriesStatus.SKIPPED
    assert "thinner slices than the chosen series" in str(by_uid[thin[0]].choice_reason)

    # A worse series (the bone series again, as a new series) changes nothing but its reason.
    bone_again = write_variant(
        tmp_path / "bone2", study, number=6, description="HEAD BONE", kernel="H70h"
    )
    _send(running, bone_again)
    assert monitor.judge_quiet_series(now=later + timedelta(hours=4)) == []
    assert len(_jobs(running)) == 2
    by_uid = {s.series_instance_uid: s for s in _detail(running, study).series}
    assert "bone kernel H70h" in str(by_uid[bone_again[0]].choice_reason)
    assert by_uid[brain[0]].choice is SeriesChoice.CHOSEN


def test_late_slices_of_the_chosen_series_make_a_new_job_and_of_another_none(
    start_listener_for_test: Start, tmp_path: Path
) -> None:
    running = start_listener_for_test(min_slices=5)
    study = generate_uid()
    monitor = running.listener.monitor
    brain = write_variant(tmp_path / "brain", study, number=2, description="HEAD 5mm", slices=26)
    bone = write_variant(
        tmp_path / "bone", study, number=3, description="HEAD 5mm BONE", kernel="BONEPLUS"
    )
    _send(running, (brain[0], brain[1][:24]), bone)
    later = datetime.now(UTC) + timedelta(hours=2)
    monitor.judge_quiet_series(now=later)
    _send(running, (brain[0], brain[1][24:]))  # two late slices of the chosen series
    monitor.judge_quiet_series(now=later + timedelta(hours=2))
    assert _jobs(running) == [(brain[0], JobStatus.SUPERSEDED), (brain[0], JobStatus.QUEUED)]
    with running.sessions() as session:
        (job,) = [j for j in db.jobs.list_jobs(session=session) if j.status == JobStatus.QUEUED]
        assert job.instance_count == 26
    late_bone = ct_dataset(study_uid=study, series_uid=bone[0], number=40)
    late_bone.ConvolutionKernel = "BONEPLUS"
    late_path = tmp_path / "late-bone.dcm"
    late_bone.save_as(late_path, enforce_file_format=True)
    _send(running, (bone[0], [late_path]))
    monitor.judge_quiet_series(now=later + timedelta(hours=4))
    assert len(_jobs(running)) == 2  # the bone series is judged again, and passed over again
    assert str(pydicom.dcmread(late_path).SeriesInstanceUID) == bone[0]
    by_uid = {s.series_instance_uid: s for s in _detail(running, study).series}
    assert by_uid[bone[0]].choice is SeriesChoice.PASSED_OVER


def test_a_study_is_judged_only_when_all_its_series_are_quiet(
    start_listener_for_test: Start, tmp_path: Path
) -> None:
    running = start_listener_for_test(
        min_slices=5, quiet_period_s=10.0, quiet_period_overrides={"SLOWCT": 60.0}
    )
    study = generate_uid()
    brain = write_variant(tmp_path / "brain", study, number=2, description="HEAD 5mm")
    bone = write_variant(
        tmp_path / "bone", study, number=3, description="HEAD BONE", kernel="BONEPLUS"
    )
    _send(running, brain)
    sent = storescu(bone[1], running.port, calling_ae="SLOWCT")
    assert sent.returncode == 0, sent.stderr
    running.listener.recorder.flush(30)
    monitor = running.listener.monitor
    now = datetime.now(UTC)
    # The brain series is quiet after 10 s, the bone series (another caller) after 60 s.
    assert monitor.judge_quiet_series(now=now + timedelta(seconds=30)) == []
    assert _jobs(running) == []
    assert monitor.judge_quiet_series(now=now + timedelta(seconds=90))
    assert _jobs(running) == [(brain[0], JobStatus.QUEUED)]


def test_late_slices_of_a_reported_series_that_is_no_longer_chosen_are_skipped_once(
    start_listener_for_test: Start, tmp_path: Path
) -> None:
    running = start_listener_for_test(min_slices=5)
    study = generate_uid()
    monitor = running.listener.monitor
    thin, later, thin_job = _reported_thin_series(running, study, tmp_path)
    brain = write_variant(tmp_path / "brain", study, number=2, description="HEAD 5mm")
    _send(running, brain)
    (brain_job,) = monitor.judge_quiet_series(now=later + timedelta(hours=2))
    # Two late slices of the thin series: judged once, passed over, and not judged again.
    _send(running, (thin[0], thin[1][96:]))
    assert monitor.judge_quiet_series(now=later + timedelta(hours=4)) == []
    by_uid = {s.series_instance_uid: s for s in _detail(running, study).series}
    assert by_uid[thin[0]].status is SeriesStatus.SKIPPED
    assert by_uid[thin[0]].choice is SeriesChoice.PASSED_OVER
    assert by_uid[thin[0]].instance_count == 98
    with running.sessions() as session:
        assert db.receiving.receiving_series(session=session) == []
    assert [job for _, job in _jobs(running)] == [JobStatus.DONE, JobStatus.QUEUED]
    assert brain_job != thin_job


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """None (the listener's SQLite file), or a new PostgreSQL schema.

    A test asks for it before ``start_listener_for_test``, so that the schema is dropped after
    the listener stopped.
    """
    return request.getfixturevalue("postgres_schema_url") if request.param == "postgresql" else None


def test_a_reported_series_passed_over_while_its_late_slices_wait_for_a_worker_is_done(
    database_url: str | None, start_listener_for_test: Start, tmp_path: Path
) -> None:
    running = start_listener_for_test(min_slices=5, database_url=database_url)
    study = generate_uid()
    monitor = running.listener.monitor
    thin, later, thin_job = _reported_thin_series(running, study, tmp_path)
    # Two late slices: the thin series is still the study's only one, so it gets a new job.
    _send(running, (thin[0], thin[1][96:]))
    (late_job,) = monitor.judge_quiet_series(now=later + timedelta(hours=2))
    # The brain series arrives while that job waits: the thin series is passed over, its job
    # superseded, and it stands as reported (not "queued" for ever).
    brain = write_variant(tmp_path / "brain", study, number=2, description="HEAD 5mm")
    _send(running, brain)
    (brain_job,) = monitor.judge_quiet_series(now=later + timedelta(hours=4))
    assert [job for _, job in _jobs(running)] == [
        JobStatus.DONE,
        JobStatus.SUPERSEDED,
        JobStatus.QUEUED,
    ]
    by_uid = {s.series_instance_uid: s for s in _detail(running, study).series}
    assert by_uid[thin[0]].choice is SeriesChoice.PASSED_OVER
    assert by_uid[thin[0]].status is SeriesStatus.DONE
    assert by_uid[brain[0]].status is SeriesStatus.QUEUED
    assert len({thin_job, late_job, brain_job}) == 3


@pytest.mark.parametrize("fate", ["failed", "purged"])
def test_a_chosen_series_that_cannot_be_read_again_gives_way_to_a_later_worse_one(
    start_listener_for_test: Start, tmp_path: Path, fate: str
) -> None:
    running = start_listener_for_test(min_slices=5)
    study = generate_uid()
    monitor = running.listener.monitor
    brain = write_variant(tmp_path / "brain", study, number=2, description="HEAD 5mm")
    _send(running, brain)
    later = datetime.now(UTC) + timedelta(hours=2)
    (brain_job,) = monitor.judge_quiet_series(now=later)
    with running.sessions() as session:
        db.jobs.start_job(session=session, job_id=brain_job)
        if fate == "failed":  # a dead letter: the series is failed, with no report
            db.jobs.fail_job(session=session, job_id=brain_job, error="unreadable", final=True)
        else:  # reported, then its files deleted by the retention policy
            db.results.record_result(
                session=session, job_id=brain_job, verdict=seed_verdict(), slice_scores=[]
            )
            db.jobs.finish_job(session=session, job_id=brain_job)
            assert db.retention.claim_series_for_purge(
                session=session, series_instance_uid=brain[0], received_before=later
            )
        session.commit()
    # A readable series, slightly worse (thin slices), arrives later: it gets the report.
    thin = write_variant(
        tmp_path / "thin", study, number=4, description="HEAD 1.25mm", thickness=1.25, slices=96
    )
    _send(running, thin)
    (thin_job,) = monitor.judge_quiet_series(now=later + timedelta(hours=2))
    assert _jobs(running)[-1] == (thin[0], JobStatus.QUEUED)
    detail = _detail(running, study)
    assert detail.chosen is not None and detail.chosen.series_instance_uid == thin[0]
    by_uid = {s.series_instance_uid: s for s in detail.series}
    assert by_uid[brain[0]].choice is SeriesChoice.PASSED_OVER
    expected = "its job failed for good" if fate == "failed" else "deleted by the retention"
    assert expected in str(by_uid[brain[0]].choice_reason)
    assert str(by_uid[brain[0]].choice_reason).endswith("chosen: series 4 HEAD 1.25mm")
    assert by_uid[brain[0]].status is (
        SeriesStatus.FAILED if fate == "failed" else SeriesStatus.DONE
    )
    assert thin_job != brain_job
