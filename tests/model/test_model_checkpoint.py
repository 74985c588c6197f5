"""Checkpoint save/load round trip, the random checkpoint, and the spec."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from model.aggregate import aggregate
from model.checkpoint import (
    SPEC_FILE,
    WEIGHTS_FILE,
    create_random_checkpoint,
    load_checkpoint,
    random_spec,
    save_checkpoint,
)
from model.errors import CheckpointError, CheckpointNotFoundError
from model.network import build_network
from model.spec import ChannelMode, ModelSpec, Window, WindowSpec


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return create_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "random", seed=3)


def test_random_checkpoint_is_tiny_and_loads(random_checkpoint: Path) -> None:
    assert (random_checkpoint / WEIGHTS_FILE).stat().st_size < 1_000_000
    loaded = load_checkpoint(random_checkpoint)
    assert loaded.spec.trained is False
    assert loaded.spec.version == "random-untrained"
    assert loaded.spec.channel_mode is ChannelMode.REPLICATE
    assert loaded.spec.window_objects() == [Window(40.0, 80.0)]
    assert not loaded.network.training


def test_round_trip_gives_identical_outputs(random_checkpoint: Path, tmp_path: Path) -> None:
    first = load_checkpoint(random_checkpoint)
    copy = save_checkpoint(tmp_path / "copy", first.network, first.spec)
    second = load_checkpoint(copy)
    assert second.spec == first.spec
    assert second.sha256 == first.sha256
    assert len(first.sha256) == 64
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(first.network(x), second.network(x))
    assert not list(copy.glob(".*tmp"))


def test_random_checkpoint_is_deterministic_per_seed(tmp_path: Path) -> None:
    a = load_checkpoint(create_random_checkpoint(tmp_path / "a", seed=1)).sha256
    b = load_checkpoint(create_random_checkpoint(tmp_path / "b", seed=1)).sha256
    c = load_checkpoint(create_random_checkpoint(tmp_path / "c", seed=2)).sha256
    assert a == b != c


def test_missing_checkpoint_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match="stroke-triage train --data DIR"):
        load_checkpoint(tmp_path / "nowhere")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / SPEC_FILE).write_text(random_spec().to_json())
    with pytest.raises(CheckpointNotFoundError, match="STROKE_TRIAGE_WORKER__CHECKPOINT"):
        load_checkpoint(tmp_path / "half")


def test_mismatched_weights_raise_checkpoint_error(random_checkpoint: Path, tmp_path: Path) -> None:
    spec = random_spec()
    bigger = spec.model_copy(update={"model_kwargs": {"embed_dim": 96, "depth": 2, "num_heads": 2}})
    directory = save_checkpoint(tmp_path / "bad", build_network(spec), spec)
    (directory / SPEC_FILE).write_text(bigger.to_json())
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(directory)
    (directory / SPEC_FILE).write_text('{"architecture": 3}')
    with pytest.raises(CheckpointError, match="not a valid model spec"):
        load_checkpoint(directory)


def test_spec_json_round_trip_and_validation() -> None:
    spec = random_spec()
    assert ModelSpec.from_json(spec.to_json()) == spec
    data = json.loads(spec.to_json())
    assert data["format_version"] == 1
    assert data["aggregation"] == {"rule": "top_k_mean", "k": 5}
    with pytest.raises(ValidationError, match="exactly 3 window"):
        spec.model_validate({**data, "channel_mode": "multi_window"})
    with pytest.raises(ValidationError, match="positive class"):
        spec.model_validate({**data, "positive_class": "tumour"})
    with pytest.raises(ValidationError):
        spec.model_validate({**data, "threshold": 1.5})
    three = [
        WindowSpec(name=n, center=40, width=w).model_dump()
        for n, w in [("a", 80), ("b", 40), ("c", 8)]
    ]
    multi = ModelSpec.model_validate({**data, "channel_mode": "multi_window", "windows": three})
    assert [w.width for w in multi.window_objects()] == [80, 40, 8]


def test_aggregate_rules() -> None:
    probs = [0.1, 0.9, 0.5, 0.7]
    assert aggregate(probs, rule="max") == pytest.approx(0.9)
    assert aggregate(probs, rule="mean") == pytest.approx(0.55)
    assert aggregate(probs, rule="top_k_mean", k=2) == pytest.approx(0.8)
    assert aggregate(np.array(probs), rule="top_k_mean", k=10) == pytest.approx(0.55)
    with pytest.raises(ValueError, match="empty"):
        aggregate([], rule="mean")
    with pytest.raises(ValueError, match="Unknown aggregation rule"):
        aggregate(probs, rule="median")
