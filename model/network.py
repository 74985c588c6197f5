"""Build the Vision Transformer that a spec describes."""

from __future__ import annotations

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
    network: nn.Module = timm.create_model(
        spec.architecture,
        pretrained=False,
        num_classes=len(spec.class_names),
        img_size=spec.input_size,
        in_chans=3,
        **spec.model_kwargs,
    )
    return network
