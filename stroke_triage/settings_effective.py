"""The effective settings, as `stroke-triage settings` prints them: secrets masked.

The database URL's password is masked by SQLAlchemy's own rendering
(``db.engine.masked_url``: ``render_as_string(hide_password=True)``), every other URL's by
kombu's ``maybe_sanitize_url``, which leaves out the query string (it may hold credentials).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, SecretBytes, SecretStr

from stroke_triage.settings import ENV_PREFIX, Settings

MASK = "***"
#: A setting whose name says it holds a secret is never printed.
SECRET_NAME = re.compile(r"password|secret|token|api_key|private", re.IGNORECASE)


def mask_url(value: str) -> str:
    """``value`` with a URL's password masked and its query left out; other text unchanged.

    ``amqp://triage:pw@mq:5672//`` prints as ``amqp://triage:***@mq:5672//``, and
    ``https://hooks.example/x?code=k`` as ``https://hooks.example/x`` (a query may hold a key).
    """
    if "://" not in value:
        return value
    if "@" in value:
        # Imported only here: `stroke-triage settings` imports no queue library otherwise.
        from kombu.utils.url import maybe_sanitize_url

        value = str(maybe_sanitize_url(value, mask=MASK))
    parts = urlsplit(value)
    if parts.query or parts.fragment:
        value = urlunsplit(parts._replace(query="", fragment=""))
    return value


def mask_database_url(value: str) -> str:
    """A SQLAlchemy database URL with its password masked by SQLAlchemy itself."""
    from db.engine import masked_url

    return masked_url(value)


def mask_secrets(name: str, value: Any) -> Any:
    """``value`` with any secret in it replaced by ``***`` (recursing into lists and maps)."""
    if value is None:
        return None
    if isinstance(value, SecretStr | SecretBytes) or SECRET_NAME.search(name):
        return MASK
    if isinstance(value, str) and name == "database_url":
        return mask_database_url(value)
    if isinstance(value, str):
        return mask_url(value)
    if isinstance(value, BaseModel):
        return {key: mask_secrets(key, getattr(value, key)) for key in type(value).model_fields}
    if isinstance(value, dict):
        return {key: mask_secrets(str(key), item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [mask_secrets(name, item) for item in value]
    return value


def _rows(model: BaseModel, prefix: str) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        variable = f"{prefix}{name.upper()}"
        if isinstance(value, BaseModel):
            rows += _rows(value, f"{variable}__")
        else:
            rows.append((variable, mask_secrets(name, value)))
    return rows


def _text(value: Any) -> str:
    if isinstance(value, str | Path):
        return str(value)
    return json.dumps(value, default=str)


def effective_settings(settings: Settings) -> str:
    """One ``VARIABLE=value`` line per setting, as this process resolved them, secrets masked.

    The resolved database and broker URLs (their defaults under the data folder) come last.
    """
    rows = _rows(settings, ENV_PREFIX)
    rows.append(("# resolved database", mask_database_url(settings.resolved_database_url)))
    rows.append(("# resolved broker", mask_url(settings.resolved_broker_url)))
    return "\n".join(f"{variable}={_text(value)}" for variable, value in rows)
