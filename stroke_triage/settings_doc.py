"""The settings table of the README, generated from the settings models themselves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from console.config import ApiConfig
from listener.config import ListenerConfig
from stroke_triage.settings import ENV_PREFIX, Settings
from worker.config import WorkerConfig

NESTED: dict[str, type[BaseModel]] = {
    "listener": ListenerConfig,
    "worker": WorkerConfig,
    "api": ApiConfig,
}


def _default(field: Any) -> str:
    value = field.default_factory() if field.default_factory else field.default
    if isinstance(value, Path):
        return value.as_posix()
    if value in ([], {}, None):
        return "(empty)"
    return str(value)


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    return [
        f"| `{prefix}{name.upper()}` | `{_default(field)}` | {field.description or ''} |"
        for name, field in model.model_fields.items()
        if name not in NESTED
    ]


def settings_table() -> str:
    """A Markdown table of every setting: environment variable, default, meaning."""
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    lines += _rows(Settings, ENV_PREFIX)
    for name, model in NESTED.items():
        lines += _rows(model, f"{ENV_PREFIX}{name.upper()}__")
    return "\n".join(lines)
