"""Heat maps of chosen slices of a series (model.explain.explain_slices)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from model.checkpoint import LoadedModel, create_random_checkpoint, load_checkpoint
from model.dicom import dataset_to_hu, sort_slices
from model.explain import explain, explain_slices
from model.phantom import Lesion, write_phantom_series
from model.pixels import apply_window, preprocess_hu_stack
from model.spec import WINDOW_PRESETS, ChannelMode, ModelSpec


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load_checkpoint(create_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "t"))


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> list[pydicom.Dataset]:
    paths = write_phantom_series(
        tmp_path_factory.mktemp("series"), n_slices=5, size=64, lesion=Lesion.INFARCT, seed=3
    )
    datasets = [pydicom.dcmread(p) for p in paths]
    return datasets[2:] + datasets[:2]  # not in slice order


@pytest.mark.parametrize("mode", [ChannelMode.REPLICATE, ChannelMode.ADJACENT])
def test_each_slice_is_explained_as_the_whole_stack_would_be(
    loaded: LoadedModel, series: list[pydicom.Dataset], mode: ChannelMode
) -> None:
    spec = ModelSpec.model_validate({**loaded.spec.model_dump(), "channel_mode": mode})
    order = sort_slices(series)
    hu = np.stack([dataset_to_hu(series[i]) for i in order])
    whole = preprocess_hu_stack(hu, spec)
    indices = [order[0], order[2], order[4]]  # both edges and the middle
    images, heatmaps = explain_slices(
        network=loaded.network, spec=spec, datasets=series, indices=indices
    )
    ranks = [order.index(i) for i in indices]
    expected = explain(loaded.network, whole[ranks], class_index=spec.positive_index)
    np.testing.assert_allclose(np.stack(heatmaps), expected, atol=1e-5)
    for image, rank in zip(images, ranks, strict=True):
        np.testing.assert_array_equal(image, apply_window(hu[rank], WINDOW_PRESETS["brain"]))
