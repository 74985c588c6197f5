"""Grad-CAM heat maps of the ViT (model.explain), and of the top slices the capture shows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from torch import nn

from model.checkpoint import LoadedModel, create_random_checkpoint, load_checkpoint
from model.explain import ExplainError, explain, explain_slices
from model.phantom import write_phantom_series
from model.spec import ChannelMode


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load_checkpoint(create_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "t"))


def test_explain_shape_range_and_purity(loaded: LoadedModel) -> None:
    network = loaded.network.eval()
    before = [p.detach().clone() for p in network.parameters()]
    batch = np.random.default_rng(0).normal(size=(3, 3, 64, 64)).astype(np.float32)
    heat = explain(network, batch)
    assert heat.shape == (3, 64, 64) and heat.dtype == np.float32
    assert np.isfinite(heat).all() and heat.min() >= 0.0 and heat.max() <= 1.0
    assert np.isclose(heat.reshape(3, -1).max(axis=1), 1.0).any()
    assert not network.training
    assert all(p.grad is None for p in network.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, network.parameters(), strict=True))
    np.testing.assert_allclose(explain(network, torch.from_numpy(batch)), heat, atol=1e-5)


def test_explain_depends_on_the_image(loaded: LoadedModel) -> None:
    rng = np.random.default_rng(1)
    a, b = (rng.normal(size=(1, 3, 64, 64)).astype(np.float32) for _ in range(2))
    assert not np.allclose(explain(loaded.network, a), explain(loaded.network, b))


def test_explain_refuses_what_it_cannot_explain(loaded: LoadedModel) -> None:
    with pytest.raises(ExplainError, match="Vision Transformer"):
        explain(nn.Linear(2, 2), np.zeros((1, 3, 8, 8), dtype=np.float32))
    with pytest.raises(ExplainError, match="batch"):
        explain(loaded.network, np.zeros((3, 64, 64), dtype=np.float32))


def test_heat_maps_of_a_phantoms_top_slices(loaded: LoadedModel, tmp_path: Path) -> None:
    datasets = [pydicom.dcmread(p) for p in write_phantom_series(tmp_path, n_slices=4, size=48)]
    images, heatmaps = explain_slices(
        network=loaded.network, spec=loaded.spec, datasets=datasets[::-1], indices=[0, 3]
    )
    assert [image.shape for image in images] == [(48, 48), (48, 48)]
    assert [heat.shape for heat in heatmaps] == [(64, 64), (64, 64)]
    assert all(float(image.min()) >= 0.0 and float(image.max()) <= 1.0 for image in images)


def test_mirror_mode_heat_maps_are_placed_back_on_the_slice(
    loaded: LoadedModel, tmp_path: Path
) -> None:
    spec = loaded.spec.model_copy(update={"channel_mode": ChannelMode.MIRROR})
    datasets = [pydicom.dcmread(p) for p in write_phantom_series(tmp_path, n_slices=6, size=96)]
    images, heatmaps = explain_slices(
        network=loaded.network, spec=spec, datasets=datasets, indices=[2, 3]
    )
    assert [heat.shape for heat in heatmaps] == [(96, 96), (96, 96)]
    for image, heat in zip(images, heatmaps, strict=True):
        # The aligned frame is the head scaled to fill it: nothing lands far outside the head.
        outside = image == 0.0
        assert float(heat[outside].mean()) <= float(heat[~outside].mean()) + 1e-6
        assert np.isfinite(heat).all() and heat.min() >= 0.0 and heat.max() <= 1.0 + 1e-6
