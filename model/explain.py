"""Heat maps of what a timm Vision Transformer looked at: Grad-CAM on its tokens.

The tokens entering the last transformer block are the target layer. With class-token pooling
only the class token leaves the last block, so the patch tokens reach the logit only through
that block's attention; its input (not its output) therefore carries useful gradients. This is
the usual choice for Grad-CAM on ViTs (``blocks[-1].norm1`` in pytorch-grad-cam).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pydicom
import torch
from torch import nn

from model.dicom import SortedSeries
from model.errors import ModelError
from model.inference import preprocess_sorted
from model.pixels import apply_window, input_alignment
from model.slabs import SlabLoader, classified_stack
from model.spec import ModelSpec, Window
from model.symmetry import unalign


class ExplainError(ModelError):
    """The network is not a ViT this module can explain, or the batch does not fit it."""


def explain(
    network: nn.Module, batch: np.ndarray | torch.Tensor, *, class_index: int = 1
) -> np.ndarray:
    """Grad-CAM heat maps of one class for a batch of network inputs.

    Pure: the network's parameters, gradients and mode are left as they were.

    Args:
        network: A timm ``VisionTransformer`` (``blocks``, ``patch_embed.grid_size``).
        batch: ``(N, C, H, W)`` preprocessed network input.
        class_index: The logit explained (the stroke class by default).

    Returns:
        ``(N, H, W)`` float32 in [0, 1]; 1 marks the most relevant region of each image, and an
        image without any positive evidence is all 0.

    Raises:
        ExplainError: If the network is not a ViT or the batch is not 4-D.
    """
    blocks: Any = getattr(network, "blocks", None)
    patch_embed: Any = getattr(network, "patch_embed", None)
    grid = getattr(patch_embed, "grid_size", None)
    if blocks is None or len(blocks) == 0 or grid is None:
        raise ExplainError(
            "Heat maps need a timm Vision Transformer with blocks and a patch grid; "
            f"got {type(network).__name__}."
        )
    if batch.ndim != 4 or batch.shape[0] == 0:
        raise ExplainError(
            f"Expected a non-empty input batch (N, C, H, W), got {tuple(batch.shape)}."
        )
    parameter = next(network.parameters())
    inputs = torch.as_tensor(np.asarray(batch) if isinstance(batch, np.ndarray) else batch)
    inputs = inputs.to(device=parameter.device, dtype=torch.float32)
    prefix = int(getattr(network, "num_prefix_tokens", 1))
    captured: list[torch.Tensor] = []

    def keep_input(_module: nn.Module, args: tuple[Any, ...]) -> None:
        captured.append(args[0])

    was_training = network.training
    network.eval()
    handle = blocks[-1].register_forward_pre_hook(keep_input)
    try:
        with torch.inference_mode(False), torch.enable_grad():
            inputs = inputs.clone().requires_grad_(True)
            logits = network(inputs)
            if not -logits.shape[-1] <= class_index < logits.shape[-1]:
                raise ExplainError(
                    f"Class index {class_index} is out of range for {logits.shape[-1]} classes."
                )
            tokens = captured[0]
            (gradients,) = torch.autograd.grad(logits[:, class_index].sum(), tokens)
    finally:
        handle.remove()
        network.train(was_training)
    patches = tokens.detach()[:, prefix:, :].float()
    weights = gradients[:, prefix:, :].float().mean(dim=1, keepdim=True)
    cam = torch.relu((weights * patches).sum(dim=-1))
    rows, columns = int(grid[0]), int(grid[1])
    cam = cam.reshape(cam.shape[0], 1, rows, columns)
    cam = nn.functional.interpolate(
        cam, size=tuple(inputs.shape[-2:]), mode="bilinear", align_corners=False
    )[:, 0]
    peak = cam.flatten(1).amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny)
    heat = (cam / peak[:, None, None]).clamp(0.0, 1.0)
    return np.ascontiguousarray(heat.cpu().numpy(), dtype=np.float32)


def explain_slices(
    *,
    network: nn.Module,
    spec: ModelSpec,
    datasets: Sequence[pydicom.Dataset],
    indices: Sequence[int],
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Windowed images and Grad-CAM heat maps of some slices of one series.

    Each slice is preprocessed exactly as for classification (``model.inference``), with its
    neighbours where the spec's channel mode needs them. Where thin slices are averaged into
    slabs (the spec's ``slice_thickness_mm``), a slice stands for its slab: the image and the
    heat map are the slab's, what the network saw. Where the input frame is not the slice's own
    (mirror mode turns and scales each slice onto its midline), the heat map is mapped back onto
    the slice.

    Args:
        network: The classifier's network.
        spec: Its spec.
        datasets: The whole series, in any order, with pixel data.
        indices: Indices into ``datasets`` of the slices to show.

    Returns:
        Images (2-D, [0, 1], brain window when the spec has one) and heat maps (2-D, [0, 1]),
        in the order of ``indices``.
    """
    series = SortedSeries(datasets)
    stack = classified_stack(series, spec.slice_thickness_mm)
    load = SlabLoader(series, stack)
    display = _display_window(spec)
    images: list[np.ndarray] = []
    inputs: list[np.ndarray] = []
    alignments: list[np.ndarray | None] = []
    for index in indices:
        rank = stack.unit_of(index)
        hu, network_input = preprocess_sorted(load, len(stack.units), rank, rank + 1, spec)
        inputs.append(network_input[0])
        images.append(apply_window(hu[0], display))
        alignments.append(input_alignment(hu[0], spec))
    heatmaps = explain(network, np.stack(inputs), class_index=spec.positive_index)
    placed = [
        heat if alignment is None else unalign(heat, alignment, image.shape)
        for heat, alignment, image in zip(heatmaps, alignments, images, strict=True)
    ]
    return images, placed


def _display_window(spec: ModelSpec) -> Window:
    """The spec's brain window when it has one (what a reader expects), else its first."""
    windows = spec.window_objects()
    named = zip(windows, spec.windows, strict=True)
    return next((window for window, stored in named if stored.name == "brain"), windows[0])
