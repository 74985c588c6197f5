"""A checkpoint's spec records its training data relative to the data root, never absolutely."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

from model.checkpoint import DEFAULT_CHECKPOINT_DIR, SPEC_FILE, load_checkpoint
from model.training.config import recorded_command, recorded_data_dir
from model.training.data import write_synthetic_dataset
from model.training.train import train
from tests.model.tiny import tiny_config


def test_the_data_folder_is_recorded_by_its_name_under_the_data_root() -> None:
    assert recorded_data_dir(Path("/srv/data/brain-stroke-ct")) == "brain-stroke-ct"
    assert recorded_data_dir("../shared/data/brain-stroke-ct/") == "brain-stroke-ct"
    command = recorded_command(
        ["/opt/venv/bin/stroke-triage", "train", "--data", "/srv/data/ct", "--epochs", "3"],
        Path("/srv/data/ct"),
    )
    assert command == "stroke-triage train --data ct --epochs 3"
    assert recorded_command(["st", "train", "--data=/srv/data/ct"], "/srv/data/ct") == (
        "st train --data=ct"
    )


def test_a_trained_spec_holds_no_path_of_the_training_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_synthetic_dataset(
        tmp_path / "root" / "toy-set", patients_per_class=3, slices_per_patient=4, size=48
    )
    output = tmp_path / "run"
    argv = [str(tmp_path / "bin" / "stroke-triage"), "train", "--data", str(data)]
    monkeypatch.setattr(sys, "argv", argv)
    train(tiny_config(data, output, epochs=1, val_fraction=0.34), progress=False)
    training = load_checkpoint(output).spec.training
    assert training["config"]["data_dir"] == "toy-set"
    assert training["command"] == "stroke-triage train --data toy-set"
    assert str(tmp_path / "root") not in (output / SPEC_FILE).read_text()


def test_the_shipped_spec_records_its_data_relative_to_the_data_root() -> None:
    spec_path = DEFAULT_CHECKPOINT_DIR / SPEC_FILE
    if not spec_path.is_file():
        pytest.skip("no checkpoint is shipped in model/weights")
    training = json.loads(spec_path.read_text())["training"]
    assert not Path(training["config"]["data_dir"]).is_absolute()
    words = shlex.split(training["command"])
    assert not Path(words[words.index("--data") + 1]).is_absolute()
    assert not Path(words[0]).is_absolute()
