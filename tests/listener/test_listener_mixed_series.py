"""A series that mixes axial slices with a reformat: the listener queues it, whatever the order,
and the worker reads only the axial slices (one selection function for both; issue 11, item 5).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydicom.uid import generate_uid

import db.jobs
import db.receiving
from db.enums import SeriesStatus
from tests.listener.helpers import RunningListener, ct_dataset, storescu
from worker.config import WorkerConfig, WorkerRuntime
from worker.context import WorkerContext
from worker.inputs import SeriesInputs, load_inputs

Start = Callable[..., RunningListener]


def _mixed_series(folder: Path, *, sagittal_first: bool) -> tuple[str, list[Path], set[str]]:
    """12 axial and 12 sagittal slices of one series; return its UID, files and axial UIDs."""
    folder.mkdir(parents=True)
    study, series = generate_uid(), generate_uid()
    axial, sagittal = [], []
    for number in range(1, 13):
        ds = ct_dataset(study_uid=study, series_uid=series, number=number)
        path = folder / f"axial{number:02d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        axial.append((path, str(ds.SOPInstanceUID)))
        reformat = ct_dataset(study_uid=study, series_uid=series, number=100 + number)
        reformat.ImageType = ["DERIVED", "SECONDARY", "REFORMATTED"]
        reformat.ImageOrientationPatient = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
        reformat.ImagePositionPatient = [2.0 * number, 0.0, 0.0]
        path = folder / f"sagittal{number:02d}.dcm"
        reformat.save_as(path, enforce_file_format=True)
        sagittal.append((path, str(reformat.SOPInstanceUID)))
    ordered = sagittal + axial if sagittal_first else axial + sagittal
    return series, [path for path, _ in ordered], {uid for _, uid in axial}


def test_mixed_series_is_queued_in_either_order_and_the_job_reads_only_axial_slices(
    start_listener_for_test: Start, tmp_path: Path
) -> None:
    running = start_listener_for_test(min_slices=5)
    sent = {
        first: _mixed_series(tmp_path / str(first), sagittal_first=first) for first in (False, True)
    }
    for _, files, _ in sent.values():
        result = storescu(files, running.port)
        assert result.returncode == 0, result.stderr
    running.listener.recorder.flush(30)
    running.listener.monitor.judge_quiet_series(now=datetime.now(UTC) + timedelta(hours=2))

    context = WorkerContext(
        config=WorkerConfig(checkpoint=tmp_path / "unused"),
        runtime=WorkerRuntime(
            storage_dir=running.storage_dir,
            reports_dir=tmp_path / "reports",
            database_url=running.runtime.database_url,
            broker_url="memory://",
        ),
    )
    for series_uid, _, axial_uids in sent.values():
        with running.sessions() as session:
            series = db.receiving.get_series(session=session, series_instance_uid=series_uid)
            assert series.status == SeriesStatus.QUEUED, series.skip_reason
            (job,) = [
                job
                for job in db.jobs.list_jobs(session=session, limit=10)
                if job.series.series_instance_uid == series_uid
            ]
            job_id = job.id
        inputs = load_inputs(context, job_id=job_id, series_instance_uid=series_uid, worker="t")
        assert isinstance(inputs, SeriesInputs)
        assert set(inputs.sop_instance_uids) == axial_uids
