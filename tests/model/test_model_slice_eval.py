"""Slice labels and the slice-level evaluation: AUCs, localisation, patient bootstrap."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from model.evaluation.slice_metrics import (
    PatientSlices,
    format_interval,
    group_slices,
    localisation_hits,
    slice_figures,
    slice_report,
)
from model.training.data import DataError, load_records, write_synthetic_dataset
from model.training.slice_labels import slice_truth, slice_types, with_slice_labels


def _groups(
    scores: dict[str, list[float]], labels: dict[str, list[int]], series: dict[str, int]
) -> list[PatientSlices]:
    patients = [p for p in scores for _ in scores[p]]
    return group_slices(
        patients,
        [y for p in scores for y in labels[p]],
        [s for p in scores for s in scores[p]],
        series,
    )


def test_localisation_counts_a_hit_only_in_the_top_k() -> None:
    groups = _groups(
        {"a": [0.9, 0.8, 0.7, 0.6, 0.1], "b": [0.1, 0.9, 0.8, 0.7, 0.6], "n": [0.5, 0.4]},
        {"a": [0, 0, 0, 1, 1], "b": [1, 0, 0, 0, 0], "n": [0, 0]},
        {"a": 1, "b": 1, "n": 0},
    )
    assert localisation_hits(groups, k=3) == [False, False]
    assert localisation_hits(groups, k=4) == [True, False]
    assert localisation_hits(groups, k=5) == [True, True]


def test_figures_separate_slice_series_and_within_positive_auc() -> None:
    # Positive patients' bleeding slices score highest; the normal patient scores high too,
    # so the series AUC by max is 0.5 while the slice AUC within positives is perfect.
    groups = _groups(
        {"p": [0.2, 0.9, 0.3], "q": [0.8, 0.1, 0.1], "n": [0.85, 0.05, 0.05]},
        {"p": [0, 1, 0], "q": [1, 0, 0], "n": [0, 0, 0]},
        {"p": 1, "q": 1, "n": 0},
    )
    figures = slice_figures(groups, series_k=1, localisation_k=1)
    assert figures["slice_auc_within_positive"] == 1.0
    assert figures["series_auc_max"] == pytest.approx(0.5)
    assert figures["localisation_top_k"] == 1.0
    assert figures["slice_auc"] == pytest.approx(1 - 1 / 14)  # n's 0.85 beats q's 0.8
    assert figures["positive_series"] == 2 and figures["localised_series"] == 2


def test_intervals_resample_patients_and_bracket_the_estimate() -> None:
    rng = np.random.default_rng(0)
    scores: dict[str, list[float]] = {}
    labels: dict[str, list[int]] = {}
    series: dict[str, int] = {}
    for i in range(30):
        positive = i % 2
        truth = [0] * 10
        if positive:
            truth[rng.integers(10)] = 1
        scores[f"p{i}"] = [float(rng.random() + 0.4 * t) for t in truth]
        labels[f"p{i}"] = truth
        series[f"p{i}"] = positive
    report = slice_report(_groups(scores, labels, series), n_resamples=200, seed=1)
    metrics, ci = report["metrics"], report["ci95"]
    assert isinstance(metrics, dict) and isinstance(ci, dict)
    for name in ("slice_auc", "series_auc_max", "localisation_top_k"):
        low, high = ci[name]
        assert low <= metrics[name] <= high
        assert high - low > 0.0
    assert "(" in format_interval(report, "slice_auc")


def test_group_slices_refuses_mismatched_input() -> None:
    with pytest.raises(ValueError, match="one patient, label and score"):
        group_slices(["a"], [0, 1], [0.1, 0.2], {"a": 1})
    with pytest.raises(ValueError, match="No series label"):
        group_slices(["a"], [0], [0.1], {})


def _write_labels(data: Path, column: str, value: str) -> Path:
    records = load_records(data)
    path = data / "slice-labels.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "patient", "slice", column, "types_by_rank"])
        for r in records[:-1]:  # the last slice stays unlabelled
            positive = r.label == "stroke" and r.slice == 2
            writer.writerow(
                [
                    f"{r.path.parent.name}/{r.path.name}",
                    r.patient,
                    r.slice,
                    value if positive else "0",
                    "epidural+subdural" if positive else "",
                ]
            )
    return path


def test_slice_labels_join_by_file_and_fall_back_to_the_patient(tmp_path: Path) -> None:
    data = write_synthetic_dataset(tmp_path / "d", patients_per_class=2, slices_per_patient=3)
    labels = _write_labels(data, "haemorrhage_by_mask", "1")
    records = with_slice_labels(load_records(data), labels)
    truth = slice_truth(records)
    assert [r.slice_label for r in records][-1] is None
    assert truth[-1] == int(records[-1].label == "stroke")
    stroke = [
        (r.slice, t) for r, t in zip(records[:-1], truth[:-1], strict=True) if r.label == "stroke"
    ]
    assert stroke and all(t == int(k == 2) for k, t in stroke)
    types = slice_types(records, labels)
    assert {"epidural", "subdural"} in types and set() in types


def test_slice_labels_refuse_a_wrong_column_or_value(tmp_path: Path) -> None:
    data = write_synthetic_dataset(tmp_path / "d", patients_per_class=1, slices_per_patient=3)
    labels = _write_labels(data, "haemorrhage_by_mask", "yes")
    with pytest.raises(DataError, match="haemorrhage_by_rank"):
        with_slice_labels(load_records(data), labels, "haemorrhage_by_rank")
    with pytest.raises(DataError, match="not 0 or 1"):
        with_slice_labels(load_records(data), labels)


def test_fast_auc_equals_sklearn_with_ties() -> None:
    from sklearn.metrics import roc_auc_score

    from model.evaluation.slice_metrics import fast_auc

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 500)
    scores = np.round(rng.random(500) + 0.3 * labels, 1)  # many ties
    assert fast_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert np.isnan(fast_auc([1, 1], [0.2, 0.3]))


def test_the_recorded_command_keeps_no_path_of_the_data_folder() -> None:
    from model.training.config import recorded_command

    data = "/srv/data/brain-stroke-ct"
    argv = ["/venv/bin/stroke-triage", "train", "--data", data]
    argv += ["--slice-labels", f"{data}/slice-labels.csv", "--output", "/runs/x"]
    assert recorded_command(argv, data) == (
        "stroke-triage train --data brain-stroke-ct --slice-labels "
        "brain-stroke-ct/slice-labels.csv --output /runs/x"
    )
