"""`validate` and `calibrate` on labelled DICOM series, through the worker's own code."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypedDict, Unpack

import numpy as np
import pydicom
import pytest
from pydicom.uid import SecondaryCaptureImageStorage

import db.jobs
import db.outcomes
import db.receiving
import db.results
from db.engine import create_engine_for, make_session_factory
from db.enums import OutcomeKey
from model.checkpoint import DEFAULT_CHECKPOINT_DIR, create_random_checkpoint, load_checkpoint
from model.checkpoint import SPEC_FILE as CHECKPOINT_SPEC_FILE
from model.phantom import Lesion, write_phantom_series
from model.spec import STROKE
from stroke_triage.cli import main as cli_main
from tests.helpers import REPO_ROOT, finding_columns, migrated_sqlite, record_stored_files
from validation.calibrate import CalibrationRefusedError, CalibrationResult, calibrate
from validation.labels_file import SiteValidationError
from validation.performance import SPEC_FILE, print_performance
from validation.validate import (
    ScoredFolder,
    SeriesRow,
    ValidationReport,
    read_labels,
    summarise,
    validate,
)
from worker.config import WorkerConfig, WorkerRuntime
from worker.context import WorkerContext
from worker.pipeline import process_series

CPU = WorkerConfig(device="cpu", precision="fp32")
MIN_SLICES = 5  # the listener's fewest slices worth classifying; the phantoms have 6


class _RunOptions(TypedDict, total=False):
    """What a test sets of a `validate` run; what it leaves out keeps the library's default."""

    checkpoint: Path
    n_resamples: int
    progress: bool


class _CalibrateOptions(_RunOptions, total=False):
    """What a test sets of a `calibrate` run beyond :class:`_RunOptions`."""

    max_interval_width: float
    now: datetime
    version: str


def _validate(
    series_dir: Path, labels_csv: Path, output_dir: Path, **options: Unpack[_RunOptions]
) -> ValidationReport:
    """`validate` on the CPU with the listener's fewest slices; ``options`` pass through."""
    return validate(
        series_dir=series_dir,
        labels_csv=labels_csv,
        output_dir=output_dir,
        config=CPU,
        min_slices=MIN_SLICES,
        **options,
    )


def _calibrate(
    series_dir: Path, labels_csv: Path, output: Path, **options: Unpack[_CalibrateOptions]
) -> CalibrationResult:
    """`calibrate` for 90% sensitivity, as :func:`_validate` runs `validate`."""
    return calibrate(
        series_dir=series_dir,
        labels_csv=labels_csv,
        output=output,
        target_sensitivity=0.9,
        config=CPU,
        min_slices=MIN_SLICES,
        **options,
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return create_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", seed=0)


def _phantoms(root: Path, lesions: list[Lesion | None], *, start_seed: int = 0) -> list[str]:
    uids = []
    for i, lesion in enumerate(lesions):
        paths = write_phantom_series(
            root / f"p{start_seed + i}", n_slices=6, size=64, lesion=lesion, seed=start_seed + i
        )
        uids.append(str(pydicom.dcmread(paths[0], stop_before_pixels=True).SeriesInstanceUID))
    return uids


def _uid(folder: Path) -> str:
    first = next(p for p in sorted(folder.rglob("*")) if p.is_file())
    return str(pydicom.dcmread(first, stop_before_pixels=True).SeriesInstanceUID)


def _write_labels(
    path: Path, rows: list[tuple[str, str]], column: str = "series_instance_uid"
) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([column, "label"])
        writer.writerows(rows)
    return path


def _stroke_and_normal(strokes: list[str], normals: list[str]) -> list[tuple[str, str]]:
    """Label rows: "1" for each stroke series, "0" for each normal one."""
    return [(u, "1") for u in strokes] + [(u, "0") for u in normals]


def _secondary_capture(path: Path, like: Path) -> str:
    ds = pydicom.dcmread(like)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return str(ds.SeriesInstanceUID)


def test_validate_reports_every_series_and_every_problem(
    tmp_path: Path, tiny: Path, shared_data: Path
) -> None:
    root = tmp_path / "series"
    strokes = _phantoms(root, [Lesion.INFARCT, Lesion.HAEMORRHAGE, Lesion.INFARCT])
    normals = _phantoms(root, [None, None], start_seed=10)
    shutil.copytree(shared_data / "dicom" / "ge-head-ct", root / "ge")
    philips = shared_data / "dicom" / "philips-head-phantom"
    shutil.copytree(philips / "std-brain-5mm", root / "philips" / "axial")
    shutil.copytree(philips / "localizer", root / "philips" / "localizer")
    sc_uid = _secondary_capture(root / "sc" / "sc.dcm", next((root / "p0").glob("*.dcm")))
    (root / "junk.dcm").write_bytes(b"not a DICOM file at all")
    ge, axial, localizer = (
        _uid(root / "ge"),
        _uid(root / "philips" / "axial"),
        _uid(root / "philips" / "localizer"),
    )
    labels = _write_labels(
        tmp_path / "labels.csv",
        [(u, "stroke") for u in strokes]
        + [(u, "0") for u in normals]
        + [(ge, "normal"), (axial, "False"), (localizer, "normal"), (sc_uid, "normal")]
        + [("1.2.3.4.5", "stroke"), (normals[0], "maybe")],
    )
    report = _validate(
        root, labels, tmp_path / "report", checkpoint=tiny, n_resamples=100, progress=False
    )
    by_uid = {row.series_instance_uid: row for row in report.rows}
    assert by_uid[localizer].verdict == "skipped" and "localizer" in by_uid[localizer].reason
    assert by_uid[sc_uid].verdict == "skipped" and "not a CT image" in by_uid[sc_uid].reason
    for uid in [*strokes, *normals, ge, axial]:
        assert by_uid[uid].probability is not None, by_uid[uid]
    summary = report.summary
    assert summary["series_scored"] == 7
    assert (summary["positives"], summary["negatives"]) == (3, 4)
    assert summary["counts"]["skipped"] == 2
    document = json.loads(report.json.read_text())
    # The junk file, and the licence text that the GE folder ships beside its slices.
    unreadable = document["unreadable_files"]
    assert sorted(Path(line.split(": ")[0]).name for line in unreadable) == [
        "LICENSE.dcm_qa_ct",
        "junk.dcm",
    ]
    assert summary["counts"]["unmatched_keys"] == 1
    assert summary["counts"]["label_problems"] == 1
    assert set(summary["metrics"]) == {"sensitivity", "specificity", "ppv", "npv", "roc_auc"}
    assert sum(summary["confusion"].values()) == 7
    # Seven series are too few for intervals: said, and none shown.
    assert summary["warning"].startswith("too few series: 7 labelled (3 with the finding, 4")
    assert summary["intervals_95"] == {}
    assert len(document["series"]) == len(report.rows)
    markdown = report.markdown.read_text()
    assert f"**Warning: {summary['warning']}**" in markdown
    assert "not shown (too few series)" in markdown and "0.000 - 0.000" not in markdown
    assert "junk.dcm" in markdown and "'maybe' is not recognised" in markdown
    assert "series_instance_uid=1.2.3.4.5" in markdown
    assert {p.name for p in report.figures} == {"roc.png", "calibration.png", "confusion.png"}
    assert all(p.stat().st_size > 1000 for p in report.figures)


def test_bad_inputs_get_clear_messages(tmp_path: Path, tiny: Path) -> None:
    (tmp_path / "empty").mkdir()
    labels = _write_labels(tmp_path / "labels.csv", [("1.2.3", "stroke")])
    with pytest.raises(SiteValidationError, match="is empty"):
        _validate(tmp_path / "empty", labels, tmp_path / "out", checkpoint=tiny)
    no_key = _write_labels(tmp_path / "nokey.csv", [("x", "stroke")], column="patient")
    with pytest.raises(SiteValidationError, match="no key column"):
        read_labels(no_key)

    root = tmp_path / "series"
    [uid] = _phantoms(root, [None])
    study = str(pydicom.dcmread(next((root / "p0").glob("*.dcm"))).StudyInstanceUID)
    both = tmp_path / "both.csv"
    both.write_text(
        f"series_instance_uid,study_instance_uid,label\n{uid},,stroke\n,{study},normal\n"
    )
    report = _validate(
        root, both, tmp_path / "out2", checkpoint=tiny, n_resamples=10, progress=False
    )
    [row] = report.rows
    assert row.verdict == "conflicting labels" and "two labels" in row.reason
    assert report.summary["counts"]["conflicting_labels"] == 1


def _scored(labels: np.ndarray, scores: np.ndarray) -> ScoredFolder:
    rows = [
        SeriesRow(f"1.2.{i}", f"1.2.{i}", bool(label), float(score), "scored")
        for i, (label, score) in enumerate(zip(labels, scores, strict=True))
    ]
    return ScoredFolder(rows, [], [], [])


def test_shuffled_labels_give_an_auc_interval_that_includes_one_half() -> None:
    rng = np.random.default_rng(7)
    labels = np.array([1] * 30 + [0] * 30)
    scores = np.clip(0.5 + 0.3 * (labels - 0.5) + rng.normal(0, 0.1, labels.size), 0, 1)
    real = summarise(_scored(labels, scores), threshold=0.5, n_resamples=300)
    assert real["intervals_95"]["roc_auc"][0] > 0.5  # the control can tell the difference
    shuffled = summarise(_scored(rng.permutation(labels), scores), threshold=0.5, n_resamples=300)
    low, high = shuffled["intervals_95"]["roc_auc"]
    assert low < 0.5 < high


def test_intervals_need_twenty_series_five_of_each() -> None:
    rng = np.random.default_rng(3)
    enough = np.array([1] * 5 + [0] * 15)
    summary = summarise(_scored(enough, rng.uniform(size=20)), threshold=0.5, n_resamples=50)
    assert summary["warning"] is None and set(summary["intervals_95"]) >= {"roc_auc"}
    for labels in (np.array([1] * 4 + [0] * 16), np.array([1] * 5 + [0] * 14)):
        few = summarise(_scored(labels, rng.uniform(size=labels.size)), threshold=0.5)
        assert few["warning"] and few["intervals_95"] == {}
        assert few["metrics"]["sensitivity"] == few["metrics"]["sensitivity"]  # still a figure


def test_validate_on_the_command_line_warns_of_too_few_series(
    tmp_path: Path, tiny: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "series"
    strokes = _phantoms(root, [Lesion.HAEMORRHAGE])
    normals = _phantoms(root, [None], start_seed=10)
    labels = _write_labels(tmp_path / "labels.csv", _stroke_and_normal(strokes, normals))
    code = cli_main(
        [
            "validate",
            "--series",
            str(root),
            "--labels",
            str(labels),
            "--output",
            str(tmp_path / "out"),
            "--checkpoint",
            str(tiny),
            "--no-progress",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith("WARNING: too few series: 2 labelled (1 with the finding, 1 without)")


def _performance_database(tmp_path: Path, n_series: int) -> str:
    """A database where ``n_series`` series (every other one a stroke) have a live verdict."""
    url = migrated_sqlite(tmp_path / "performance.db")
    engine = create_engine_for(url)
    sessions = make_session_factory(engine)
    records = []
    for i in range(n_series):
        study, series = f"1.2.826.0.2.{i}", f"1.2.826.0.2.{i}.1"
        with sessions() as session:
            db.receiving.record_instances(
                session=session,
                study_instance_uid=study,
                series_instance_uid=series,
                modality="CT",
                series_description=None,
                calling_ae_title="SCANNER",
                instances=[
                    db.receiving.InstanceRecord(
                        f"{series}.1", "1.2.840.10008.5.1.4.1.1.2", "x", "1.2", 1, datetime.now(UTC)
                    )
                ],
            )
            job = db.jobs.create_job(session=session, series_instance_uid=series)
            probability = 0.8 if i % 2 == 0 else 0.2
            db.results.record_result(
                session=session,
                job_id=job.id,
                verdict=db.results.Verdict(
                    probability=probability,
                    suspected=probability >= 0.5,
                    threshold=0.5,
                    model_name="m",
                    model_version="v1",
                    model_sha256="a" * 64,
                    input_fingerprint="f" * 64,
                    precision="fp32",
                    device="cpu",
                    **finding_columns(STROKE),
                ),
                slice_scores=[],
                shadow=False,
            )
            session.commit()
        records.append(db.outcomes.OutcomeRecord(OutcomeKey.STUDY, study, i % 2 == 0))
    with sessions() as session:
        db.outcomes.import_outcomes(session=session, records=records, source="test")
        session.commit()
    engine.dispose()
    return url


def test_performance_warns_of_too_few_series_and_shows_no_intervals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = _performance_database(tmp_path, 3)
    assert print_performance(url, checkpoints=[], since=None, model_version=None) == 0
    out = capsys.readouterr().out
    assert "WARNING v1: too few series: 3 labelled (2 with the finding, 1 without)" in out
    assert "(0.000-0.000)" not in out and "(1.000-1.000)" not in out
    assert " | 1.000 | 1.000 | 1.000 | 1.000 | " in out  # the figures, without intervals


def test_the_performance_command_imports_no_torch() -> None:
    """The spec file's name is kept here, not imported with torch and timm (3 of 8 s)."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, validation.performance; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'timm'}))",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert done.stdout.strip() == "[]"
    assert SPEC_FILE == CHECKPOINT_SPEC_FILE


def _worker_probability(tmp_path: Path, series: Path, series_instance_uid: str) -> float | None:
    """The probability `process_series` gives ``series``, received and queued as the listener would.

    The worker runs on the CPU with its configured checkpoint, a fresh SQLite database and
    a copy of the series in its storage folder, all under ``tmp_path``.
    """
    url = migrated_sqlite(tmp_path / "triage.db")
    storage = tmp_path / "storage"
    shutil.copytree(series, storage / "ge")
    runtime = WorkerRuntime(
        storage_dir=storage,
        reports_dir=tmp_path / "reports",
        database_url=url,
        broker_url="memory://",
    )
    ctx = WorkerContext(config=CPU, runtime=runtime)
    paths = sorted((storage / "ge").glob("*.dcm"))
    with ctx.sessions() as session:
        record_stored_files(session, storage_dir=storage, paths=paths, description="ge")
        job = db.jobs.create_job(session=session, series_instance_uid=series_instance_uid)
        db.jobs.mark_job_queued(session=session, job_id=job.id, task_id="t")
        session.commit()
        job_id = job.id
    outcome = process_series(ctx, job_id=job_id, series_instance_uid=series_instance_uid)
    return outcome.probability


def test_validate_gives_the_worker_probability_on_the_ge_series(
    tmp_path: Path, ge_head_ct: Path
) -> None:
    labels = _write_labels(tmp_path / "labels.csv", [(_uid(ge_head_ct), "normal")])
    report = _validate(ge_head_ct, labels, tmp_path / "report", n_resamples=10, progress=False)
    [row] = report.rows
    assert row.probability is not None

    worker = _worker_probability(tmp_path, ge_head_ct, row.series_instance_uid)
    assert worker == pytest.approx(row.probability, abs=1e-6)


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@dataclass(frozen=True)
class Site:
    """A labelled folder with enough stroke series to calibrate on (10 stroke, 4 normal)."""

    root: Path
    strokes: list[str]
    normals: list[str]
    labels: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    folder = tmp_path_factory.mktemp("site")
    root = folder / "series"
    strokes = _phantoms(root, [Lesion.INFARCT, Lesion.HAEMORRHAGE] * 5)
    normals = _phantoms(root, [None] * 4, start_seed=20)
    labels = _write_labels(folder / "labels.csv", _stroke_and_normal(strokes, normals))
    return Site(root, strokes, normals, labels)


def test_calibrate_writes_a_new_checkpoint_and_never_changes_the_source(
    tmp_path: Path, tiny: Path, site: Site
) -> None:
    before = _digest(tiny)
    result = _calibrate(
        site.root,
        site.labels,
        tmp_path / "calibrated",
        checkpoint=tiny,
        max_interval_width=1.0,
        n_resamples=100,
        progress=False,
        now=datetime(2026, 1, 31, 23, 0, tzinfo=UTC),
    )
    assert _digest(tiny) == before
    loaded = load_checkpoint(result.output)
    assert loaded.sha256 == load_checkpoint(tiny).sha256
    spec = loaded.spec
    # Same weights, so its own version label keeps `performance` from merging it with its source.
    source_version = load_checkpoint(tiny).spec.version
    assert spec.version == result.version == f"{source_version}+cal20260131"
    assert spec.calibration is not None and spec.reference_distribution is not None
    assert spec.threshold == spec.calibration.threshold
    assert spec.calibration.sensitivity >= 0.9
    assert spec.calibration.positives == 10 and spec.calibration.negatives == 4
    assert spec.calibration.sensitivity_ci[0] <= spec.calibration.sensitivity
    assert len(spec.calibration.data_fingerprint) == 64
    assert spec.reference_distribution.count == 14
    assert spec.threshold_calibrated is True

    with pytest.raises(SiteValidationError, match="version label other than"):
        _calibrate(
            site.root,
            site.labels,
            tmp_path / "same-version",
            checkpoint=tiny,
            version=source_version,
        )
    assert not (tmp_path / "same-version").exists()
    with pytest.raises(SiteValidationError, match="not empty"):
        _calibrate(site.root, site.labels, tmp_path / "calibrated", checkpoint=tiny)
    too_few = _write_labels(
        tmp_path / "few.csv", _stroke_and_normal(site.strokes[:3], site.normals)
    )
    with pytest.raises(CalibrationRefusedError, match="add 7 more"):
        _calibrate(site.root, too_few, tmp_path / "refused", checkpoint=tiny, progress=False)
    assert not (tmp_path / "refused").exists()
    assert DEFAULT_CHECKPOINT_DIR.is_dir()


def test_calibrate_refuses_labels_without_a_normal_series(
    tmp_path: Path, tiny: Path, site: Site
) -> None:
    # Without a normal series the specificity is undefined: the spec could not be written.
    only_strokes = _write_labels(tmp_path / "strokes.csv", [(u, "1") for u in site.strokes])
    with pytest.raises(CalibrationRefusedError, match="no normal"):
        _calibrate(
            site.root,
            only_strokes,
            tmp_path / "refused",
            checkpoint=tiny,
            max_interval_width=1.0,
            n_resamples=20,
            progress=False,
        )
    assert not (tmp_path / "refused").exists()


def test_calibrate_marks_an_imported_models_threshold_calibrated(
    tmp_path: Path, tiny: Path, site: Site
) -> None:
    spec = load_checkpoint(tiny).spec
    imported = tmp_path / "imported"
    code = cli_main(
        [
            "import-model",
            "--from-timm",
            str(tiny / "model.safetensors"),
            "--arch",
            spec.architecture,
            "--model-kwargs",
            json.dumps(spec.model_kwargs),
            "--output",
            str(imported),
            "--finding",
            "stroke",
        ]
    )
    assert code == 0
    assert load_checkpoint(imported).spec.threshold_calibrated is False
    result = _calibrate(
        site.root,
        site.labels,
        tmp_path / "calibrated",
        checkpoint=imported,
        max_interval_width=1.0,
        n_resamples=50,
        progress=False,
        version="site-2026-01",
    )
    calibrated = load_checkpoint(result.output).spec
    assert calibrated.version == "site-2026-01"  # --version overrides the default label
    assert calibrated.threshold_calibrated is True
    assert calibrated.calibration is not None
    assert calibrated.threshold == calibrated.calibration.threshold
    assert calibrated.source == load_checkpoint(imported).spec.source  # provenance kept
    assert load_checkpoint(imported).spec.threshold_calibrated is False  # source unchanged


def test_validate_and_calibrate_check_their_inputs_before_loading_the_model(
    tmp_path: Path, site: Site
) -> None:
    # A checkpoint that does not exist: had the model been loaded first, that would be the error.
    missing_model = tmp_path / "no-such-checkpoint"
    (tmp_path / "empty").mkdir()
    cases = [
        (site.root, tmp_path / "no-labels.csv", "labels file .* does not exist"),
        (tmp_path / "no-folder", site.labels, "series folder .* does not exist"),
        (tmp_path / "empty", site.labels, "is empty"),
        (site.root, _write_labels(tmp_path / "k.csv", [("x", "1")], column="x"), "no key column"),
    ]
    for series_dir, labels_csv, message in cases:
        with pytest.raises(SiteValidationError, match=message):
            _validate(series_dir, labels_csv, tmp_path / "out", checkpoint=missing_model)
        with pytest.raises(SiteValidationError, match=message):
            _calibrate(series_dir, labels_csv, tmp_path / "calibrated", checkpoint=missing_model)
    assert not (tmp_path / "out").exists() and not (tmp_path / "calibrated").exists()
