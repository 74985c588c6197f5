"""Issue 22 in the pipeline: thin slices classified as slabs, several findings from one model."""

from __future__ import annotations

import time
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from sqlalchemy import func, select

import db.results
from db.findings import score_of
from db.models import ChallengerFinding, ChallengerResult
from dicom_edge import PacsDestination
from model.inference import Classifier
from tests.helpers import dciodvfy_errors, free_port
from tests.worker.helpers import (
    EPIDURAL,
    SUBDURAL,
    multi_label_checkpoint,
    receive_series,
    receive_thin_series,
    thin_slice_checkpoint,
    worker_context,
)
from worker.config import WorkerRuntime
from worker.inputs import read_series
from worker.pipeline import process_series
from worker.report import COMMENT, PROBABILITY, read_finding


def _groups(path: Path) -> list[hd.sr.MeasurementsAndQualitativeEvaluations]:
    content = hd.sr.srread(path).content
    assert isinstance(content, hd.sr.MeasurementReport)
    return list(content.get_image_measurement_groups())


def _texts(group: hd.sr.MeasurementsAndQualitativeEvaluations) -> list[str]:
    return [
        str(item.TextValue)
        for item in group[0].ContentSequence
        if item.ValueType == "TEXT" and item.ConceptNameCodeSequence[0].CodeValue == COMMENT.value
    ]


def _cited(group: hd.sr.MeasurementsAndQualitativeEvaluations) -> list[str]:
    return [image.referenced_sop_instance_uid for image in group.source_images]


def test_a_thin_series_report_cites_every_slice_of_its_top_slabs(
    runtime: WorkerRuntime, tmp_path: Path
) -> None:
    checkpoint = thin_slice_checkpoint(tmp_path / "ckpt")
    down = PacsDestination(ae_title="DOWN", host="127.0.0.1", port=free_port())
    ctx = worker_context(
        runtime, checkpoint, pacs=[down], export_backoff_s=0.01, secondary_capture=True
    )
    job_id, series_uid = receive_thin_series(ctx)
    datasets = read_series(
        sorted((runtime.storage_dir / "series").glob("*.dcm")), series_instance_uid=series_uid
    )
    expected = Classifier.from_checkpoint(checkpoint, device="cpu").predict_series(datasets)
    assert expected.slabs is not None and len(expected.slabs) == 6
    uids = [str(ds.SOPInstanceUID) for ds in datasets]

    first = process_series(ctx, job_id=job_id, series_instance_uid=series_uid)
    assert first.report_path is not None and dciodvfy_errors(first.report_path) == []
    (verdict,) = _groups(first.report_path)
    cited = _cited(verdict)
    assert cited == [uids[i] for i in expected.top_slices]
    assert len(cited) == 5 * 8  # the slices of the 5 top slabs, most suspicious slab first
    assert any("48 slices classified as 6 slabs of 5 mm" in text for text in _texts(verdict))

    # The heat map shows one slice per slab (its middle one), the top three.
    sc = next(p for p in runtime.reports_dir.rglob("*.dcm") if p != first.report_path)
    capture = pydicom.dcmread(sc)
    assert [item.ReferencedSOPInstanceUID for item in capture.SourceImageSequence] == [
        uids[i] for i in expected.key_slices[:3]
    ]
    with ctx.sessions() as session:
        result = db.results.get_result(session=session, job_id=job_id)
        assert result is not None and len(result.slice_scores) == 48
        assert result.probability == pytest.approx(expected.probability, abs=1e-6)

    # The export failed, so the job runs again: the stored result is reused, not recomputed,
    # and its slabs are found again from the headers: the same report.
    time.sleep(0.05)
    again = process_series(ctx, job_id=job_id, series_instance_uid=series_uid)
    assert again.report_path == first.report_path
    assert _cited(_groups(again.report_path)[0]) == cited


def test_a_5_mm_series_is_read_slice_by_slice_by_a_5_mm_model(
    runtime: WorkerRuntime, tmp_path: Path
) -> None:
    ctx = worker_context(runtime, thin_slice_checkpoint(tmp_path / "ckpt"))
    job_id, series_uid = receive_series(ctx, n_slices=8)
    outcome = process_series(ctx, job_id=job_id, series_instance_uid=series_uid)
    assert outcome.report_path is not None
    (verdict,) = _groups(outcome.report_path)
    assert len(_cited(verdict)) == 5
    texts = _texts(verdict)
    assert any("UNVERIFIED" in text for text in texts)
    assert not any("slabs" in text for text in texts)


def test_a_multi_label_model_reports_each_finding(runtime: WorkerRuntime, tmp_path: Path) -> None:
    checkpoint = multi_label_checkpoint(tmp_path / "ckpt")
    ctx = worker_context(runtime, checkpoint)
    job_id, series_uid = receive_series(ctx)
    datasets = read_series(
        sorted((runtime.storage_dir / "series").glob("*.dcm")), series_instance_uid=series_uid
    )
    expected = Classifier.from_checkpoint(checkpoint, device="cpu").predict_series(datasets)
    assert [f.finding for f in expected.further_findings] == [EPIDURAL, SUBDURAL]

    outcome = process_series(ctx, job_id=job_id, series_instance_uid=series_uid)
    assert outcome.report_path is not None and dciodvfy_errors(outcome.report_path) == []
    with ctx.sessions() as session:
        result = db.results.get_result(session=session, job_id=job_id)
        assert result is not None
        assert (result.finding_name, result.finding_value) == ("ICH", "1386000")
        stored = [(f.position, f.finding_name, f.probability) for f in result.further_findings]
    assert stored == [
        (1, "EDH", pytest.approx(expected.further_findings[0].probability, abs=1e-6)),
        (2, "SDH", pytest.approx(expected.further_findings[1].probability, abs=1e-6)),
    ]
    verdict, *further = _groups(outcome.report_path)
    assert verdict.finding_type.value == "1386000"
    assert [g.finding_type.value for g in further] == [EPIDURAL.value, SUBDURAL.value]
    reported = [float(g.get_measurements(name=PROBABILITY)[0].value) for g in further]
    assert reported == [round(f.probability, 2) for f in expected.further_findings]
    assert read_finding(hd.sr.srread(outcome.report_path)) == (
        expected.suspected,
        round(expected.probability, 2),
    )


def test_a_multi_label_challenger_stores_its_further_findings_once(
    runtime: WorkerRuntime, checkpoint: Path, tmp_path: Path
) -> None:
    challenger = multi_label_checkpoint(tmp_path / "challenger", seed=1)
    ctx = worker_context(runtime, checkpoint, challenger_checkpoint=challenger)
    job_id, series_uid = receive_series(ctx)
    datasets = read_series(
        sorted((runtime.storage_dir / "series").glob("*.dcm")), series_instance_uid=series_uid
    )
    expected = Classifier.from_checkpoint(challenger, device="cpu").predict_series(datasets)
    for _ in range(2):  # a re-run keeps the stored verdict and its findings, once
        process_series(ctx, job_id=job_id, series_instance_uid=series_uid)
    with ctx.sessions() as session:
        (stored,) = session.scalars(select(ChallengerResult)).all()
        assert stored.finding_name == "ICH"
        assert stored.probability == pytest.approx(expected.probability, abs=1e-6)
        further = [score_of(row) for row in stored.further_findings]
        assert session.scalar(select(func.count()).select_from(ChallengerFinding)) == 2
        live = db.results.get_result(session=session, job_id=job_id)
        assert live is not None and live.further_findings == []  # the live model has one output
    assert [(f.finding_name, f.finding_value) for f in further] == [
        ("EDH", EPIDURAL.value),
        ("SDH", SUBDURAL.value),
    ]
    assert [f.probability for f in further] == [
        pytest.approx(f.probability, abs=1e-6) for f in expected.further_findings
    ]
