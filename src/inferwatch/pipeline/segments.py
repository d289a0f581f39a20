"""Segments: bounded label values for the values of chosen features (``segments.features``).

A segment is a feature (e.g. ``region``) whose values slice requests, drift and performance,
so "the model is fine in EU but failing in APAC" is one query. Each segment feature admits
``segments.max_values`` values as label values; other values become ``other`` (the rows
counted in ``inferwatch_label_values_capped_total{label="segment"}``), and a row without the
feature (or with a value that cannot be a category, such as 0.5) is ``missing``.

Which values: with a reference profile file (``reference.path``) in which the feature is
categorical, its most frequent reference categories come first (``seed``: the top-K of the
training data); slots left over, and every slot without such a profile, go to values in the
order they are first seen. Admission never changes afterwards, so a label value, once
exported, keeps meaning the same slice for the life of the process (re-ranking by live
frequency would move rows between series and break every rate over them).

``SegmentLabeler`` is the one place that decides labels: the worker admits values as events
arrive (``labels``), and readers of stored data (the drift engine over window snapshots, the
performance join) map values without admitting new ones (``peek_labels``), so every series of
one segment uses the same label values.
"""

from __future__ import annotations

import threading
from typing import Any, Iterable, Sequence

import numpy as np
from prometheus_client import Counter

from inferwatch.config import SegmentsConfig
from inferwatch.exposition.metrics import OTHER
from inferwatch.ingest.values import PRESENT, category_key

from .window import ColumnSnapshot

MISSING_SEGMENT = "missing"  # the label value of rows without the feature (not a value state)
RESERVED = frozenset({OTHER, MISSING_SEGMENT})


def _key(value: Any) -> str | None:
    if value is None:
        return None
    key = category_key(value)
    return None if key is None else str(key)  # numpy strings become plain str


class SegmentLabeler:
    """Maps a segment feature's values to capped label values, vectorised per batch."""

    def __init__(self, features: Iterable[str], max_values: int, overflow: Counter | None = None):
        self.features: tuple[str, ...] = tuple(features)
        self.max_values = max_values
        self._admitted: dict[str, dict[str, str]] = {f: {} for f in self.features}
        self._lock = threading.Lock()
        self._overflow = overflow.labels(label="segment") if overflow is not None else None
        self.capped_rows = 0

    @classmethod
    def from_config(cls, config: SegmentsConfig, overflow: Counter | None = None) -> SegmentLabeler:
        return cls(config.features, config.max_values, overflow)

    @property
    def enabled(self) -> bool:
        return bool(self.features)

    def seed(self, feature: str, values: Iterable[Any]) -> list[str]:
        """Admit ``values`` (most important first, e.g. a reference's categories by frequency) up
        to ``max_values``, before any traffic; returns the label values admitted."""
        keys = [k for k in (v if type(v) is str else _key(v) for v in values) if k is not None]
        self._admit(feature, keys)
        return self.values(feature)

    def seed_from_profile(self, profile) -> dict[str, list[str]]:
        """Seed each segment feature that is categorical in a reference profile with its most
        frequent categories (a profile lists them most frequent first)."""
        seeded = {}
        for feature in self.features:
            column = profile.features.get(feature)
            if column is not None and column.kind == "categorical":
                seeded[feature] = self.seed(feature, column.categories)
        return seeded

    def values(self, feature: str) -> list[str]:
        """The admitted label values of a segment feature, in admission order."""
        return list(self._admitted.get(feature, {}).values())

    def _admit(self, feature: str, keys: Iterable[str]) -> dict[str, str]:
        admitted = self._admitted[feature]
        with self._lock:
            for key in keys:
                if key not in admitted and key not in RESERVED and len(admitted) < self.max_values:
                    admitted[key] = key
        return admitted

    def _lookup(self, feature: str, values: Sequence[Any], *, admit: bool) -> tuple[np.ndarray, int]:
        """(labels, rows mapped to ``other``) of one column of raw values."""
        keys: list[str | None] = [v if type(v) is str else _key(v) for v in values]
        distinct = [k for k in dict.fromkeys(keys) if k is not None]
        admitted = self._admitted.get(feature)
        if admitted is None:
            raise KeyError(f"{feature!r} is not a segment feature")
        if admit and any(k not in admitted for k in distinct):
            admitted = self._admit(feature, distinct)
        table: dict[str | None, str] = {k: admitted.get(k, OTHER) for k in distinct}
        table[None] = MISSING_SEGMENT
        labels = np.array([table[k] for k in keys], dtype=object)
        overflowed = sum(1 for k in keys if k is not None and k != OTHER and table[k] == OTHER)
        return labels, overflowed

    def labels(self, feature: str, values: Sequence[Any]) -> np.ndarray:
        """Label values of raw event values, admitting new values up to the cap (the worker)."""
        labels, overflowed = self._lookup(feature, values, admit=True)
        if overflowed:
            self.capped_rows += overflowed
            if self._overflow is not None:
                self._overflow.inc(overflowed)
        return labels

    def peek_labels(self, feature: str, values: Sequence[Any]) -> np.ndarray:
        """Label values without admitting new values or counting overflow (readers)."""
        return self._lookup(feature, values, admit=False)[0]

    def label(self, feature: str, value: Any) -> str:
        """The label value of one raw value, without admitting it."""
        return str(self.peek_labels(feature, [value])[0])

    def column_labels(self, feature: str, column: ColumnSnapshot) -> np.ndarray:
        """Label values of every row of a window snapshot's column (not present: ``missing``)."""
        if column.kind == "categorical":
            table = self.peek_labels(feature, [*column.categories])
            table = np.append(table, MISSING_SEGMENT).astype(object)
            codes = np.where(column.state == PRESENT, column.values, len(column.categories))
            return table[codes]
        present = column.state == PRESENT
        out = np.full(column.values.shape, MISSING_SEGMENT, dtype=object)
        finite = present & np.isfinite(column.values)
        if finite.any():
            out[finite] = self.peek_labels(feature, column.values[finite].tolist())
        return out

    def groups(self, feature: str, labels: np.ndarray) -> dict[str, np.ndarray]:
        """Row indices per label value (``missing`` rows left out), in admission order."""
        order = [*self.values(feature), OTHER]
        return {value: idx for value in order if (idx := np.flatnonzero(labels == value)).size}


__all__ = ["SegmentLabeler", "MISSING_SEGMENT"]
