"""Fine-tuning from local weights: initial weights, frozen blocks, layer-wise lr decay.

The initial weights go through the architecture's own timm checkpoint filter, as timm's
``pretrained_cfg_overlay=dict(file=...)`` would (a position embedding made for another input
size is resampled), after being read without running code (``model.importing.files``).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from timm.optim import param_groups_layer_decay  # type: ignore[attr-defined]
from torch import nn

from model.checkpoint import SPEC_FILE, WEIGHTS_FILE
from model.importing.files import file_sha256, read_state_dict
from model.network import build_network
from model.spec import ModelSpec
from model.training.config import TrainConfig, TrainingError

logger = logging.getLogger(__name__)

HEAD_PREFIX = "head."
_EMBEDDING_PARAMETERS = ("cls_token", "reg_token", "pos_embed", "patch_embed.", "norm_pre.")


def _weights_of(init: Path, spec: ModelSpec) -> tuple[Path, ModelSpec]:
    """The weights file of ``init`` and the spec to train, with what a checkpoint fixes."""
    if not init.is_dir():
        return init, spec
    if (init / "config.json").is_file() and not (init / SPEC_FILE).is_file():
        raise TrainingError(
            f"{init} looks like a Hugging Face folder; run `stroke-triage import-model --from-hf "
            f"{init} --output DIR` first and pass --init DIR."
        )
    try:
        source = ModelSpec.from_json((init / SPEC_FILE).read_bytes())
    except (OSError, ValidationError) as error:
        raise TrainingError(f"{init} is not a checkpoint directory: {error}") from error
    if (source.architecture, source.model_kwargs) != (spec.architecture, spec.model_kwargs):
        raise TrainingError(
            f"The checkpoint {init} is a {source.architecture} with {source.model_kwargs}, but "
            f"training builds a {spec.architecture} with {spec.model_kwargs}; pass --arch "
            f"{source.architecture} --model-kwargs '{_json(source.model_kwargs)}'."
        )
    # The network computes what it was trained to compute only with its own LayerNorm epsilon
    # and input normalisation.
    return init / WEIGHTS_FILE, spec.model_copy(
        update={"layer_norm_eps": source.layer_norm_eps, "mean": source.mean, "std": source.std}
    )


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


def initial_network(
    config: TrainConfig, spec: ModelSpec
) -> tuple[nn.Module, ModelSpec, dict[str, Any]]:
    """The network to fine-tune, loaded with ``config.init``.

    Args:
        config: The run's config; ``config.init`` must be set.
        spec: The spec training builds.

    Returns:
        The network (on the CPU), the spec updated with what the initial checkpoint fixes
        (LayerNorm epsilon, mean and std), and the record the spec's ``training`` keeps.

    Raises:
        TrainingError: If the weights do not fit the architecture (tensors named).
    """
    assert config.init is not None
    weights, spec = _weights_of(Path(config.init), spec)
    state = read_state_dict(weights)  # first: it names a missing or unsafe file
    sha256 = file_sha256(weights)
    network = build_network(spec)
    checkpoint_filter = getattr(sys.modules[type(network).__module__], "checkpoint_filter_fn", None)
    if checkpoint_filter is not None:
        state = checkpoint_filter(state, network)
    expected = network.state_dict()
    head_reinitialised = any(
        name.startswith(HEAD_PREFIX) and (name not in state or state[name].shape != tensor.shape)
        for name, tensor in expected.items()
    )
    if head_reinitialised:
        state = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIX)}
    missing = sorted(k for k in expected.keys() - state.keys() if not k.startswith(HEAD_PREFIX))
    unexpected = sorted(state.keys() - expected.keys())
    mismatched = sorted(
        f"{name} {tuple(state[name].shape)} (expected {tuple(tensor.shape)})"
        for name, tensor in expected.items()
        if name in state and state[name].shape != tensor.shape
    )
    if missing or unexpected or mismatched:
        raise TrainingError(
            f"The initial weights {weights.name} do not fit {spec.architecture} "
            f"with {spec.model_kwargs} (missing: {', '.join(missing[:8]) or 'none'}; "
            f"unexpected: {', '.join(unexpected[:8]) or 'none'}; "
            f"mismatched: {', '.join(mismatched[:8]) or 'none'})."
        )
    network.load_state_dict(state, strict=False)
    record = {
        "file_name": weights.name
        if weights.name != WEIGHTS_FILE
        else f"{weights.parent.name}/{weights.name}",
        "sha256": sha256,
        "head_reinitialised": head_reinitialised,
    }
    logger.info(
        "Initial weights %s (sha256 %s); head %s",
        record["file_name"],
        sha256[:12],
        "re-initialised" if head_reinitialised else "kept",
    )
    return network, spec, record


def freeze_blocks(network: nn.Module, count: int) -> list[str]:
    """Stop gradients to the patch embedding and the first ``count`` transformer blocks.

    Args:
        network: A timm ViT (it has ``blocks``).
        count: Blocks to freeze; 0 freezes nothing.

    Returns:
        Names of the frozen parameters.

    Raises:
        TrainingError: If the network has no blocks or fewer than ``count``.
    """
    if count == 0:
        return []
    blocks = getattr(network, "blocks", None)
    if blocks is None or count > len(blocks):
        depth = "no transformer blocks" if blocks is None else f"{len(blocks)} blocks"
        raise TrainingError(f"--freeze-blocks {count}: the network has {depth}.")
    prefixes = (*_EMBEDDING_PARAMETERS, *(f"blocks.{i}." for i in range(count)))
    frozen = []
    for name, parameter in network.named_parameters():
        if name.startswith(prefixes):
            parameter.requires_grad_(False)
            frozen.append(name)
    return frozen


def parameter_groups(network: nn.Module, config: TrainConfig) -> list[dict[str, Any]] | None:
    """Optimiser parameter groups for layer decay or frozen blocks; None: plain parameters.

    With ``config.layer_decay`` the groups are timm's (BEiT's rule: the head trains at ``lr``,
    each block below at ``layer_decay`` times the one above, 1-D parameters without weight
    decay), each with its own ``lr``.
    """
    if config.layer_decay is None:
        if config.freeze_blocks == 0:
            return None
        return [{"params": [p for p in network.parameters() if p.requires_grad]}]
    skip: set[str] = getattr(network, "no_weight_decay", set)()
    groups: list[dict[str, Any]] = param_groups_layer_decay(
        network,
        weight_decay=config.weight_decay,
        no_weight_decay_list=skip,
        layer_decay=config.layer_decay,
    )
    for group in groups:
        group["lr"] = config.lr * group.pop("lr_scale", 1.0)
    return groups


def trainable_parameters(network: nn.Module) -> int:
    """Parameters that receive gradients."""
    return sum(p.numel() for p in network.parameters() if p.requires_grad)
