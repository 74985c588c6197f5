"""Heat maps of the most suspicious slices, for the Secondary Capture."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pydicom
from torch import nn

from model.explain import explain
from model.preprocess import (
    apply_window,
    dataset_to_hu,
    input_alignment,
    preprocess_hu_stack,
    sort_slices,
)
from model.spec import ModelSpec
from model.symmetry import unalign


def top_slice_heatmaps(
    *,
    network: nn.Module,
    spec: ModelSpec,
    datasets: Sequence[pydicom.Dataset],
    top_indices: Sequence[int],
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Windowed images and Grad-CAM heat maps of some slices of one series.

    Each slice is preprocessed exactly as for classification, with its neighbours where the
    spec's channel mode needs them. Where the input frame is not the slice's own (mirror mode
    turns and scales each slice onto its midline), the heat map is mapped back onto the slice.

    Args:
        network: The classifier's network.
        spec: Its spec.
        datasets: The whole series, in any order, with pixel data.
        top_indices: Indices into ``datasets`` of the slices to show.

    Returns:
        Images (2-D, [0, 1], brain window when the spec has one) and heat maps (2-D, [0, 1]).
    """
    order = sort_slices(datasets)
    position = {index: rank for rank, index in enumerate(order)}
    windows = spec.window_objects()
    display = next(
        (w for w, s in zip(windows, spec.windows, strict=True) if s.name == "brain"), None
    )
    display = display or windows[0]
    images: list[np.ndarray] = []
    inputs: list[np.ndarray] = []
    alignments: list[np.ndarray | None] = []
    for index in top_indices:
        rank = position[index]
        lo, hi = max(0, rank - 1), min(len(order), rank + 2)
        hu = np.stack([dataset_to_hu(datasets[i]) for i in order[lo:hi]])
        inputs.append(preprocess_hu_stack(hu, spec)[rank - lo])
        images.append(apply_window(hu[rank - lo], display))
        alignments.append(input_alignment(hu[rank - lo], spec))
    heatmaps = explain(network, np.stack(inputs), class_index=spec.positive_index)
    placed = [
        heat if alignment is None else unalign(heat, alignment, image.shape)
        for heat, alignment, image in zip(heatmaps, alignments, images, strict=True)
    ]
    return images, placed
