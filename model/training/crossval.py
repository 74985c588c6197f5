"""Cross-validation under the paper's leaky protocol and under a patient-grouped one.

``paper``: slices shuffled at random into 80/10/10 train/validation/test, one run, as the seed
paper did; neighbouring slices of one patient land on both sides, so it measures memory.
``grouped``: patient-grouped, label-stratified K-fold; each fold trains on the other patients
(with its own patient-grouped validation split for the threshold) and predicts its held-out
patients. Out-of-fold predictions are pooled.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from model.aggregate import AGGREGATION_RULES
from model.architectures import HYBRID_LITE0
from model.checkpoint import load_checkpoint
from model.evaluation.metrics import binary_metrics, bootstrap_ci, roc_auc
from model.evaluation.slice_metrics import format_interval
from model.inference import Classifier
from model.training.config import TrainConfig
from model.training.data import (
    DataError,
    SliceRecord,
    limit_records,
    load_records,
    patient_group_kfold,
    random_slice_split,
)
from model.training.evaluate import markdown_table, score_records, score_with_spec
from model.training.hybrid import cross_validate_cached, oof_report, prepare
from model.training.scoring import series_scores
from model.training.slice_labels import slice_truth, with_slice_labels
from model.training.train import train

logger = logging.getLogger(__name__)

PAPER_RESULTS: dict[str, float] = {
    "accuracy": 0.9979,
    "precision": 1.0,
    "recall": 0.9944,
    "f1": 0.9972,
    "roc_auc": 1.0,
    "tn": 293,
    "tp": 179,
    "fp": 0,
    "fn": 1,
    "samples_per_second": 8.8,
}
"""The seed paper's test-set figures (random slice split of 2,501 images)."""


def _evaluate_fold(
    checkpoint: Path, records: Sequence[SliceRecord], *, bootstrap: int, seed: int
) -> tuple[dict[str, Any], np.ndarray]:
    classifier = Classifier(load_checkpoint(checkpoint), device="auto", precision="fp32")
    spec = classifier.spec
    scored, probabilities, speed = score_with_spec(
        classifier, records, bootstrap=bootstrap, seed=seed
    )
    scored["samples_per_second"] = speed
    scored["threshold"] = spec.threshold
    scored["aggregation"] = spec.aggregation.model_dump()
    return scored, probabilities


def _paper(
    records: list[SliceRecord], output_dir: Path, base: TrainConfig, *, bootstrap: int
) -> dict[str, Any]:
    train_idx, val_idx, test_idx = random_slice_split(records, (0.8, 0.1, 0.1), seed=base.seed)
    config = replace(base, output_dir=output_dir / "run")
    checkpoint = train(
        config,
        records=[records[i] for i in train_idx],
        val_records=[records[i] for i in val_idx],
        progress=False,
    )
    test = [records[i] for i in test_idx]
    scored, probabilities = _evaluate_fold(checkpoint, test, bootstrap=bootstrap, seed=base.seed)
    # The paper reports argmax decisions (probability >= 0.5), not a tuned threshold.
    argmax = score_records(
        test,
        probabilities,
        threshold=0.5,
        rule=scored["aggregation"]["rule"],
        k=scored["aggregation"]["k"],
        bootstrap=bootstrap,
        seed=base.seed,
    )
    train_patients = {records[i].patient for i in train_idx}
    return {
        "protocol": "paper",
        "split": {"train": len(train_idx), "validation": len(val_idx), "test": len(test_idx)},
        "test_patients_also_in_training": len({r.patient for r in test} & train_patients),
        "test_patients": len({r.patient for r in test}),
        "test": scored,
        "test_argmax": {"slice": argmax["slice"], "threshold": 0.5},
        "paper": PAPER_RESULTS,
    }


def _grouped(
    records: list[SliceRecord],
    output_dir: Path,
    base: TrainConfig,
    *,
    folds: int,
    bootstrap: int,
) -> dict[str, Any]:
    fold_results: list[dict[str, Any]] = []
    patients: list[str] = []
    labels: list[int] = []
    scores: list[float] = []
    verdicts: list[int] = []
    oof = np.full(len(records), np.nan)
    for fold, (train_idx, test_idx) in enumerate(
        patient_group_kfold(records, n_splits=folds, seed=base.seed), start=1
    ):
        config = replace(base, output_dir=output_dir / f"fold{fold}")
        logger.info("Fold %s/%s: %s training slices", fold, folds, len(train_idx))
        checkpoint = train(config, records=[records[i] for i in train_idx], progress=False)
        test = [records[i] for i in test_idx]
        scored, probabilities = _evaluate_fold(checkpoint, test, bootstrap=0, seed=base.seed)
        oof[test_idx] = probabilities
        for prediction in scored["series_predictions"]:
            patients.append(prediction["patient"])
            labels.append(prediction["label"])
            scores.append(prediction["probability"])
            verdicts.append(int(prediction["probability"] >= scored["threshold"]))
        fold_results.append(
            {
                "fold": fold,
                "test_patients": len(scored["series_predictions"]),
                **{
                    k: scored[k]
                    for k in ("series", "slice", "threshold", "aggregation", "samples_per_second")
                },
            }
        )
    label_array = np.array(labels)
    # Each fold's own threshold decides its patients: the verdicts are what deployment would do.
    pooled = binary_metrics(label_array, np.array(verdicts, dtype=np.float64), 0.5)
    pooled["roc_auc"] = roc_auc(label_array, np.array(scores))
    series: dict[str, Any] = {"n": len(labels), "metrics": pooled}
    if bootstrap > 0:
        intervals = bootstrap_ci(
            label_array,
            np.array(verdicts, dtype=np.float64),
            0.5,
            groups=patients,
            n_resamples=bootstrap,
            seed=base.seed,
        )
        auc_ci = bootstrap_ci(
            label_array,
            np.array(scores),
            0.5,
            groups=patients,
            n_resamples=bootstrap,
            seed=base.seed,
        )["roc_auc"]
        intervals["roc_auc"] = auc_ci
        series["ci95"] = {name: list(bounds) for name, bounds in intervals.items()}
    slice_labels = np.array(slice_truth(records))
    oof_slices = _oof_report(records, oof, base, bootstrap)
    oof_slices.pop("series_predictions")
    return {
        "slice_labels": oof_slices,
        "protocol": "grouped",
        "folds": folds,
        "fold_results": fold_results,
        "pooled_series": series,
        "pooled_slice_auc": roc_auc(slice_labels, oof),
        "pooled_series_auc_by_rule": _auc_by_rule(
            records, oof, k=base.top_k, bootstrap=bootstrap, seed=base.seed
        ),
        "slice_predictions": [
            {"patient": r.patient, "slice": r.slice, "label": int(y), "probability": float(p)}
            for r, y, p in zip(records, slice_labels, oof, strict=True)
        ],
        "series_predictions": [
            {"patient": p, "label": y, "probability": s, "verdict": v}
            for p, y, s, v in zip(patients, labels, scores, verdicts, strict=True)
        ],
    }


def _auc_by_rule(
    records: Sequence[SliceRecord],
    probabilities: np.ndarray,
    *,
    k: int,
    bootstrap: int,
    seed: int,
) -> dict[str, dict[str, Any]]:
    """Pooled out-of-fold series AUC of every aggregation rule, from the same slice outputs."""
    by_rule: dict[str, dict[str, Any]] = {}
    for rule in AGGREGATION_RULES:
        names, labels, scores = series_scores(
            records, probabilities, rule=rule, k=k, positive_label="stroke"
        )
        entry: dict[str, Any] = {"roc_auc": roc_auc(labels, scores)}
        if bootstrap > 0:
            entry["ci95"] = list(
                bootstrap_ci(labels, scores, 0.5, groups=names, n_resamples=bootstrap, seed=seed)[
                    "roc_auc"
                ]
            )
        by_rule[rule] = entry
    return by_rule


def cross_validate(
    data_dir: Path,
    output_dir: Path,
    *,
    protocol: Literal["paper", "grouped"] | str,
    base: TrainConfig,
    folds: int = 5,
    bootstrap: int = 1000,
) -> dict[str, Any]:
    """Runs one protocol and writes ``crossval.json`` and ``crossval.md`` into ``output_dir``.

    Args:
        data_dir: Folder laid out like the training set.
        output_dir: Where runs and reports go.
        protocol: ``paper`` (random slice split) or ``grouped`` (patient-grouped K-fold).
        base: Training configuration for every run (its data and output folders are replaced).
        folds: Folds of the grouped protocol.
        bootstrap: Resamples for the 95 % intervals.

    Returns:
        The content of ``crossval.json``.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    records = load_records(Path(data_dir))
    if base.limit is not None:
        records = limit_records(records, base.limit)
    base = replace(base, data_dir=Path(data_dir), limit=None)
    if base.slice_labels is not None:
        records = with_slice_labels(records, base.slice_labels, base.slice_label_column)
    cached = base.architecture == HYBRID_LITE0 and base.backbone_tuning != "all"
    if protocol == "grouped" and cached:
        result = _grouped_cached(records, base, folds=folds, bootstrap=bootstrap)
        result["config"] = base.as_json_dict()
        (output_dir / "crossval.json").write_text(json.dumps(result, indent=2) + "\n", "utf-8")
        (output_dir / "crossval.md").write_text(cached_markdown(result), "utf-8")
        return result
    if protocol == "paper":
        result = _paper(records, output_dir, base, bootstrap=bootstrap)
    elif protocol == "grouped":
        result = _grouped(records, output_dir, base, folds=folds, bootstrap=bootstrap)
    else:
        raise DataError(f"Unknown protocol {protocol!r}; expected paper or grouped.")
    result["config"] = base.as_json_dict()
    (output_dir / "crossval.json").write_text(json.dumps(result, indent=2) + "\n", "utf-8")
    (output_dir / "crossval.md").write_text(_markdown(result), "utf-8")
    return result


def _rule_lines(by_rule: dict[str, dict[str, Any]]) -> str:
    if not by_rule:
        return ""
    rows = []
    for rule, entry in by_rule.items():
        low, high = entry.get("ci95", (float("nan"), float("nan")))
        rows.append(f"| {rule} | {entry['roc_auc']:.3f} ({low:.3f}-{high:.3f}) |")
    return (
        "Pooled series AUC by aggregation rule (same out-of-fold slice probabilities):\n\n"
        "| rule | series AUC (95 % CI) |\n|---|---|\n" + "\n".join(rows) + "\n\n"
    )


def _markdown(result: dict[str, Any]) -> str:
    config = result["config"]
    head = (
        f"# Cross-validation: {result['protocol']} protocol\n\n"
        f"Model `{config['architecture']}` {config['input_size']} px, {config['epochs']} epochs "
        f"max, seed {config['seed']}, channel mode {config['channel_mode']}.\n\n"
    )
    if result["protocol"] == "paper":
        test = result["test"]
        paper = PAPER_RESULTS
        argmax = result["test_argmax"]["slice"]["metrics"]
        stored = test["slice"]["metrics"]
        rows = [
            "| | accuracy | precision | recall | F1 | ROC-AUC | TN | TP | FP | FN | samples/s |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, values, speed in (
            ("paper", paper, paper["samples_per_second"]),
            ("this run, argmax (p >= 0.5)", argmax, test["samples_per_second"]),
            (
                f"this run, stored threshold {test['threshold']:.3f}",
                stored,
                test["samples_per_second"],
            ),
        ):
            rows.append(
                f"| {name} | {values['accuracy']:.2%} | {values['precision']:.2%} | "
                f"{values['recall']:.2%} | {values['f1']:.2%} | {values['roc_auc']:.3f} | "
                f"{int(values['tn'])} | {int(values['tp'])} | {int(values['fp'])} | "
                f"{int(values['fn'])} | {speed:.1f} |"
            )
        return head + (
            f"Random slice split {result['split']}; {result['test_patients_also_in_training']} "
            f"of {result['test_patients']} test patients also have slices in training "
            "(patient leakage).\n\nSlice level, test split:\n\n" + "\n".join(rows) + "\n\n"
            "With 95 % CIs (slices resampled):\n\n"
            + markdown_table(
                {"argmax": result["test_argmax"]["slice"], "stored threshold": test["slice"]}
            )
            + "\n"
        )
    folds = "\n".join(
        f"| {f['fold']} | {f['test_patients']} | {f['threshold']:.4f} | "
        f"{f['aggregation']['rule']} | {f['series']['metrics']['roc_auc']:.3f} | "
        f"{f['series']['metrics']['recall']:.3f} | {f['series']['metrics']['specificity']:.3f} |"
        for f in result["fold_results"]
    )
    return head + (
        f"Patient-grouped {result['folds']}-fold CV; out-of-fold series predictions pooled "
        "(AUC from pooled probabilities; the other metrics from each fold's verdict at its "
        "own stored threshold).\n\n"
        + markdown_table({"series (pooled)": result["pooled_series"]})
        + f"\n\nPooled slice-level AUC: {result['pooled_slice_auc']:.3f}\n\n"
        + _rule_lines(result.get("pooled_series_auc_by_rule", {}))
        + "| fold | test patients | threshold | rule | series AUC | sensitivity | specificity |\n"
        "|---|---|---|---|---|---|---|\n" + folds + "\n"
    )


def _grouped_cached(
    records: list[SliceRecord], base: TrainConfig, *, folds: int, bootstrap: int
) -> dict[str, Any]:
    """The grouped protocol for the hybrid on cached features (``model.training.hybrid``)."""
    prepared = prepare(base, records)
    oof = cross_validate_cached(prepared, folds=folds)
    report = _oof_report(records, oof, base, bootstrap)
    return {
        "protocol": "grouped",
        "folds": folds,
        **report,
        "slice_predictions": [
            {
                "patient": r.patient,
                "slice": r.slice,
                "slice_label": r.slice_label,
                "probability": float(p),
            }
            for r, p in zip(records, oof, strict=True)
        ],
    }


def cached_markdown(result: dict[str, Any]) -> str:
    """The report of :func:`_grouped_cached`: one line per figure, with its interval."""
    config = result["config"]
    lines = [
        f"# Cross-validation: grouped {result['folds']}-fold, hybrid ViT on cached features\n",
        f"`{config['architecture']}` {config['input_size']} px, "
        f"{json.dumps(config['model_kwargs'])}, "
        f"backbone {config['backbone_tuning']} (cut {config['backbone_cut']}), {config['epochs']} "
        f"epochs, lr {config['lr']}, slice labels {config['slice_labels']} "
        f"({config['slice_label_column']}), seed {config['seed']}.\n",
        "| figure | value (95 % CI, patients resampled) |",
        "|---|---|",
    ]
    for name in (
        "slice_auc",
        "slice_auc_within_positive",
        "series_auc_max",
        "series_auc_top_k_mean",
        "localisation_top_k",
    ):
        lines.append(f"| {name} | {format_interval(result, name)} |")
    lines.append(
        f"\nSeries AUC by rule (k={result['k']}): "
        + ", ".join(f"{rule} {auc:.3f}" for rule, auc in result["series_auc_by_rule"].items())
        + f". Threshold {result['threshold']:.4f} ({result['rule']}): sensitivity "
        f"{result['series_sensitivity_at_threshold']:.3f}, specificity "
        f"{result['series_specificity_at_threshold']:.3f}.\n"
    )
    return "\n".join(lines)


def _oof_report(
    records: list[SliceRecord], oof: Any, base: TrainConfig, bootstrap: int
) -> dict[str, Any]:
    """The slice, series and localisation report of out-of-fold scores, by the recipe's rule."""
    return oof_report(
        records,
        oof,
        rule=base.aggregation or "top_k_mean",
        k=base.top_k,
        target_sensitivity=base.target_sensitivity,
        bootstrap=bootstrap,
        seed=base.seed,
    )
