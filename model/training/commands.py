"""The `train`, `evaluate`, `cross-validate` and `import-model` commands: thin wrappers.

The `stroke-triage` CLI registers them (:func:`register`); each parses its arguments, builds a
config and calls one function of `model.training` or `model.importing`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from model.errors import ModelError

log = logging.getLogger(__name__)


TIMM_DEFAULT_CLASS_NAMES = "normal,stroke"
"""Class names of a timm head when --class-names is not given."""


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
        values["model_kwargs"] = _model_kwargs(values["model_kwargs"])
    return TrainConfig(output_dir=output, **values)


def _model_kwargs(text: str | None) -> dict[str, Any]:
    """``--model-kwargs``: a JSON object, or {} when not given."""
    if not text:
        return {}
    try:
        model_kwargs = json.loads(text)
    except json.JSONDecodeError as error:
        raise ModelError(f"--model-kwargs is not valid JSON: {error}.") from error
    if not isinstance(model_kwargs, dict):
        raise ModelError("--model-kwargs must be a JSON object.")
    return model_kwargs


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
            slice_labels=args.slice_labels,
            slice_label_column=args.slice_label_column,
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
            args.data_dir,
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


def _import_options(args: argparse.Namespace) -> Any:
    from model.importing.findings import parse_finding, parse_output_findings
    from model.importing.importer import ImportOptions
    from model.spec import Activation, AggregationSpec, ChannelMode
    from model.training.config import parse_window

    return ImportOptions(
        windows=[parse_window(text) for text in args.window or _train_default("windows")],
        channel_mode=ChannelMode(args.channel_mode),
        aggregation=AggregationSpec(rule=args.aggregation, k=args.top_k),
        threshold=args.threshold,
        positive_label=args.positive_label,
        version=args.version,
        finding=parse_finding(args.finding),
        output_findings=parse_output_findings(args.output_finding or []),
        activation=Activation(args.head) if args.head else None,
    )


def _train_default(name: str) -> Any:
    from model.training.config import TrainConfig

    return getattr(TrainConfig(data_dir=Path()), name)


def cmd_import_model(args: argparse.Namespace) -> int:
    """Turn a Hugging Face ViT folder or a timm state dict into a checkpoint."""
    from model.importing.importer import import_huggingface, import_timm

    _configure_logging()
    try:
        options = _import_options(args)
        if args.from_hf is not None:
            _refuse_timm_only_options(args)
            directory = import_huggingface(args.from_hf, args.output, options)
        else:
            if not args.arch:
                raise ModelError("--from-timm needs --arch, the timm name the weights belong to.")
            directory = import_timm(
                args.from_timm,
                args.output,
                options,
                architecture=args.arch,
                class_names=[name.strip() for name in args.class_names.split(",")],
                input_size=args.input_size,
                model_kwargs=_model_kwargs(args.model_kwargs),
                mean=args.mean,
                std=args.std,
            )
    except (ModelError, ValueError) as error:
        return _fail(error)
    print(
        f"checkpoint written to {directory}; its threshold is not calibrated: run it on the "
        "site's own labelled series before clinical use"
    )
    return 0


def _refuse_timm_only_options(args: argparse.Namespace) -> None:
    """A Hugging Face folder says its own architecture, size and normalisation: never ignore
    an option that would silently do nothing."""
    given = [
        flag
        for flag, value in (
            ("--arch", args.arch),
            ("--input-size", args.input_size),
            ("--model-kwargs", args.model_kwargs),
            ("--mean", args.mean),
            ("--std", args.std),
        )
        if value is not None
    ]
    if args.class_names != TIMM_DEFAULT_CLASS_NAMES:
        given.append("--class-names")
    if given:
        raise ModelError(
            f"{', '.join(given)} apply to --from-timm only; a Hugging Face folder takes them from "
            "its config.json and preprocessor_config.json."
        )


def _register_import(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from model.spec import ChannelMode

    parser = subparsers.add_parser(
        "import-model", help="turn a Hugging Face ViT folder or timm weights into a checkpoint"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-hf", type=Path, metavar="DIR", help="ViTForImageClassification")
    source.add_argument("--from-timm", type=Path, metavar="FILE", help="timm ViT state dict")
    parser.add_argument("--output", type=Path, required=True, help="new checkpoint directory")
    parser.add_argument("--arch", help="timm architecture of --from-timm weights")
    parser.add_argument("--positive-label", help="the class that drives the verdict")
    parser.add_argument(
        "--finding",
        required=True,
        help="what the positive class detects, as the reports will name it: ich (SCT 1386000), "
        "stroke (SCT 230690007) or SCHEME:VALUE:SHORT:MEANING",
    )
    parser.add_argument(
        "--output-finding",
        action="append",
        metavar="LABEL=FINDING",
        help="report another output as a finding (probability only), repeatable",
    )
    parser.add_argument(
        "--head",
        choices=["softmax", "sigmoid"],
        help="softmax over the classes, or a sigmoid per output (multi-label); default: the "
        "Hugging Face config's problem_type, else softmax",
    )
    parser.add_argument(
        "--class-names",
        default=TIMM_DEFAULT_CLASS_NAMES,
        help="timm head classes, comma-separated",
    )
    parser.add_argument("--input-size", type=int, help="timm: default from pos_embed")
    parser.add_argument("--model-kwargs", help="timm: kwargs the weights were made with, JSON")
    parser.add_argument("--mean", type=float, nargs=3, help="timm: default timm's for --arch")
    parser.add_argument("--std", type=float, nargs=3, help="timm: default timm's for --arch")
    parser.add_argument(
        "--window",
        action="append",
        help="preset or name=center/width, repeatable "
        f"(default: {' '.join(_train_default('windows'))})",
    )
    parser.add_argument(
        "--channel-mode",
        choices=[mode.value for mode in ChannelMode],
        default=_train_default("channel_mode"),
    )
    parser.add_argument(
        "--aggregation", choices=["top_k_mean", "mean", "max"], default="top_k_mean"
    )
    parser.add_argument("--top-k", type=int, default=_train_default("top_k"))
    parser.add_argument("--threshold", type=float, default=0.5, help="not calibrated")
    parser.add_argument("--version", help="version label (default: imported-<sha256>)")
    parser.set_defaults(func=cmd_import_model)


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
    evaluate.add_argument(
        "--slice-labels", type=Path, help="CSV of slice labels: adds slice AUC and localisation"
    )
    evaluate.add_argument(
        "--slice-label-column",
        default=TrainConfig.__dataclass_fields__["slice_label_column"].default,
        help="the 0/1 column of --slice-labels (default: %(default)s)",
    )
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

    _register_import(subparsers)
