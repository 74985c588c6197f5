"""The Classifier on the tiny random checkpoint and a phantom series."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch

from model import device as model_device
from model.checkpoint import create_random_checkpoint, load_checkpoint, random_spec
from model.device import select_device
from model.errors import DeviceUnavailableError, PreprocessError
from model.inference import Classifier
from model.phantom import Lesion, head_phantom_hu, write_phantom_series
from model.pixels import preprocess_hu_stack
from model.spec import ChannelMode


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return create_random_checkpoint(tmp_path_factory.mktemp("ckpt"), seed=0)


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> list[pydicom.Dataset]:
    directory = tmp_path_factory.mktemp("phantom")
    paths = write_phantom_series(directory, n_slices=10, size=96, lesion=Lesion.HAEMORRHAGE)
    return [pydicom.dcmread(p) for p in paths]


def test_predict_series_shapes_and_ranges(checkpoint: Path, series: list[pydicom.Dataset]) -> None:
    classifier = Classifier.from_checkpoint(checkpoint, device="cpu", precision="fp32")
    assert classifier.device == torch.device("cpu")
    assert classifier.precision == "fp32"
    assert len(classifier.sha256) == 64
    result = classifier.predict_series(series)
    assert 0.0 <= result.probability <= 1.0
    assert len(result.slice_probabilities) == len(series)
    assert all(np.isfinite(p) and 0.0 <= p <= 1.0 for p in result.slice_probabilities)
    assert result.order == list(range(len(series)))
    assert len(result.top_slices) == 5
    top = [result.slice_probabilities[i] for i in result.top_slices]
    assert top == sorted(top, reverse=True)
    assert top[0] == max(result.slice_probabilities)
    assert result.probability == pytest.approx(float(np.mean(top)), abs=1e-6)
    assert result.threshold == 0.5
    assert result.suspected == (result.probability >= 0.5)


def test_shuffled_slices_give_the_same_answer(
    checkpoint: Path, series: list[pydicom.Dataset]
) -> None:
    classifier = Classifier.from_checkpoint(checkpoint, device="cpu", precision="fp32")
    reference = classifier.predict_series(series)
    shuffled_index = list(range(len(series)))
    random.Random(7).shuffle(shuffled_index)
    shuffled = classifier.predict_series([series[i] for i in shuffled_index])
    assert shuffled.probability == pytest.approx(reference.probability, abs=1e-6)
    assert [shuffled_index[i] for i in shuffled.order] == reference.order
    for position, original in enumerate(shuffled_index):
        assert shuffled.slice_probabilities[position] == pytest.approx(
            reference.slice_probabilities[original], abs=1e-6
        )


def test_bf16_agrees_with_fp32(checkpoint: Path, series: list[pydicom.Dataset]) -> None:
    loaded = load_checkpoint(checkpoint)
    fp32 = Classifier(loaded, device="cpu", precision="fp32").predict_series(series)
    bf16_classifier = Classifier(loaded, device="cpu", precision="bf16")
    assert bf16_classifier.precision == "bf16"
    bf16 = bf16_classifier.predict_series(series)
    assert bf16.probability == pytest.approx(fp32.probability, abs=0.02)
    np.testing.assert_allclose(bf16.slice_probabilities, fp32.slice_probabilities, atol=0.03)


def test_auto_precision_on_cpu_needs_validation_metric(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = load_checkpoint(checkpoint)
    monkeypatch.setattr(model_device, "cpu_supports_bf16", lambda: True)
    assert Classifier(loaded, device="cpu").precision == "fp32"
    validated = loaded.spec.model_copy(update={"metrics": {"bf16_agrees_with_fp32": True}})
    vetted = type(loaded)(network=loaded.network, spec=validated, sha256=loaded.sha256)
    assert Classifier(vetted, device="cpu").precision == "bf16"
    monkeypatch.setattr(model_device, "cpu_supports_bf16", lambda: False)
    assert Classifier(vetted, device="cpu").precision == "fp32"
    with pytest.raises(ValueError, match="Unknown precision"):
        Classifier(loaded, device="cpu", precision="fp16")


def test_chunked_adjacent_prediction_equals_whole_stack(checkpoint: Path) -> None:
    loaded = load_checkpoint(checkpoint)
    spec = loaded.spec.model_copy(update={"channel_mode": ChannelMode.ADJACENT})
    adjacent = type(loaded)(network=loaded.network, spec=spec, sha256=loaded.sha256)
    hu = head_phantom_hu(n_slices=7, size=64, lesion=Lesion.INFARCT, seed=2)
    chunked = Classifier(adjacent, device="cpu", precision="fp32", batch_size=2)
    whole = chunked.predict_probabilities(preprocess_hu_stack(hu, spec))
    np.testing.assert_allclose(chunked.predict_hu_stack(hu), whole, atol=1e-6)


def test_bad_inputs_are_rejected(checkpoint: Path) -> None:
    classifier = Classifier.from_checkpoint(checkpoint, device="cpu")
    with pytest.raises(PreprocessError, match="no slices"):
        classifier.predict_series([])
    with pytest.raises(PreprocessError, match="shape"):
        classifier.predict_probabilities(np.zeros((1, 3, 32, 32), dtype=np.float32))
    assert classifier.predict_probabilities(np.zeros((0, 3, 64, 64), dtype=np.float32)).shape == (
        0,
    )


def test_select_device() -> None:
    assert select_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device().type == expected
    if not torch.cuda.is_available():
        with pytest.raises(DeviceUnavailableError, match="CUDA is not available"):
            select_device("cuda")


def test_random_spec_threshold_matches_classifier(checkpoint: Path) -> None:
    assert Classifier.from_checkpoint(checkpoint).spec.threshold == random_spec().threshold


def test_real_tilted_series_is_sorted_and_classified(checkpoint: Path, ge_head_ct: Path) -> None:
    datasets = [pydicom.dcmread(p) for p in sorted(ge_head_ct.glob("*.dcm"))]
    shuffled = datasets[::-1]
    classifier = Classifier.from_checkpoint(checkpoint, device="cpu", precision="fp32")
    result = classifier.predict_series(shuffled)
    # Gantry tilt makes the slice normal oblique; the order still follows InstanceNumber.
    numbers = [int(shuffled[i].InstanceNumber) for i in result.order]
    assert numbers == sorted(numbers)
    assert len(result.slice_probabilities) == len(datasets)
    assert np.all(np.isfinite(result.slice_probabilities))
