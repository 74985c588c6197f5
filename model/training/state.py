"""The resumable state of a run: ``last.pt`` in its output folder, rewritten every epoch."""

from __future__ import annotations

import os
import random
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE = "last.pt"

RESUMABLE_CHANGES = frozenset(
    {"epochs", "patience", "device", "num_workers", "num_threads", "data_dir", "output_dir"}
)
"""Config fields that may change between an interrupted run and its resumption."""


@dataclass
class RunState:
    """Where a run stands after its last finished epoch."""

    epoch: int = 0
    best_metric: float | None = None
    best_epoch: int = 0
    best_model: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0
    stopped_early: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The fields as ``last.pt`` stores them."""
        return asdict(self)

    @classmethod
    def from_saved(cls, saved: dict[str, Any]) -> RunState:
        """The state kept in a loaded ``last.pt``."""
        return cls(**{item.name: saved[item.name] for item in fields(cls)})


def atomic_torch_save(obj: dict[str, Any], path: Path) -> None:
    """``torch.save`` to a temporary file, then rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_own(path: Path) -> dict[str, Any]:
    """Load a file this package wrote (it holds numpy RNG state: weights-only loading refuses)."""
    saved: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    return saved


def seed_everything(seed: int) -> None:
    """Seeds Python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Python's, numpy's and torch's (CPU and CUDA) random state."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Config fields that differ between a saved run and this one, resumable ones aside."""
    return sorted(
        key
        for key in set(saved) | set(current)
        if key not in RESUMABLE_CHANGES and saved.get(key) != current.get(key)
    )
