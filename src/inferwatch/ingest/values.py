"""One owner for what a value is: its kind, its number, its category key, missing or not.

Every stage that turns a JSON or file value into something monitored (the window, the profile
builder, the input guard, outputs, segments, performance, shadow) asks here, so a value is the
same category or number everywhere (``2.0`` is the category ``"2"`` and ``1.5`` none, in a
reference profile and in the window alike).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Literal

import numpy as np

Kind = Literal["numeric", "categorical"]
# The state of a window cell (uint8): a value, absent or null, or of the wrong type.
PRESENT, MISSING, INVALID = np.uint8(0), np.uint8(1), np.uint8(2)
NUMBER_TYPES = (int, float, np.integer, np.floating)
# Cells of a text file (CSV) that mean "no value".
MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none"})


def infer_kind(values: Iterable[Any]) -> Kind | None:
    """A JSON column's kind from its first non-null value: numbers are numeric, anything else
    categorical; None while every value is null. (A file's columns: ``infer_text_kind``.)"""
    for value in values:
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, NUMBER_TYPES):
            return "categorical"
        return "numeric"
    return None


def infer_text_kind(values: Iterable[Any]) -> Kind:
    """Numeric when every non-missing value is a number or a numeric string; else categorical."""
    seen = False
    for v in values:
        if v is None:
            continue
        if isinstance(v, (bool, np.bool_)):
            return "categorical"
        if isinstance(v, (int, float, np.integer, np.floating)):
            seen = True
            continue
        if isinstance(v, str):
            if v.strip().lower() in MISSING_TOKENS:
                continue
            try:
                float(v)
            except ValueError:
                return "categorical"
            seen = True
            continue
        return "categorical"
    return "numeric" if seen else "categorical"


def to_numeric(values: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """JSON values -> (float64 values, state). Numbers are PRESENT, None MISSING, others INVALID."""
    arr = np.asarray(values) if values else np.empty(0, dtype=np.float64)
    if arr.dtype.kind in "fiub" and arr.ndim == 1:  # the common case: all numbers
        return arr.astype(np.float64, copy=False), np.zeros(len(values), dtype=np.uint8)
    is_none = np.fromiter((v is None for v in values), dtype=bool, count=len(values))
    is_number = np.fromiter(
        (isinstance(v, NUMBER_TYPES) and not isinstance(v, bool) for v in values), dtype=bool, count=len(values)
    )
    out = np.full(len(values), np.nan)
    if is_number.any():
        out[is_number] = np.array([v for v, ok in zip(values, is_number) if ok], dtype=np.float64)
    state = np.full(len(values), INVALID, dtype=np.uint8)
    state[is_number] = PRESENT
    state[is_none] = MISSING
    return out, state


def to_float_array(values: Any) -> np.ndarray:
    """Column values (numbers, numeric strings, None, missing tokens) to float64; anything else NaN."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
        return values.astype(np.float64, copy=False)
    arr = np.asarray(values, dtype=object) if not isinstance(values, np.ndarray) else values
    try:
        out = np.asarray(arr, dtype=np.float64)
        if arr.dtype == object:  # None became nan already; booleans are not numbers here
            is_bool = np.fromiter((isinstance(v, (bool, np.bool_)) for v in arr), bool, arr.size)
            if is_bool.any():
                out = out.copy()
                out[is_bool] = np.nan
        return out
    except (TypeError, ValueError):
        pass
    out = np.empty(len(arr), dtype=np.float64)
    for i, v in enumerate(arr):
        if isinstance(v, (bool, np.bool_)) or v is None:
            out[i] = np.nan
            continue
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            out[i] = np.nan
    return out


def category_key(value: Any) -> str | None:
    """A value's category: strings as they are, booleans ``true``/``false``, integral numbers
    without a fraction (``2.0`` is ``"2"``). None for null and for what cannot be a category: a
    number with a fraction (``1.5``: a score where a class was expected), NaN, objects, lists."""
    if isinstance(value, str):
        return str(value)  # np.str_ too
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return str(int(number)) if number.is_integer() else None  # NaN and inf are not integers
    if isinstance(value, (dict, list, tuple, set, bytes, bytearray)):
        return None
    return str(value)  # dates and other scalars a file reader returns


def as_number(value: Any) -> float:
    """A prediction or label as a number: booleans 1/0, numeric text parsed, anything else NaN."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
