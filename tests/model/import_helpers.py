"""Small random models of the source frameworks, and real slices, for the import tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from model.importing.importer import ImportOptions
from model.spec import AggregationSpec, ChannelMode, WindowSpec

OPTIONS = ImportOptions(
    windows=[WindowSpec(name="kaggle_jpeg", center=36.0, width=150.0)],
    channel_mode=ChannelMode.REPLICATE,
    aggregation=AggregationSpec(rule="top_k_mean", k=5),
    threshold=0.5,
)


def spread_weights(model: torch.nn.Module, seed: int = 0) -> None:
    """Random weights large enough that the outputs differ clearly between slices."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator) * 0.2
            scale = 1.0 if "norm" in name and name.endswith("weight") else 0.0
            parameter.copy_(noise + scale)


def hf_vit_folder(
    folder: Path,
    *,
    labels: list[str],
    image_size: int = 64,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 2,
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
    std: tuple[float, float, float] = (0.229, 0.224, 0.225),
    seed: int = 0,
    problem_type: str | None = None,
) -> Path:
    """A random ``ViTForImageClassification`` saved with ``save_pretrained``, with processor.

    ``problem_type`` (``multi_label_classification``: a sigmoid head) goes into its config."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden_size * 4,
        image_size=image_size,
        patch_size=16,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
        problem_type=problem_type,
    )
    torch.manual_seed(seed)
    model = ViTForImageClassification(config)
    spread_weights(model, seed)
    model.save_pretrained(folder)
    ViTImageProcessor(
        size={"height": image_size, "width": image_size}, image_mean=list(mean), image_std=list(std)
    ).save_pretrained(folder)
    return folder


def hf_probabilities(folder: Path, images: np.ndarray, index: int) -> np.ndarray:
    """Hugging Face's own processor and forward pass on 8-bit grayscale slices."""
    from transformers import ViTForImageClassification, ViTImageProcessor

    processor = ViTImageProcessor.from_pretrained(folder)
    model = ViTForImageClassification.from_pretrained(folder).eval()
    rgb = [np.repeat(image[:, :, None], 3, axis=2) for image in images]
    pixels = processor(images=rgb, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        logits = model(pixel_values=pixels).logits
    return torch.softmax(logits, dim=-1)[:, index].numpy()


def real_slices(shared_data: Path, size: int, count: int = 6) -> np.ndarray:
    """``count`` Kaggle JPEG slices (stroke and normal) resized to ``size`` px, uint8.

    Both sides get images already at the model's size, so neither framework resizes and the
    comparison is of normalisation and network alone.
    """
    root = shared_data / "brain-stroke-ct"
    paths = sorted((root / "Stroke").glob("*.jpg"))[: count // 2]
    paths += sorted((root / "Normal").glob("*.jpg"))[: count - len(paths)]
    images = [
        np.asarray(Image.open(path).convert("L").resize((size, size), Image.BILINEAR))
        for path in paths
    ]
    return np.stack(images).astype(np.uint8)
