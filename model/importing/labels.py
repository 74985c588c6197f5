"""Which output of an imported classifier is the stroke class."""

from __future__ import annotations

import re
from collections.abc import Sequence

from model.importing.errors import ModelImportError

_STROKE_WORDS = re.compile(r"stroke|isch|infarct|haem|hem|bleed|abnormal|positive")
_NEGATED = re.compile(r"^(no|non|not|without)[\s_-]*")


def _says_stroke(name: str) -> bool:
    text = name.strip().lower()
    return bool(_STROKE_WORDS.search(text)) and not _NEGATED.match(text)


def positive_label(class_names: Sequence[str], requested: str | None) -> str:
    """The class name whose probability is the stroke probability.

    Args:
        class_names: The network's outputs in index order.
        requested: ``--positive-label``, or None to read it from two class names.

    Returns:
        One of ``class_names``.

    Raises:
        ModelImportError: If ``requested`` is not a class name, or it is None and there are not
            exactly two classes of which exactly one names stroke.
    """
    names = list(class_names)
    if requested is not None:
        if requested not in names:
            raise ModelImportError(
                f"--positive-label {requested!r} is not one of the model's classes {names}."
            )
        return requested
    if len(names) != 2:
        raise ModelImportError(
            f"The model has {len(names)} classes ({names}); stroke-triage reads one class's "
            "probability as the stroke probability. Name it with --positive-label."
        )
    candidates = [name for name in names if _says_stroke(name)]
    if len(candidates) != 1:
        raise ModelImportError(
            f"The class names {names} do not say which one means stroke; name it with "
            "--positive-label."
        )
    return candidates[0]
