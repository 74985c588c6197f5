"""import-model refuses what it cannot run, saying what it found and what is supported."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from model.importing.errors import ModelImportError
from model.importing.importer import import_huggingface, import_timm
from stroke_triage.cli import main
from tests.model.import_helpers import OPTIONS, hf_vit_folder


def _config_folder(folder: Path, config: object) -> Path:
    folder.mkdir()
    config.save_pretrained(folder)  # type: ignore[attr-defined]
    return folder


@pytest.mark.parametrize(
    ("name", "found"),
    [
        ("swin", "model_type 'swin' (SwinForImageClassification)"),
        ("deit_distilled", "distilled heads"),
        ("convnext", "model_type 'convnext' (ConvNextForImageClassification)"),
    ],
)
def test_other_hugging_face_architectures_are_refused(
    tmp_path: Path, name: str, found: str
) -> None:
    from transformers import ConvNextConfig, DeiTConfig, SwinConfig

    configs = {
        "swin": SwinConfig(architectures=["SwinForImageClassification"]),
        "deit_distilled": DeiTConfig(architectures=["DeiTForImageClassificationWithTeacher"]),
        "convnext": ConvNextConfig(architectures=["ConvNextForImageClassification"]),
    }
    folder = _config_folder(tmp_path / name, configs[name])
    with pytest.raises(ModelImportError, match="supported") as info:
        import_huggingface(folder, tmp_path / "out", OPTIONS)
    assert found in str(info.value)
    assert not (tmp_path / "out").exists()


def test_three_labels_need_positive_label(tmp_path: Path) -> None:
    folder = hf_vit_folder(tmp_path / "hf", labels=["normal", "ischaemic", "haemorrhagic"])
    with pytest.raises(ModelImportError, match=r"3 classes .* --positive-label"):
        import_huggingface(folder, tmp_path / "out", OPTIONS)
    options = OPTIONS.__class__(**{**OPTIONS.__dict__, "positive_label": "ischaemic"})
    checkpoint = import_huggingface(folder, tmp_path / "out", options)
    assert (checkpoint / "spec.json").is_file()


def test_labels_that_do_not_say_stroke_need_positive_label(tmp_path: Path) -> None:
    folder = hf_vit_folder(tmp_path / "hf", labels=["LABEL_0", "LABEL_1"])
    with pytest.raises(ModelImportError, match="do not say which one means stroke"):
        import_huggingface(folder, tmp_path / "out", OPTIONS)
    options = OPTIONS.__class__(**{**OPTIONS.__dict__, "positive_label": "LABEL_7"})
    with pytest.raises(ModelImportError, match="'LABEL_7' is not one of"):
        import_huggingface(folder, tmp_path / "out", options)


def test_a_missing_tensor_is_named(tmp_path: Path) -> None:
    folder = hf_vit_folder(tmp_path / "hf", labels=["normal", "stroke"])
    tensors = load_file(str(folder / "model.safetensors"))
    del tensors["vit.encoder.layer.1.attention.attention.key.weight"]
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(
        ModelImportError, match=r"missing tensors: vit\.encoder\.layer\.1\.attention"
    ):
        import_huggingface(folder, tmp_path / "out", OPTIONS)


def test_a_config_that_does_not_match_the_weights_names_the_tensors(tmp_path: Path) -> None:
    folder = hf_vit_folder(tmp_path / "hf", labels=["normal", "stroke"])
    config = json.loads((folder / "config.json").read_text())
    config["intermediate_size"] = 128  # the weights have 256
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelImportError, match=r"mismatched shapes: .*intermediate\.dense"):
        import_huggingface(folder, tmp_path / "out", OPTIONS)


def _timm_weights(path: Path) -> Path:
    network = timm.create_model(
        "vit_small_patch16_224", num_classes=2, img_size=32, embed_dim=32, depth=1, num_heads=2
    )
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, path)
    return path


def test_timm_weights_that_do_not_fit_the_arch_are_named(tmp_path: Path) -> None:
    weights = _timm_weights(tmp_path / "w.safetensors")
    with pytest.raises(
        ModelImportError,
        match=r"missing tensors: blocks\.1\..*mismatched shapes: "
        r"blocks\.0\.attn\.proj\.bias \(32,\) \(expected \(384,\)\)",
    ):
        import_timm(weights, tmp_path / "out", OPTIONS, architecture="vit_small_patch16_224")


@pytest.mark.parametrize(
    ("architecture", "found"),
    [
        ("swin_tiny_patch4_window7_224", "is not a ViT"),
        ("convnext_atto", "is not a ViT"),
        ("deit_tiny_distilled_patch16_224", "distillation head"),
    ],
)
def test_timm_architectures_other_than_vit_are_refused(
    tmp_path: Path, architecture: str, found: str
) -> None:
    weights = _timm_weights(tmp_path / "w.safetensors")
    with pytest.raises(ModelImportError, match=found):
        import_timm(weights, tmp_path / "out", OPTIONS, architecture=architecture)


def test_a_training_checkpoint_is_not_a_plain_state_dict(tmp_path: Path) -> None:
    weights = tmp_path / "checkpoint.pth"
    network = timm.create_model("vit_small_patch16_224", num_classes=2, img_size=32, depth=1)
    torch.save({"model": network.state_dict(), "epoch": 3}, weights)
    with pytest.raises(ModelImportError, match=r"not a plain state dict.*'model', 'epoch'"):
        import_timm(weights, tmp_path / "out", OPTIONS, architecture="vit_small_patch16_224")


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(self.marker),))  # type: ignore[return-value]


def test_a_pickle_with_code_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    weights = tmp_path / "pytorch_model.pth"
    weights.write_bytes(pickle.dumps({"head.weight": _Payload(marker)}, protocol=2))
    with pytest.raises(ModelImportError, match="never runs code from a model file"):
        import_timm(weights, tmp_path / "out", OPTIONS, architecture="vit_small_patch16_224")
    assert not marker.exists()


def test_the_command_prints_the_refusal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = hf_vit_folder(tmp_path / "hf", labels=["LABEL_0", "LABEL_1"])
    code = main(["import-model", "--from-hf", str(folder), "--output", str(tmp_path / "out"),
                 "--finding", "ich"])  # fmt: skip
    assert code == 2
    assert "--positive-label" in capsys.readouterr().err
    code = main(["import-model", "--from-timm", str(folder / "model.safetensors"),
                 "--output", str(tmp_path / "out"), "--finding", "ich"])  # fmt: skip
    assert code == 2 and "needs --arch" in capsys.readouterr().err


def test_a_missing_weights_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-weights.safetensors"
    with pytest.raises(ModelImportError, match=r"no-such-weights\.safetensors does not exist"):
        import_timm(missing, tmp_path / "out", OPTIONS, architecture="vit_small_patch16_224")
    assert not (tmp_path / "out").exists()


def test_timm_only_options_are_refused_for_a_hugging_face_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = hf_vit_folder(tmp_path / "hf", labels=["normal", "stroke"])
    out = tmp_path / "out"
    code = main(["import-model", "--from-hf", str(folder), "--output", str(out),
                 "--arch", "vit_base_patch16_224", "--mean", "0", "0", "0",
                 "--finding", "ich"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "--arch, --mean apply to --from-timm only" in err
    assert not out.exists()


def test_the_command_needs_the_finding_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # What an imported model detects is what every report will say: never a silent default.
    folder = hf_vit_folder(tmp_path / "hf", labels=["normal", "stroke"])
    with pytest.raises(SystemExit) as exited:
        main(["import-model", "--from-hf", str(folder), "--output", str(tmp_path / "out")])
    assert exited.value.code == 2
    assert "--finding" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
