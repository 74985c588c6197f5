"""Checkpoints: a directory holding ``model.safetensors`` and ``spec.json``."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from model.errors import CheckpointError, CheckpointNotFoundError
from model.network import build_network
from model.spec import WINDOW_PRESETS, AggregationSpec, ChannelMode, ModelSpec, WindowSpec

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "spec.json"
README_FILE = "README.md"
DEFAULT_CHECKPOINT_DIR = Path(__file__).parent / "weights"
"""Where the shipped checkpoint lives (may be absent)."""

RANDOM_VERSION = "random-untrained"


@dataclass(frozen=True)
class LoadedModel:
    """A network in eval mode with the spec it was saved with."""

    network: nn.Module
    spec: ModelSpec
    sha256: str
    """SHA-256 of ``model.safetensors``: the weights' identity for provenance."""


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def save_checkpoint(directory: Path, network: nn.Module, spec: ModelSpec) -> Path:
    """Write the weights and spec into ``directory``, each file atomically.

    Args:
        directory: Created if missing; existing checkpoint files are replaced.
        network: The network; its state dict must fit ``build_network(spec)``.
        spec: The spec describing the network and its preprocessing.

    Returns:
        ``directory``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {
        name: tensor.detach().to("cpu").contiguous().clone()
        for name, tensor in network.state_dict().items()
    }
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{WEIGHTS_FILE}.", suffix=".tmp")
    os.close(fd)
    try:
        # One metadata key only: safetensors stores metadata from a hash map, so several keys
        # come out in varying order and the file's SHA-256 would change between saves.
        save_file(tensors, tmp, metadata={"format": "pt"})
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, directory / WEIGHTS_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _atomic_write_bytes(directory / SPEC_FILE, (spec.to_json() + "\n").encode("utf-8"))
    logger.info(
        "Saved checkpoint %s (version %s, %d tensors)", directory, spec.version, len(tensors)
    )
    return directory


def _not_found(directory: Path, missing: str) -> CheckpointNotFoundError:
    return CheckpointNotFoundError(
        f"No model checkpoint at {directory} ({missing} is missing). Train one with "
        "`stroke-triage train --data DIR --output DIR`, or point "
        "STROKE_TRIAGE_WORKER__CHECKPOINT at a directory holding model.safetensors and spec.json."
    )


def load_checkpoint(directory: Path, *, map_location: str = "cpu") -> LoadedModel:
    """Load a checkpoint's spec and weights together.

    Args:
        directory: The checkpoint directory.
        map_location: Device the weights are loaded onto.

    Returns:
        The network in eval mode, its spec and the weights' SHA-256.

    Raises:
        CheckpointNotFoundError: If the directory or one of its two files is missing.
        CheckpointError: If the spec is invalid or the weights do not fit it.
    """
    directory = Path(directory)
    weights_path = directory / WEIGHTS_FILE
    spec_path = directory / SPEC_FILE
    if not directory.is_dir():
        raise _not_found(directory, "the directory")
    for path in (spec_path, weights_path):
        if not path.is_file():
            raise _not_found(directory, path.name)
    try:
        spec = ModelSpec.from_json(spec_path.read_bytes())
    except ValidationError as exc:
        raise CheckpointError(
            f"The spec file {spec_path} is not a valid model spec: {exc}"
        ) from exc
    try:
        network = build_network(spec)
    except Exception as exc:  # timm raises RuntimeError, TypeError, ... for bad names/kwargs
        raise CheckpointError(
            f"The spec in {spec_path} describes a network timm cannot build: {exc}"
        ) from exc
    try:
        state = load_file(str(weights_path), device=map_location)
        network.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise CheckpointError(
            f"The weights in {weights_path} do not match the network described by {spec_path}: "
            f"{exc}"
        ) from exc
    network.to(map_location)
    network.eval()
    sha256 = _sha256(weights_path)
    logger.info(
        "Loaded checkpoint %s (version %s, trained=%s, sha256 %s)",
        directory,
        spec.version,
        spec.trained,
        sha256[:12],
    )
    return LoadedModel(network=network, spec=spec, sha256=sha256)


def random_spec() -> ModelSpec:
    """The spec of the tiny untrained ViT used by tests and the demo."""
    brain = WINDOW_PRESETS["brain"]
    return ModelSpec(
        architecture="vit_tiny_patch16_224",
        input_size=64,
        model_kwargs={"embed_dim": 64, "depth": 2, "num_heads": 2},
        windows=[WindowSpec(name="brain", center=brain.center, width=brain.width)],
        channel_mode=ChannelMode.REPLICATE,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        aggregation=AggregationSpec(rule="top_k_mean", k=5),
        threshold=0.5,
        trained=False,
        version=RANDOM_VERSION,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def create_random_checkpoint(directory: Path, *, seed: int = 0) -> Path:
    """Write a tiny randomly initialised ViT checkpoint (well under 1 MB).

    Its outputs mean nothing; it lets the pipeline run where no trained checkpoint exists.

    Args:
        directory: Where to write it.
        seed: Seed of the weight initialisation.

    Returns:
        ``directory``.
    """
    spec = random_spec()
    spec = spec.model_copy(update={"training": {"seed": seed, "command": "random initialisation"}})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = build_network(spec)
    return save_checkpoint(Path(directory), network, spec)
