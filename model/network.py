"""Build the Vision Transformer that a spec describes."""

from __future__ import annotations

from functools import partial
from typing import Any

import timm
from timm.layers.hybrid_embed import HybridEmbed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from model.architectures import HYBRID_LITE0
from model.spec import ModelSpec

__all__ = ["BACKBONE", "HYBRID_LITE0", "build_backbone", "build_network"]

BACKBONE = "efficientnet_lite0"
"""The timm CNN under the hybrid ViT; its feature map (after ``conv_head``) is the token grid."""


def build_backbone() -> nn.Module:
    """EfficientNet-Lite0 without pooling or classifier: images to its 1280-channel map."""
    backbone: nn.Module = timm.create_model(
        BACKBONE, pretrained=False, num_classes=0, global_pool=""
    )
    return backbone


def build_network(spec: ModelSpec) -> nn.Module:
    """Create the untrained network for ``spec``; never downloads weights.

    Args:
        spec: Architecture name, input size, class names and extra timm kwargs.

    Returns:
        The network, in training mode as timm returns it.
    """
    extra: dict[str, Any] = {}
    if spec.layer_norm_eps is not None:
        extra["norm_layer"] = partial(nn.LayerNorm, eps=spec.layer_norm_eps)
    if spec.architecture == HYBRID_LITE0:
        return VisionTransformer(
            img_size=spec.input_size,
            patch_size=1,
            in_chans=3,
            num_classes=len(spec.class_names),
            embed_layer=partial(HybridEmbed, backbone=build_backbone()),
            **spec.model_kwargs,
            **extra,
        )
    network: nn.Module = timm.create_model(
        spec.architecture,
        pretrained=False,
        num_classes=len(spec.class_names),
        img_size=spec.input_size,
        in_chans=3,
        **spec.model_kwargs,
        **extra,
    )
    return network
