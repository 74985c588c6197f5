"""Masked-autoencoder pretraining (He et al., 2022) of the classifier's own ViT encoder.

Before it sees a label, the encoder learns to fill in the 75 % of a slice's patches that it
does not see, from the 25 % that it does. Only the slices it will later be trained on take part
(the images, not their labels), so cross-validation stays honest. A small decoder, thrown away
afterwards, predicts each hidden patch's pixels, normalised per patch.

It needs a plain ViT (one class token, learned position embeddings, patch embedding by one
strided convolution): a convolutional stem would let hidden patches leak into visible ones.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn
from torch.utils.data import Dataset

from model.device import autocast
from model.errors import ModelError
from model.training.config import TrainConfig, TrainingError
from model.training.loop import batches, optimiser, train_epoch
from model.training.state import atomic_torch_save, load_own

logger = logging.getLogger(__name__)

PRETRAINED_FILE = "pretrained.pt"


class PretrainError(ModelError):
    """The network cannot be pretrained as a masked autoencoder."""


def check_encoder(network: nn.Module) -> VisionTransformer:
    """The network as a plain timm ViT, or a clear error saying why it is not one."""
    if not isinstance(network, VisionTransformer):
        raise PretrainError(
            f"Masked-autoencoder pretraining needs a timm VisionTransformer, "
            f"got {type(network).__name__}."
        )
    if (
        network.cls_token is None
        or network.num_prefix_tokens != 1
        or network.no_embed_class
        or network.pos_embed is None
        or type(network.patch_embed).__name__ != "PatchEmbed"
        or not isinstance(getattr(network.patch_embed, "proj", None), nn.Conv2d)
    ):
        raise PretrainError(
            "Masked-autoencoder pretraining needs a plain ViT: one class token, learned "
            "position embeddings and a single-convolution patch embedding (no hybrid stem)."
        )
    return network


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """``(B, C, H, W)`` to ``(B, L, patch * patch * C)``, patches in raster order."""
    b, c, h, w = images.shape
    grid = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return grid.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


class MaskedAutoencoder(nn.Module):
    """The classifier's encoder with a light decoder for pixel reconstruction."""

    def __init__(
        self, encoder: nn.Module, *, decoder_dim: int = 64, decoder_depth: int = 2
    ) -> None:
        super().__init__()
        self.encoder = check_encoder(encoder)
        patch_size = self.encoder.patch_embed.patch_size
        self.patch = int(patch_size[0])
        self.num_patches = int(self.encoder.patch_embed.num_patches)
        self.decoder_embed = nn.Linear(self.encoder.embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos = nn.Parameter(torch.zeros(1, self.num_patches + 1, decoder_dim))
        self.decoder = nn.Sequential(
            *[Block(decoder_dim, num_heads=4, qkv_bias=True) for _ in range(decoder_depth)]
        )
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        in_chans = int(self.encoder.patch_embed.proj.in_channels)
        self.predict = nn.Linear(decoder_dim, self.patch * self.patch * in_chans)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.decoder_pos, std=0.02)

    def forward(
        self, images: torch.Tensor, *, mask_ratio: float, generator: torch.Generator
    ) -> torch.Tensor:
        """The mean squared error of the normalised pixels of the hidden patches."""
        encoder = self.encoder
        tokens = encoder.patch_embed(images)
        batch, length, dim = tokens.shape
        pos = encoder.pos_embed
        cls_token = encoder.cls_token
        assert pos is not None and cls_token is not None  # check_encoder made sure
        tokens = tokens + pos[:, 1:]
        keep = max(1, round(length * (1.0 - mask_ratio)))
        noise = torch.rand(batch, length, generator=generator).to(images.device)
        shuffle = torch.argsort(noise, dim=1)
        restore = torch.argsort(shuffle, dim=1)
        kept = shuffle[:, :keep]
        visible = torch.gather(tokens, 1, kept[..., None].expand(-1, -1, dim))
        cls = (cls_token + pos[:, :1]).expand(batch, -1, -1)
        latent = encoder.norm(encoder.blocks(encoder.norm_pre(torch.cat([cls, visible], 1))))

        decoded = self.decoder_embed(latent)
        masks = self.mask_token.expand(batch, length - keep, -1)
        full = torch.cat([decoded[:, 1:], masks], dim=1)
        full = torch.gather(full, 1, restore[..., None].expand(-1, -1, full.shape[-1]))
        full = torch.cat([decoded[:, :1], full], dim=1) + self.decoder_pos
        predicted = self.predict(self.decoder_norm(self.decoder(full)))[:, 1:]

        target = patchify(images, self.patch)
        mean = target.mean(dim=-1, keepdim=True)
        variance = target.var(dim=-1, keepdim=True)
        target = (target - mean) / torch.sqrt(variance + 1e-6)
        hidden = torch.ones(batch, length, device=images.device)
        hidden[:, :keep] = 0.0
        hidden = torch.gather(hidden, 1, restore)
        error = ((predicted.float() - target) ** 2).mean(dim=-1)
        loss: torch.Tensor = (error * hidden).sum() / hidden.sum()
        return loss


def pretrain_encoder(
    network: nn.Module,
    dataset: Dataset[tuple[torch.Tensor, int]],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    mask_ratio: float,
    seed: int,
    device: torch.device,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Pretrains ``network`` in place (its classification head is left untouched).

    Args:
        network: The classifier, a plain timm ViT.
        dataset: Its training slices; the labels are not used.
        epochs: Passes over the slices.
        batch_size: Slices per step.
        lr: Peak learning rate (linear warm-up over the first epoch, then cosine).
        weight_decay: AdamW weight decay.
        mask_ratio: Share of patches hidden from the encoder.
        seed: Seeds the masks and the order of slices.
        device: Where to train.
        precision: ``bf16`` for autocast, else fp32.

    Returns:
        A summary for the checkpoint's spec: epochs, mask ratio, first and last loss.
    """
    if epochs < 1 or not 0.0 < mask_ratio < 1.0:
        raise PretrainError(f"Need epochs >= 1 and 0 < mask_ratio < 1, got {epochs}, {mask_ratio}.")
    model = MaskedAutoencoder(network).to(device)
    steps_per_epoch = math.ceil(len(dataset) / batch_size)  # type: ignore[arg-type]
    optimizer, scheduler = optimiser(
        model.parameters(),
        lr=lr,
        weight_decay=weight_decay,
        warmup_steps=steps_per_epoch,
        total_steps=epochs * steps_per_epoch,
    )
    generator = torch.Generator().manual_seed(seed)

    def step_loss(images: torch.Tensor, _targets: torch.Tensor) -> torch.Tensor:
        with autocast(device, precision):
            loss: torch.Tensor = model(images, mask_ratio=mask_ratio, generator=generator)
        return loss

    losses: list[float] = []
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        order = torch.randperm(len(dataset), generator=generator).tolist()  # type: ignore[arg-type]
        losses.append(
            train_epoch(
                model,
                batches(dataset, order, batch_size),
                step_loss=step_loss,
                optimizer=optimizer,
                scheduler=scheduler,
                device=device,
            )
        )
        logger.info(
            "Pretraining epoch %s/%s: reconstruction loss %.4f (%.1f s)",
            epoch,
            epochs,
            losses[-1],
            time.perf_counter() - started,
        )
    return {
        "method": "masked autoencoder",
        "epochs": epochs,
        "mask_ratio": mask_ratio,
        "first_loss": losses[0],
        "final_loss": losses[-1],
    }


def prepare_pretraining(
    config: TrainConfig,
    network: nn.Module,
    train_set: Dataset[tuple[torch.Tensor, int]],
    *,
    path: Path,
    resumed: bool,
    device: torch.device,
    precision: str,
) -> dict[str, Any] | None:
    """Pretrains the encoder once; ``pretrained.pt`` keeps it for a run that resumes.

    Returns:
        The pretraining summary for the spec, or None when the config asks for none.
    """
    if config.pretrain_epochs <= 0:
        return None
    check_encoder(network)
    if path.is_file():
        saved = load_own(path)
        if not resumed:  # a resumed run already holds these weights, trained further
            network.load_state_dict(saved["model"])
        summary: dict[str, Any] = saved["summary"]
        return summary
    if resumed:
        raise TrainingError(f"{path} is missing, so this run cannot resume; start a new one.")
    summary = pretrain_encoder(
        network,
        train_set,
        epochs=config.pretrain_epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        weight_decay=config.weight_decay,
        mask_ratio=config.pretrain_mask_ratio,
        seed=config.seed,
        device=device,
        precision=precision,
    )
    atomic_torch_save({"model": network.state_dict(), "summary": summary}, path)
    return summary
