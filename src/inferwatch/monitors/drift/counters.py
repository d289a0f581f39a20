"""Cumulative per-bin counters of every event, for fleet-wide PSI in PromQL.

The worker counts each windowed batch in the reference bins (``inferwatch_feature_bin_total``);
the reference proportions are exported beside them, and ``alerting.promql``'s fleet PSI rules
sum the counters across replicas.
"""

from __future__ import annotations

import threading
from typing import Any, Iterable

import numpy as np

from inferwatch.ingest.values import PRESENT, category_key, to_numeric

from .prepared import PreparedCategorical, PreparedNumeric, PreparedReference


class BinCounters:
    """Cumulative counts of one model version's events in the reference bins of every feature.

    ``add`` is called by the worker after each window append: numeric features of a batch are
    binned together (one comparison against a padded edge matrix, one bincount), categorical
    ones through the category index. Missing and non-numeric values are not counted.
    """

    def __init__(self, reference: PreparedReference):
        self.numeric = list(reference.numeric["feature"].values())
        self.categorical = list(reference.categorical["feature"].values())
        # Every counted feature in counter order: numeric first.
        self.columns: list[PreparedNumeric | PreparedCategorical] = [*self.numeric, *self.categorical]
        sizes = [r.counts.size for r in self.columns]
        self.offsets = np.concatenate(([0], np.cumsum(sizes)))[:-1].astype(np.intp)
        self.counts = np.zeros(int(sum(sizes)), dtype=np.int64)
        kmax = max((r.profile.edges.size for r in self.numeric), default=0)
        self.edges = np.full((len(self.numeric), max(kmax, 1)), np.inf)
        for i, r in enumerate(self.numeric):
            self.edges[i, : r.profile.edges.size] = r.profile.edges
        self.numeric_offsets = self.offsets[: len(self.numeric)]
        self.lock = threading.Lock()

    def add(self, features: dict[str, list[Any]], n: int) -> None:
        flat: list[np.ndarray] = []
        if self.numeric:
            nones = [None] * n
            rows = [features.get(r.name, nones) for r in self.numeric]
            try:
                x = np.array(rows, dtype=np.float64)
            except (TypeError, ValueError):  # text or objects among the numbers: not counted
                x = np.vstack([np.where(st == PRESENT, v, np.nan) for v, st in map(to_numeric, rows)])
            bins = (x[:, :, None] > self.edges[:, None, :]).sum(axis=2)
            valid = ~np.isnan(x)
            flat.append((bins + self.numeric_offsets[:, None])[valid])
        base = len(self.numeric)
        for j, r in enumerate(self.categorical):
            values = features.get(r.name)
            if values is None:
                continue
            other = r.counts.size - 1
            index = r.index
            keys = [category_key(v) if type(v) is not str else v for v in values if v is not None]
            offset = int(self.offsets[base + j])
            flat.append(np.fromiter((index.get(key, other) + offset for key in keys if key is not None),
                                    dtype=np.intp))
        if flat:
            idx = np.concatenate(flat) if len(flat) > 1 else flat[0]
            add = np.bincount(idx, minlength=self.counts.size)
            with self.lock:
                self.counts += add

    def series(self) -> Iterable[tuple[str, str, int]]:
        """(feature, bin label, count) of every bin."""
        with self.lock:
            counts = self.counts.copy()
        for r, offset in zip(self.columns, self.offsets):
            for b, label in enumerate(r.profile.bin_labels()):
                yield r.name, label, int(counts[offset + b])

    def column_counts(self, name: str) -> np.ndarray | None:
        """One feature's counts (None if it is not counted)."""
        for r, offset in zip(self.columns, self.offsets):
            if r.name == name:
                with self.lock:
                    return self.counts[offset: offset + r.counts.size].copy()
        return None
