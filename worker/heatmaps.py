"""Heat maps of the most suspicious slices, for the Secondary Capture."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pydicom
from torch import nn

from model.explain import explain_slices
from model.spec import ModelSpec


def top_slice_heatmaps(
    *,
    network: nn.Module,
    spec: ModelSpec,
    datasets: Sequence[pydicom.Dataset],
    top_indices: Sequence[int],
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Windowed images and Grad-CAM heat maps of the top slices (``model.explain``).

    Args:
        network: The classifier's network.
        spec: Its spec.
        datasets: The whole series, in any order, with pixel data.
        top_indices: Indices into ``datasets`` of the slices to show.

    Returns:
        Images (2-D, [0, 1]) and heat maps (2-D, [0, 1]), in the order of ``top_indices``.
    """
    return explain_slices(network=network, spec=spec, datasets=datasets, indices=top_indices)
