"""Series classification with a loaded checkpoint."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch

from model.aggregate import aggregate
from model.checkpoint import LoadedModel, load_checkpoint
from model.errors import DeviceUnavailableError, PreprocessError
from model.preprocess import (
    ChannelMode,
    dataset_to_hu,
    preprocess_hu_stack,
    sort_slices,
)
from model.spec import ModelSpec

logger = logging.getLogger(__name__)

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


def _resolve_precision(precision: str, device: torch.device, spec: ModelSpec) -> str:
    if precision in PRECISIONS:
        return precision
    if precision != "auto":
        raise ValueError(f"Unknown precision {precision!r}; expected 'auto', 'fp32' or 'bf16'.")
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    # On CPU, bf16 only where it is fast and where evaluation showed it gives the same answers.
    if cpu_supports_bf16() and spec.metrics.get("bf16_agrees_with_fp32") is True:
        return "bf16"
    return "fp32"


@dataclass(frozen=True)
class SeriesPrediction:
    """The classifier's answer for one series."""

    probability: float
    """Aggregated probability of the positive class."""
    suspected: bool
    """Whether ``probability`` reaches the spec's threshold."""
    threshold: float
    slice_probabilities: list[float]
    """One per dataset, in the order the datasets were given."""
    order: list[int]
    """Input indices in sorted slice order (lowest position first)."""
    top_slices: list[int]
    """Input indices of the most suspicious slices, most suspicious first (up to k)."""


class Classifier:
    """Runs a checkpoint's network on CT slices exactly as its spec prescribes."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        device: str = "auto",
        precision: str = "auto",
        batch_size: int = 32,
    ) -> None:
        """Move the network to the device and choose the precision.

        Args:
            loaded: The checkpoint.
            device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
            precision: ``"auto"``, ``"fp32"`` or ``"bf16"`` (autocast).
            batch_size: Slices per forward pass.
        """
        if batch_size < 1:
            raise ValueError(f"The batch size must be at least 1, got {batch_size}.")
        self._device = select_device(device)
        self._spec = loaded.spec
        self._sha256 = loaded.sha256
        self._network = loaded.network.to(self._device).eval()
        self._precision = _resolve_precision(precision, self._device, loaded.spec)
        self._batch_size = batch_size
        logger.info(
            "Classifier ready: model %s version %s on %s (%s)",
            self._spec.name,
            self._spec.version,
            self._device,
            self._precision,
        )

    @classmethod
    def from_checkpoint(cls, directory: Path, **kw: Any) -> Classifier:
        """Load the checkpoint in ``directory`` and wrap it; ``kw`` go to ``__init__``."""
        return cls(load_checkpoint(directory), **kw)

    @property
    def spec(self) -> ModelSpec:
        """The checkpoint's spec."""
        return self._spec

    @property
    def sha256(self) -> str:
        """SHA-256 of the checkpoint's weights file."""
        return self._sha256

    @property
    def device(self) -> torch.device:
        """The device the network runs on."""
        return self._device

    @property
    def precision(self) -> str:
        """``"fp32"`` or ``"bf16"``."""
        return self._precision

    def predict_probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Positive-class probabilities of preprocessed images.

        Args:
            batch: ``(N, 3, S, S)`` float32 network input.

        Returns:
            ``(N,)`` float32 probabilities.
        """
        size = self._spec.input_size
        if batch.ndim != 4 or batch.shape[1:] != (3, size, size):
            raise PreprocessError(
                f"Expected network input of shape (N, 3, {size}, {size}), got {batch.shape}."
            )
        out = np.empty(batch.shape[0], dtype=np.float32)
        positive = self._spec.positive_index
        use_bf16 = self._precision == "bf16"
        with torch.inference_mode():
            for start in range(0, batch.shape[0], self._batch_size):
                chunk = np.ascontiguousarray(
                    batch[start : start + self._batch_size], dtype=np.float32
                )
                tensor = torch.from_numpy(chunk).to(self._device)
                with torch.autocast(
                    device_type=self._device.type, dtype=torch.bfloat16, enabled=use_bf16
                ):
                    logits = self._network(tensor)
                probs = torch.softmax(logits.float(), dim=-1)[:, positive]
                out[start : start + chunk.shape[0]] = probs.cpu().numpy()
        return out

    def predict_hu_stack(self, hu: np.ndarray) -> np.ndarray:
        """Positive-class probability of every slice of a sorted HU stack.

        Args:
            hu: ``(N, H, W)`` HU, slices sorted along the patient axis.

        Returns:
            ``(N,)`` float32 probabilities, in stack order.
        """
        if hu.ndim != 3 or hu.shape[0] == 0:
            raise PreprocessError(f"Expected a non-empty HU stack (N, H, W), got {hu.shape}.")
        return self._predict_sorted(hu.shape[0], lambda lo, hi: hu[lo:hi])

    def _predict_sorted(self, n: int, load: Callable[[int, int], np.ndarray]) -> np.ndarray:
        """Predict chunk by chunk so a long series never sits in memory as float32 images.

        Adjacent-slice mode needs one neighbour on each side, so each chunk is loaded with one
        slice of context; the result equals preprocessing the whole stack at once.
        """
        context = 1 if self._spec.channel_mode is ChannelMode.ADJACENT else 0
        out = np.empty(n, dtype=np.float32)
        for start in range(0, n, self._batch_size):
            stop = min(n, start + self._batch_size)
            lo, hi = max(0, start - context), min(n, stop + context)
            inputs = preprocess_hu_stack(load(lo, hi), self._spec)
            out[start:stop] = self.predict_probabilities(inputs[start - lo : stop - lo])
        return out

    def predict_series(self, datasets: Sequence[pydicom.Dataset]) -> SeriesPrediction:
        """Classify one axial CT series.

        Args:
            datasets: The series' slices in any order, with pixel data.

        Returns:
            Series probability, decision, and per-slice detail in input order.

        Raises:
            PreprocessError: If there are no slices, slices differ in size, or one cannot be
                decoded.
        """
        if len(datasets) == 0:
            raise PreprocessError("Cannot classify a series with no slices.")
        began = time.perf_counter()
        order = sort_slices(datasets)
        shape: tuple[int, ...] | None = None

        def load(lo: int, hi: int) -> np.ndarray:
            nonlocal shape
            slices = [dataset_to_hu(datasets[i]) for i in order[lo:hi]]
            for hu in slices:
                shape = shape or hu.shape
                if hu.shape != shape:
                    raise PreprocessError(
                        f"All slices of a series must have one size; found {shape} and {hu.shape}."
                    )
            return np.stack(slices)

        sorted_probs = self._predict_sorted(len(datasets), load)
        slice_probs = np.empty_like(sorted_probs)
        slice_probs[np.asarray(order)] = sorted_probs
        rule = self._spec.aggregation
        probability = aggregate(slice_probs, rule=rule.rule, k=rule.k)
        ranked = sorted(range(len(datasets)), key=lambda i: (-float(slice_probs[i]), i))
        prediction = SeriesPrediction(
            probability=probability,
            suspected=probability >= self._spec.threshold,
            threshold=self._spec.threshold,
            slice_probabilities=[float(p) for p in slice_probs],
            order=list(order),
            top_slices=ranked[: min(rule.k, len(ranked))],
        )
        logger.info(
            "Classified %d slices in %.2f s: probability %.3f, suspected=%s",
            len(datasets),
            time.perf_counter() - began,
            probability,
            prediction.suspected,
        )
        return prediction
