"""Evaluation of a checkpoint on a labelled slice folder: tables, intervals, figures."""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from model.aggregate import aggregate
from model.evaluation.metrics import METRIC_NAMES, binary_metrics, bootstrap_ci
from model.evaluation.plots import plot_calibration, plot_confusion, plot_roc
from model.evaluation.slice_metrics import group_slices, slice_report
from model.inference import Classifier
from model.training.data import (
    SliceDataset,
    SliceRecord,
    fingerprint,
    group_by_patient,
    load_records,
)
from model.training.slice_labels import with_slice_labels

logger = logging.getLogger(__name__)

PERCENT_METRICS = ("accuracy", "precision", "recall", "specificity", "f1")


def predict_records(
    classifier: Classifier, records: Sequence[SliceRecord]
) -> tuple[npt.NDArray[np.float64], float]:
    """Slice probabilities of ``records`` (in their order) and the network's slices per second.

    Preprocessing is the training pipeline's, without augmentation; the speed counts only the
    forward passes, as the paper's "evaluation speed" does.
    """
    dataset = SliceDataset(records, classifier.spec)
    probabilities = np.zeros(len(records), dtype=np.float64)
    seconds = 0.0
    for indices in group_by_patient(records).values():
        batch = np.stack([dataset[i][0].numpy() for i in indices])
        started = time.perf_counter()
        probabilities[indices] = classifier.predict_probabilities(batch)
        seconds += time.perf_counter() - started
    return probabilities, len(records) / seconds if seconds > 0 else float("nan")


def _section(
    labels: npt.NDArray[np.int64],
    scores: npt.NDArray[np.float64],
    threshold: float,
    *,
    groups: Sequence[str] | None,
    bootstrap: int,
    seed: int,
) -> dict[str, Any]:
    section: dict[str, Any] = {
        "n": len(labels),
        "metrics": binary_metrics(labels, scores, threshold),
    }
    if bootstrap > 0:
        intervals = bootstrap_ci(
            labels, scores, threshold, groups=groups, n_resamples=bootstrap, seed=seed
        )
        section["ci95"] = {name: list(bounds) for name, bounds in intervals.items()}
    return section


def score_records(
    records: Sequence[SliceRecord],
    probabilities: npt.NDArray[np.float64],
    *,
    threshold: float,
    rule: str,
    k: int,
    positive_label: str = "stroke",
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Slice- and series-level metrics with bootstrap CIs of given slice probabilities.

    Slice intervals resample slices; series intervals resample patients.
    """
    slice_labels = np.array(
        [int(r.training_label() == positive_label) for r in records], dtype=np.int64
    )
    patients = group_by_patient(records)
    names = sorted(patients)
    series_labels = np.array(
        [int(records[patients[p][0]].label == positive_label) for p in names], dtype=np.int64
    )
    series = np.array([aggregate(probabilities[patients[p]], rule=rule, k=k) for p in names])
    return {
        "slice": _section(
            slice_labels, probabilities, threshold, groups=None, bootstrap=bootstrap, seed=seed
        ),
        "series": _section(
            series_labels, series, threshold, groups=names, bootstrap=bootstrap, seed=seed
        ),
        "series_predictions": [
            {"patient": name, "label": int(label), "probability": float(score)}
            for name, label, score in zip(names, series_labels, series, strict=True)
        ],
    }


def _cell(name: str, value: float, ci: list[float] | None) -> str:
    if math.isnan(value):
        return "n/a"
    scale, unit = (100.0, " %") if name in PERCENT_METRICS else (1.0, "")
    text = f"{value * scale:.2f}{unit}" if scale != 1.0 else f"{value:.3f}"
    if ci is not None and not any(math.isnan(bound) for bound in ci):
        text += (
            f" ({ci[0] * scale:.1f}-{ci[1] * scale:.1f})"
            if scale != 1.0
            else (f" ({ci[0]:.3f}-{ci[1]:.3f})")
        )
    return text


def markdown_table(sections: dict[str, dict[str, Any]], speed: float | None = None) -> str:
    """A Markdown table in the paper's columns, one row per section (e.g. slice, series)."""
    header = [*METRIC_NAMES, "TN", "FP", "FN", "TP"]
    if speed is not None:
        header.append("samples/s")
    lines = [
        "| level | n | " + " | ".join(header) + " |",
        "|---" * (len(header) + 2) + "|",
    ]
    for level, section in sections.items():
        metrics = section["metrics"]
        ci = section.get("ci95", {})
        cells = [_cell(name, metrics[name], ci.get(name)) for name in METRIC_NAMES]
        cells += [str(int(metrics[key])) for key in ("tn", "fp", "fn", "tp")]
        if speed is not None:
            cells.append(f"{speed:.1f}")
        lines.append(f"| {level} | {section['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def score_with_spec(
    classifier: Classifier, records: Sequence[SliceRecord], *, bootstrap: int, seed: int
) -> tuple[dict[str, Any], np.ndarray, float]:
    """Predict every slice and score slices and series with the checkpoint's own decision rule.

    Returns the scores, the slice probabilities and the speed in slices per second.
    """
    spec = classifier.spec
    probabilities, speed = predict_records(classifier, records)
    scored = score_records(
        records,
        probabilities,
        threshold=spec.threshold,
        rule=spec.aggregation.rule,
        k=spec.aggregation.k,
        positive_label=spec.positive_class,
        bootstrap=bootstrap,
        seed=seed,
    )
    return scored, probabilities, speed


def evaluate(
    checkpoint_dir: Path,
    data_dir: Path,
    output_dir: Path,
    *,
    bootstrap: int = 1000,
    precision: str = "auto",
    device: str = "auto",
    seed: int = 0,
    slice_labels: Path | None = None,
    slice_label_column: str = "haemorrhage_by_mask",
) -> dict[str, Any]:
    """Evaluates a checkpoint on every slice listed in ``data_dir/manifest.csv``.

    With ``slice_labels`` the slice truth is each slice's own label (its patient's where the
    file has none) and the report adds slice AUC, slice AUC within positive patients, series
    AUC (max and top-k mean) and top-3 localisation, with intervals over patients
    (``slice_labels`` in ``metrics.json``).

    Writes ``metrics.json``, ``report.md``, ``predictions.csv``, ``roc.png``, ``confusion.png``
    and ``calibration.png`` into ``output_dir``.

    Args:
        checkpoint_dir: Folder with ``model.safetensors`` and ``spec.json``.
        data_dir: Folder laid out like the training set.
        output_dir: Where the report goes (created).
        bootstrap: Bootstrap resamples for the 95 % intervals (0 = none).
        precision: ``auto``, ``fp32`` or ``bf16``.
        device: ``auto``, ``cpu`` or ``cuda``.
        seed: Seed of the bootstrap.

    Returns:
        The content of ``metrics.json``.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    records = load_records(Path(data_dir))
    if slice_labels is not None:
        records = with_slice_labels(records, slice_labels, slice_label_column)
    classifier = Classifier.from_checkpoint(
        Path(checkpoint_dir), device=device, precision=precision
    )
    spec = classifier.spec
    scored, probabilities, speed = score_with_spec(
        classifier, records, bootstrap=bootstrap, seed=seed
    )
    result: dict[str, Any] = {
        "checkpoint": {
            "path": str(checkpoint_dir),
            "name": spec.name,
            "version": spec.version,
            "sha256": classifier.sha256,
            "trained": spec.trained,
            "architecture": spec.architecture,
            "input_size": spec.input_size,
            "threshold": spec.threshold,
            "aggregation": spec.aggregation.model_dump(),
            "data_fingerprint": spec.data_fingerprint,
        },
        "data": {
            "path": str(data_dir),
            "fingerprint": fingerprint(records),
            "slices": len(records),
            "patients": len(scored["series_predictions"]),
            "same_data_as_training": fingerprint(records) == spec.data_fingerprint,
        },
        "device": str(classifier.device),
        "precision": classifier.precision,
        "samples_per_second": speed,
        "bootstrap": bootstrap,
        **scored,
    }
    if slice_labels is not None:
        result["slice_labels"] = {
            "file": Path(slice_labels).name,
            "column": slice_label_column,
            **slice_label_report(
                records, probabilities, series_k=spec.aggregation.k, bootstrap=bootstrap, seed=seed
            ),
        }
    (output_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    with (output_dir / "predictions.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "patient", "slice", "probability"])
        for record, probability in zip(records, probabilities, strict=True):
            writer.writerow(
                [record.path.name, record.label, record.patient, record.slice, f"{probability:.6f}"]
            )
    _write_figures(records, probabilities, scored, output_dir, positive_label=spec.positive_class)
    _write_report(result, output_dir / "report.md")
    logger.info(
        "Evaluated %s on %s slices (%s patients): series AUC %.3f",
        spec.version,
        len(records),
        result["data"]["patients"],
        scored["series"]["metrics"]["roc_auc"],
    )
    return result


def slice_label_report(
    records: Sequence[SliceRecord],
    probabilities: npt.NDArray[np.float64],
    *,
    series_k: int,
    bootstrap: int,
    seed: int,
    positive_label: str = "stroke",
) -> dict[str, object]:
    """:func:`model.evaluation.slice_metrics.slice_report` of slice probabilities."""
    series_labels = {
        p: int(records[idx[0]].label == positive_label)
        for p, idx in group_by_patient(records).items()
    }
    groups = group_slices(
        [r.patient for r in records],
        [int(r.training_label() == positive_label) for r in records],
        probabilities,
        series_labels,
    )
    return slice_report(groups, series_k=series_k, n_resamples=bootstrap, seed=seed)


def _write_figures(
    records: Sequence[SliceRecord],
    probabilities: npt.NDArray[np.float64],
    scored: dict[str, Any],
    output_dir: Path,
    *,
    positive_label: str,
) -> None:
    slice_labels = np.array([int(r.label == positive_label) for r in records], dtype=np.int64)
    series = scored["series_predictions"]
    series_labels = np.array([p["label"] for p in series], dtype=np.int64)
    series_scores = np.array([p["probability"] for p in series], dtype=np.float64)
    curves = {"slice": (slice_labels, probabilities), "series": (series_labels, series_scores)}
    plot_roc(curves, output_dir / "roc.png")
    plot_calibration(curves, output_dir / "calibration.png")
    plot_confusion(
        {
            level: {key: int(scored[level]["metrics"][key]) for key in ("tn", "fp", "fn", "tp")}
            for level in ("slice", "series")
        },
        output_dir / "confusion.png",
    )


def _write_report(result: dict[str, Any], path: Path) -> None:
    checkpoint, data = result["checkpoint"], result["data"]
    table = markdown_table(
        {"slice": result["slice"], "series (patient)": result["series"]},
        speed=result["samples_per_second"],
    )
    warning = (
        "\n**Warning:** this is the training data of the checkpoint (same fingerprint); these "
        "figures measure memory, not generalisation.\n"
        if data["same_data_as_training"]
        else ""
    )
    text = f"""# Evaluation report

Checkpoint `{checkpoint["version"]}` ({checkpoint["architecture"]}, {checkpoint["input_size"]} px,
weights sha256 `{checkpoint["sha256"][:16]}…`), threshold {checkpoint["threshold"]:.4f},
aggregation {checkpoint["aggregation"]["rule"]} (k={checkpoint["aggregation"]["k"]}).

Data: `{data["path"]}`, {data["slices"]} slices of {data["patients"]} patients
(fingerprint `{data["fingerprint"][:16]}…`). Device {result["device"]}, precision
{result["precision"]}.
{warning}
{table}

Brackets: 95 % bootstrap intervals ({result["bootstrap"]} resamples; slices resampled for the
slice row, patients for the series row). Percentages except ROC-AUC. The label belongs to the
patient, so slice-level figures count lesion-free slices of stroke patients as positives.

Figures: `roc.png`, `confusion.png`, `calibration.png`. Not for clinical use.
"""
    path.write_text(text, encoding="utf-8")
