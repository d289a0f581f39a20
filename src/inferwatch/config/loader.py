"""The typed loader: YAML with ${ENV} interpolation, checked against dataclass type hints.

Every problem is reported as ``file:key: message`` and all problems are collected before failing,
so a user fixes a file in one pass. Anything the user writes (the sidecar's file, an actions file,
the alert thresholds) loads through here.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import typing
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(Exception):
    """Raised with every problem found; ``problems`` are ``file:key: message`` lines."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


# --- loading -----------------------------------------------------------------------------

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate_env(data: Any, source: str, environ: typing.Mapping[str, str] | None = None, _path: str = "",
                    _problems: list[str] | None = None) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in the string values of parsed YAML.

    Done after parsing, so comments are never touched and problems name the key. A value that
    is exactly one ``${...}`` takes the type its text has in YAML (``port: ${PORT}`` is an int).
    An unset variable without a default is an error.
    """
    environ = os.environ if environ is None else environ
    problems: list[str] = [] if _problems is None else _problems
    if isinstance(data, dict):
        result: Any = {k: interpolate_env(v, source, environ, f"{_path}.{k}" if _path else str(k), problems)
                       for k, v in data.items()}
    elif isinstance(data, list):
        result = [interpolate_env(v, source, environ, f"{_path}[{i}]", problems) for i, v in enumerate(data)]
    elif isinstance(data, str) and "${" in data:
        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            problems.append(f"{source}:{_path}: environment variable {name} is not set and has no default")
            return ""

        result = _ENV.sub(replace, data)
        if _ENV.fullmatch(data):
            try:
                result = yaml.safe_load(result) if result.strip() else None
            except yaml.YAMLError:
                pass
            if isinstance(result, (dict, list)):  # a variable may set a scalar, not a structure
                result = _ENV.sub(replace, data)
    else:
        result = data
    if _problems is None and problems:
        raise ConfigError(problems)
    return result


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "mapping"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return {int: "integer", float: "number", str: "string", bool: "boolean", Any: "any value"}.get(tp, str(tp))


def coerce(value: Any, tp: Any, key: str, problems: list[str], source: str) -> Any:
    """Check ``value`` against ``tp``; append a problem and return None when it does not fit."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value

    def bad() -> None:
        problems.append(f"{source}:{key}: expected {_type_name(tp)}, got {value!r}")

    if origin is Literal:
        if value not in typing.get_args(tp):
            bad()
            return None
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str) and (item_tp is str or hasattr(item_tp, "from_shorthand")):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            bad()
            return None
        return [coerce(v, item_tp, f"{key}[{i}]", problems, source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            bad()
            return None
        value_tp = typing.get_args(tp)[1] if typing.get_args(tp) else str
        return {str(k): coerce(v, value_tp, f"{key}.{k}", problems, source) for k, v in value.items()}
    if isinstance(value, str) and hasattr(tp, "from_shorthand"):  # e.g. a feature given by its name alone
        return tp.from_shorthand(value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if value is None:
            return tp()
        if not isinstance(value, dict):
            bad()
            return None
        return build(tp, value, key, problems, source)
    if tp is bool:
        if not isinstance(value, bool):
            bad()
            return None
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            bad()
            return None
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            bad()
            return None
        return float(value)
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            bad()
            return None
        return str(value)
    raise TypeError(f"unsupported config type {tp}")


def unknown_key(key: Any, names: typing.Iterable[str]) -> str:
    """The message for a key no field has: the close match when there is one (a typo), else every key."""
    names = sorted(names)
    close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
    if close:
        return f"unknown key, did you mean {close[0]!r}?"
    return f"unknown key (expected one of {', '.join(names)})"


def _default(cls: Any, name: str) -> Any:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return None if f.default is dataclasses.MISSING else f.default
    return None


def build(cls: Any, data: dict[str, Any], prefix: str, problems: list[str], source: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.name != "source"}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            problems.append(f"{source}:{path}: {unknown_key(key, names)}")
            continue
        if value is None:  # `key:` with nothing after it means the default ...
            default = _default(cls, key)
            if hints[key] in (str, int, float) and default not in (None, "", 0):
                # ... except where a default would stand in silently for a value the user meant
                # to give (`upstream: {url: }` must not proxy to the default address)
                problems.append(f"{source}:{path}: has no value (give one, or remove the key for the "
                                f"default {default!r})")
            continue
        coerced = coerce(value, hints[key], path, problems, source)
        if coerced is not None:
            kwargs[key] = coerced
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in kwargs
    ]
    for name in missing:
        problems.append(f"{source}:{prefix + '.' if prefix else ''}{name}: required key is missing")
    if missing:
        return None
    return cls(**kwargs)


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A YAML file's top-level mapping, ${ENV} interpolated; ConfigError naming the file (and line)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{source}: file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{source}: cannot read ({exc})"]) from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError([f"{source}{where}: invalid YAML ({getattr(exc, 'problem', exc)})"]) from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError([f"{source}: expected a mapping at the top level, got {type(loaded).__name__}"])
    return interpolate_env(loaded or {}, source)
