"""The guard's checks of one batch against a schema: numpy in, flags and counts out.

Pure functions, no state across batches, no threads: ``evaluate`` finds missing values, NaN,
infinities, wrong types, out-of-range values, unseen categories and unknown feature names, hashes
every row's feature vector (for the engine's duplicate memory) and scores outliers. Every check is
vectorised over the batch: the numeric features become one (features x rows) float64 matrix in a
single conversion, and categorical values are looked up with C-level ``map`` calls. Python loops
run per feature, never per event, except on the slow paths of malformed columns.
``explain_outliers`` names the features that made an outlier odd.
"""

from __future__ import annotations

import functools
import math
import operator
from dataclasses import dataclass, field
from enum import IntEnum
from itertools import compress, repeat
from typing import Any

import numpy as np

from inferwatch.ingest.events import EventBatch
from inferwatch.ingest.values import category_key
from inferwatch.stats.outlier import robust_z
from inferwatch.stats.quality import largest_magnitudes
from inferwatch.support.jsonlines import REDACTED, dumps, finite, is_redacted

from .schema import Schema


class Issue(IntEnum):
    """A data quality issue: its value is its column in the counts, ``label`` its `issue` label value."""

    MISSING = 0  # absent or null
    NAN = 1
    INFINITE = 2
    WRONG_TYPE = 3  # a string where a number is expected, an object where a category is
    OUT_OF_RANGE = 4
    UNSEEN_CATEGORY = 5
    UNKNOWN_FEATURE = 6  # a name outside the schema
    DUPLICATE = 7  # the whole feature vector seen recently (the engine's memory; feature="_event")

    @property
    def label(self) -> str:
        return self.name.lower()


ISSUES = tuple(issue.label for issue in Issue)  # the `issue` label values, in column order
EVENT_FEATURE = "_event"  # the `feature` label of event-level issues (duplicate)
# Per-event flags of each schema feature, kept by the engine for the ratios over the window.
FLAG_MISSING, FLAG_OUT_OF_RANGE = np.uint8(1), np.uint8(2)

_NUMBER_TYPES = frozenset({int, float, np.float64, np.float32, np.int64, np.int32})
_STR = {str}
_U64 = np.uint64


@dataclass
class BatchCheck:
    """What the checks found in one batch. Masks are per row; counts per (schema feature, issue)."""

    n: int
    counts: np.ndarray  # (schema features, len(Issue)) int64
    failed: np.ndarray  # bool per row: any issue
    # (schema features, n) uint8: FLAG_MISSING | FLAG_OUT_OF_RANGE, the per-event form of the counts'
    # missing and out_of_range columns (their sums over the events).
    flags: np.ndarray
    # Every unknown name present in the batch -> events it is present in, the most present first.
    unknown: dict[str, int] = field(default_factory=dict)
    hashes: np.ndarray | None = None  # uint64 per row: the feature vector's hash
    scores: np.ndarray | None = None  # outlier score per row (1 = the threshold)
    outlier: np.ndarray | None = None
    x: np.ndarray | None = None  # (outlier features, n) values, for the top contributors
    cells: list[tuple[str, str, np.ndarray]] = field(default_factory=list)  # (feature, issue, mask) for reasons


# --------------------------------------------------------------------------- row hashes


def _splitmix(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, elementwise on uint64 (wrapping arithmetic)."""
    x = x ^ (x >> _U64(30))
    x = x * _U64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> _U64(27))
    x = x * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


@functools.lru_cache(maxsize=4096)  # a numpy scalar per name per batch costs more than the checks of small batches
def _name_seed(name: str) -> np.uint64:
    """An odd 64-bit multiplier per feature name: a row's hash is splitmix(sum of value bits x seed)."""
    return _U64((hash(name) | 1) & 0xFFFFFFFFFFFFFFFF)


def _hash_value(value: Any) -> int:
    try:
        return hash(value)
    except TypeError:  # lists and objects: their JSON text
        return hash(dumps(value))


def _float_bits(x: np.ndarray) -> np.ndarray:
    return (np.asarray(x, dtype=np.float64) + 0.0).view(_U64)  # + 0.0: -0.0 hashes as 0.0


def _column_hashes(values: list[Any], n: int, all_hashable: bool = False) -> np.ndarray:
    """uint64 hashes of any column: numbers by their float64 bits (vectorised), other values by hash().

    ``all_hashable``: the caller knows every value is hashable (a column of strings)."""
    if all_hashable:
        return np.fromiter(map(hash, values), dtype=np.int64, count=n).view(_U64)
    types = set(map(type, values))
    if types <= {float, int} and types:
        return _float_bits(np.asarray(values, dtype=np.float64))
    if types == _STR:
        return np.fromiter(map(hash, values), dtype=np.int64, count=n).view(_U64)
    return np.fromiter(map(_hash_value, values), dtype=np.int64, count=n).view(_U64)


# --------------------------------------------------------------------------- slow paths


def _nonfinite(value: Any) -> int:
    """1 for a float NaN, 2 for a float infinity, else 0."""
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        return 1 if value != value else 2
    return 0


def _numeric_slow(values: list[Any], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(float64 values, missing, wrong type) of a column that is not all numbers (C-level maps)."""
    missing = np.fromiter(map(operator.is_, values, repeat(None)), dtype=bool, count=n)
    is_number = np.fromiter(map(_NUMBER_TYPES.__contains__, map(type, values)), dtype=bool, count=n)
    x = np.full(n, np.nan)
    if is_number.any():
        x[is_number] = np.fromiter(compress(values, is_number), dtype=np.float64)
    return x, missing, ~(is_number | missing)


# --------------------------------------------------------------------------- the checks


def evaluate(schema: Schema, batch: EventBatch, *, want_cells: bool = False, want_hashes: bool = True
             ) -> BatchCheck:
    """Check every event of ``batch`` against ``schema``.

    ``want_cells`` keeps a (feature, issue, mask) per issue found, for the quarantine log's
    reasons; ``want_hashes`` computes the row hashes the duplicate memory needs."""
    s = schema
    n = batch.n
    features = batch.features
    counts = np.zeros((len(s.names), len(Issue)), dtype=np.int64)
    failed = np.zeros(n, dtype=bool)
    flags = np.zeros((len(s.names), n), dtype=np.uint8)
    cells: list[tuple[str, str, np.ndarray]] = []
    hashes = np.zeros(n, dtype=_U64)
    seeds = {name: _name_seed(name) for name in s.names}

    def note(name: str, row: int, issue: Issue, mask: np.ndarray) -> None:
        c = int(np.count_nonzero(mask))
        if c:
            counts[row, issue] += c
            np.logical_or(failed, mask, out=failed)
            if want_cells:
                cells.append((name, issue.label, mask))

    # --- numeric features: one matrix -----------------------------------------------------
    # Columns the window already converted (all numbers) are reused; others are read here,
    # and only a column that is not all numbers takes the slow path (None, strings, objects).
    x = np.full((len(s.numeric), n), np.nan)
    converted = batch.converted or {}
    missing_num = np.zeros((len(s.numeric), n), dtype=bool)
    wrong_num: np.ndarray | None = None
    present: list[int] = []
    for j, name in enumerate(s.numeric):
        values = features.get(name)
        if values is None:
            missing_num[j] = True
            continue
        present.append(j)
        arr = converted.get(name)
        if arr is None or arr.shape != (n,):
            try:
                arr = np.asarray(values)
            except ValueError:  # ragged nested lists
                arr = None
        if arr is not None and arr.ndim == 1 and arr.dtype.kind in "fiub":
            x[j] = arr
            continue
        xj, miss, wrong = _numeric_slow(values, n)
        x[j] = xj
        missing_num[j] = miss
        if wrong_num is None:
            wrong_num = np.zeros((len(s.numeric), n), dtype=bool)
        wrong_num[j] = wrong
        note(name, s.index[name], Issue.WRONG_TYPE, wrong)
    fast = wrong_num is None and not missing_num[present].any()
    with np.errstate(invalid="ignore"):
        nan = np.isnan(x)
        nan &= ~missing_num
        if wrong_num is not None:  # wrong-type cells are NaN in x, not NaNs the client sent
            nan &= ~wrong_num
        inf = np.isinf(x)
        oor = (x < s.lo[:, None]) | (x > s.hi[:, None])  # NaN compares False
        if inf.any():
            oor &= ~inf  # an infinity is its own issue
    rows = s.numeric_index
    if rows.size:
        for issue, mask in ((Issue.MISSING, missing_num), (Issue.NAN, nan), (Issue.INFINITE, inf),
                            (Issue.OUT_OF_RANGE, oor)):
            per = mask.sum(axis=1)
            counts[rows, issue] += per
            if per.any():
                np.logical_or(failed, mask.any(axis=0), out=failed)
                if want_cells:
                    cells.extend((s.numeric[j], issue.label, mask[j]) for j in np.flatnonzero(per))
        flags[rows] = missing_num.view(np.uint8) | (oor.view(np.uint8) << 1)
        if want_hashes and present:
            bits = _float_bits(x[present])
            bits *= np.array([seeds[s.numeric[j]] for j in present], dtype=_U64)[:, None]
            if not fast:  # missing cells contribute nothing, as in an absent column
                bits[missing_num[present]] = 0
            hashes += bits.sum(axis=0, dtype=_U64)

    # --- categorical and untyped features ----------------------------------------------
    for name in [*s.categorical, *s.other]:
        row = s.index[name]
        values = features.get(name)
        if values is None:
            flags[row] = FLAG_MISSING
            counts[row, Issue.MISSING] += n
            failed[:] = True
            if want_cells:
                cells.append((name, Issue.MISSING.label, np.ones(n, dtype=bool)))
            continue
        index = s.categories.get(name)  # category -> code, when the reference holds them all
        codes: np.ndarray | None = None
        if index is not None:  # the common case first: every value one of the reference's strings
            try:
                codes = np.fromiter(map(index.get, values, repeat(-1)), dtype=np.int64, count=n)
            except TypeError:  # unhashable values (lists, objects)
                codes = None
        missing: np.ndarray | None = None
        keys: list[Any] = values
        if codes is None or codes.min(initial=0) < 0:
            types = set(map(type, values))
            if types != _STR:
                missing = np.fromiter(map(operator.is_, values, repeat(None)), dtype=bool, count=n)
                keys = list(map(str, values)) if types == {int} else list(map(category_key, values))
                if name in s.categorical:
                    wrong = np.fromiter(map(operator.is_, keys, repeat(None)), dtype=bool, count=n) & ~missing
                    if wrong.any():  # a NaN or an infinity (pandas' missing category) is its own issue
                        kind = np.fromiter(map(_nonfinite, values), dtype=np.int8, count=n)
                        note(name, row, Issue.NAN, kind == 1)
                        note(name, row, Issue.INFINITE, kind == 2)
                        wrong &= kind == 0
                    note(name, row, Issue.WRONG_TYPE, wrong)
                note(name, row, Issue.MISSING, missing)
                flags[row] = missing.view(np.uint8)
                if index is not None:  # values were not keys: look the keys up
                    codes = np.fromiter(map(index.get, keys, repeat(-1)), dtype=np.int64, count=n)
            if index is not None and codes is not None:
                unseen = codes < 0
                if missing is not None:
                    unseen &= np.fromiter(map(operator.is_not, keys, repeat(None)), dtype=bool, count=n)
                note(name, row, Issue.UNSEEN_CATEGORY, unseen)
        if want_hashes:
            if codes is not None:  # a known category hashes as its code, anything else by value
                h = (codes + 1).astype(_U64)
                other = codes < 0
                if other.any():
                    h[other] = _column_hashes(list(compress(keys, other)), int(np.count_nonzero(other)))
            else:
                h = _column_hashes(values, n, all_hashable=keys is values)  # all strings
            h *= seeds[name]
            if missing is not None:
                h[missing] = 0
            hashes += h

    # --- unknown features (outside the schema) -----------------------------------------
    unknown: dict[str, int] = {}
    if s.source != "none":
        for name, values in features.items():
            if name in s.index:
                continue
            nones = values.count(None) if None in values else 0
            if nones < n:
                unknown[name] = n - nones
        if len(unknown) > 1:  # the most frequent first: within a batch too, labels go to the most present names
            unknown = dict(sorted(unknown.items(), key=lambda item: item[1], reverse=True))
        for name, events in unknown.items():
            values = features[name]
            mask = np.ones(n, dtype=bool) if events == n else \
                np.fromiter(map(operator.is_not, values, repeat(None)), dtype=bool, count=n)
            np.logical_or(failed, mask, out=failed)
            if want_cells:
                cells.append((name, Issue.UNKNOWN_FEATURE.label, mask))
            if want_hashes:  # present values only: the same value hashes alike whether or not others are absent
                if events == n:
                    h = _column_hashes(values, n)
                else:
                    h = np.zeros(n, dtype=_U64)
                    h[mask] = _column_hashes(list(compress(values, mask)), events)
                hashes += h * _name_seed(name)
    elif want_hashes:
        for name, values in features.items():
            hashes += _column_hashes(values, n) * _name_seed(name)

    check = BatchCheck(n, counts, failed, flags, unknown=unknown, cells=cells,
                       hashes=_splitmix(hashes) if want_hashes else None)
    if s.outlier is not None and s.outlier_rows.size and n:
        xo = x[s.outlier_rows]
        z = s.outlier.standardize(xo.T)
        check.scores = s.outlier.score_standardized(z) / s.threshold
        check.outlier = check.scores > 1.0
        check.x = xo
    return check


def explain_outliers(schema: Schema, check: BatchCheck, rows: np.ndarray, top_features: int,
                     redact: frozenset[str]) -> list[dict[str, Any]]:
    """Score and top contributing features (largest |robust z| against the reference) of outlier rows."""
    if check.x is None or check.scores is None:
        return []
    names = schema.outlier_names
    x = check.x[:, rows]
    z = robust_z(x.T, schema.median, schema.robust).T
    top = largest_magnitudes(z, top_features)
    out = []
    for col, i in enumerate(rows.tolist()):
        features = [{"feature": names[j], "value": REDACTED if is_redacted(names[j], redact) else finite(float(x[j, col])),
                     "robust_z": finite(float(round(z[j, col], 3)))}
                    for j in top[:, col].tolist() if j >= 0]
        out.append({"score": round(float(check.scores[i]), 4), "threshold": schema.threshold, "top_features": features})
    return out
