"""The current data counted for the report: per column, the window's values in the reference's bins.

Pure functions of a ``WindowSnapshot`` and a ``ReferenceProfile`` (numpy in, counts out): a numeric
column is counted in the reference's own bins (``(-inf, e1], (e1, e2], ..., (ek, +inf)``, as the
drift evaluator counts it), a categorical one in the reference's top-K categories plus ``other``;
beside them the rows without a usable value (missing, of the wrong type, NaN) and, for numbers,
the values outside the reference's range widened by ``guard.range_tolerance``. A column the
reference does not have is counted in bins of its own (equal widths over its values, or its most
frequent categories), so the page still shows it, uncompared.

Counts of the same reference add up (``CurrentCounts.merge``): a batch run can count chunk by
chunk and draw one page at the end.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np

from inferwatch.exposition.metrics import OTHER
from inferwatch.ingest.values import PRESENT, Kind, category_key
from inferwatch.pipeline.window import ColumnSnapshot, WindowSnapshot
from inferwatch.reference.format import CategoricalProfile, ColumnProfile, NumericProfile, ReferenceProfile
from inferwatch.stats.quality import widened_range

# Bins of a column the reference lacks: equal widths for numbers, the most frequent categories.
OWN_NUMERIC_BINS = 20
OWN_TOP_CATEGORIES = 20


@dataclass
class ColumnCounts:
    """One column of the current data. ``labels[i]`` names bin ``i``; ``edges`` are a numeric
    column's inner bin edges (the reference's, or its own when ``referenced`` is False)."""

    name: str
    kind: Kind
    labels: list[str]
    counts: np.ndarray              # values per bin (int64)
    rows: int                       # rows of the data (the denominator of the shares)
    missing: int                    # rows without a usable value: absent, null, wrong type, NaN
    out_of_range: int = 0           # numbers outside the reference range (widened); 0 without one
    edges: np.ndarray = field(default_factory=lambda: np.empty(0))
    referenced: bool = True         # counted in the reference's bins

    @property
    def present(self) -> int:
        return int(self.counts.sum())

    @property
    def missing_share(self) -> float:
        return self.missing / self.rows if self.rows else math.nan

    @property
    def out_of_range_share(self) -> float:
        present = self.present
        return self.out_of_range / present if present else math.nan

    def merge(self, other: ColumnCounts) -> ColumnCounts:
        """The two counts added up; bins that differ (own bins of two chunks) keep this one's
        histogram and add only the rows, missing and out-of-range counts."""
        same_bins = self.labels == other.labels and np.array_equal(self.edges, other.edges)
        if not same_bins and self.kind == "categorical" and not self.referenced:
            merged = Counter(dict(zip(self.labels, self.counts.tolist())))
            merged.update(dict(zip(other.labels, other.counts.tolist())))
            labels = [label for label, _ in merged.most_common()]
            return replace(self, labels=labels, counts=np.array([merged[x] for x in labels], dtype=np.int64),
                           rows=self.rows + other.rows, missing=self.missing + other.missing)
        counts = self.counts + other.counts if same_bins else self.counts
        return replace(self, counts=counts, rows=self.rows + other.rows, missing=self.missing + other.missing,
                       out_of_range=self.out_of_range + other.out_of_range)


@dataclass
class CurrentCounts:
    """Every feature and output of the current data, counted (see ``count_snapshot``)."""

    rows: int = 0
    features: dict[str, ColumnCounts] = field(default_factory=dict)
    outputs: dict[str, ColumnCounts] = field(default_factory=dict)

    def merge(self, other: CurrentCounts) -> CurrentCounts:
        """Two parts of one data set (e.g. a batch's chunks) counted as one; a column missing from
        one part counts that part's rows as missing."""
        def group(mine: dict[str, ColumnCounts], theirs: dict[str, ColumnCounts]) -> dict[str, ColumnCounts]:
            out: dict[str, ColumnCounts] = {}
            for name in dict.fromkeys([*mine, *theirs]):
                a, b = mine.get(name), theirs.get(name)
                if a is not None and b is not None:
                    out[name] = a.merge(b)
                elif a is not None:
                    out[name] = replace(a, rows=a.rows + other.rows, missing=a.missing + other.rows)
                elif b is not None:
                    out[name] = replace(b, rows=b.rows + self.rows, missing=b.missing + self.rows)
            return out

        return CurrentCounts(self.rows + other.rows, group(self.features, other.features),
                             group(self.outputs, other.outputs))


def count_snapshot(reference: ReferenceProfile | None, snapshot: WindowSnapshot, *,
                   range_tolerance: float = 0.1) -> CurrentCounts:
    """A window snapshot counted in the reference's bins (``range_tolerance`` is
    ``guard.range_tolerance``: how far beyond the reference's [min, max] a number is still in range)."""
    features = reference.features if reference is not None else {}
    outputs = reference.outputs if reference is not None else {}
    return CurrentCounts(snapshot.n, _group(features, snapshot.features, snapshot.n, range_tolerance),
                         _group(outputs, snapshot.outputs, snapshot.n, range_tolerance))


def _group(profiles: dict[str, ColumnProfile], columns: dict[str, ColumnSnapshot], rows: int,
           tolerance: float) -> dict[str, ColumnCounts]:
    out: dict[str, ColumnCounts] = {}
    for name in dict.fromkeys([*profiles, *columns]):
        profile, column = profiles.get(name), columns.get(name)
        if isinstance(profile, NumericProfile):
            out[name] = _numeric_in_reference(profile, _numbers(column), rows, tolerance)
        elif isinstance(profile, CategoricalProfile):
            out[name] = _categorical_in_reference(profile, _category_counts(column), rows)
        elif column is not None:
            out[name] = _own_bins(name, column, rows)
    return out


def _numbers(column: ColumnSnapshot | None) -> np.ndarray:
    """The column's usable numbers (present, not NaN); a categorical column's codes are not numbers."""
    if column is None or column.kind != "numeric":
        return np.empty(0)
    values = column.values[column.state == PRESENT]
    return values[~np.isnan(values)]


def _category_counts(column: ColumnSnapshot | None) -> dict[str, int]:
    """The column's present values counted by category key (numbers by their text, as the
    evaluator does); one ``bincount`` over the codes of a categorical column."""
    if column is None:
        return {}
    if column.kind == "categorical":
        codes = column.values[column.state == PRESENT]
        tally = np.bincount(codes, minlength=len(column.categories))
        return {category: int(n) for category, n in zip(column.categories, tally.tolist()) if n}
    keys = (category_key(float(v)) for v in column.values[column.state == PRESENT])
    return dict(Counter(k for k in keys if k is not None))


def _numeric_in_reference(profile: NumericProfile, values: np.ndarray, rows: int, tolerance: float) -> ColumnCounts:
    counts = np.bincount(np.searchsorted(profile.edges, values, side="left"), minlength=profile.n_bins)
    lo, hi = widened_range(np.array([profile.statistics.get("min", math.nan)]),
                           np.array([profile.statistics.get("max", math.nan)]), tolerance)
    outside = int(np.count_nonzero((values < lo[0]) | (values > hi[0])))
    return ColumnCounts(profile.name, "numeric", numeric_bin_labels(profile.edges), counts.astype(np.int64), rows,
                        rows - int(values.size), outside, edges=profile.edges)


def _categorical_in_reference(profile: CategoricalProfile, tally: dict[str, int], rows: int) -> ColumnCounts:
    index, other = profile.index(), len(profile.categories)
    counts = np.zeros(profile.n_bins, dtype=np.int64)
    for category, n in tally.items():
        counts[index.get(category, other)] += n
    return ColumnCounts(profile.name, "categorical", profile.bin_labels(), counts, rows, rows - int(counts.sum()))


def _own_bins(name: str, column: ColumnSnapshot, rows: int) -> ColumnCounts:
    if column.kind == "numeric":
        values = _numbers(column)
        finite = values[np.isfinite(values)]
        if finite.size:
            edges = np.unique(np.linspace(finite.min(), finite.max(), OWN_NUMERIC_BINS + 1)[1:-1])
        else:
            edges = np.empty(0)
        counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=edges.size + 1)
        return ColumnCounts(name, "numeric", numeric_bin_labels(edges), counts.astype(np.int64), rows,
                            rows - int(values.size), edges=edges, referenced=False)
    tally = Counter(_category_counts(column)).most_common()
    top, rest = tally[:OWN_TOP_CATEGORIES], sum(c for _, c in tally[OWN_TOP_CATEGORIES:])
    labels = [k for k, _ in top] + ([OTHER] if rest else [])
    counts = np.array([c for _, c in top] + ([rest] if rest else []), dtype=np.int64)
    return ColumnCounts(name, "categorical", labels, counts, rows, rows - int(counts.sum()), referenced=False)


def numeric_bin_labels(edges: np.ndarray) -> list[str]:
    """``≤ e1``, ``e1 – e2``, ..., ``> ek`` (short numbers), one per bin."""
    if edges.size == 0:
        return ["all values"]
    text = [_short(float(e)) for e in edges]
    return [f"≤ {text[0]}", *(f"{a} – {b}" for a, b in zip(text, text[1:])), f"> {text[-1]}"]


def _short(x: float) -> str:
    return f"{x:.4g}"
