"""The same command and seed give the same checkpoint: what the model card promises."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.checkpoint import load_checkpoint
from model.training.data import write_synthetic_dataset
from model.training.train import train
from tests.model.tiny import tiny_config


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(
        tmp_path_factory.mktemp("toy-repro"), patients_per_class=3, slices_per_patient=3, size=40
    )


def _run(data: Path, output: Path, *, seed: int) -> str:
    config = tiny_config(data, output, batch_size=4, val_fraction=0.34, precision="bf16", seed=seed)
    return load_checkpoint(train(config, progress=False)).sha256


def test_same_seed_same_weights_other_seed_other_weights(toy: Path, tmp_path: Path) -> None:
    first = _run(toy, tmp_path / "a", seed=3)
    assert _run(toy, tmp_path / "b", seed=3) == first
    assert _run(toy, tmp_path / "c", seed=4) != first
