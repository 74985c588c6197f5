"""Build the Vision Transformer that a spec describes."""

from __future__ import annotations

from functools import partial
from typing import Any

import timm
from torch import nn

from model.spec import ModelSpec


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
