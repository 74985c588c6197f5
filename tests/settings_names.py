"""What counts as a real setting, for the checks on the docs and the deploy files."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from stroke_triage.settings import CONFIG_FILE_ENV, ENV_PREFIX, Settings, load_settings

#: Variables with our prefix that are not settings: the settings file, and the test suite's own.
NOT_SETTINGS = frozenset(
    {
        CONFIG_FILE_ENV,
        "STROKE_TRIAGE_SHARED_DATA",
        "STROKE_TRIAGE_TEST_POSTGRES_URL",
        "STROKE_TRIAGE_TEST_REDIS_URL",
    }
)


def setting_variables(model: type[BaseModel] = Settings, prefix: str = ENV_PREFIX) -> set[str]:
    """Every environment variable that sets a setting (nested tables joined with ``__``)."""
    names: set[str] = set()
    for name, field in model.model_fields.items():
        variable = f"{prefix}{name.upper()}"
        names.add(variable)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= setting_variables(annotation, f"{variable}__")
    return names


def unknown_keys(data: dict[str, Any], model: BaseModel, path: str = "") -> list[str]:
    """The keys of TOML ``data`` that are no field of the settings ``model`` loaded from it.

    Walks nested tables and lists of tables (``[[worker.notifications]]``) alongside the
    loaded models, so that a key a nested model would ignore is still named.
    """
    unknown: list[str] = []
    fields = type(model).model_fields
    for key, value in data.items():
        if key not in fields:
            unknown.append(f"{path}{key}")
            continue
        loaded = getattr(model, key)
        if isinstance(value, dict) and isinstance(loaded, BaseModel):
            unknown += unknown_keys(value, loaded, f"{path}{key}.")
        elif isinstance(value, list) and isinstance(loaded, list):
            for index, (item, item_model) in enumerate(zip(value, loaded, strict=True)):
                if isinstance(item, dict) and isinstance(item_model, BaseModel):
                    unknown += unknown_keys(item, item_model, f"{path}{key}[{index}].")
    return unknown


def clear_setting_variables(monkeypatch: Any) -> None:
    """Remove every STROKE_TRIAGE_* variable of this process (the test sets its own)."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def load_toml_settings(path: Path) -> tuple[Settings, list[str]]:
    """The settings a TOML file gives, and its keys that are no setting."""
    settings = load_settings(path)
    return settings, unknown_keys(tomllib.loads(path.read_text()), settings)
