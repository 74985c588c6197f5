"""Reading weights files without executing code from them."""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from model.importing.errors import ModelImportError

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".bin", ".pth", ".pt")


def file_sha256(path: Path) -> str:
    """SHA-256 of a file (hex)."""
    with Path(path).open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A plain ``name -> tensor`` state dict from a ``.safetensors``, ``.bin``, ``.pth`` or ``.pt``.

    Pickle files are loaded with ``torch.load(weights_only=True)``, which builds only tensors and
    plain containers and never runs code from the file.

    Args:
        path: The weights file.

    Returns:
        The tensors on the CPU, by name.

    Raises:
        ModelImportError: If the file is missing, of another kind, cannot be read safely, or
            holds anything but a flat mapping of names to tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelImportError(f"The weights file {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        try:
            return dict(load_file(str(path), device="cpu"))
        except (SafetensorError, OSError) as error:
            raise ModelImportError(
                f"{path.name} is not a readable safetensors file: {error}"
            ) from error
    if suffix not in PICKLE_SUFFIXES:
        raise ModelImportError(
            f"{path.name} is neither a safetensors file nor a PyTorch state dict; supported are "
            f"{', '.join(SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES)}."
        )
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as error:
        raise ModelImportError(
            f"{path.name} cannot be loaded as plain weights (weights_only=True refused it): it "
            "holds Python objects, not just tensors. stroke-triage never runs code from a model "
            "file; save the model's state_dict() alone, preferably as safetensors."
        ) from error
    return _plain_state_dict(loaded, path.name)


def _plain_state_dict(loaded: object, name: str) -> dict[str, torch.Tensor]:
    if not isinstance(loaded, Mapping):
        raise ModelImportError(
            f"{name} holds a {type(loaded).__name__}, not a state dict (a mapping of tensor "
            "names to tensors)."
        )
    odd = [key for key, value in loaded.items() if not isinstance(key, str)]
    odd += [key for key, value in loaded.items() if not isinstance(value, torch.Tensor)]
    if odd:
        shown = ", ".join(repr(key) for key in odd[:5])
        raise ModelImportError(
            f"{name} is not a plain state dict: {len(odd)} entries are not tensors under a name "
            f"({shown}). A training checkpoint (with optimizer, epoch, ...) must be reduced to "
            "its model's state_dict() before import."
        )
    return {str(key): value for key, value in loaded.items()}
