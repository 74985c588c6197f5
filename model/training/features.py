"""Cached backbone features: every slice through the frozen stages before the cut, once.

A cache file holds, for every slice of a data set, the feature map of the backbone's stages
``0 .. cut-1`` (float16), and the same of the horizontally flipped slice (the augmentation the
cached path offers). It is keyed by the data fingerprint, the backbone weights' sha256, the
input size, the cut and the preprocessing, so a changed ingredient never reuses a stale file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from model.spec import ModelSpec
from model.training.backbone import Prefix
from model.training.data import SliceDataset, SliceRecord, fingerprint
from model.training.loop import batches

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureCache:
    """Feature maps of a data set's slices, and the flipped slices', in record order."""

    keys: list[tuple[str, int]]
    """(patient, slice) of each row."""
    features: torch.Tensor
    """``(N, C, h, w)`` float16."""
    flipped: torch.Tensor
    """The same for the horizontally flipped slices."""

    def rows(self, records: Sequence[SliceRecord]) -> list[int]:
        """Row of each record (raises KeyError for a slice the cache lacks)."""
        index = {key: i for i, key in enumerate(self.keys)}
        return [index[(r.patient, r.slice)] for r in records]


def cache_key(
    records: Sequence[SliceRecord], spec: ModelSpec, *, weights_sha256: str, cut: int
) -> str:
    """What the cached features depend on, hashed."""
    ingredients = {
        "data": fingerprint(records),
        "weights": weights_sha256,
        "cut": cut,
        "input_size": spec.input_size,
        "channel_mode": spec.channel_mode.value,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "format": 2,  # 2: slices resized in float, never rounded to 8 bits
    }
    return hashlib.sha256(json.dumps(ingredients, sort_keys=True).encode()).hexdigest()


def compute_features(
    prefix: Prefix, records: Sequence[SliceRecord], spec: ModelSpec, *, batch_size: int = 32
) -> FeatureCache:
    """Run every slice (and its mirror image) through ``prefix`` in fp32, keep float16."""
    dataset = SliceDataset(records, spec)
    prefix.eval()
    plain: list[torch.Tensor] = []
    flipped: list[torch.Tensor] = []
    started = time.perf_counter()
    with torch.inference_mode():
        for images, _ in batches(dataset, range(len(dataset)), batch_size):
            plain.append(prefix(images).half())
            flipped.append(prefix(torch.flip(images, dims=[-1])).half())
    logger.info(
        "Computed backbone features of %s slices in %.1f s",
        len(records),
        time.perf_counter() - started,
    )
    return FeatureCache(
        keys=[(r.patient, r.slice) for r in records],
        features=torch.cat(plain),
        flipped=torch.cat(flipped),
    )


def load_or_compute(
    folder: Path,
    prefix: Prefix,
    records: Sequence[SliceRecord],
    spec: ModelSpec,
    *,
    weights_sha256: str,
    cut: int,
) -> FeatureCache:
    """The cached features of ``records`` from ``folder``, computed and saved if absent."""
    key = cache_key(records, spec, weights_sha256=weights_sha256, cut=cut)
    path = Path(folder) / f"lite0-cut{cut}-{spec.input_size}px-{key[:20]}.pt"
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        logger.info("Backbone features from %s", path)
        return FeatureCache(
            keys=[(str(p), int(s)) for p, s in saved["keys"]],
            features=saved["features"],
            flipped=saved["flipped"],
        )
    cache = compute_features(prefix, records, spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.part")
    torch.save({"keys": cache.keys, "features": cache.features, "flipped": cache.flipped}, partial)
    partial.replace(path)
    logger.info("Backbone features cached in %s", path)
    return cache
