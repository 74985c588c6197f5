"""Thin slices averaged into slabs of the model's training thickness, in HU, then classified."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pydicom
import pytest

from model.checkpoint import LoadedModel, create_random_checkpoint, load_checkpoint
from model.dicom import SortedSeries, dataset_to_hu
from model.explain import explain_slices
from model.inference import Classifier
from model.phantom import Lesion, write_phantom_series
from model.pixels import apply_window
from model.slabs import SlabLoader, classified_stack, plan_slabs


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    plain = load_checkpoint(create_random_checkpoint(tmp_path_factory.mktemp("ckpt"), seed=0))
    spec = plain.spec.model_copy(update={"slice_thickness_mm": 5.0})
    return LoadedModel(network=plain.network, spec=spec, sha256=plain.sha256)


def _series(folder: Path, n_slices: int, thickness: float) -> list[pydicom.Dataset]:
    paths = write_phantom_series(
        folder, n_slices=n_slices, size=32, lesion=Lesion.HAEMORRHAGE, slice_thickness_mm=thickness
    )
    return [pydicom.dcmread(path) for path in paths]


@pytest.fixture(scope="module")
def thin(tmp_path_factory: pytest.TempPathFactory) -> list[pydicom.Dataset]:
    """A 238-slice 0.625 mm head CT, as modern scanners send it."""
    return _series(tmp_path_factory.mktemp("thin"), 238, 0.625)


@pytest.fixture(scope="module")
def thick(tmp_path_factory: pytest.TempPathFactory) -> list[pydicom.Dataset]:
    return _series(tmp_path_factory.mktemp("thick"), 24, 5.0)


def test_a_238_slice_thin_stack_makes_30_contiguous_slabs_of_5_mm() -> None:
    positions = [k * 0.625 for k in range(238)]
    slabs = plan_slabs(positions, spacing_mm=0.625, slab_mm=5.0)
    assert len(slabs) == 30
    assert [len(slab) for slab in slabs] == [8] * 29 + [6]
    assert [rank for slab in slabs for rank in slab] == list(range(238))


@pytest.mark.parametrize(("spacing", "per_slab"), [(1.25, 4), (1.0, 5), (2.5, 2), (0.5, 10)])
def test_common_thin_spacings_fill_slabs_evenly(spacing: float, per_slab: int) -> None:
    positions = [-40.0 + k * spacing for k in range(per_slab * 6)]
    slabs = plan_slabs(positions, spacing_mm=spacing, slab_mm=5.0)
    assert [len(slab) for slab in slabs] == [per_slab] * 6


def test_a_gap_in_the_stack_leaves_no_empty_slab() -> None:
    positions = [k * 1.0 for k in range(5)] + [20.0 + k for k in range(5)]
    slabs = plan_slabs(positions, spacing_mm=1.0, slab_mm=5.0)
    assert slabs == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


def test_bad_plans_are_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        plan_slabs([], spacing_mm=1.0, slab_mm=5.0)
    with pytest.raises(ValueError, match="ascending"):
        plan_slabs([2.0, 1.0], spacing_mm=1.0, slab_mm=5.0)
    with pytest.raises(ValueError, match="positive"):
        plan_slabs([1.0], spacing_mm=0.0, slab_mm=5.0)


def test_a_5_mm_stack_and_a_spec_without_thickness_go_through_unchanged(
    thick: list[pydicom.Dataset], thin: list[pydicom.Dataset]
) -> None:
    at_thickness = classified_stack(SortedSeries(thick), 5.0)
    assert not at_thickness.averaged
    assert at_thickness.units == [[index] for index in range(24)]
    assert not classified_stack(SortedSeries(thin), None).averaged
    # 5 mm is "at" 5.3 mm (within 10 %), and a 7 mm slab is nearer one 5 mm slice than two.
    assert not classified_stack(SortedSeries(thick), 5.3).averaged
    assert not classified_stack(SortedSeries(thick), 7.0).averaged
    # Two 5 mm slices do fit a 10 mm slab: even pairs.
    pairs = classified_stack(SortedSeries(thick), 10.0)
    assert pairs.slab_mm == 10.0 and [len(u) for u in pairs.units] == [2] * 12


def test_the_real_ge_head_ct_is_read_slice_by_slice(ge_head_ct: Path) -> None:
    datasets = [pydicom.dcmread(path) for path in sorted(ge_head_ct.glob("*.dcm"))]
    stack = classified_stack(SortedSeries(datasets), 5.0)
    # Slices 4-5.5 mm thick (median 5.5) and 4.22 mm apart: at the model's 5 mm.
    assert stack.source_thickness_mm == 5.5 and not stack.averaged
    assert len(stack.units) == len(datasets) == 28
    # Were they thinner, 4.22 mm apart still puts one slice in a 5 mm slab: nothing averaged.
    for dataset in datasets:
        dataset.SliceThickness = 1.0
    assert not classified_stack(SortedSeries(datasets), 5.0).averaged


def test_slices_of_0_6_mm_make_even_slabs_of_8(tmp_path: Path) -> None:
    datasets = _series(tmp_path, 40, 0.6)
    stack = classified_stack(SortedSeries(datasets), 5.0)
    assert stack.slab_mm == 4.8 and [len(u) for u in stack.units] == [8] * 5


def test_slabs_are_the_mean_of_their_slices_in_hu(thin: list[pydicom.Dataset]) -> None:
    shuffled = list(thin)
    random.Random(3).shuffle(shuffled)
    series = SortedSeries(shuffled)
    stack = classified_stack(series, 5.0)
    assert stack.averaged and len(stack.units) == 30 and stack.source_thickness_mm == 0.625
    # Units hold input indices of the shuffled list, bottom first and contiguous.
    positions = [float(shuffled[i].ImagePositionPatient[2]) for i in stack.units[3]]
    assert positions == sorted(positions) and len(positions) == 8
    assert positions[0] == pytest.approx(24 * 0.625)
    hu = SlabLoader(series, stack)(3, 5)
    expected = np.mean([dataset_to_hu(shuffled[i]) for i in stack.units[4]], axis=0)
    np.testing.assert_allclose(hu[1], expected, atol=1e-3)
    assert stack.representative(4) == stack.units[4][3]


def test_a_thin_series_is_classified_as_its_slabs(
    loaded: LoadedModel, thin: list[pydicom.Dataset]
) -> None:
    classifier = Classifier(loaded, device="cpu", precision="fp32")
    prediction = classifier.predict_series(thin)
    assert prediction.slabs is not None and len(prediction.slabs) == 30
    assert prediction.slab_mm == 5.0
    # The same probabilities as the averaged stack classified directly.
    stack = classified_stack(SortedSeries(thin), 5.0)
    slabs_hu = SlabLoader(SortedSeries(thin), stack)(0, 30)
    direct = classifier.predict_hu_stack(slabs_hu)
    for slab, members in enumerate(prediction.slabs):
        for index in members:
            assert prediction.slice_probabilities[index] == pytest.approx(direct[slab], abs=1e-6)
    top5 = np.sort(direct)[::-1][:5]
    assert prediction.probability == pytest.approx(float(top5.mean()), abs=1e-6)
    # The SR cites every slice of the 5 top slabs; one key slice (the middle one) per slab.
    top_slabs = [_slab_of(prediction.slabs, key) for key in prediction.key_slices]
    assert len(top_slabs) == 5
    assert [prediction.slabs[slab][3] for slab in top_slabs] == prediction.key_slices
    assert prediction.top_slices == [i for slab in top_slabs for i in prediction.slabs[slab]]
    ranked = [float(direct[slab]) for slab in top_slabs]
    assert ranked == sorted(ranked, reverse=True) and ranked[0] == float(direct.max())


def _slab_of(slabs: list[list[int]], index: int) -> int:
    return next(number for number, slab in enumerate(slabs) if index in slab)


def test_a_5_mm_series_is_classified_as_before(
    loaded: LoadedModel, thick: list[pydicom.Dataset]
) -> None:
    with_thickness = Classifier(loaded, device="cpu", precision="fp32").predict_series(thick)
    spec = loaded.spec.model_copy(update={"slice_thickness_mm": None})
    plain = LoadedModel(network=loaded.network, spec=spec, sha256=loaded.sha256)
    without = Classifier(plain, device="cpu", precision="fp32").predict_series(thick)
    assert with_thickness.slabs is None and with_thickness.slab_mm is None
    assert with_thickness.slice_probabilities == without.slice_probabilities
    assert with_thickness.top_slices == without.top_slices == with_thickness.key_slices


def test_the_heat_map_of_a_key_slice_is_its_slabs(
    loaded: LoadedModel, thin: list[pydicom.Dataset]
) -> None:
    stack = classified_stack(SortedSeries(thin), 5.0)
    key = stack.representative(10)
    images, heatmaps = explain_slices(
        network=loaded.network, spec=loaded.spec, datasets=thin, indices=[key]
    )
    slab = np.mean([dataset_to_hu(thin[i]) for i in stack.units[10]], axis=0)
    brain = loaded.spec.window_objects()[0]
    np.testing.assert_allclose(images[0], apply_window(slab, brain), atol=1e-4)
    assert not np.allclose(images[0], apply_window(dataset_to_hu(thin[key]), brain), atol=1e-3)
    assert heatmaps[0].ndim == 2 and np.isfinite(heatmaps[0]).all()
