"""Rows and columns: the layouts every JSON codec shares (records, positional rows, columnar objects).

Split out of ``codecs`` so protocol modules (``seldon``) and the generic codecs build columns
the same way: names, vector expansion, the batch dimension first.
"""

from __future__ import annotations

from typing import Any

from .events import PayloadError, matrix_to_columns, rows_to_columns

__all__ = ["CONTAINERS", "CONTAINER_TYPES", "LIST_TYPES", "DICT_TYPES", "default_names", "positional",
           "expand_vectors", "decode_rows", "columnar"]

CONTAINERS = (list, dict)
# Type checks over whole lists go through set(map(type, ...)), which runs in C.
CONTAINER_TYPES = frozenset({list, dict})
LIST_TYPES = {list}
DICT_TYPES = {dict}


# --- shared column helpers -----------------------------------------------------------------


def default_names(width: int, names: list[str] | None, prefix: str) -> list[str]:
    given = list(names[:width]) if names else []
    return given + [f"{prefix}{i}" for i in range(len(given), width)]


def positional(rows: list[Any], names: list[str] | None, prefix: str = "f") -> dict[str, list[Any]]:
    """Positional rows to columns; ``zip`` transposes in C when every row is a list of one width."""
    types = set(map(type, rows))
    if types == LIST_TYPES:
        widths = set(map(len, rows))
        if len(widths) == 1:
            (width,) = widths
            return dict(zip(default_names(width, names, prefix), map(list, zip(*rows))))
    elif not types & CONTAINER_TYPES:
        return {default_names(1, names, prefix)[0]: list(rows)}
    return matrix_to_columns(rows, names, prefix)


def expand_vectors(columns: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Split a column of equal-length flat lists into ``<name>_<k>`` columns."""
    out: dict[str, list[Any]] = {}
    for name, column in columns.items():
        first = column[0] if column else None
        if (
            type(first) is list
            and first
            and not isinstance(first[0], CONTAINERS)
            and set(map(type, column)) == LIST_TYPES
            and len(set(map(len, column))) == 1
        ):
            for k, values in enumerate(zip(*column)):
                out[f"{name}_{k}"] = list(values)
        else:
            out[name] = column
    return out


def decode_rows(value: Any, names: list[str] | None, *, flat_list_is_row: bool,
                prefix: str = "f") -> tuple[int, dict[str, list[Any]]]:
    """Rows (records or positional) to ``(n, columns)``."""
    if isinstance(value, dict):
        return 1, expand_vectors(rows_to_columns([value]))
    if not isinstance(value, list):
        # A bare scalar: one row with one positional feature.
        return 1, {default_names(1, names, prefix)[0]: [value]}
    if not value:
        return 0, {}
    types = set(map(type, value))
    if dict in types:
        if types != DICT_TYPES:
            raise PayloadError("unknown_format", "rows mix objects and non-objects")
        return len(value), expand_vectors(rows_to_columns(value))
    if flat_list_is_row and list not in types:
        return 1, positional([value], names, prefix)
    return len(value), expand_vectors(positional(value, names, prefix))


def columnar(value: dict[str, Any], n: int | None = None) -> tuple[int, dict[str, list[Any]]]:
    """``{name: [v0, v1, ...]}`` (batch dimension first) to ``(n, columns)``.

    Scalars are one row each, so ``{"a": 1, "b": 2}`` is one row.
    """
    if not value:
        return (n or 0), {}
    columns: dict[str, list[Any]] = {}
    lengths = set()
    for name, column in value.items():
        if type(column) is not list:
            column = [column]
        columns[name] = column
        lengths.add(len(column))
    if len(lengths) != 1:
        raise PayloadError("shape_mismatch", f"columns have different lengths {sorted(lengths)}")
    (rows,) = lengths
    if n is not None and rows != n:
        raise PayloadError("row_count_mismatch", f"{rows} rows for {n} requested")
    return rows, expand_vectors(columns)
