"""Multi-label (sigmoid) models import with each output mapped to a finding, and give the source
framework's probabilities for every finding (within 1e-4)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from model.checkpoint import load_checkpoint
from model.importing.errors import ModelImportError
from model.importing.findings import parse_finding, parse_output_findings
from model.importing.importer import import_huggingface, import_timm
from model.inference import Classifier
from model.pixels import preprocess_windowed_uint8
from model.spec import INTRACRANIAL_HAEMORRHAGE, STROKE, Activation, CodedFinding
from stroke_triage.cli import main
from tests.model.import_helpers import OPTIONS, hf_vit_folder, real_slices, spread_weights

TOLERANCE = 1e-4
LABELS = ["any", "epidural", "subdural", "subarachnoid"]
EDH = "SCT:262300005:EDH:Epidural hemorrhage"
SDH = "SCT:35486000:SDH:Subdural hemorrhage"
MULTI = replace(
    OPTIONS,
    positive_label="any",
    finding=INTRACRANIAL_HAEMORRHAGE,
    output_findings=parse_output_findings([f"epidural={EDH}", f"subdural={SDH}"]),
)


def _ours(checkpoint: Path, images: np.ndarray) -> np.ndarray:
    classifier = Classifier.from_checkpoint(checkpoint, device="cpu", precision="fp32")
    inputs = preprocess_windowed_uint8(images, classifier.spec)
    return classifier.predict_finding_probabilities(inputs)


def _check_spec(checkpoint: Path) -> None:
    spec = load_checkpoint(checkpoint).spec
    assert spec.activation is Activation.SIGMOID
    assert spec.finding == INTRACRANIAL_HAEMORRHAGE and spec.positive_index == 0
    assert [(o.index, o.finding.short_name) for o in spec.reported_outputs] == [
        (0, "ICH"),
        (1, "EDH"),
        (2, "SDH"),
    ]


def test_a_hugging_face_multi_label_vit_gives_the_same_probabilities(
    tmp_path: Path, shared_data: Path
) -> None:
    from transformers import ViTForImageClassification, ViTImageProcessor

    folder = hf_vit_folder(
        tmp_path / "hf", labels=LABELS, problem_type="multi_label_classification", seed=3
    )
    assert json.loads((folder / "config.json").read_text())["problem_type"] == (
        "multi_label_classification"
    )
    checkpoint = import_huggingface(folder, tmp_path / "ckpt", MULTI)  # no --head: the config's
    _check_spec(checkpoint)

    images = real_slices(shared_data, 64)
    processor = ViTImageProcessor.from_pretrained(folder)
    model = ViTForImageClassification.from_pretrained(folder).eval()
    pixels = processor(
        images=[np.repeat(i[:, :, None], 3, axis=2) for i in images], return_tensors="pt"
    )
    with torch.no_grad():
        expected = torch.sigmoid(model(pixel_values=pixels["pixel_values"]).logits)[:, :3].numpy()
    ours = _ours(checkpoint, images)
    assert ours.shape == (len(images), 3)
    assert np.ptp(expected, axis=0).min() > 1e-3, "the random model must tell slices apart"
    np.testing.assert_allclose(ours, expected, atol=TOLERANCE, rtol=0)


def test_a_timm_multi_label_vit_gives_the_same_probabilities(
    tmp_path: Path, shared_data: Path
) -> None:
    kwargs = {"embed_dim": 64, "depth": 2, "num_heads": 2}
    torch.manual_seed(0)
    network = timm.create_model(
        "vit_small_patch16_224", pretrained=False, num_classes=len(LABELS), img_size=64, **kwargs
    ).eval()
    spread_weights(network, seed=5)
    weights = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, weights)

    checkpoint = import_timm(
        weights,
        tmp_path / "ckpt",
        replace(MULTI, activation=Activation.SIGMOID),
        architecture="vit_small_patch16_224",
        class_names=LABELS,
        model_kwargs=kwargs,
    )
    _check_spec(checkpoint)
    images = real_slices(shared_data, 64)
    inputs = preprocess_windowed_uint8(images, load_checkpoint(checkpoint).spec)
    with torch.no_grad():
        expected = torch.sigmoid(network(torch.from_numpy(inputs)))[:, :3].numpy()
    ours = _ours(checkpoint, images)
    assert np.ptp(expected, axis=0).min() > 1e-3
    np.testing.assert_allclose(ours, expected, atol=TOLERANCE, rtol=0)


def test_a_head_that_contradicts_the_config_is_refused(tmp_path: Path) -> None:
    folder = hf_vit_folder(
        tmp_path / "hf", labels=LABELS, problem_type="multi_label_classification"
    )
    with pytest.raises(ModelImportError, match="--head softmax contradicts"):
        import_huggingface(folder, tmp_path / "out", replace(MULTI, activation=Activation.SOFTMAX))


def test_findings_are_parsed_and_mistakes_named(tmp_path: Path) -> None:
    assert parse_finding("ICH") == INTRACRANIAL_HAEMORRHAGE
    assert parse_finding("stroke") == STROKE
    assert parse_finding("SCT:1:X:Odd: with a colon") == CodedFinding(
        scheme="SCT", value="1", short_name="X", meaning="Odd: with a colon"
    )
    with pytest.raises(ModelImportError, match="not a preset"):
        parse_finding("SCT:1386000")
    with pytest.raises(ModelImportError, match="16 characters"):
        parse_finding("SCT:1:a-name-far-too-long-to-show:Meaning")
    with pytest.raises(ModelImportError, match="LABEL=FINDING"):
        parse_output_findings(["epidural"])
    folder = hf_vit_folder(
        tmp_path / "hf", labels=LABELS, problem_type="multi_label_classification"
    )
    unknown = replace(MULTI, output_findings=parse_output_findings([f"epi={EDH}"]))
    with pytest.raises(ModelImportError, match=r"\['epi'\], which are not among"):
        import_huggingface(folder, tmp_path / "a", unknown)
    twice = replace(MULTI, output_findings=parse_output_findings([f"any={EDH}"]))
    with pytest.raises(ModelImportError, match="given two findings"):
        import_huggingface(folder, tmp_path / "b", twice)
    same = replace(
        MULTI, output_findings=parse_output_findings([f"epidural={EDH}", f"subdural={EDH}"])
    )
    with pytest.raises(ModelImportError, match="only once"):
        import_huggingface(folder, tmp_path / "c", same)


def test_the_command_takes_the_finding_the_head_and_the_outputs(tmp_path: Path) -> None:
    folder = hf_vit_folder(tmp_path / "hf", labels=LABELS)
    out = tmp_path / "ckpt"
    code = main(
        [
            "import-model", "--from-hf", str(folder), "--output", str(out),
            "--positive-label", "any", "--finding", "ich", "--head", "sigmoid",
            "--output-finding", f"epidural={EDH}", "--output-finding", f"subdural={SDH}",
        ]
    )  # fmt: skip
    assert code == 0
    _check_spec(out)
    two = hf_vit_folder(tmp_path / "hf2", labels=["normal", "stroke"])
    out2 = tmp_path / "c2"
    assert (
        main(["import-model", "--from-hf", str(two), "--output", str(out2), "--finding", "stroke"])
        == 0
    )
    spec = load_checkpoint(out2).spec
    assert spec.finding == STROKE and spec.activation is Activation.SOFTMAX
    assert spec.outputs is None
