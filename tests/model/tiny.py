"""The tiny ViT training run that model tests share (seconds on one CPU thread)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from model.training.config import TrainConfig

TINY_VIT = {"embed_dim": 32, "depth": 1, "num_heads": 2, "patch_size": 8}
"""A one-block ViT with 16 tokens at 32 px."""


def tiny_config(data: Path, output: Path, **changes: Any) -> TrainConfig:
    """A 2-epoch fp32 CPU run of the tiny ViT at 32 px; ``changes`` override any field."""
    config = TrainConfig(
        data_dir=data,
        output_dir=output,
        architecture="vit_tiny_patch16_224",
        input_size=32,
        model_kwargs=dict(TINY_VIT),
        epochs=2,
        batch_size=8,
        lr=3e-3,
        warmup_epochs=1,
        patience=0,
        augmentation="light",
        val_fraction=0.25,
        precision="fp32",
        device="cpu",
        num_threads=1,
    )
    return replace(config, **changes)
