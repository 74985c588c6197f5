"""A plain timm state dict: what it says about the network it belongs to."""

from __future__ import annotations

import math
from typing import Any

import timm
import torch
from timm.models.vision_transformer import VisionTransformer

from model.importing.errors import ModelImportError

SUPPORTED = "a plain timm VisionTransformer (vit_*) with a class token"


def check_architecture(architecture: str) -> None:
    """Refuse timm names that are not a plain ViT before anything is read or built.

    Raises:
        ModelImportError: If timm does not know the name, or it is Swin, ConvNeXt, a distilled
            DeiT or anything else that is not a plain ViT.
    """
    if not timm.is_model(architecture):
        raise ModelImportError(
            f"timm has no architecture named {architecture!r}; supported is {SUPPORTED}."
        )
    family = timm.models.is_model_in_modules(architecture, ["vision_transformer", "deit"])
    if not family or "distilled" in architecture:
        what = "a DeiT with a distillation head" if "distilled" in architecture else "not a ViT"
        raise ModelImportError(f"{architecture!r} is {what}; supported is {SUPPORTED}.")


def check_network(network: torch.nn.Module, architecture: str) -> None:
    """Refuse networks that are not exactly timm's ``VisionTransformer`` with token pooling.

    Raises:
        ModelImportError: For Swin, ConvNeXt, DeiT with a distillation head, and the like.
    """
    kind = type(network).__name__
    if type(network) is not VisionTransformer:
        raise ModelImportError(
            f"{architecture!r} builds a {kind}; supported is {SUPPORTED}"
            + (" (distilled heads are not)." if "Distilled" in kind else ".")
        )


def num_classes(tensors: dict[str, torch.Tensor]) -> int:
    """Rows of the classifier head.

    Raises:
        ModelImportError: If there is no 2-D ``head.weight`` (a backbone without classifier).
    """
    head = tensors.get("head.weight")
    if head is None or head.ndim != 2:
        raise ModelImportError(
            "The state dict has no classifier (head.weight): it is a backbone, not a stroke "
            "classifier. Fine-tune it with `stroke-triage train --init FILE` instead."
        )
    return int(head.shape[0])


def input_size(tensors: dict[str, torch.Tensor], model_kwargs: dict[str, Any]) -> int:
    """The square input size the position embedding was made for.

    Raises:
        ModelImportError: If the patch embedding or position embedding is missing or odd.
    """
    proj, pos = tensors.get("patch_embed.proj.weight"), tensors.get("pos_embed")
    if proj is None or pos is None or proj.ndim != 4 or pos.ndim != 3:
        raise ModelImportError(
            "The state dict has no patch_embed.proj.weight or pos_embed of a ViT; pass "
            "--input-size or check that the file is a timm ViT state dict."
        )
    patch = int(proj.shape[-1])
    prefix = 0 if model_kwargs.get("no_embed_class") else 1 + int(model_kwargs.get("reg_tokens", 0))
    tokens = int(pos.shape[1]) - prefix
    grid = math.isqrt(max(tokens, 0))
    if grid * grid != tokens:
        raise ModelImportError(
            f"pos_embed holds {pos.shape[1]} tokens, not a square grid plus a class token; pass "
            "--input-size and --model-kwargs."
        )
    return grid * patch
