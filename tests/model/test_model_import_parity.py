"""Imported models give the source framework's answers on real slices (within 1e-4)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from model.checkpoint import load_checkpoint
from model.importing.importer import import_huggingface, import_timm
from model.inference import Classifier
from model.pixels import preprocess_windowed_uint8
from tests.model.import_helpers import (
    OPTIONS,
    hf_probabilities,
    hf_vit_folder,
    real_slices,
    spread_weights,
)

TOLERANCE = 1e-4


def _ours(checkpoint: Path, images: np.ndarray) -> np.ndarray:
    classifier = Classifier.from_checkpoint(checkpoint, device="cpu", precision="fp32")
    return classifier.predict_probabilities(preprocess_windowed_uint8(images, classifier.spec))


@pytest.mark.parametrize(
    ("labels", "stroke_index"), [(["normal", "stroke"], 1), (["Stroke", "Normal"], 0)]
)
def test_hugging_face_vit_gives_the_same_probabilities(
    tmp_path: Path, shared_data: Path, labels: list[str], stroke_index: int
) -> None:
    folder = hf_vit_folder(tmp_path / "hf", labels=labels, seed=stroke_index)
    checkpoint = import_huggingface(folder, tmp_path / "ckpt", OPTIONS)
    spec = load_checkpoint(checkpoint).spec
    assert spec.positive_index == stroke_index
    assert spec.threshold_calibrated is False
    assert spec.source is not None and spec.source.source_format == "huggingface"
    assert spec.source.file_name == "model.safetensors" and len(spec.source.sha256) == 64
    assert spec.layer_norm_eps == pytest.approx(1e-12)
    assert spec.mean == pytest.approx((0.485, 0.456, 0.406))  # rescale 1/255 folded in

    images = real_slices(shared_data, 64)
    expected = hf_probabilities(folder, images, stroke_index)
    ours = _ours(checkpoint, images)
    assert np.ptp(expected) > 1e-3, "the random model must tell slices apart"
    np.testing.assert_allclose(ours, expected, atol=TOLERANCE, rtol=0)


def test_pytorch_model_bin_imports_like_safetensors(tmp_path: Path, shared_data: Path) -> None:
    folder = hf_vit_folder(tmp_path / "hf", labels=["normal", "stroke"], image_size=128)
    from safetensors.torch import load_file

    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    checkpoint = import_huggingface(folder, tmp_path / "ckpt", OPTIONS)
    assert load_checkpoint(checkpoint).spec.source.file_name == "pytorch_model.bin"  # type: ignore[union-attr]
    images = real_slices(shared_data, 128, count=4)
    np.testing.assert_allclose(
        _ours(checkpoint, images), hf_probabilities(folder, images, 1), atol=TOLERANCE, rtol=0
    )


@pytest.mark.parametrize(
    ("class_names", "stroke_index", "suffix"),
    [(["normal", "stroke"], 1, ".safetensors"), (["stroke", "normal"], 0, ".pth")],
)
def test_timm_state_dict_gives_the_same_probabilities(
    tmp_path: Path, shared_data: Path, class_names: list[str], stroke_index: int, suffix: str
) -> None:
    kwargs = {"embed_dim": 64, "depth": 3, "num_heads": 2}
    torch.manual_seed(0)
    network = timm.create_model(
        "vit_small_patch16_224", pretrained=False, num_classes=2, img_size=64, **kwargs
    ).eval()
    spread_weights(network, seed=stroke_index)
    weights = tmp_path / f"weights{suffix}"
    state = {k: v.contiguous() for k, v in network.state_dict().items()}
    save_file(state, weights) if suffix == ".safetensors" else torch.save(state, weights)

    checkpoint = import_timm(
        weights,
        tmp_path / "ckpt",
        OPTIONS,
        architecture="vit_small_patch16_224",
        class_names=class_names,
        model_kwargs=kwargs,
    )
    spec = load_checkpoint(checkpoint).spec
    assert spec.input_size == 64, "read from pos_embed"
    assert spec.positive_index == stroke_index and spec.source is not None
    assert spec.source.source_format == "timm" and spec.source.file_name == weights.name

    images = real_slices(shared_data, 64)
    inputs = preprocess_windowed_uint8(images, spec)
    with torch.no_grad():
        expected = torch.softmax(network(torch.from_numpy(inputs)), dim=-1)[:, stroke_index]
    ours = _ours(checkpoint, images)
    assert np.ptp(expected.numpy()) > 1e-3
    np.testing.assert_allclose(ours, expected.numpy(), atol=TOLERANCE, rtol=0)


@pytest.mark.slow
def test_the_papers_vit_base_at_224_imports_and_runs(tmp_path: Path, shared_data: Path) -> None:
    folder = hf_vit_folder(
        tmp_path / "hf", labels=["normal", "stroke"], image_size=224, hidden_size=768,
        layers=12, heads=12,
    )  # fmt: skip
    checkpoint = import_huggingface(folder, tmp_path / "ckpt", OPTIONS)
    spec = load_checkpoint(checkpoint).spec
    assert (spec.input_size, spec.model_kwargs["embed_dim"], spec.model_kwargs["depth"]) == (
        224, 768, 12,
    )  # fmt: skip
    images = real_slices(shared_data, 224, count=2)
    np.testing.assert_allclose(
        _ours(checkpoint, images), hf_probabilities(folder, images, 1), atol=TOLERANCE, rtol=0
    )
