"""`train --init`: fine-tuning starts from local weights, frozen blocks stay, lr decays by layer."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from model.checkpoint import WEIGHTS_FILE, load_checkpoint, save_checkpoint
from model.importing.files import file_sha256
from model.network import build_network
from model.training.config import TrainConfig, TrainingError, build_spec
from model.training.data import write_synthetic_dataset
from model.training.finetune import freeze_blocks, initial_network, parameter_groups
from model.training.train import train
from tests.model.tiny import tiny_config

TWO_BLOCKS = {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 8}


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(
        tmp_path_factory.mktemp("toy"), patients_per_class=3, slices_per_patient=4, size=48
    )


def _config(data: Path, output: Path, **changes: Any) -> TrainConfig:
    config = tiny_config(data, output, model_kwargs=dict(TWO_BLOCKS), epochs=1, seed=3)
    return replace(config, **changes)


@pytest.fixture
def init_checkpoint(toy: Path, tmp_path: Path) -> Path:
    spec = build_spec(_config(toy, tmp_path))
    torch.manual_seed(123)  # other weights than the run's own seed would give
    return save_checkpoint(tmp_path / "init", build_network(spec), spec)


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / WEIGHTS_FILE))


def test_fine_tuning_starts_from_the_given_checkpoint(
    toy: Path, tmp_path: Path, init_checkpoint: Path
) -> None:
    config = _config(toy, tmp_path / "run", init=init_checkpoint)
    network, _, record = initial_network(config, build_spec(config))
    reference = load_checkpoint(init_checkpoint).network
    images = torch.rand(3, 3, 32, 32)
    network.eval()
    with torch.no_grad():
        torch.testing.assert_close(network(images), reference(images), rtol=0, atol=0)
    assert record["head_reinitialised"] is False

    # With a learning rate of zero the run ends where it started: on the initial weights.
    directory = train(replace(config, lr=0.0), progress=False)
    before, after = _weights(init_checkpoint), _weights(directory)
    assert before.keys() == after.keys()
    for name in before:
        torch.testing.assert_close(after[name], before[name], rtol=0, atol=0, msg=name)
    init = load_checkpoint(directory).spec.training["init"]
    assert init["sha256"] == file_sha256(init_checkpoint / WEIGHTS_FILE)
    assert init["file_name"] == "init/model.safetensors"
    assert load_checkpoint(directory).spec.training["config"]["init"] == "init"


def test_frozen_blocks_do_not_change(toy: Path, tmp_path: Path, init_checkpoint: Path) -> None:
    config = _config(toy, tmp_path / "run", init=init_checkpoint, freeze_blocks=1, lr=5e-3)
    after = _weights(train(config, progress=False))
    before = _weights(init_checkpoint)
    frozen = [n for n in before if n.startswith(("blocks.0.", "patch_embed.", "cls_token", "pos"))]
    assert len(frozen) > 10
    for name in frozen:
        torch.testing.assert_close(after[name], before[name], rtol=0, atol=0, msg=name)
    assert not torch.equal(after["blocks.1.mlp.fc1.weight"], before["blocks.1.mlp.fc1.weight"])
    assert not torch.equal(after["head.weight"], before["head.weight"])


def test_a_head_with_another_class_count_is_reinitialised(toy: Path, tmp_path: Path) -> None:
    torch.manual_seed(5)
    source = timm.create_model(
        "vit_tiny_patch16_224", num_classes=1000, img_size=64, **TWO_BLOCKS
    )  # an "ImageNet" model made for another input size
    weights = tmp_path / "imagenet.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, weights)
    config = _config(toy, tmp_path / "run", init=weights)
    network, _, record = initial_network(config, build_spec(config))
    assert record == {
        "file_name": "imagenet.safetensors",
        "sha256": file_sha256(weights),
        "head_reinitialised": True,
    }
    loaded = network.state_dict()
    assert loaded["head.weight"].shape == (2, 32)
    torch.testing.assert_close(loaded["blocks.1.attn.qkv.weight"], source.blocks[1].attn.qkv.weight)
    assert loaded["pos_embed"].shape == (1, 17, 32), "resampled from 64 px to 32 px"


def test_an_init_of_another_architecture_is_refused(toy: Path, tmp_path: Path) -> None:
    spec = build_spec(_config(toy, tmp_path, model_kwargs={**TWO_BLOCKS, "depth": 3}))
    other = save_checkpoint(tmp_path / "deep", build_network(spec), spec)
    config = _config(toy, tmp_path / "run", init=other)
    with pytest.raises(TrainingError, match="--model-kwargs"):
        initial_network(config, build_spec(config))


def test_layer_decay_scales_the_learning_rate_by_depth(toy: Path, tmp_path: Path) -> None:
    config = _config(toy, tmp_path / "run", layer_decay=0.5, lr=1e-3)
    network = build_network(build_spec(config))
    groups = parameter_groups(network, config)
    assert groups is not None
    rates = sorted({group["lr"] for group in groups})
    # Embedding, two blocks and the head: four layers, 0.5 apart.
    assert rates == pytest.approx([1e-3 * 0.5**3, 1e-3 * 0.5**2, 1e-3 * 0.5, 1e-3])
    head = next(g for g in groups if any(p is network.head.weight for p in g["params"]))
    assert head["lr"] == pytest.approx(1e-3)
    freeze_blocks(network, 2)
    trainable = {id(p) for g in parameter_groups(network, config) or [] for p in g["params"]}
    assert id(network.blocks[1].mlp.fc1.weight) not in trainable
    assert id(network.head.weight) in trainable
    directory = train(replace(config, freeze_blocks=1), progress=False)
    assert load_checkpoint(directory).spec.training["config"]["layer_decay"] == 0.5
