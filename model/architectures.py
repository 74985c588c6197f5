"""Names of the architectures stroke-triage assembles itself (not timm names); no torch here."""

from __future__ import annotations

HYBRID_LITE0 = "vit_hybrid_efficientnet_lite0"
"""A timm ViT whose patch embedding is timm's ``HybridEmbed`` over EfficientNet-Lite0 features.

:func:`model.network.build_network` assembles it from timm parts. Its ``model_kwargs`` go to
timm's ``VisionTransformer`` (``embed_dim``, ``depth``, ``num_heads``, ``global_pool``, ...)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""The normalisation the hybrid's ImageNet-pretrained backbone was trained with."""
