"""The `train` and `cross-validate` options are made from TrainConfig's fields."""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

from model.training import commands as model_commands
from model.training.config import TrainConfig, cli_fields
from tests.helpers import REPO_ROOT

FLAGS = {
    "--data", "--arch", "--input-size", "--model-kwargs", "--epochs", "--batch-size", "--lr",
    "--weight-decay", "--warmup-epochs", "--patience", "--early-stopping", "--augment",
    "--channel-mode", "--window", "--shuffle-slice-order", "--no-class-balance", "--seed",
    "--device", "--precision", "--val-fraction", "--threads", "--limit", "--version",
    "--teacher", "--teacher-epochs", "--distillation", "--distill-weight",
    "--distill-temperature", "--objective", "--bag-size", "--bag-top-k", "--pretrain-epochs",
    "--pretrain-mask-ratio", "--init", "--layer-decay", "--freeze-blocks", "--top-k",
    "--slice-labels", "--slice-label-column", "--backbone-tuning", "--backbone-cut",
    "--feature-cache", "--cv-folds", "--cv-bootstrap", "--aggregation", "--finding",
    "--slice-thickness-mm",
}  # fmt: skip
"""The option names the README, the model card and the weights' README use."""


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    model_commands.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_the_options_keep_their_names() -> None:
    assert {item.option.flag for item in cli_fields()} == FLAGS
    for command in ("train", "cross-validate"):
        parser = argparse.ArgumentParser()
        model_commands.register(parser.add_subparsers(dest="command"))
        sub = parser._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
        flags = {flag for action in sub._actions for flag in action.option_strings}
        assert flags >= FLAGS | {"--no-progress", "--output"}


def test_unset_options_take_the_config_defaults() -> None:
    args = _parse(["train", "--data", "somewhere"])
    config = model_commands._train_config(args, args.output)
    assert config == TrainConfig(data_dir=Path("somewhere"))


def test_every_option_reaches_its_field() -> None:
    argv = "train --data d --output o --arch resnet18 --input-size 64 --epochs 3 --batch-size 4"
    argv += " --lr 0.01 --weight-decay 0 --warmup-epochs 0 --patience 2 --early-stopping val_auc"
    argv += " --augment full --channel-mode adjacent --window brain --window kaggle=36/150"
    argv += " --shuffle-slice-order --no-class-balance --seed 7 --device cpu --precision bf16"
    argv += " --val-fraction 0.2 --threads 2 --limit 50 --version v1 --teacher resnet10t"
    argv += " --teacher-epochs 1 --distillation soft --distill-weight 0.3"
    argv += " --distill-temperature 2 --objective bag --bag-size 4 --bag-top-k 1"
    argv += " --pretrain-epochs 5 --pretrain-mask-ratio 0.5"
    argv += " --init weights.safetensors --layer-decay 0.75 --freeze-blocks 2 --top-k 3"
    argv += " --slice-labels s.csv --slice-label-column haemorrhage_by_rank"
    argv += " --backbone-tuning tail --backbone-cut 5 --feature-cache c --cv-folds 3"
    argv += " --cv-bootstrap 10 --aggregation max --finding ich --slice-thickness-mm 5"
    args = _parse([*argv.split(), "--model-kwargs", '{"depth": 2}'])
    config = model_commands._train_config(args, args.output)
    defaults = TrainConfig(data_dir=Path())
    changed = {
        item.name
        for item in fields(TrainConfig)
        if getattr(config, item.name) != getattr(defaults, item.name)
    }
    assert changed == {item.name for item in cli_fields()} | {"output_dir"}
    assert config.model_kwargs == {"depth": 2}
    assert config.windows == ["brain", "kaggle=36/150"]
    assert config.class_balanced is False and config.shuffle_slice_order is True
    assert config.num_threads == 2 and config.teacher_architecture == "resnet10t"


def test_building_the_options_imports_no_torch() -> None:
    code = (
        "import sys, argparse; from model.training import commands as model_commands; "
        "p = argparse.ArgumentParser(); "
        "model_commands.register(p.add_subparsers()); "
        "bad = [m for m in ('torch', 'timm') if m in sys.modules]; "
        "print(bad); raise SystemExit(1 if bad else 0)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
