"""A Hugging Face ``ViTForImageClassification`` folder, read without ``transformers``.

The folder's ``config.json`` gives the timm ViT that computes the same function (patch size,
width, depth, heads, MLP width, LayerNorm epsilon; the class token after the final LayerNorm
feeds the classifier in both), ``preprocessor_config.json`` the input size and normalisation,
and the weights are renamed tensor by tensor (query, key and value concatenated into timm's
``qkv``). Both the saved names (``vit.encoder.layer.N.attention.attention.query``) and the
in-memory names of transformers 5 (``vit.layers.N.attention.q_proj``) are understood.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from model.importing.errors import ModelImportError
from model.spec import Activation

SUPPORTED = "a ViT image classifier (model_type 'vit', ViTForImageClassification)"
TIMM_ARCHITECTURE = "vit_base_patch16_224"
"""The timm entry point; the config's sizes are passed as its keyword arguments."""

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"

_ACTIVATIONS = {"gelu": None, "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
"""Hugging Face ``hidden_act`` to timm ``act_layer`` (None: timm's default, exact GELU)."""

_PROBLEM_TYPES = {
    "multi_label_classification": Activation.SIGMOID,
    "single_label_classification": Activation.SOFTMAX,
}
"""Hugging Face's ``problem_type`` (the loss it was trained with) to the head's activation."""

_IMAGENET_STANDARD = (0.5, 0.5, 0.5)
"""``ViTImageProcessor``'s mean and std when the folder has no preprocessor config."""


@dataclass(frozen=True)
class HfVit:
    """What an imported Hugging Face ViT folder says, in stroke-triage's terms."""

    weights_path: Path
    model_kwargs: dict[str, Any]
    input_size: int
    layer_norm_eps: float
    class_names: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    preprocessing: dict[str, Any] = field(default_factory=dict)
    source_architecture: str = "ViTForImageClassification"
    problem_type: str | None = None
    """The config's ``problem_type``, if it states one."""

    @property
    def activation(self) -> Activation | None:
        """The head the config's ``problem_type`` implies; None when it states none."""
        return _PROBLEM_TYPES.get(self.problem_type) if self.problem_type else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ModelImportError(f"{path} is not a readable JSON file: {error}") from error
    if not isinstance(data, dict):
        raise ModelImportError(f"{path} does not hold a JSON object.")
    return data


def _check_architecture(config: dict[str, Any]) -> str:
    model_type = config.get("model_type")
    architectures = config.get("architectures") or ["ViTForImageClassification"]
    found = f"model_type {model_type!r} ({', '.join(map(str, architectures))})"
    if model_type == "deit" or any("Teacher" in str(a) for a in architectures):
        raise ModelImportError(
            f"Found {found}: DeiT models, and their distilled heads in particular, are not "
            f"supported. Supported is {SUPPORTED}."
        )
    if model_type != "vit" or list(architectures) != ["ViTForImageClassification"]:
        raise ModelImportError(f"Found {found}; supported is only {SUPPORTED}.")
    return str(architectures[0])


def _square(value: Any, what: str) -> int:
    if isinstance(value, list | tuple):
        if len(value) != 2 or value[0] != value[1]:
            raise ModelImportError(f"The {what} {value} is not square; only square is supported.")
        value = value[0]
    if not isinstance(value, int) or value < 1:
        raise ModelImportError(f"The {what} {value!r} is not a positive whole number.")
    return value


def _model_kwargs(config: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """timm ViT kwargs and the input size from a Hugging Face ViT config."""
    if config.get("num_channels", 3) != 3:
        raise ModelImportError(
            f"The model takes {config.get('num_channels')} input channels; stroke-triage feeds 3."
        )
    activation = config.get("hidden_act", "gelu")
    if activation not in _ACTIVATIONS:
        raise ModelImportError(
            f"The activation {activation!r} is not supported; supported are {sorted(_ACTIVATIONS)}."
        )
    hidden = int(config.get("hidden_size", 768))
    intermediate = int(config.get("intermediate_size", 3072))
    mlp_ratio = intermediate / hidden
    if int(hidden * mlp_ratio) != intermediate:
        raise ModelImportError(
            f"An MLP width of {intermediate} for width {hidden} cannot be expressed in timm."
        )
    kwargs: dict[str, Any] = {
        "patch_size": _square(config.get("patch_size", 16), "patch size"),
        "embed_dim": hidden,
        "depth": int(config.get("num_hidden_layers", 12)),
        "num_heads": int(config.get("num_attention_heads", 12)),
        "mlp_ratio": mlp_ratio,
        "qkv_bias": bool(config.get("qkv_bias", True)),
        "global_pool": "token",
    }
    if _ACTIVATIONS[activation] is not None:
        kwargs["act_layer"] = _ACTIVATIONS[activation]
    return kwargs, _square(config.get("image_size", 224), "image size")


def _class_names(config: dict[str, Any]) -> list[str]:
    count = int(config.get("num_labels", 0) or 0)
    id2label = config.get("id2label") or {}
    if not count:
        count = len(id2label) or 2
    names = [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(count)]
    if len(set(names)) != len(names):
        raise ModelImportError(f"The class names {names} (id2label) are not unique.")
    return names


def _preprocessing(
    folder: Path, input_size: int
) -> tuple[tuple[float, float, float], tuple[float, float, float], dict[str, Any]]:
    """Mean and std on [0, 1] images, and the processor settings they came from."""
    path = folder / PREPROCESSOR_FILE
    if not path.is_file():
        record: dict[str, Any] = {"note": f"no {PREPROCESSOR_FILE}: ViTImageProcessor defaults"}
        return _IMAGENET_STANDARD, _IMAGENET_STANDARD, record
    processor = _read_json(path)
    keys = (
        "image_processor_type",
        "do_resize",
        "size",
        "resample",
        "do_center_crop",
        "crop_size",
        "do_rescale",
        "rescale_factor",
        "do_normalize",
        "image_mean",
        "image_std",
    )
    record = {key: processor[key] for key in keys if key in processor}
    if processor.get("do_center_crop"):
        raise ModelImportError(
            f"The image processor crops the centre ({processor.get('crop_size')}); stroke-triage "
            "resizes the whole slice. Supported are processors that only resize and normalise "
            "(ViTImageProcessor)."
        )
    size = processor.get("size", {"height": input_size, "width": input_size})
    if isinstance(size, dict):
        if "height" in size or "width" in size:
            side = _square([size.get("height"), size.get("width")], "processor size")
        elif "shortest_edge" in size:  # square CT slices: the shortest edge is every edge
            side = _square(size["shortest_edge"], "processor size")
        else:
            raise ModelImportError(f"The processor size {size} is not understood.")
    else:
        side = _square(size, "processor size")
    if processor.get("do_resize", True) and side != input_size:
        raise ModelImportError(
            f"The image processor resizes to {side} px but the model takes {input_size} px."
        )
    # stroke-triage's windowed image u lies in [0, 1] and stands for the 8-bit pixel 255 u.
    # The processor computes (255 u f - m) / s, which is (u - m / 255 f) / (s / 255 f).
    scale = 255.0 * float(processor.get("rescale_factor", 1 / 255))
    if not processor.get("do_rescale", True):
        scale = 255.0
    if processor.get("do_normalize", True):
        mean = _triple(processor.get("image_mean", _IMAGENET_STANDARD), "image_mean")
        std = _triple(processor.get("image_std", _IMAGENET_STANDARD), "image_std")
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return (
        (mean[0] / scale, mean[1] / scale, mean[2] / scale),
        (std[0] / scale, std[1] / scale, std[2] / scale),
        record,
    )


def _triple(value: Any, what: str) -> tuple[float, float, float]:
    if isinstance(value, int | float):
        value = [value] * 3
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise ModelImportError(f"The processor's {what} {value!r} is not three numbers.")
    return (float(value[0]), float(value[1]), float(value[2]))


def read_folder(folder: Path) -> HfVit:
    """Read and check a Hugging Face ViT image-classification folder.

    Args:
        folder: Holds ``config.json``, ``model.safetensors`` or ``pytorch_model.bin``, and
            optionally ``preprocessor_config.json``.

    Returns:
        The timm equivalent of the model and its preprocessing.

    Raises:
        ModelImportError: If a file is missing or the model is not a supported ViT.
    """
    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file():
        raise ModelImportError(f"{folder} has no {CONFIG_FILE}; is it a Hugging Face model folder?")
    config = _read_json(folder / CONFIG_FILE)
    source_architecture = _check_architecture(config)
    weights = next((folder / n for n in WEIGHT_FILES if (folder / n).is_file()), None)
    if weights is None:
        sharded = sorted(p.name for p in folder.glob("*.index.json"))
        found = f" (found the sharded index {', '.join(sharded)}: not supported)" if sharded else ""
        raise ModelImportError(f"{folder} holds neither {' nor '.join(WEIGHT_FILES)}{found}.")
    model_kwargs, input_size = _model_kwargs(config)
    mean, std, record = _preprocessing(folder, input_size)
    problem_type = config.get("problem_type")
    if problem_type is not None and problem_type not in _PROBLEM_TYPES:
        raise ModelImportError(
            f"The config's problem_type {problem_type!r} is not a classification; supported are "
            f"{sorted(_PROBLEM_TYPES)}."
        )
    return HfVit(
        weights_path=weights,
        model_kwargs=model_kwargs,
        input_size=input_size,
        layer_norm_eps=float(config.get("layer_norm_eps", 1e-12)),
        class_names=_class_names(config),
        mean=mean,
        std=std,
        preprocessing=record,
        source_architecture=source_architecture,
        problem_type=problem_type,
    )


def _block_names(tensors: dict[str, torch.Tensor]) -> dict[str, str]:
    """timm block part -> Hugging Face part, in whichever naming the file uses."""
    if any(key.startswith("vit.layers.") for key in tensors):
        return {
            "q": "attention.q_proj", "k": "attention.k_proj", "v": "attention.v_proj",
            "attn.proj": "attention.o_proj", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
            "norm1": "layernorm_before", "norm2": "layernorm_after", "prefix": "vit.layers.",
        }  # fmt: skip
    return {
        "q": "attention.attention.query", "k": "attention.attention.key",
        "v": "attention.attention.value", "attn.proj": "attention.output.dense",
        "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense",
        "norm1": "layernorm_before", "norm2": "layernorm_after", "prefix": "vit.encoder.layer.",
    }  # fmt: skip


def to_timm_state_dict(
    tensors: dict[str, torch.Tensor], *, depth: int, qkv_bias: bool
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Rename a Hugging Face ViT state dict to timm's names.

    Args:
        tensors: The Hugging Face tensors.
        depth: Number of encoder layers.
        qkv_bias: Whether query, key and value have biases.

    Returns:
        The timm state dict, and for each timm name the Hugging Face name(s) it came from.

    Raises:
        ModelImportError: If tensors are missing or left over, named in the message.
    """
    names = _block_names(tensors)
    plan: dict[str, list[str]] = {
        "cls_token": ["vit.embeddings.cls_token"],
        "pos_embed": ["vit.embeddings.position_embeddings"],
        "patch_embed.proj.weight": ["vit.embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": ["vit.embeddings.patch_embeddings.projection.bias"],
        "norm.weight": ["vit.layernorm.weight"],
        "norm.bias": ["vit.layernorm.bias"],
        "head.weight": ["classifier.weight"],
        "head.bias": ["classifier.bias"],
    }
    for i in range(depth):
        source = f"{names['prefix']}{i}."
        kinds = ["weight", "bias"] if qkv_bias else ["weight"]
        for kind in kinds:
            plan[f"blocks.{i}.attn.qkv.{kind}"] = [
                f"{source}{names[part]}.{kind}" for part in ("q", "k", "v")
            ]
        for part in ("attn.proj", "mlp.fc1", "mlp.fc2", "norm1", "norm2"):
            for kind in ("weight", "bias"):
                plan[f"blocks.{i}.{part}.{kind}"] = [f"{source}{names[part]}.{kind}"]
    wanted = {name for sources in plan.values() for name in sources}
    missing = sorted(wanted - tensors.keys())
    unexpected = sorted(tensors.keys() - wanted)
    if missing or unexpected:
        raise ModelImportError(_difference_message(missing, unexpected, "the config describes"))
    converted = {
        target: torch.cat([tensors[name] for name in sources], dim=0)
        if len(sources) > 1
        else tensors[sources[0]]
        for target, sources in plan.items()
    }
    return converted, {target: " + ".join(sources) for target, sources in plan.items()}


def _difference_message(missing: list[str], unexpected: list[str], what: str) -> str:
    parts = []
    if missing:
        parts.append(f"missing tensors: {name_list(missing)}")
    if unexpected:
        parts.append(f"unexpected tensors: {name_list(unexpected)}")
    return f"The weights do not fit the ViT {what} ({'; '.join(parts)})."


def name_list(names: list[str], shown: int = 8) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
