"""``import-model``: a Hugging Face folder or a timm state dict becomes a checkpoint."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import timm
import torch
from pydantic import ValidationError
from torch import nn

from model.checkpoint import SPEC_FILE, WEIGHTS_FILE, load_checkpoint, save_checkpoint
from model.importing import huggingface, timm_weights
from model.importing.errors import ModelImportError
from model.importing.files import file_sha256, read_state_dict
from model.importing.findings import reported_outputs, resolve_activation
from model.importing.labels import positive_label
from model.network import build_network
from model.spec import (
    Activation,
    AggregationSpec,
    ChannelMode,
    CodedFinding,
    ImportedWeights,
    ModelSpec,
    WindowSpec,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImportOptions:
    """How stroke-triage runs the imported network: the parts a foreign model cannot say."""

    windows: Sequence[WindowSpec]
    channel_mode: ChannelMode
    aggregation: AggregationSpec
    threshold: float
    """Not calibrated: the spec records ``threshold_calibrated: false``."""
    positive_label: str | None = None
    """The class that drives the verdict; None reads it from two class names."""
    version: str | None = None
    """Version label of the checkpoint; default ``imported-<sha256 prefix>``."""
    finding: CodedFinding | None = None
    """What the positive class detects; None: its ``output_findings`` entry, else stroke."""
    output_findings: dict[str, CodedFinding] = field(default_factory=dict)
    """Further outputs reported as findings (probability only), by class name."""
    activation: Activation | None = None
    """``--head``: softmax or sigmoid; None: what the source says (Hugging Face's
    ``problem_type``), else softmax."""


def import_huggingface(folder: Path, output: Path, options: ImportOptions) -> Path:
    """Import a Hugging Face ``ViTForImageClassification`` folder.

    Args:
        folder: ``config.json``, ``model.safetensors`` or ``pytorch_model.bin``, and optionally
            ``preprocessor_config.json``.
        output: The checkpoint directory to create.
        options: Windows, channel mode, decision rule and positive label.

    Returns:
        ``output``, holding ``model.safetensors`` and ``spec.json``.

    Raises:
        ModelImportError: If the model is not supported or its weights do not fit; the
            message says what was found.
    """
    _check_output(output)
    source = huggingface.read_folder(folder)
    tensors = read_state_dict(source.weights_path)
    sha256 = file_sha256(source.weights_path)
    state, origin = huggingface.to_timm_state_dict(
        tensors,
        depth=int(source.model_kwargs["depth"]),
        qkv_bias=bool(source.model_kwargs["qkv_bias"]),
    )
    spec = _spec(
        architecture=huggingface.TIMM_ARCHITECTURE,
        input_size=source.input_size,
        model_kwargs=source.model_kwargs,
        layer_norm_eps=source.layer_norm_eps,
        class_names=source.class_names,
        mean=source.mean,
        std=source.std,
        options=options,
        activation=resolve_activation(
            options.activation,
            source_says=source.activation,
            source=f"the config's problem_type {source.problem_type!r}",
        ),
        imported=ImportedWeights(
            source_format="huggingface",
            file_name=source.weights_path.name,
            sha256=sha256,
            source_architecture=source.source_architecture,
            preprocessing=source.preprocessing,
            imported_at=_now(),
        ),
    )
    return _write(output, spec, state, origin)


def import_timm(
    weights: Path,
    output: Path,
    options: ImportOptions,
    *,
    architecture: str,
    class_names: Sequence[str] = ("normal", "stroke"),
    input_size: int | None = None,
    model_kwargs: dict[str, Any] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Path:
    """Import a plain timm ViT state dict (``.safetensors``, ``.pth`` or ``.bin``).

    Args:
        weights: The state dict file.
        output: The checkpoint directory to create.
        options: Windows, channel mode, decision rule and positive label.
        architecture: The timm name it was made with, e.g. ``vit_base_patch16_224``.
        class_names: The head's classes in index order.
        input_size: Input side in pixels; default: what ``pos_embed`` was made for.
        model_kwargs: timm keyword arguments it was made with (``embed_dim``, ``depth``, ...).
        mean: Normalisation mean on [0, 1] images; default: timm's for the architecture.
        std: Normalisation std; default: timm's for the architecture.

    Returns:
        ``output``, holding ``model.safetensors`` and ``spec.json``.

    Raises:
        ModelImportError: If the architecture is not a plain ViT or the weights do not fit it.
    """
    _check_output(output)
    timm_weights.check_architecture(architecture)
    state = read_state_dict(weights)  # first: it names a missing or unsafe file
    sha256 = file_sha256(weights)
    kwargs = dict(model_kwargs or {})
    rows = timm_weights.num_classes(state)
    if rows != len(class_names):
        raise ModelImportError(
            f"The head (head.weight) has {rows} outputs but {len(class_names)} class names were "
            f"given ({list(class_names)}); pass --class-names with one name per output."
        )
    cfg = timm.models.get_pretrained_cfg(architecture)
    default_mean = tuple(cfg.mean) if cfg is not None and cfg.mean else (0.5, 0.5, 0.5)
    default_std = tuple(cfg.std) if cfg is not None and cfg.std else (0.5, 0.5, 0.5)
    spec = _spec(
        architecture=architecture,
        input_size=input_size or timm_weights.input_size(state, kwargs),
        model_kwargs=kwargs,
        layer_norm_eps=None,
        class_names=list(class_names),
        mean=tuple(mean or default_mean),
        std=tuple(std or default_std),
        options=options,
        activation=resolve_activation(options.activation, source_says=None, source="timm"),
        imported=ImportedWeights(
            source_format="timm",
            file_name=Path(weights).name,
            sha256=sha256,
            source_architecture=architecture,
            preprocessing={"mean": list(mean or default_mean), "std": list(std or default_std)},
            imported_at=_now(),
        ),
    )
    return _write(output, spec, state, {name: name for name in state})


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _check_output(output: Path) -> None:
    output = Path(output)
    if (output / WEIGHTS_FILE).exists() or (output / SPEC_FILE).exists():
        raise ModelImportError(f"{output} already holds a checkpoint; import into a new directory.")


def _spec(
    *,
    architecture: str,
    input_size: int,
    model_kwargs: dict[str, Any],
    layer_norm_eps: float | None,
    class_names: list[str],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    options: ImportOptions,
    activation: Activation,
    imported: ImportedWeights,
) -> ModelSpec:
    positive = positive_label(class_names, options.positive_label)
    finding, outputs = reported_outputs(
        class_names=class_names,
        positive=positive,
        finding=options.finding,
        output_findings=options.output_findings,
    )
    try:
        return ModelSpec(
            architecture=architecture,
            input_size=input_size,
            model_kwargs=model_kwargs,
            layer_norm_eps=layer_norm_eps,
            windows=list(options.windows),
            channel_mode=options.channel_mode,
            mean=mean,
            std=std,
            class_names=class_names,
            positive_class=positive,
            activation=activation,
            outputs=outputs,
            finding=finding,
            aggregation=options.aggregation,
            threshold=options.threshold,
            threshold_calibrated=False,
            trained=True,
            version=options.version or f"imported-{imported.sha256[:12]}",
            source=imported,
            created_at=imported.imported_at,
        )
    except ValidationError as error:
        raise ModelImportError(f"The imported model does not make a valid spec: {error}") from error


def _build(spec: ModelSpec) -> nn.Module:
    try:
        network = build_network(spec)
    except Exception as error:  # timm raises many kinds for bad kwargs
        raise ModelImportError(
            f"timm cannot build {spec.architecture!r} with {spec.model_kwargs}: {error}"
        ) from error
    timm_weights.check_network(network, spec.architecture)
    return network


def load_exactly(
    network: nn.Module, state: dict[str, torch.Tensor], origin: dict[str, str]
) -> None:
    """Load ``state`` into ``network``, refusing any missing, extra or misshapen tensor.

    Args:
        network: The target network.
        state: Tensors under the network's names.
        origin: For each name, the source file's name(s), for messages.

    Raises:
        ModelImportError: Naming every tensor that does not fit.
    """
    expected = network.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(origin.get(k, k) for k in state.keys() - expected.keys())
    mismatched = sorted(
        f"{origin.get(name, name)} {tuple(state[name].shape)} (expected {tuple(tensor.shape)})"
        for name, tensor in expected.items()
        if name in state and state[name].shape != tensor.shape
    )
    problems = []
    if missing:
        problems.append(f"missing tensors: {huggingface.name_list(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {huggingface.name_list(unexpected)}")
    if mismatched:
        problems.append(f"mismatched shapes: {huggingface.name_list(mismatched)}")
    if problems:
        raise ModelImportError(
            f"The weights do not fit the network ({'; '.join(problems)}). Check the "
            "architecture, --model-kwargs and --input-size."
        )
    network.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


def _write(
    output: Path, spec: ModelSpec, state: dict[str, torch.Tensor], origin: dict[str, str]
) -> Path:
    network = _build(spec)
    load_exactly(network, state, origin)
    directory = save_checkpoint(Path(output), network, spec)
    loaded = load_checkpoint(directory)  # what the worker will do, once, here
    logger.info(
        "Imported %s (%s, sha256 %s) as %s: %s, %d px, %s head, positive class %r (index %d), "
        "%d finding(s)",
        spec.source.file_name if spec.source else "?",
        spec.source.source_format if spec.source else "?",
        spec.source.sha256[:12] if spec.source else "?",
        directory,
        spec.architecture,
        spec.input_size,
        spec.activation.value,
        spec.positive_class,
        loaded.spec.positive_index,
        len(loaded.spec.reported_outputs),
    )
    return directory
