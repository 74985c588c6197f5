"""`stroke-triage validate`: a model's series-level accuracy on a site's own labelled DICOM.

Every series goes through exactly the worker's code: the one series selection that the
listener and the worker share (:func:`dicom_edge.select_instances`, on every instance),
the worker's reading step (:func:`worker.inputs.read_series`), and the worker's classifier
(:func:`worker.context.build_classifier`, then ``predict_series``: HU, windows, channels,
inference, aggregation). Nothing here re-implements any of it.

Bad input never stops the run: unreadable files, unrecognised labels, keys that match no series
and series matching two labels are listed in the report with the reason.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from tqdm import tqdm

from dicom_edge import CLASSIFIABLE_SOP_CLASSES, select_instances
from model.checkpoint import load_checkpoint
from model.errors import ModelError
from model.evaluation.drift import probability_distribution
from model.evaluation.series_metrics import series_metric_intervals, series_metrics
from model.inference import Classifier
from validation.labels_file import SiteValidationError, read_label_rows
from validation.report import format_number, write_report
from validation.sample_size import too_few_series
from worker.config import WorkerConfig
from worker.context import build_classifier, checkpoint_dir
from worker.inputs import SeriesUnreadableError, read_series

log = logging.getLogger(__name__)

KEY_COLUMNS = ("series_instance_uid", "study_instance_uid", "accession_number")
"""Columns of labels.csv that name series, most specific first."""
HEADER_KEYWORDS = {
    "series_instance_uid": "SeriesInstanceUID",
    "study_instance_uid": "StudyInstanceUID",
    "accession_number": "AccessionNumber",
}


@dataclass(frozen=True)
class LabelTable:
    """labels.csv as read: ``{(column, value): [labels]}`` and the problems found."""

    labels: dict[tuple[str, str], list[bool]]
    problems: list[str]


@dataclass
class SeriesFiles:
    """The files of one series found in the folder, and their headers (no pixels)."""

    series_instance_uid: str
    header: Dataset
    paths: list[Path] = field(default_factory=list)
    headers: list[Dataset] = field(default_factory=list)


@dataclass
class SeriesRow:
    """One line of the per-series table."""

    series_instance_uid: str
    key: str
    label: bool | None
    probability: float | None = None
    verdict: str = ""
    reason: str = ""
    slices: int = 0


@dataclass
class ScoredFolder:
    """The outcome of scoring a folder: one row per series, and what could not be used."""

    rows: list[SeriesRow]
    unreadable_files: list[str]
    label_problems: list[str]
    unmatched_keys: list[str]

    def scored(self) -> tuple[np.ndarray, np.ndarray, list[SeriesRow]]:
        """Labels and probabilities of the labelled, classified series (and their rows)."""
        used = [r for r in self.rows if r.label is not None and r.probability is not None]
        labels = np.array([int(bool(r.label)) for r in used], dtype=np.int64)
        scores = np.array([float(r.probability or 0.0) for r in used], dtype=np.float64)
        return labels, scores, used

    def fingerprint(self) -> str:
        """sha256 of the sorted (Series Instance UID, label) pairs that were scored."""
        _, _, used = self.scored()
        digest = hashlib.sha256()
        for uid, label in sorted((r.series_instance_uid, int(bool(r.label))) for r in used):
            digest.update(f"{uid},{label}\n".encode("ascii"))
        return digest.hexdigest()


def read_labels(path: Path) -> LabelTable:
    """Read labels.csv: key column(s) among :data:`KEY_COLUMNS` and a ``label`` column.

    Raises:
        SiteValidationError: The file is missing, empty, or lacks a key or label column.
    """
    read = read_label_rows(path, key_columns=KEY_COLUMNS, what="labels")
    if read.total == 0:
        raise SiteValidationError(f"The labels file {path} holds no rows.")
    labels: dict[tuple[str, str], list[bool]] = defaultdict(list)
    problems = list(read.problems)
    for row in read.rows:
        if not row.keys:
            problems.append(f"line {row.line}: no key value; the row is ignored")
        for column, value in row.keys.items():
            labels[(column, value)].append(row.stroke)
    return LabelTable(labels=dict(labels), problems=problems)


def scan_folder(directory: Path) -> tuple[dict[str, SeriesFiles], list[str]]:
    """Group the DICOM files under ``directory`` (any layout) by Series Instance UID.

    Returns:
        The series, and one line per file that could not be read as DICOM.

    Raises:
        SiteValidationError: The folder does not exist or holds no file.
    """
    if not directory.is_dir():
        raise SiteValidationError(f"The series folder {directory} does not exist.")
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    if not files:
        raise SiteValidationError(f"The series folder {directory} is empty.")
    series: dict[str, SeriesFiles] = {}
    unreadable: list[str] = []
    for path in files:
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
            uid = str(header.SeriesInstanceUID)
        except Exception as exc:  # any file may be anything: list it, go on
            # Relative to the folder: a site's folder names above it may name patients.
            name = path.relative_to(directory)
            why = str(exc).replace(str(directory), ".")
            unreadable.append(f"{name}: not a readable DICOM file ({type(exc).__name__}: {why})")
            continue
        found = series.setdefault(uid, SeriesFiles(uid, header))
        found.paths.append(path)
        found.headers.append(header)
    return series, unreadable


def _keys_of(files: SeriesFiles) -> list[tuple[str, str]]:
    return [
        (column, str(files.header.get(keyword, "")).strip())
        for column, keyword in HEADER_KEYWORDS.items()
        if str(files.header.get(keyword, "")).strip()
    ]


def _match(
    series: dict[str, SeriesFiles], table: LabelTable
) -> tuple[dict[str, tuple[str, bool | None, str]], list[str]]:
    """``{series uid: (key, label or None, problem)}`` and the keys that match no series."""
    matched: dict[str, tuple[str, bool | None, str]] = {}
    used_keys: set[tuple[str, str]] = set()
    for uid, files in series.items():
        found = [(k, table.labels[k]) for k in _keys_of(files) if k in table.labels]
        used_keys.update(k for k, _ in found)
        values = {label for _, labels in found for label in labels}
        key = found[0][0][1] if found else uid
        if len(values) > 1:
            names = ", ".join(f"{c}={v}" for (c, v), _ in found)
            matched[uid] = (key, None, f"matches two labels (stroke and normal) via {names}")
        elif values:
            matched[uid] = (key, values.pop(), "")
        else:
            matched[uid] = (key, None, "")
    unmatched = [f"{c}={v}" for (c, v) in table.labels if (c, v) not in used_keys]
    return matched, unmatched


def classify_files(
    classifier: Classifier, files: SeriesFiles, *, min_slices: int
) -> tuple[float | None, str, str]:
    """Select and classify one series as the listener and the worker do.

    Returns:
        ``(probability, verdict, reason)``; the probability is None when skipped or unreadable.
    """
    # The listener's decision: is the series (all its instances) worth a job?
    selection = select_instances(files.headers, min_slices=min_slices)
    if not selection.classify:
        return None, "skipped", selection.reason
    # The worker's inputs: the instances of a CT image SOP class (the listener records the
    # class of each), read and selected by the worker's own step.
    paths = [
        path
        for path, header in zip(files.paths, files.headers, strict=True)
        if str(header.get("SOPClassUID", "")) in CLASSIFIABLE_SOP_CLASSES
    ]
    try:
        datasets = read_series(paths, series_instance_uid=files.series_instance_uid)
    except SeriesUnreadableError as exc:
        return None, "unreadable", str(exc)
    except Exception as exc:  # one bad file makes its series unreadable, not the run
        return None, "unreadable", f"{type(exc).__name__}: {exc}"
    try:
        prediction = classifier.predict_series(datasets)
    except (ModelError, ValueError, AttributeError) as exc:
        return None, "unreadable", f"{type(exc).__name__}: {exc}"
    verdict = "suspected" if prediction.suspected else "not suspected"
    return prediction.probability, verdict, ""


def load_classifier(config: WorkerConfig, checkpoint: Path | None = None) -> Classifier:
    """The classifier the worker would build from this config (or from ``checkpoint``)."""
    directory = checkpoint if checkpoint is not None else checkpoint_dir(config)
    return build_classifier(config, load_checkpoint(directory), source=directory)


@dataclass(frozen=True)
class FolderInputs:
    """The labels and the folder's series, read and checked before any model is loaded."""

    table: LabelTable
    series: dict[str, SeriesFiles]
    unreadable_files: list[str]


def read_inputs(*, series_dir: Path, labels_csv: Path) -> FolderInputs:
    """Read labels.csv and the folder's headers; cheap, so bad input fails before the model.

    Raises:
        SiteValidationError: Empty or missing folder; labels file without key or label column.
    """
    table = read_labels(labels_csv)
    series, unreadable = scan_folder(series_dir)
    return FolderInputs(table, series, unreadable)


def score_folder(
    classifier: Classifier,
    inputs: FolderInputs,
    *,
    min_slices: int,
    progress: bool = True,
) -> ScoredFolder:
    """Match the folder's series with their labels and classify every labelled one."""
    table, series, unreadable = inputs.table, inputs.series, inputs.unreadable_files
    matched, unmatched = _match(series, table)
    rows: list[SeriesRow] = []
    show = progress and sys.stderr.isatty()
    for uid in tqdm(sorted(series), desc="series", unit="series", disable=not show):
        key, label, problem = matched[uid]
        row = SeriesRow(uid, key, label, slices=len(series[uid].paths))
        if problem:
            row.verdict, row.reason = "conflicting labels", problem
        elif label is None:
            row.verdict, row.reason = "unlabelled", "no label matches this series"
        else:
            row.probability, row.verdict, row.reason = classify_files(
                classifier, series[uid], min_slices=min_slices
            )
        rows.append(row)
    log.info("Scored %d series (%d unreadable files)", len(rows), len(unreadable))
    return ScoredFolder(rows, unreadable, table.problems, unmatched)


def summarise(
    scored: ScoredFolder, *, threshold: float, n_resamples: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Metrics with intervals, the confusion matrix and the counts, as a JSON-ready dict."""
    labels, scores, _ = scored.scored()
    positives = int(labels.sum())
    warning = too_few_series(positives=positives, negatives=int(labels.size) - positives)
    metrics = series_metrics(labels, scores, threshold) if labels.size else {}
    intervals = (
        {}
        if warning
        else series_metric_intervals(labels, scores, threshold, n_resamples=n_resamples, seed=seed)
    )
    verdicts: dict[str, int] = defaultdict(int)
    for row in scored.rows:
        verdicts[row.verdict] += 1
    return {
        "threshold": threshold,
        "series_scored": int(labels.size),
        "positives": positives,
        "negatives": int(labels.size) - positives,
        "warning": warning,
        "metrics": {k: metrics[k] for k in ("sensitivity", "specificity", "ppv", "npv", "roc_auc")}
        if metrics
        else {},
        "intervals_95": {k: list(v) for k, v in intervals.items()},
        "confusion": {k: int(metrics[k]) for k in ("tn", "fp", "fn", "tp")} if metrics else {},
        "counts": {
            "series": len(scored.rows),
            "unlabelled": verdicts["unlabelled"],
            "skipped": verdicts["skipped"],
            "unreadable_series": verdicts["unreadable"],
            "conflicting_labels": verdicts["conflicting labels"],
            "unreadable_files": len(scored.unreadable_files),
            "unmatched_keys": len(scored.unmatched_keys),
            "label_problems": len(scored.label_problems),
        },
        "data_fingerprint": scored.fingerprint(),
    }


@dataclass(frozen=True)
class ValidationReport:
    """What ``validate`` wrote and found."""

    summary: dict[str, Any]
    rows: list[SeriesRow]
    markdown: Path
    json: Path
    figures: list[Path]


def validate(
    *,
    series_dir: Path,
    labels_csv: Path,
    output_dir: Path,
    config: WorkerConfig,
    min_slices: int,
    checkpoint: Path | None = None,
    n_resamples: int = 1000,
    progress: bool = True,
) -> ValidationReport:
    """Classify a labelled folder as the worker would and write the report.

    Args:
        series_dir: DICOM files in any layout.
        labels_csv: Key column(s) and a ``label`` column.
        output_dir: Where report.md, report.json and the PNGs go (created).
        config: The worker's settings (checkpoint, device, precision, batch size).
        min_slices: The listener's fewest slices worth classifying.
        checkpoint: Another checkpoint than the configured one.
        n_resamples: Bootstrap resamples of the intervals.
        progress: Show a progress bar (only ever on a terminal).
    """
    inputs = read_inputs(series_dir=series_dir, labels_csv=labels_csv)
    classifier = load_classifier(config, checkpoint)
    scored = score_folder(classifier, inputs, min_slices=min_slices, progress=progress)
    summary = summarise(scored, threshold=classifier.spec.threshold, n_resamples=n_resamples)
    labels, scores, _ = scored.scored()
    summary["model"] = {
        "name": classifier.spec.name,
        "version": classifier.spec.version,
        "sha256": classifier.sha256,
    }
    summary["reference_distribution"] = probability_distribution(
        scores, source=f"validate {summary['data_fingerprint'][:12]}"
    ).model_dump()
    document = {
        **summary,
        "series": [asdict(row) for row in scored.rows],
        "unreadable_files": scored.unreadable_files,
        "label_problems": scored.label_problems,
        "unmatched_keys": scored.unmatched_keys,
    }
    written = write_report(document, labels=labels, scores=scores, output_dir=output_dir)
    return ValidationReport(summary, scored.rows, written.markdown, written.json, written.figures)


def run_validate(
    config: WorkerConfig,
    *,
    min_slices: int,
    series_dir: Path,
    labels_csv: Path,
    output_dir: Path,
    checkpoint: Path | None,
    progress: bool,
) -> int:
    """`stroke-triage validate`: write the report and print where it is and its headline."""
    report = validate(
        series_dir=series_dir,
        labels_csv=labels_csv,
        output_dir=output_dir,
        config=config,
        min_slices=min_slices,
        checkpoint=checkpoint,
        progress=progress,
    )
    metrics, counts = report.summary["metrics"], report.summary["counts"]
    if report.summary["warning"]:
        print(f"WARNING: {report.summary['warning']}")
    print(
        f"{report.summary['series_scored']} labelled series scored; "
        + ", ".join(f"{k} {format_number(v)}" for k, v in metrics.items())
    )
    print(", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items()))
    print(f"Report: {report.markdown}")
    return 0
