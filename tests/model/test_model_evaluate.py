"""Metrics on hand-made predictions, threshold choice, and the evaluation/CV reports."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest

from model.evaluation.metrics import (
    binary_metrics,
    bootstrap_ci,
    confusion,
    roc_auc,
    threshold_for_sensitivity,
)
from model.training import commands as model_commands
from model.training.config import TrainConfig
from model.training.crossval import cross_validate
from model.training.data import load_records, write_synthetic_dataset
from model.training.evaluate import evaluate, score_records
from model.training.train import train
from tests.model.tiny import tiny_config

LABELS = [0, 0, 0, 1, 1, 1]
SCORES = [0.1, 0.4, 0.6, 0.7, 0.8, 0.3]


def test_metrics_of_hand_made_predictions() -> None:
    result = binary_metrics(LABELS, SCORES, 0.5)
    assert (result["tn"], result["fp"], result["fn"], result["tp"]) == (2, 1, 1, 2)
    for name in ("accuracy", "precision", "recall", "specificity", "f1"):
        assert result[name] == pytest.approx(2 / 3), name
    # Positive/negative pairs ranked correctly: 0.7 and 0.8 beat all three, 0.3 beats one.
    assert result["roc_auc"] == pytest.approx(7 / 9)
    assert confusion([0, 1, 1], [1, 1, 0]).as_dict() == {"tn": 0, "fp": 1, "fn": 1, "tp": 1}
    assert binary_metrics([0, 1], [0.2, 0.5], 0.5)["recall"] == 1.0  # at the threshold: positive


def test_undefined_metrics_are_nan_not_errors() -> None:
    result = binary_metrics([0, 0], [0.1, 0.2], 0.5)
    assert result["specificity"] == 1.0
    assert math.isnan(result["recall"])
    assert math.isnan(result["precision"])
    assert math.isnan(roc_auc([1, 1], [0.3, 0.4]))
    with pytest.raises(ValueError, match="0 or 1"):
        binary_metrics([0, 2], [0.1, 0.2], 0.5)


def test_threshold_reaches_the_target_sensitivity() -> None:
    labels = [1, 1, 1, 1, 0, 0]
    scores = [0.9, 0.8, 0.7, 0.2, 0.75, 0.1]
    assert threshold_for_sensitivity(labels, scores, 0.75) == 0.7
    assert threshold_for_sensitivity(labels, scores, 0.95) == 0.2
    assert threshold_for_sensitivity(labels, scores, 0.25) == 0.9
    for target in (0.25, 0.5, 0.75, 0.95, 1.0):
        threshold = threshold_for_sensitivity(labels, scores, target)
        assert binary_metrics(labels, scores, threshold)["recall"] >= target
    with pytest.raises(ValueError, match="positive"):
        threshold_for_sensitivity([0, 0], [0.1, 0.2])


def test_bootstrap_resamples_whole_groups() -> None:
    labels = np.array([0, 0, 1, 1, 0, 1])
    scores = np.array([0.1, 0.2, 0.9, 0.8, 0.3, 0.7])
    perfect = bootstrap_ci(labels, scores, 0.5, n_resamples=200, seed=1)
    assert perfect["accuracy"] == (1.0, 1.0)
    once = bootstrap_ci(LABELS, SCORES, 0.5, n_resamples=300, seed=4)
    assert once == bootstrap_ci(LABELS, SCORES, 0.5, n_resamples=300, seed=4)
    low, high = once["accuracy"]
    assert 0.0 <= low < 2 / 3 < high <= 1.0
    # One group holding every item: each resample is the full set, so the interval collapses.
    grouped = bootstrap_ci(LABELS, SCORES, 0.5, groups=["p"] * 6, n_resamples=50, seed=0)
    assert grouped["accuracy"] == pytest.approx((2 / 3, 2 / 3))


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(
        tmp_path_factory.mktemp("toy"), patients_per_class=4, slices_per_patient=4, size=48
    )


def _config(data: Path, output: Path) -> TrainConfig:
    return tiny_config(data, output, epochs=6, lr=5e-3, augmentation="none")


def test_series_scores_aggregate_each_patient(toy: Path) -> None:
    records = load_records(toy)
    probabilities = np.array([0.9 if r.label == "stroke" else 0.1 for r in records])
    probabilities[0] = 0.95  # one confident false-positive slice of a normal patient
    scored = score_records(records, probabilities, threshold=0.5, rule="max", k=5, bootstrap=0)
    series = scored["series"]["metrics"]
    assert (series["tn"], series["fp"], series["fn"], series["tp"]) == (3, 1, 0, 4)
    mean = score_records(records, probabilities, threshold=0.5, rule="mean", k=5, bootstrap=0)
    assert mean["series"]["metrics"]["fp"] == 0
    assert scored["slice"]["metrics"]["fp"] == 1
    assert len(scored["series_predictions"]) == 8


def test_evaluate_writes_every_report_file(toy: Path, tmp_path: Path) -> None:
    checkpoint = train(_config(toy, tmp_path / "run"), progress=False)
    result = evaluate(checkpoint, toy, tmp_path / "eval", bootstrap=50, precision="fp32")
    for name in ("metrics.json", "report.md", "predictions.csv"):
        assert (tmp_path / "eval" / name).stat().st_size > 0
    for name in ("roc.png", "confusion.png", "calibration.png"):
        assert (tmp_path / "eval" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == json.loads(
        json.dumps(result)
    )
    series = result["series"]["metrics"]
    assert series["tn"] + series["fp"] + series["fn"] + series["tp"] == 8
    slices = result["slice"]["metrics"]
    assert slices["tn"] + slices["fp"] + slices["fn"] + slices["tp"] == 32
    assert result["data"]["same_data_as_training"] is True
    assert result["samples_per_second"] > 0
    assert set(result["series"]["ci95"]) >= {"accuracy", "roc_auc"}
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "| series (patient) | 8 |" in report
    assert "measure memory" in report


def test_cli_evaluate_refuses_a_missing_checkpoint(
    toy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    model_commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        [
            "evaluate",
            "--checkpoint",
            str(tmp_path / "none"),
            "--data",
            str(toy),
            "--output",
            str(tmp_path / "out"),
        ]
    )
    assert args.func(args) == 2
    assert "No model checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("protocol", ["grouped", "paper"])
def test_cross_validation_reports(toy: Path, tmp_path: Path, protocol: str) -> None:
    config = _config(toy, tmp_path)
    config.epochs = 2
    result = cross_validate(
        toy, tmp_path / protocol, protocol=protocol, base=config, folds=2, bootstrap=20
    )
    assert (tmp_path / protocol / "crossval.json").is_file()
    text = (tmp_path / protocol / "crossval.md").read_text()
    if protocol == "grouped":
        patients = [p["patient"] for p in result["series_predictions"]]
        assert sorted(patients) == sorted({r.patient for r in load_records(toy)})
        assert len(result["fold_results"]) == 2
        assert "series (pooled)" in text
        by_rule = result["pooled_series_auc_by_rule"]
        assert set(by_rule) == {"top_k_mean", "mean", "max"}
        assert all(0.0 <= entry["roc_auc"] <= 1.0 for entry in by_rule.values())
        assert "| max |" in text
        slices = result["slice_predictions"]
        assert len(slices) == len(load_records(toy))
        assert all(0.0 <= s["probability"] <= 1.0 for s in slices)
    else:
        assert "| paper | 99.79% |" in text
        assert "argmax" in text
        assert result["split"] == {"train": 26, "validation": 4, "test": 2}
        assert result["test_patients_also_in_training"] == result["test_patients"]
