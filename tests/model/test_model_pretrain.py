"""Masked-autoencoder pretraining: what it sees, what it changes, and how a run records it."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from torch.utils.data import TensorDataset

from model.checkpoint import load_checkpoint
from model.training.data import write_synthetic_dataset
from model.training.pretrain import (
    PRETRAINED_FILE,
    MaskedAutoencoder,
    PretrainError,
    patchify,
    pretrain_encoder,
)
from model.training.train import train
from tests.model.tiny import TINY_VIT, tiny_config


def _vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=2, img_size=32, **TINY_VIT
    )


def test_patchify_keeps_each_patch_together_in_raster_order() -> None:
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    patches = patchify(images, 2)
    assert patches.shape == (2, 4, 12)
    # Patch 1 is the top-right 2x2 block; values are interleaved channel-last.
    top_right = images[0, :, 0:2, 2:4].permute(1, 2, 0).reshape(-1)
    assert torch.equal(patches[0, 1], top_right)


def test_the_loss_counts_hidden_patches_only_and_trains_the_encoder() -> None:
    vit = _vit()
    model = MaskedAutoencoder(vit)
    images = torch.rand(4, 3, 32, 32)
    loss = model(images, mask_ratio=0.75, generator=torch.Generator().manual_seed(1))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert vit.patch_embed.proj.weight.grad is not None
    assert vit.blocks[0].attn.qkv.weight.grad is not None
    assert vit.head.weight.grad is None
    again = MaskedAutoencoder(_vit())(
        images, mask_ratio=0.75, generator=torch.Generator().manual_seed(1)
    )
    assert again.item() == pytest.approx(loss.item(), rel=1e-4)


def test_pretraining_lowers_the_reconstruction_loss_and_leaves_the_head_alone() -> None:
    vit = _vit()
    head = vit.head.weight.detach().clone()
    block = vit.blocks[0].mlp.fc1.weight.detach().clone()
    # A learnable structure: smooth gradients with a random direction per image.
    ramp = torch.linspace(0, 1, 32)
    angles = torch.rand(64)
    images = (
        torch.cos(angles)[:, None, None] * ramp[None, :, None]
        + torch.sin(angles)[:, None, None] * ramp[None, None, :]
    )
    dataset = TensorDataset(images[:, None].expand(-1, 3, -1, -1).contiguous(), torch.zeros(64))
    summary = pretrain_encoder(
        vit,
        dataset,  # type: ignore[arg-type]
        epochs=8,
        batch_size=16,
        lr=3e-3,
        weight_decay=0.0,
        mask_ratio=0.75,
        seed=0,
        device=torch.device("cpu"),
        precision="fp32",
    )
    assert summary["final_loss"] < 0.7 * summary["first_loss"]
    assert torch.equal(vit.head.weight, head)
    assert not torch.equal(vit.blocks[0].mlp.fc1.weight, block)


def test_a_hybrid_or_non_vit_network_is_refused() -> None:
    hybrid = timm.create_model(
        "vit_tiny_r_s16_p8_224", pretrained=False, num_classes=2, img_size=64, depth=1
    )
    with pytest.raises(PretrainError, match="plain ViT"):
        MaskedAutoencoder(hybrid)
    with pytest.raises(PretrainError, match="VisionTransformer"):
        MaskedAutoencoder(torch.nn.Linear(2, 2))


def test_a_run_pretrains_once_and_records_it(tmp_path: Path) -> None:
    data = write_synthetic_dataset(
        tmp_path / "toy", patients_per_class=3, slices_per_patient=4, size=48
    )
    config = tiny_config(
        data,
        tmp_path / "run",
        epochs=1,
        augmentation="none",
        val_fraction=0.34,
        pretrain_epochs=2,
    )
    train(config, progress=False)
    saved = config.output_dir / PRETRAINED_FILE
    assert saved.is_file()
    stamp = saved.stat().st_mtime_ns
    pretraining = load_checkpoint(config.output_dir).spec.training["pretraining"]
    assert pretraining["method"] == "masked autoencoder"
    assert pretraining["epochs"] == 2
    # Extending the finished run does not pretrain again.
    config.epochs = 2
    train(config, progress=False)
    assert saved.stat().st_mtime_ns == stamp
    assert load_checkpoint(config.output_dir).spec.training["pretraining"] == pretraining
