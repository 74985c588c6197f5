"""The `train`, `evaluate` and `cross-validate` commands: parse, build a config, call one thing."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from model.errors import ModelError

log = logging.getLogger(__name__)


def _add_training_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="folder with manifest.csv")
    parser.add_argument("--arch", default="vit_base_patch16_224", help="timm architecture name")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument(
        "--model-kwargs",
        default="{}",
        help='extra timm kwargs as JSON, e.g. \'{"embed_dim": 96, "depth": 4, "num_heads": 3}\'',
    )
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup-epochs", type=int, default=1)
    parser.add_argument("--patience", type=int, default=5, help="early stopping; 0 = never")
    parser.add_argument(
        "--early-stopping",
        choices=["val_loss", "val_auc"],
        default="val_loss",
        help="validation metric that picks the best epoch and drives early stopping",
    )
    parser.add_argument("--augment", choices=["none", "light", "full"], default="light")
    parser.add_argument(
        "--channel-mode",
        choices=["replicate", "adjacent", "mirror", "multi_window"],
        default="replicate",
    )
    parser.add_argument(
        "--shuffle-slice-order",
        action="store_true",
        help="control: neighbours in random order within each patient (adjacent mode)",
    )
    parser.add_argument(
        "--window",
        action="append",
        default=None,
        help="window stored for inference on HU: preset or name=center/width "
        "(default: the one matching the Kaggle JPEGs, kaggle_jpeg=36/150)",
    )
    parser.add_argument(
        "--no-class-balance",
        action="store_true",
        help="plain cross-entropy instead of class-balanced weights",
    )
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--limit", type=int, default=None, help="use at most this many slices")
    parser.add_argument("--version", default=None, help="version label stored in the spec")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--teacher",
        default=None,
        help="timm CNN (e.g. resnet18) trained first on the same slices as a DeiT-style teacher",
    )
    parser.add_argument("--teacher-epochs", type=int, default=None, help="default: --epochs")
    parser.add_argument("--distillation", choices=["hard", "soft"], default="hard")
    parser.add_argument("--distill-weight", type=float, default=0.5, help="share of teacher loss")
    parser.add_argument("--distill-temperature", type=float, default=1.0, help="soft mode only")
    parser.add_argument(
        "--objective",
        choices=["slice", "bag"],
        default="slice",
        help="slice: every slice has its patient's label; bag: bags of one patient's slices "
        "scored by their top-k mean (multiple-instance learning)",
    )
    parser.add_argument("--bag-size", type=int, default=8, help="slices per bag (bag objective)")
    parser.add_argument("--bag-top-k", type=int, default=2, help="slices that score a bag")
    parser.add_argument(
        "--pretrain-epochs",
        type=int,
        default=0,
        help="masked-autoencoder pretraining of the ViT on the training slices first (plain ViT)",
    )
    parser.add_argument("--pretrain-mask-ratio", type=float, default=0.75)


def _train_config(args: argparse.Namespace, output: Path) -> Any:
    from model.train import TrainConfig

    try:
        model_kwargs = json.loads(args.model_kwargs)
    except json.JSONDecodeError as error:
        raise ModelError(f"--model-kwargs is not valid JSON: {error}.") from error
    if not isinstance(model_kwargs, dict):
        raise ModelError("--model-kwargs must be a JSON object.")
    windows = {"windows": args.window} if args.window else {}
    return TrainConfig(
        data_dir=args.data,
        output_dir=output,
        architecture=args.arch,
        input_size=args.input_size,
        model_kwargs=model_kwargs,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs,
        patience=args.patience,
        early_stopping_metric=args.early_stopping,
        augmentation=args.augment,
        channel_mode=args.channel_mode,
        shuffle_slice_order=args.shuffle_slice_order,
        val_fraction=args.val_fraction,
        class_balanced=not args.no_class_balance,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        num_threads=args.threads,
        limit=args.limit,
        version=args.version,
        teacher_architecture=args.teacher,
        teacher_epochs=args.teacher_epochs,
        distillation=args.distillation,
        distill_weight=args.distill_weight,
        objective=args.objective,
        bag_size=args.bag_size,
        bag_top_k=args.bag_top_k,
        pretrain_epochs=args.pretrain_epochs,
        pretrain_mask_ratio=args.pretrain_mask_ratio,
        distill_temperature=args.distill_temperature,
        **windows,
    )


def _configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _fail(error: Exception) -> int:
    print(f"stroke-triage: {error}", file=sys.stderr)
    return 2


def cmd_train(args: argparse.Namespace) -> int:
    """Train a checkpoint."""
    from model.train import train

    _configure_logging()
    try:
        directory = train(_train_config(args, args.output), progress=not args.no_progress)
    except ModelError as error:
        return _fail(error)
    print(f"checkpoint written to {directory}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a checkpoint on a data folder."""
    from model.evaluate import evaluate

    _configure_logging()
    try:
        result = evaluate(
            args.checkpoint,
            args.data,
            args.output,
            bootstrap=args.bootstrap,
            precision=args.precision,
            device=args.device,
        )
    except ModelError as error:
        return _fail(error)
    series = result["series"]["metrics"]
    print(
        f"series: AUC {series['roc_auc']:.3f}, sensitivity {series['recall']:.3f}, "
        f"specificity {series['specificity']:.3f}; report in {args.output}"
    )
    return 0


def cmd_cross_validate(args: argparse.Namespace) -> int:
    """Cross-validate a training config under the paper's or the grouped protocol."""
    from model.crossval import cross_validate

    _configure_logging()
    try:
        cross_validate(
            args.data,
            args.output,
            protocol=args.protocol,
            base=_train_config(args, args.output),
            folds=args.folds,
            bootstrap=args.bootstrap,
        )
    except ModelError as error:
        return _fail(error)
    print(f"cross-validation report in {args.output}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds the model commands to the `stroke-triage` parser."""
    train = subparsers.add_parser("train", help="train a ViT checkpoint on a JPEG slice folder")
    _add_training_options(train)
    train.add_argument("--output", type=Path, default=Path("runs/train"))
    train.set_defaults(func=cmd_train)

    evaluate = subparsers.add_parser("evaluate", help="evaluate a checkpoint on a data folder")
    evaluate.add_argument("--checkpoint", type=Path, required=True)
    evaluate.add_argument("--data", type=Path, required=True, help="folder with manifest.csv")
    evaluate.add_argument("--output", type=Path, required=True)
    evaluate.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    evaluate.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    evaluate.add_argument("--device", default="auto")
    evaluate.set_defaults(func=cmd_evaluate)

    crossval = subparsers.add_parser(
        "cross-validate", help="paper (random slice split) or patient-grouped cross-validation"
    )
    _add_training_options(crossval)
    crossval.add_argument("--output", type=Path, required=True)
    crossval.add_argument("--protocol", choices=["paper", "grouped"], default="grouped")
    crossval.add_argument("--folds", type=int, default=5)
    crossval.add_argument("--bootstrap", type=int, default=1000)
    crossval.set_defaults(func=cmd_cross_validate)
