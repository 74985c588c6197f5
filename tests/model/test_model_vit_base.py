"""The paper's ViT-base/16 path stays usable (for sites with a GPU): build, save, load, run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from model.checkpoint import load_checkpoint, random_spec, save_checkpoint
from model.inference import Classifier
from model.network import build_network
from model.training.config import TrainConfig


def test_default_training_architecture_is_the_papers() -> None:
    assert TrainConfig(data_dir=Path("."), output_dir=Path(".")).architecture == (
        "vit_base_patch16_224"
    )


def test_vit_base_round_trips_and_predicts(tmp_path: Path) -> None:
    spec = random_spec().model_copy(
        update={"architecture": "vit_base_patch16_224", "input_size": 224, "model_kwargs": {}}
    )
    torch.manual_seed(0)
    network = build_network(spec)
    assert sum(p.numel() for p in network.parameters()) > 85_000_000  # 768-d, 12 layers
    save_checkpoint(tmp_path / "base", network, spec)
    loaded = load_checkpoint(tmp_path / "base")
    classifier = Classifier(loaded, device="cpu", precision="bf16", batch_size=2)
    batch = np.random.default_rng(0).normal(size=(2, 3, 224, 224)).astype(np.float32)
    probabilities = classifier.predict_probabilities(batch)
    assert probabilities.shape == (2,)
    assert np.all((probabilities >= 0) & (probabilities <= 1))
