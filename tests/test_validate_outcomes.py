"""Outcomes import (idempotent, changes recorded) and live performance with drift."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

import db.challengers
import db.jobs
import db.outcomes
import db.performance
import db.results
from db.engine import SessionFactory, create_engine_for, make_session_factory
from db.enums import OutcomeKey
from db.site_key import site_key
from model.checkpoint import random_spec
from model.evaluation.drift import probability_distribution
from tests.helpers import (
    migrated_postgres_schema,
    migrated_sqlite,
    record_head_ct_series,
    seed_verdict,
)
from validation.outcomes import import_outcomes_file
from validation.performance import measure_performance, render_performance


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield migrated_sqlite(tmp_path / "triage.db")
        return
    with migrated_postgres_schema("validate") as url:
        yield url


def _series(
    sessions: SessionFactory, i: int, *, accession: str | None = None, key: bytes = b""
) -> int:
    study, series = f"1.2.826.0.1.{i}", f"1.2.826.0.1.{i}.1"
    with sessions() as session:
        record_head_ct_series(session, series=series, study=study, numbers=range(3), folder=str(i))
        job = db.jobs.create_job(session=session, series_instance_uid=series)
        db.jobs.mark_job_queued(session=session, job_id=job.id, task_id="t")
        db.jobs.start_job(session=session, job_id=job.id, worker="w")
        db.performance.record_series_attributes(
            session=session,
            series_instance_uid=series,
            manufacturer="GE" if i % 2 else "Philips",
            convolution_kernel="STANDARD",
            slice_thickness_mm=5.0,
            accession_hmac=None
            if accession is None
            else db.outcomes.accession_hmac(accession, key=key),
        )
        session.commit()
        return job.id


def _verdict(
    sessions: SessionFactory,
    job_id: int,
    p: float,
    *,
    challenger: bool,
    version: str | None = None,
    sha256: str | None = None,
    threshold: float = 0.5,
) -> None:
    verdict = seed_verdict(
        p,
        threshold=threshold,
        model_name="m",
        model_version=version or ("v2" if challenger else "v1"),
        model_sha256=(sha256 or "b" * 64) if challenger else "a" * 64,
    )
    with sessions() as session:
        if challenger:
            db.challengers.record_challenger_result(session=session, job_id=job_id, verdict=verdict)
        else:
            db.results.record_result(
                session=session, job_id=job_id, verdict=verdict, slice_scores=[], shadow=True
            )
        session.commit()


def test_outcomes_import_is_idempotent_and_records_changes(
    database_url: str, tmp_path: Path
) -> None:
    csv_file = tmp_path / "outcomes.csv"
    csv_file.write_text(
        "study_instance_uid,accession_number,label\n1.2.3,,stroke\n,ACC 1,normal\n1.2.4,,maybe\n"
    )
    first, problems = import_outcomes_file(csv_file, database_url=database_url, data_dir=tmp_path)
    assert (first.added, first.changed, first.unchanged) == (2, 0, 0)
    assert len(problems) == 1 and "'maybe'" in problems[0]
    again, _ = import_outcomes_file(csv_file, database_url=database_url, data_dir=tmp_path)
    assert (again.added, again.changed, again.unchanged) == (0, 0, 2)
    csv_file.write_text("study_instance_uid,label\n1.2.3,normal\n")
    changed, _ = import_outcomes_file(csv_file, database_url=database_url, data_dir=tmp_path)
    assert (changed.added, changed.changed, changed.unchanged) == (0, 1, 0)
    sessions = make_session_factory(create_engine_for(database_url))
    with sessions() as session:
        [change] = db.outcomes.label_changes(session=session, key=OutcomeKey.STUDY, value="1.2.3")
        assert (change.previous_stroke, change.stroke) == (True, False)
        assert change.changed_at is not None
        assert db.outcomes.count_outcomes(session=session) == 2


def test_performance_compares_models_on_the_same_series_and_flags_drift(
    database_url: str, tmp_path: Path
) -> None:
    sessions = make_session_factory(create_engine_for(database_url))
    rng = np.random.default_rng(0)
    rows = []
    for i in range(40):
        stroke = i % 2 == 0
        job = _series(sessions, i, accession=f"A{i}", key=site_key(tmp_path))
        live = float(np.clip((0.8 if stroke else 0.2) + rng.normal(0, 0.1), 0, 1))
        _verdict(sessions, job, live, challenger=False)
        if i < 30:  # the challenger has seen only 30 series
            _verdict(sessions, job, float(rng.uniform()), challenger=True)
        if i < 36:  # four series have no outcome yet; half the outcomes are by accession
            key = f"study_instance_uid\n1.2.826.0.1.{i}" if i % 2 else f"accession_number\nA{i}"
            column, value = key.split("\n")
            rows.append((column, value, "stroke" if stroke else "normal"))
    csv_file = tmp_path / "outcomes.csv"
    csv_file.write_text(
        "study_instance_uid,accession_number,label\n"
        + "".join(
            f"{v if c == 'study_instance_uid' else ''},{v if c != 'study_instance_uid' else ''},"
            f"{label}\n"
            for c, v, label in rows
        )
    )
    import_outcomes_file(csv_file, database_url=database_url, data_dir=tmp_path)
    reference = probability_distribution(rng.uniform(size=200))  # v1 lives far from uniform
    spec_v1 = random_spec().model_copy(
        update={"name": "m", "version": "v1", "reference_distribution": reference}
    )
    report = measure_performance(sessions, specs=[spec_v1], n_resamples=200)
    by_version = {m.model_version: m for m in report.models}
    v1, v2 = by_version["v1"], by_version["v2"]
    assert v1.roles == ["shadow"] and v2.roles == ["challenger"]
    assert (v1.scored, v1.with_outcome, v1.without_outcome) == (40, 36, 4)
    assert (v2.scored, v2.with_outcome, v2.without_outcome) == (30, 30, 0)
    assert v1.compared == v2.compared == 30  # the same series for both
    assert v1.metrics["roc_auc"] > 0.9 and v1.intervals_95["roc_auc"][0] > 0.5
    assert v1.psi is not None and v1.psi > 0.2 and v1.drift
    assert v2.psi is None  # its spec keeps no reference distribution
    assert report.manufacturers == {"GE": 20, "Philips": 20}
    assert report.slice_thicknesses == {"5 mm": 40}
    text = render_performance(report)
    assert "DRIFT" in text and "v2" in text
    only_v2 = measure_performance(sessions, specs=[], model_version="v2", n_resamples=10)
    assert [m.model_version for m in only_v2.models] == ["v2"]
    later = measure_performance(sessions, specs=[], since=datetime(2999, 1, 1, tzinfo=UTC))
    assert later.models == []


def test_performance_keeps_a_calibrated_copy_apart_from_its_source(database_url: str) -> None:
    """Same weights (sha256), another version: two models, each at its own threshold."""
    sessions = make_session_factory(create_engine_for(database_url))
    for i in range(6):
        job = _series(sessions, i)
        _verdict(sessions, job, 0.4, challenger=False, version="v1", threshold=0.5)
        _verdict(
            sessions,
            job,
            0.4,
            challenger=True,
            version="v1+cal20260131",
            sha256="a" * 64,  # the source's weights
            threshold=0.3,
        )
    with sessions() as session:
        rows = db.performance.scored_series(session=session)
    assert len(rows) == 12  # one verdict per series and model: neither folded into the other
    reference = probability_distribution(np.random.default_rng(0).uniform(size=200))
    calibrated = random_spec().model_copy(
        update={"name": "m", "version": "v1+cal20260131", "reference_distribution": reference}
    )
    other_model = calibrated.model_copy(update={"name": "other", "version": "v1"})
    report = measure_performance(sessions, specs=[other_model, calibrated], n_resamples=10)
    by_version = {m.model_version: m for m in report.models}
    assert set(by_version) == {"v1", "v1+cal20260131"}
    assert by_version["v1"].threshold == 0.5 and by_version["v1"].scored == 6
    assert by_version["v1+cal20260131"].threshold == 0.3
    assert by_version["v1+cal20260131"].psi is not None
    assert by_version["v1"].psi is None  # another model's reference is not this one's
