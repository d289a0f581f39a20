"""Constraints carried by a field's type, checked before the typed loader converts a file.

``Annotated[float, Check(...)]`` says what a value must be beyond its type (a ratio, a
Prometheus duration, a known metric name). :func:`checked_mapping` tests the values as the file
has them, so the message names the rule (``must be a number between 0 and 1``) rather than a
type, and leaves a failing value out, so the loader (``inferwatch.config.loader.build``) does
not report it a second time. It also renames the file's keys to field names: a key that is a
Python keyword (``for``) is a field with a trailing underscore (``for_``).
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Callable

from inferwatch.config.loader import unknown_key


@dataclass(frozen=True)
class Check:
    """What a field's value must be beyond its type; ``message`` may show it as ``{value!r}``."""

    holds: Callable[[Any], bool]
    message: str


def real(value: Any) -> bool:
    """An int or float from YAML (a bool is an int in Python, but never a threshold)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def nonempty_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value)


# --- file keys and field names ------------------------------------------------------------------

_KEYWORDS = {"for_": "for"}   # fields named after a Python keyword, and their key in the file


def field_names(cls: Any) -> dict[str, str]:
    """File key -> field name, for each field of dataclass ``cls`` (``source`` is not a key)."""
    return {_KEYWORDS.get(f.name, f.name): f.name for f in dataclasses.fields(cls) if f.name != "source"}


def as_file(value: Any) -> Any:
    """A dataclass tree as the file spells it: plain mappings, lists and scalars."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {key: as_file(getattr(value, name)) for key, name in field_names(type(value)).items()}
    if isinstance(value, list):
        return [as_file(v) for v in value]
    if isinstance(value, dict):
        return {k: as_file(v) for k, v in value.items()}
    return value


def file_keys(problem: str) -> str:
    """A loader's problem with field names spelled as file keys (``for_`` -> ``for``)."""
    for name, key in _KEYWORDS.items():
        problem = re.sub(rf"\b{name}(?=\W|$)", key, problem)
    return problem


# --- checking -------------------------------------------------------------------------------------


def _checked(value: Any, tp: Any, path: str, problems: list[str], source: str) -> Any:
    """``value`` ready for the loader as type ``tp``, or None when it failed a check (reported)."""
    if typing.get_origin(tp) is Annotated:
        tp, *extras = typing.get_args(tp)
        for check in extras:
            if isinstance(check, Check) and not check.holds(value):
                problems.append(f"{source}:{path}: {check.message.format(value=value)}")
                return None
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return checked_mapping(value, tp, path, problems, source)
    if origin is list and isinstance(value, list):
        (item_tp,) = typing.get_args(tp)
        items = [_checked(v, item_tp, f"{path}[{i}]", problems, source) for i, v in enumerate(value)]
        # A list with a failed item is left out whole: without it, the loader's indices would shift.
        return None if any(item is None for item in items) else items
    if origin is dict and isinstance(value, dict):
        key_tp, value_tp = typing.get_args(tp)
        checked = {}
        for key, item in value.items():
            where = f"{path}.{key}"
            if _checked(key, key_tp, where, problems, source) is not None:
                checked[key] = _checked(item, value_tp, where, problems, source)
        return {k: v for k, v in checked.items() if v is not None}
    return value


def checked_mapping(data: dict[str, Any], cls: Any, path: str, problems: list[str],
                    source: str) -> dict[str, Any] | None:
    """``data`` (a mapping from the file) ready for ``build(cls, ...)``: unknown keys and failed
    checks reported and left out, keys renamed to field names. None when a required key failed
    its check: the item is left out (the loader would report that key again, as missing), so
    its other missing keys are reported here."""
    hints = typing.get_type_hints(cls, include_extras=True)
    names = field_names(cls)
    required = {f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    checked: dict[str, Any] = {}
    failed_required = False
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in names:
            problems.append(f"{source}:{where}: {unknown_key(key, names)}")
        elif value is not None:   # None: the default
            value = _checked(value, hints[names[key]], where, problems, source)
            if value is not None:
                checked[names[key]] = value
            failed_required |= value is None and names[key] in required
    if failed_required:
        problems += [f"{source}:{path}.{key}: required key is missing"
                     for key, name in names.items() if name in required and data.get(key) is None]
        return None
    return checked
