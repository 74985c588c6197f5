"""Settings mistakes, said in one line each, naming what the user wrote: a variable or a key.

pydantic-settings ignores a ``STROKE_TRIAGE_*`` variable it does not know and a misspelt key inside
a TOML table, answers bad JSON with a traceback that never names the variable, and names a bad
value by its field path (``listener.port``), not by the variable or the file that set it. The
checks here run before the settings are built, and :func:`explain` rewords pydantic's errors.
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

#: Variables with the prefix that are not settings: the settings file, and the test suite's.
OTHER_VARIABLES = frozenset({"STROKE_TRIAGE_CONFIG", "STROKE_TRIAGE_SHARED_DATA"})
TEST_VARIABLE_PREFIX = "STROKE_TRIAGE_TEST_"
#: A value of a setting whose name says it is a secret is never repeated in a message.
_SECRET_WORDS = ("password", "secret", "token", "api_key", "private")


class SettingsError(ValueError):
    """The settings cannot be used; each line of the message names one mistake and its fix."""


@dataclass(frozen=True)
class Variable:
    """A settings variable: the field path it sets and the field's type."""

    path: tuple[str, ...]
    annotation: Any


def settings_variables(model: type[BaseModel], prefix: str) -> dict[str, Variable]:
    """Every variable that sets a field of ``model``, nested models included (``A__B``)."""
    found: dict[str, Variable] = {}
    for name, field in model.model_fields.items():
        variable = f"{prefix}{name.upper()}"
        found[variable] = Variable((name,), field.annotation)
        nested = _model_of(field.annotation)
        if nested is not None:
            for sub, inner in settings_variables(nested, f"{variable}__").items():
                found[sub] = Variable((name, *inner.path), inner.annotation)
    return found


def check_environment(model: type[BaseModel], prefix: str, environ: Mapping[str, str]) -> list[str]:
    """Unknown ``prefix*`` variables, and JSON settings whose value is not JSON or has unknown keys.

    Returns:
        One line per mistake.
    """
    known = settings_variables(model, prefix)
    problems: list[str] = []
    for name, value in sorted(environ.items()):
        upper = name.upper()
        if not upper.startswith(prefix) or upper in OTHER_VARIABLES:
            continue
        if upper.startswith(TEST_VARIABLE_PREFIX):
            continue
        variable = known.get(upper) or _inside_a_table(upper, known)
        if variable is None:
            problems.append(
                f"{name} is not a stroke-triage setting"
                f"{_suggestion(upper, known, quote=False, prefix=prefix)} "
                "(`stroke-triage settings --table` lists every variable)."
            )
        elif upper in known and _is_json(variable.annotation):
            problems += _check_json(name, value, variable.annotation)
    return problems


def read_toml(path: Path, model: type[BaseModel]) -> dict[str, Any]:
    """The settings file's tables, checked for unknown keys.

    Raises:
        SettingsError: The file is not valid TOML (with line and column), or names keys that
            are not settings (with the nearest valid name).
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"The settings file {path} is not valid TOML: {exc}.") from None
    except UnicodeDecodeError as exc:
        raise SettingsError(f"The settings file {path} is not UTF-8 text: {exc}.") from None
    problems = [f"The settings file {path}: {line}" for line in unknown_keys(data, model, ())]
    if problems:
        raise SettingsError("\n".join(problems))
    return data


def unknown_keys(
    value: Any, annotation: Any, where: tuple[str | int, ...], *, toml: bool = True
) -> Iterator[str]:
    """Keys of ``value`` (a TOML table, or parsed JSON) that ``annotation`` does not have."""
    models = _models_in(annotation)
    if isinstance(value, dict) and models:
        fields = {name: f.annotation for m in models for name, f in m.model_fields.items()}
        for key, item in value.items():
            if key in fields:
                yield from unknown_keys(item, fields[key], (*where, key), toml=toml)
            else:
                place = _toml_table(where) if toml else _json_path(where)
                yield f"unknown key {key!r}{place}{_suggestion(str(key), fields)}"
        return
    items = _items_of(annotation)
    if isinstance(value, list) and items is not None:
        for index, item in enumerate(value):
            yield from unknown_keys(item, items, (*where, index), toml=toml)
        return
    values = _values_of(annotation)
    if isinstance(value, dict) and values is not None:
        for key, item in value.items():
            yield from unknown_keys(item, values, (*where, key), toml=toml)


def explain(
    exc: ValidationError,
    *,
    variables: Mapping[str, Variable],
    environ: Mapping[str, str],
    file_data: Mapping[str, Any] | None,
    file: Path | None,
) -> SettingsError:
    """pydantic's errors, each named by the variable or file key that set the value."""
    set_by_environment = {name.upper(): name for name in environ if name.upper() in variables}
    lines = []
    for error in exc.errors(include_url=False):
        location = tuple(error["loc"])
        message = redact_urls(str(error["msg"])).rstrip(".")
        if not location:
            lines.append(f"{message}.")
            continue
        source = _source(location, variables, set_by_environment, file_data, file)
        lines.append(f"{source}{_shown_input(error, location)}: {message}.")
    return SettingsError("invalid settings: " + "\n".join(lines))


def _source(
    location: tuple[Any, ...],
    variables: Mapping[str, Variable],
    set_by_environment: Mapping[str, str],
    file_data: Mapping[str, Any] | None,
    file: Path | None,
) -> str:
    """Who set the value at ``location``: a variable (which wins over the file), or the file."""
    dotted = ".".join(str(part) for part in location)
    for length in range(len(location), 0, -1):
        for known, name in set_by_environment.items():
            if variables[known].path == tuple(location[:length]):
                return name if length == len(location) else f"{name}: {dotted}"
    if file is not None and file_data is not None and location and location[0] in file_data:
        return f"{file}: key {_toml_key(location)}"
    return f"setting {dotted}"


#: A URL in a message: scheme, optional user info, host and path, optional query and fragment.
_URL = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?:[^/@\s'\"]*@)?(?P<rest>[^?#\s'\"]*)[^\s'\"]*"
)


def redact_urls(text: str) -> str:
    """``text`` with every URL's user info, query and fragment removed (they may hold a
    password or a token: ``https://u:pw@host/x?token=t`` reads ``https://host/x``)."""
    return _URL.sub(lambda match: match["scheme"] + match["rest"], text)


def _shown_input(error: Mapping[str, Any], location: tuple[Any, ...]) -> str:
    """``='abc'``: the value the user gave, unless it is a table or could be a secret."""
    value = error.get("input")
    text = " ".join(str(part) for part in location).lower()
    if not isinstance(value, str | int | float) or any(w in text for w in _SECRET_WORDS):
        return ""
    if isinstance(value, str) and "://" in value:
        return f"={redact_urls(value)!r}"
    shown = repr(value)
    return f"={shown}" if len(shown) <= 60 else f"={shown[:57]}...'"


def _toml_key(location: tuple[Any, ...]) -> str:
    """``worker.pacs[0].port``: a location as a dotted key, list items by index."""
    key = ""
    for part in location:
        if isinstance(part, int):
            key += f"[{part}]"
        else:
            key += f".{part}" if key else str(part)
    return key


def _toml_table(where: tuple[str | int, ...]) -> str:
    """`` in [listener]``, or `` in [[worker.pacs]] number 2`` (counted from 1)."""
    if not where:
        return ""
    names = ".".join(str(part) for part in where if not isinstance(part, int))
    numbers = [part for part in where if isinstance(part, int)]
    if not numbers:
        return f" in [{names}]"
    return f" in [[{names}]] number {numbers[-1] + 1}"


def _json_path(where: tuple[str | int, ...]) -> str:
    """`` at [0]``, `` at [0].options``: where in the variable's JSON value."""
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in where)
    return f" at {path.removeprefix('.')}" if path else ""


def _suggestion(
    name: str, candidates: typing.Iterable[str], *, quote: bool = True, prefix: str = ""
) -> str:
    """``; did you mean 'quiet_period_s'?``, or ``.`` when no valid name is close.

    A common ``prefix`` is left out of the comparison: every variable shares STROKE_TRIAGE_.
    """
    stems = {candidate.removeprefix(prefix): candidate for candidate in candidates}
    close = difflib.get_close_matches(name.removeprefix(prefix), list(stems), n=1, cutoff=0.6)
    if not close:
        return "."
    nearest = stems[close[0]]
    return f"; did you mean {nearest!r}?" if quote else f"; did you mean {nearest}?"


def _inside_a_table(name: str, known: Mapping[str, Variable]) -> Variable | None:
    """A variable that sets one key of a table setting (``..._OVERRIDES__CT1``), if it is one."""
    for variable, target in known.items():
        if name.startswith(f"{variable}__") and _values_of(target.annotation) is not None:
            return target
    return None


def _check_json(name: str, value: str, annotation: Any) -> list[str]:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        return [f"{name} is not valid JSON ({exc}); write {_json_example(annotation)}."]
    return [f"{name}: {line}" for line in unknown_keys(parsed, annotation, (), toml=False)]


def _json_example(annotation: Any) -> str:
    if _items_of(annotation) is not None:
        return 'a JSON list, e.g. ["A", "B"] or [{"key": "value"}]'
    return 'a JSON object, e.g. {"key": "value"}'


# The shapes of a field's annotation -------------------------------------------------------


def _unwrap(annotation: Any) -> list[Any]:
    """The alternatives of a (possibly Annotated, Optional or union) annotation, None dropped."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [alt for arg in typing.get_args(annotation) for alt in _unwrap(arg)]
    return [] if annotation is type(None) else [annotation]


def _model_of(annotation: Any) -> type[BaseModel] | None:
    models = _models_in(annotation)
    return models[0] if len(models) == 1 and len(_unwrap(annotation)) == 1 else None


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    return [
        alt for alt in _unwrap(annotation) if isinstance(alt, type) and issubclass(alt, BaseModel)
    ]


def _items_of(annotation: Any) -> Any:
    for alt in _unwrap(annotation):
        if typing.get_origin(alt) in (list, set, frozenset, tuple, Sequence):
            args = typing.get_args(alt)
            return args[0] if args else Any
    return None


def _values_of(annotation: Any) -> Any:
    for alt in _unwrap(annotation):
        if typing.get_origin(alt) in (dict, Mapping):
            args = typing.get_args(alt)
            return args[1] if len(args) == 2 else Any
    return None


def _is_json(annotation: Any) -> bool:
    """Whether pydantic-settings reads the variable as JSON (and refuses anything else).

    Lists, tables and models are JSON; a union that also allows a plain value is not refused.
    """
    alternatives = _unwrap(annotation)
    return bool(alternatives) and all(
        (isinstance(alt, type) and issubclass(alt, BaseModel))
        or _items_of(alt) is not None
        or _values_of(alt) is not None
        for alt in alternatives
    )
