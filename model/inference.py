"""Series classification with a loaded checkpoint."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch

from model.aggregate import aggregate
from model.checkpoint import LoadedModel, load_checkpoint
from model.device import autocast, resolve_precision, select_device
from model.dicom import SortedSeries
from model.errors import PreprocessError
from model.pixels import preprocess_hu_stack
from model.slabs import ClassifiedStack, SlabLoader, classified_stack
from model.spec import Activation, ChannelMode, CodedFinding, ModelSpec

logger = logging.getLogger(__name__)

HuLoader = Callable[[int, int], np.ndarray]
"""Returns the HU of sorted slices ``lo`` to ``hi`` (exclusive) as ``(hi - lo, H, W)``."""


def context_slices(spec: ModelSpec) -> int:
    """Neighbours on each side that one slice's network input is made from."""
    return 1 if spec.channel_mode is ChannelMode.ADJACENT else 0


def preprocess_sorted(
    load: HuLoader, n: int, start: int, stop: int, spec: ModelSpec
) -> tuple[np.ndarray, np.ndarray]:
    """HU and network input of sorted slices ``start`` to ``stop`` of a stack of ``n``.

    The slices are loaded with the neighbours the spec's channel mode needs, so the inputs equal
    those of preprocessing the whole stack at once.

    Args:
        load: Loads a range of sorted slices as HU.
        n: Slices in the stack.
        start: First sorted slice wanted.
        stop: One past the last sorted slice wanted.
        spec: The model's spec.

    Returns:
        ``(stop - start, H, W)`` HU and ``(stop - start, 3, S, S)`` float32 network input.
    """
    context = context_slices(spec)
    lo, hi = max(0, start - context), min(n, stop + context)
    hu = load(lo, hi)
    return hu[start - lo : stop - lo], preprocess_hu_stack(hu, spec)[start - lo : stop - lo]


@dataclass(frozen=True)
class FindingPrediction:
    """One further finding of a multi-output model on one series."""

    finding: CodedFinding
    probability: float
    """Aggregated with the verdict's rule."""
    slice_probabilities: list[float]
    """One per dataset, in the order the datasets were given (a slab's for each of its slices)."""


@dataclass(frozen=True)
class SeriesPrediction:
    """The classifier's answer for one series."""

    probability: float
    """Aggregated probability of the positive class (the finding that drives the verdict)."""
    suspected: bool
    """Whether ``probability`` reaches the spec's threshold."""
    threshold: float
    slice_probabilities: list[float]
    """One per dataset, in the order the datasets were given (a slab's for each of its slices)."""
    order: list[int]
    """Input indices in sorted slice order (lowest position first)."""
    top_slices: list[int]
    """Input indices of the slices behind the most suspicious images (up to k slices, or the
    slices of up to k slabs), most suspicious first: the slices the SR cites."""
    key_slices: list[int] = field(default_factory=list)
    """One input index per most suspicious image, most suspicious first: the slice itself, or a
    slab's middle slice (what the heat map and the preview show)."""
    slabs: list[list[int]] | None = None
    """Input indices averaged into each classified slab, bottom first; None when the slices
    were classified one by one."""
    slab_mm: float | None = None
    """The slab thickness, when slices were averaged."""
    further_findings: list[FindingPrediction] = field(default_factory=list)
    """The spec's other reported outputs, in its order."""


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
        # Convolutions (a hybrid's CNN stem) run about twice as fast on CPU with the channels
        # last (NHWC) layout, with the same results to float rounding; a plain ViT is unchanged.
        self._memory_format = torch.channels_last if self._device.type == "cpu" else None
        if self._memory_format is not None:
            self._network = self._network.to(memory_format=self._memory_format)
        # On CPU, bf16 only where evaluation showed it gives the same answers as fp32.
        self._precision = resolve_precision(
            precision,
            self._device,
            bf16_vetted=loaded.spec.metrics.get("bf16_agrees_with_fp32") is True,
        )
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
        return self.predict_finding_probabilities(batch)[:, 0]

    def predict_finding_probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities of every reported finding (``spec.reported_outputs``) of images.

        Args:
            batch: ``(N, 3, S, S)`` float32 network input.

        Returns:
            ``(N, F)`` float32, the verdict's finding in column 0.
        """
        size = self._spec.input_size
        if batch.ndim != 4 or batch.shape[1:] != (3, size, size):
            raise PreprocessError(
                f"Expected network input of shape (N, 3, {size}, {size}), got {batch.shape}."
            )
        columns = [output.index for output in self._spec.reported_outputs]
        sigmoid = self._spec.activation is Activation.SIGMOID
        out = np.empty((batch.shape[0], len(columns)), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, batch.shape[0], self._batch_size):
                chunk = np.ascontiguousarray(
                    batch[start : start + self._batch_size], dtype=np.float32
                )
                tensor = torch.from_numpy(chunk).to(self._device)
                if self._memory_format is not None:
                    tensor = tensor.contiguous(memory_format=self._memory_format)
                with autocast(self._device, self._precision):
                    logits = self._network(tensor)
                logits = logits.float()
                probs = torch.sigmoid(logits) if sigmoid else torch.softmax(logits, dim=-1)
                out[start : start + chunk.shape[0]] = probs[:, columns].cpu().numpy()
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
        return self._predict_sorted(hu.shape[0], lambda lo, hi: hu[lo:hi])[:, 0]

    def _predict_sorted(self, n: int, load: HuLoader) -> np.ndarray:
        """Predict chunk by chunk so a long series never sits in memory as float32 images.

        Returns ``(n, F)``: every reported finding, the verdict's in column 0.
        """
        out = np.empty((n, len(self._spec.reported_outputs)), dtype=np.float32)
        for start in range(0, n, self._batch_size):
            stop = min(n, start + self._batch_size)
            _, inputs = preprocess_sorted(load, n, start, stop, self._spec)
            out[start:stop] = self.predict_finding_probabilities(inputs)
        return out

    def predict_series(self, datasets: Sequence[pydicom.Dataset]) -> SeriesPrediction:
        """Classify one axial CT series.

        Slices thinner than the spec's ``slice_thickness_mm`` are averaged into slabs of it
        (``model.slabs``), and the slabs are classified; each slice then carries its slab's
        probability.

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
        series = SortedSeries(datasets)
        stack = classified_stack(series, self._spec.slice_thickness_mm)
        unit_probs = self._predict_sorted(len(stack.units), SlabLoader(series, stack))
        per_slice = _spread(stack, unit_probs, len(datasets))
        rule = self._spec.aggregation
        aggregated = [
            aggregate(unit_probs[:, column], rule=rule.rule, k=rule.k)
            for column in range(unit_probs.shape[1])
        ]
        probability = aggregated[0]
        top_units = stack.top_units(unit_probs[:, 0].tolist(), rule.k)
        prediction = SeriesPrediction(
            probability=probability,
            suspected=probability >= self._spec.threshold,
            threshold=self._spec.threshold,
            slice_probabilities=[float(p) for p in per_slice[:, 0]],
            order=list(series.order),
            top_slices=[index for unit in top_units for index in stack.units[unit]],
            key_slices=[stack.representative(unit) for unit in top_units],
            slabs=[list(members) for members in stack.units] if stack.averaged else None,
            slab_mm=stack.slab_mm,
            further_findings=[
                FindingPrediction(
                    finding=output.finding,
                    probability=aggregated[column],
                    slice_probabilities=[float(p) for p in per_slice[:, column]],
                )
                for column, output in enumerate(self._spec.reported_outputs)
                if column > 0
            ],
        )
        logger.info(
            "Classified %d slices (%d %s) in %.2f s: probability %.3f, suspected=%s",
            len(datasets),
            len(stack.units),
            "slabs" if stack.averaged else "images",
            time.perf_counter() - began,
            probability,
            prediction.suspected,
        )
        return prediction


def _spread(stack: ClassifiedStack, unit_probs: np.ndarray, n: int) -> np.ndarray:
    """Per input slice, the probabilities of the unit it belongs to: ``(n, F)``."""
    per_slice = np.empty((n, unit_probs.shape[1]), dtype=np.float32)
    for unit, members in enumerate(stack.units):
        per_slice[members] = unit_probs[unit]
    return per_slice
