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
    """One option per ``TrainConfig`` field that has one; the defaults stay in the config."""
    from model.training.config import cli_fields

    for item in cli_fields():
        option = item.option
        kwargs: dict[str, Any] = {"dest": item.name, "default": argparse.SUPPRESS}
        help_text = option.help or ""
        if item.kind is bool:
            kwargs["action"] = "store_false" if option.negated else "store_true"
        elif item.kind is list:
            kwargs["action"] = "append"
            help_text += f" (default: {' '.join(item.default)})"
        elif item.kind is dict:
            help_text += f" (default: {json.dumps(item.default)})"
        else:
            kwargs["type"] = item.kind
            if option.choices is not None:
                kwargs["choices"] = list(option.choices)
            if not option.required and item.default is not None:
                help_text += f" (default: {item.default})"
        if option.required:
            kwargs["required"] = True
        if item.kind is not bool and option.choices is None:
            kwargs["metavar"] = option.flag.lstrip("-").replace("-", "_").upper()
        kwargs["help"] = help_text.strip() or None
        parser.add_argument(option.flag, **kwargs)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _train_config(args: argparse.Namespace, output: Path) -> Any:
    from model.training.config import TrainConfig, cli_fields

    values = {item.name: getattr(args, item.name) for item in cli_fields() if item.name in args}
    if "model_kwargs" in values:
        try:
            model_kwargs = json.loads(values["model_kwargs"])
        except json.JSONDecodeError as error:
            raise ModelError(f"--model-kwargs is not valid JSON: {error}.") from error
        if not isinstance(model_kwargs, dict):
            raise ModelError("--model-kwargs must be a JSON object.")
        values["model_kwargs"] = model_kwargs
    return TrainConfig(output_dir=output, **values)


def _configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _fail(error: Exception) -> int:
    print(f"stroke-triage: {error}", file=sys.stderr)
    return 2


def cmd_train(args: argparse.Namespace) -> int:
    """Train a checkpoint."""
    from model.training.train import train

    _configure_logging()
    try:
        directory = train(_train_config(args, args.output), progress=not args.no_progress)
    except ModelError as error:
        return _fail(error)
    print(f"checkpoint written to {directory}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a checkpoint on a data folder."""
    from model.training.evaluate import evaluate

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
    from model.training.crossval import cross_validate

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
    from model.training.config import TrainConfig

    train = subparsers.add_parser("train", help="train a ViT checkpoint on a JPEG slice folder")
    _add_training_options(train)
    default_output = TrainConfig.__dataclass_fields__["output_dir"].default
    train.add_argument(
        "--output", type=Path, default=default_output, help=f"(default: {default_output})"
    )
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
