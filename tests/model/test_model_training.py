"""Training: loss falls, the checkpoint carries its decision rule, interrupted runs resume."""

from __future__ import annotations

import argparse
import itertools
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from model.checkpoint import WEIGHTS_FILE, load_checkpoint
from model.spec import WindowSpec
from model.training import commands as model_commands
from model.training.config import TrainConfig, TrainingError, build_spec, parse_window
from model.training.data import fingerprint, load_records, write_synthetic_dataset
from model.training.distill import TEACHER_FILE, DistillationError, distillation_loss
from model.training.schedule import warmup_cosine_factor
from model.training.state import STATE_FILE
from model.training.train import LOG_FILE, train
from tests.model.tiny import TINY_VIT, tiny_config


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(
        tmp_path_factory.mktemp("toy"), patients_per_class=4, slices_per_patient=4, size=48
    )


def _config(data: Path, output: Path, **changes: Any) -> TrainConfig:
    return tiny_config(data, output, **{"seed": 11, **changes})


def _log(output: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (output / LOG_FILE).read_text().splitlines()]


def test_training_lowers_the_loss_and_writes_a_complete_checkpoint(
    toy: Path, tmp_path: Path
) -> None:
    config = _config(toy, tmp_path / "run", epochs=12, augmentation="none", lr=5e-3)
    directory = train(config, progress=False)
    log = _log(directory)
    assert [line["epoch"] for line in log] == list(range(1, 13))
    assert log[-1]["train_loss"] < 0.8 * log[0]["train_loss"]
    assert all(line["seconds"] >= 0 and line["lr"] >= 0 for line in log)

    loaded = load_checkpoint(directory)
    spec = loaded.spec
    assert spec.trained
    assert 0.0 <= spec.threshold <= 1.0
    assert spec.aggregation.rule in {"top_k_mean", "mean", "max"}
    assert spec.data_fingerprint == fingerprint(load_records(toy))
    assert spec.training["seed"] == 11
    assert spec.training["config"]["architecture"] == "vit_tiny_patch16_224"
    assert "command" in spec.training
    assert spec.metrics["validation_series"]["recall"] >= 0.95
    assert isinstance(spec.metrics["bf16_agrees_with_fp32"], bool)
    assert spec.input_size == 32


class _InterruptedError(Exception):
    pass


def _interrupt_after_first(epoch: int, line: dict[str, Any]) -> None:
    if epoch == 1:
        raise _InterruptedError


def test_an_interrupted_run_resumes_to_the_same_weights(toy: Path, tmp_path: Path) -> None:
    whole = train(_config(toy, tmp_path / "whole"), progress=False)

    resumed_dir = tmp_path / "resumed"
    with pytest.raises(_InterruptedError):
        train(_config(toy, resumed_dir), progress=False, on_epoch_end=_interrupt_after_first)
    assert (resumed_dir / STATE_FILE).is_file()
    assert not (resumed_dir / WEIGHTS_FILE).exists()
    seen: list[int] = []
    train(_config(toy, resumed_dir), progress=False, on_epoch_end=lambda e, _: seen.append(e))
    assert seen == [2], "the rerun must start at epoch 2"
    assert [line["epoch"] for line in _log(resumed_dir)] == [1, 2]

    expected = load_file(str(whole / WEIGHTS_FILE))
    actual = load_file(str(resumed_dir / WEIGHTS_FILE))
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[name], actual[name]) for name in expected)


def test_more_epochs_extend_a_finished_run(toy: Path, tmp_path: Path) -> None:
    output = tmp_path / "extend"
    train(_config(toy, output, epochs=1), progress=False)
    seen: list[int] = []
    train(_config(toy, output, epochs=2), progress=False, on_epoch_end=lambda e, _: seen.append(e))
    assert seen == [2]
    assert [line["epoch"] for line in _log(output)] == [1, 2]


def test_a_different_run_in_the_same_folder_is_refused(toy: Path, tmp_path: Path) -> None:
    output = tmp_path / "clash"
    train(_config(toy, output, epochs=1), progress=False)
    with pytest.raises(TrainingError, match="different run"):
        train(_config(toy, output, epochs=1, lr=1e-2), progress=False)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    model_commands.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_trains_and_reports_bad_input_without_traceback(
    toy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--arch", "vit_tiny_patch16_224", "--input-size", "32", "--epochs", "1"]
    common += [
        "--model-kwargs",
        json.dumps(TINY_VIT),
        "--batch-size",
        "8",
        "--val-fraction",
        "0.25",
    ]
    common += ["--precision", "fp32", "--threads", "1", "--no-progress"]
    args = _parse(["train", "--data", str(toy), "--output", str(tmp_path / "cli"), *common])
    assert args.func(args) == 0
    assert load_checkpoint(tmp_path / "cli").spec.trained
    assert load_checkpoint(tmp_path / "cli").spec.training["config"]["class_balanced"] is True

    plain = ["--no-class-balance", "--teacher", "resnet10t", "--teacher-epochs", "1"]
    args = _parse(["train", "--data", str(toy), "--output", str(tmp_path / "p"), *common, *plain])
    assert args.func(args) == 0
    config = load_checkpoint(tmp_path / "p").spec.training["config"]
    assert config["class_balanced"] is False
    assert config["teacher_architecture"] == "resnet10t"

    args = _parse(["train", "--data", str(tmp_path / "nothing"), "--output", str(tmp_path / "x")])
    assert args.func(args) == 2
    error = capsys.readouterr().err
    assert "No manifest.csv" in error
    assert "Traceback" not in error


def test_windows_are_presets_or_explicit() -> None:
    assert parse_window("brain") == WindowSpec(name="brain", center=40, width=80)
    assert parse_window("kaggle=36/150") == WindowSpec(name="kaggle", center=36, width=150)
    for bad in ("wide", "x=40/0", "x=40"):
        with pytest.raises(TrainingError, match="neither a preset"):
            parse_window(bad)
    spec = build_spec(TrainConfig(data_dir=Path("unused")))
    assert [(w.center, w.width) for w in spec.windows] == [(36.0, 150.0)]


def test_distillation_loss_mixes_labels_and_teacher() -> None:
    base = torch.nn.CrossEntropyLoss()
    student = torch.tensor([[2.0, -1.0], [0.5, 0.2], [-1.0, 1.5]])
    targets = torch.tensor([0, 1, 1])
    disagreeing = torch.tensor([[-3.0, 3.0], [3.0, -3.0], [3.0, -3.0]])
    label_loss = base(student, targets)
    only_labels = distillation_loss(
        student, disagreeing, targets, base_loss=base, mode="hard", weight=0.0
    )
    assert torch.isclose(only_labels, label_loss)
    hard = distillation_loss(student, disagreeing, targets, base_loss=base, mode="hard", weight=0.5)
    expected = 0.5 * label_loss + 0.5 * base(student, torch.tensor([1, 0, 0]))
    assert torch.isclose(hard, expected)
    same = distillation_loss(
        student, student, targets, base_loss=base, mode="soft", weight=1.0, temperature=3.0
    )
    assert abs(float(same)) < 1e-6
    soft = distillation_loss(
        student, disagreeing, targets, base_loss=base, mode="soft", weight=1.0, temperature=3.0
    )
    assert float(soft) > 0.1
    with pytest.raises(DistillationError, match="weight"):
        distillation_loss(student, student, targets, base_loss=base, mode="hard", weight=1.5)


def test_a_cnn_teacher_is_trained_once_and_recorded(toy: Path, tmp_path: Path) -> None:
    output = tmp_path / "distilled"
    config = _config(toy, output, epochs=1, teacher_architecture="resnet10t", teacher_epochs=1)
    train(config, progress=False)
    assert (output / TEACHER_FILE).is_file()
    spec = load_checkpoint(output).spec
    assert spec.architecture == "vit_tiny_patch16_224"
    teacher = spec.training["teacher"]
    assert teacher["architecture"] == "resnet10t"
    assert teacher["epochs"] == 1
    assert math.isfinite(teacher["final_train_loss"])
    # Extending the run reuses the saved teacher instead of training it again.
    train(replace(config, epochs=2), progress=False)
    assert [line["epoch"] for line in _log(output)] == [1, 2]
    with pytest.raises(DistillationError, match="cannot build the teacher"):
        train(_config(toy, tmp_path / "bad", teacher_architecture="no_such_cnn"), progress=False)


def test_learning_rate_warms_up_then_decays_to_zero() -> None:
    factors = [warmup_cosine_factor(step, warmup_steps=4, total_steps=12) for step in range(13)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(factors[3:]))
    assert factors[8] == pytest.approx(0.5)
    assert factors[12] == pytest.approx(0.0)


def test_a_chosen_aggregation_rule_is_kept_with_its_own_threshold(
    toy: Path, tmp_path: Path
) -> None:
    for rule in ("max", "mean"):
        directory = train(_config(toy, tmp_path / rule, epochs=1, aggregation=rule), progress=False)
        spec = load_checkpoint(directory).spec
        assert spec.aggregation.rule == rule
        validation = spec.metrics["validation_series"]
        assert validation["recall"] >= 0.95 and spec.metrics["validation_patients"] > 0
