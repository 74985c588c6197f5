"""Where the network runs and in which precision: one picker for serving and training."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import torch

from model.errors import DeviceUnavailableError, PrecisionError

PRECISIONS = ("fp32", "bf16")


def select_device(preference: str = "auto") -> torch.device:
    """Pick the compute device.

    Args:
        preference: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or
            ``"cuda:N"``.

    Returns:
        The device.

    Raises:
        DeviceUnavailableError: If CUDA is asked for but not available.
    """
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(
            f"Device {preference!r} was requested but CUDA is not available on this machine."
        )
    return device


def cpu_supports_bf16() -> bool:
    """Whether the CPU has native bfloat16 arithmetic (AMX or AVX512-BF16)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags: set[str] = set()
            for line in handle:
                if line.startswith("flags"):
                    flags.update(line.split(":", 1)[1].split())
                    break
    except OSError:
        flags = set()
    if flags:
        return bool(flags & {"amx_bf16", "avx512_bf16"})
    # No /proc/cpuinfo (not Linux): ask oneDNN.
    mkldnn: Any = torch.backends.mkldnn
    checker: Any = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(mkldnn.is_available() and checker is not None and checker())
    except RuntimeError:
        return False


BF16_SERIES_TOLERANCE = 0.01
"""The most a series probability may move under bf16 autocast for bf16 to be vetted."""


def bf16_agrees(fp32_series: np.ndarray, bf16_series: np.ndarray, threshold: float) -> bool:
    """Whether bf16 may decide for fp32: the same verdict on every series checked, and no
    series probability moved by more than :data:`BF16_SERIES_TOLERANCE` (the same verdicts
    with probabilities far apart only say that no series happened to lie near the threshold).
    """
    same_verdicts = np.array_equal(fp32_series >= threshold, bf16_series >= threshold)
    moved = float(np.max(np.abs(fp32_series - bf16_series))) if len(fp32_series) else 0.0
    return bool(same_verdicts and moved <= BF16_SERIES_TOLERANCE)


def resolve_precision(precision: str, device: torch.device, *, bf16_vetted: bool) -> str:
    """Turn ``"auto"`` into ``"fp32"`` or ``"bf16"``; pass explicit choices through.

    ``auto`` picks bf16 only where ``bf16_vetted`` says bf16 may decide, on CUDA where the GPU
    supports it and on CPU where the CPU has native bf16 (elsewhere it is emulated and slow).
    Serving passes whether evaluation found that bf16 gives the same answers as fp32 (the
    spec's ``bf16_agrees_with_fp32``, :func:`bf16_agrees`); training passes True, as it
    measures that itself.

    Args:
        precision: ``"auto"``, ``"fp32"`` or ``"bf16"``.
        device: The device the network runs on.
        bf16_vetted: Whether bf16 may be chosen automatically.

    Returns:
        ``"fp32"`` or ``"bf16"``.

    Raises:
        PrecisionError: If ``precision`` is none of the three.
    """
    if precision in PRECISIONS:
        return precision
    if precision != "auto":
        raise PrecisionError(f"Unknown precision {precision!r}; expected 'auto', 'fp32' or 'bf16'.")
    if device.type == "cuda":
        return "bf16" if bf16_vetted and torch.cuda.is_bf16_supported() else "fp32"
    if bf16_vetted and cpu_supports_bf16():
        return "bf16"
    return "fp32"


def autocast(device: torch.device, precision: str) -> AbstractContextManager[Any]:
    """The mixed-precision context of one forward pass: bf16 autocast, or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def use_one_thread() -> None:
    """Run torch's CPU ops in this thread only (in a process forked after torch ran ops)."""
    torch.set_num_threads(1)
