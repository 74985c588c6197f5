"""What an imported model's outputs detect: ``--finding`` and ``--output-finding``."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from pydantic import ValidationError

from model.importing.errors import ModelImportError
from model.spec import INTRACRANIAL_HAEMORRHAGE, STROKE, Activation, CodedFinding, OutputSpec

logger = logging.getLogger(__name__)

PRESETS: dict[str, CodedFinding] = {"ich": INTRACRANIAL_HAEMORRHAGE, "stroke": STROKE}
"""Findings named by a word; any other is given as ``SCHEME:VALUE:SHORT:MEANING``."""

FORMAT = "a preset (" + ", ".join(PRESETS) + ") or SCHEME:VALUE:SHORT:MEANING"


def parse_finding(text: str) -> CodedFinding:
    """A finding from ``ich``, ``stroke`` or ``SCT:35486000:SDH:Subdural hemorrhage``.

    The meaning comes last, so that it may hold colons.

    Raises:
        ModelImportError: If the text is neither, or a part is empty or too long.
    """
    preset = PRESETS.get(text.strip().lower())
    if preset is not None:
        return preset
    parts = text.split(":", 3)
    if len(parts) != 4:
        raise ModelImportError(f"The finding {text!r} is not {FORMAT}.")
    scheme, value, short_name, meaning = (part.strip() for part in parts)
    try:
        return CodedFinding(scheme=scheme, value=value, meaning=meaning, short_name=short_name)
    except ValidationError as error:
        raise ModelImportError(
            f"The finding {text!r} is not {FORMAT} (short name up to 16 characters): "
            f"{error.errors()[0]['msg']}"
        ) from error


def parse_output_findings(items: Sequence[str]) -> dict[str, CodedFinding]:
    """``LABEL=FINDING`` options: which class name of the network reports which finding.

    Raises:
        ModelImportError: If an item has no ``=``, or a label is named twice.
    """
    mapping: dict[str, CodedFinding] = {}
    for item in items:
        label, sep, finding = item.partition("=")
        if not sep or not label.strip():
            raise ModelImportError(f"--output-finding {item!r} is not LABEL=FINDING ({FORMAT}).")
        if label.strip() in mapping:
            raise ModelImportError(f"--output-finding names the output {label.strip()!r} twice.")
        mapping[label.strip()] = parse_finding(finding)
    return mapping


def reported_outputs(
    *,
    class_names: Sequence[str],
    positive: str,
    finding: CodedFinding | None,
    output_findings: Mapping[str, CodedFinding],
) -> tuple[CodedFinding, list[OutputSpec] | None]:
    """The verdict's finding and the spec's ``outputs`` for an imported model.

    Args:
        class_names: The network's outputs in index order.
        positive: The class that drives the verdict.
        finding: ``--finding``: the verdict's finding; None takes ``output_findings``' entry
            for ``positive``, else stroke (the finding of checkpoints before findings were
            named).
        output_findings: ``--output-finding``: further outputs to report, by class name.

    Returns:
        The verdict's finding, and the outputs (None when only the verdict's is reported).

    Raises:
        ModelImportError: An unknown class name, or two findings for the positive class.
    """
    unknown = [label for label in output_findings if label not in class_names]
    if unknown:
        raise ModelImportError(
            f"--output-finding names {unknown}, which are not among the model's outputs "
            f"{list(class_names)}."
        )
    mapped = output_findings.get(positive)
    if finding is not None and mapped is not None and mapped != finding:
        raise ModelImportError(
            f"The positive class {positive!r} is given two findings: --finding "
            f"{finding.meaning!r} and --output-finding {mapped.meaning!r}."
        )
    verdict = finding or mapped or STROKE
    if finding is None and mapped is None:
        logger.warning(
            "No --finding given: the model is taken to detect %s (%s %s); say what it detects "
            "with --finding",
            STROKE.meaning,
            STROKE.scheme,
            STROKE.value,
        )
    further = {label: f for label, f in output_findings.items() if label != positive}
    if not further:
        return verdict, None
    named = {positive: verdict, **further}
    outputs = [OutputSpec(index=class_names.index(label), finding=f) for label, f in named.items()]
    return verdict, sorted(outputs, key=lambda output: output.index)


def resolve_activation(
    requested: Activation | None, *, source_says: Activation | None, source: str
) -> Activation:
    """``--head``, checked against what the source model says of itself.

    Raises:
        ModelImportError: If ``--head`` contradicts the source (a model trained with a sigmoid
            loss read through a softmax, or the reverse, gives other probabilities).
    """
    if requested is not None and source_says is not None and requested is not source_says:
        raise ModelImportError(
            f"--head {requested.value} contradicts {source}, which says the head is "
            f"{source_says.value}; leave --head out to use it."
        )
    return requested or source_says or Activation.SOFTMAX
