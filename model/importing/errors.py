"""The error every refusal of an import raises."""

from __future__ import annotations

from model.errors import ModelError


class ModelImportError(ModelError):
    """The model offered for import is not one stroke-triage can run as it is.

    The message says what was found and what is supported.
    """
