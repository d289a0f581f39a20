"""Building a reference profile in a stream of column chunks, in bounded memory.

``ProfileBuilder.observe`` takes chunks of columns and keeps bounded state (running moments, a
uniform row sample of ``sample_size`` rows kept by smallest random keys, capped category
counters, a KMV distinct-count sketch), then ``freeze`` fixes the bin edges from the sample and,
when the input had more rows than the sample, ``count_bins`` over a second pass gives exact
reference bin counts. ``build_profile`` does it all for in-memory columns (warm-up references);
``readers.build_profile_from_file`` drives the builder over a file. With a binary label, the
sample also keeps each row's label, and every score output (numeric, within [0, 1]) gets a
calibration map fitted on the sampled rows (``stats.calibration``).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter
from typing import Any, Iterable, cast

import numpy as np

from inferwatch.exposition.metrics import OTHER  # the bucket of categories outside the top-K
from inferwatch.ingest.values import Kind, category_key, infer_text_kind, to_float_array
from inferwatch.stats import (
    MahalanobisModel, PCAModel, correlation_matrix, entropy, median_abs_deviation, quantile_edges, summary_statistics,
)
from inferwatch.stats.calibration import fit_calibration
from .format import CategoricalProfile, NumericProfile, ReferenceProfile, Role, ScoreCalibration

DEFAULT_SAMPLE_SIZE = 10_000
DEFAULT_BINS = 10
DEFAULT_TOP_K = 20
_KMV_K = 4096  # distinct-count sketch: exact up to this many distinct values, ~1.6% error above
_COUNTER_CAP = 20_000  # categories counted per column before the rarest half is pruned


class _Moments:
    """Count, missing, mean, M2 (Chan et al.'s parallel update), min, max of one column."""

    __slots__ = ("n", "missing", "mean", "m2", "min", "max")

    def __init__(self) -> None:
        self.n, self.missing, self.mean, self.m2 = 0, 0, 0.0, 0.0
        self.min, self.max = math.inf, -math.inf

    def update(self, x: np.ndarray) -> None:
        present = x[~np.isnan(x)]
        self.missing += x.size - present.size
        if present.size == 0:
            return
        nb = present.size
        mb = float(present.mean())
        m2b = float(np.square(present - mb).sum()) if np.isfinite(mb) else math.nan
        n = self.n + nb
        delta = mb - self.mean
        self.mean += delta * nb / n
        self.m2 += m2b + delta * delta * self.n * nb / n
        self.n = n
        self.min = min(self.min, float(present.min()))
        self.max = max(self.max, float(present.max()))


class _Categories:
    """Capped category counts (the rarest half pruned at the cap) and a KMV distinct-count sketch."""

    __slots__ = ("counts", "missing", "present", "pruned", "hashes")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.missing = 0
        self.present = 0
        self.pruned = False
        self.hashes = np.empty(0, dtype=np.uint64)

    def update(self, values: Iterable[Any]) -> None:
        keys = [category_key(v) for v in values]
        counted = Counter(keys)
        self.missing += counted.pop(None, 0)
        chunk = cast("Counter[str]", counted)  # None (missing) popped above: the rest are strings
        self.present += sum(chunk.values())
        counts = self.counts
        for key, c in chunk.items():
            counts[key] = counts.get(key, 0) + c
        if len(counts) > _COUNTER_CAP:
            keep = sorted(counts.items(), key=lambda kv: -kv[1])[: _COUNTER_CAP // 2]
            self.counts = dict(keep)
            self.pruned = True
        new = np.fromiter((int.from_bytes(hashlib.blake2b(k.encode("utf-8", "surrogatepass"), digest_size=8)
                                          .digest(), "little") for k in chunk), dtype=np.uint64, count=len(chunk))
        merged = np.union1d(self.hashes, new)
        self.hashes = merged[:_KMV_K]

    def cardinality(self) -> tuple[int, bool]:
        if self.hashes.size < _KMV_K:
            return int(self.hashes.size), False
        kth = float(self.hashes[-1]) / 2.0**64
        return int(round((_KMV_K - 1) / kth)), True


class ProfileBuilder:
    """Streams chunks of columns into a reference profile in bounded memory.

    ``columns`` maps a role (feature / output / label) to {name: kind}; every chunk passed to
    ``observe`` and ``count_bins`` is a mapping of column name to a sequence of values (chunks
    may lack a column: its values count as missing).
    """

    def __init__(self, columns: dict[Role, dict[str, Kind]], *, sample_size: int = DEFAULT_SAMPLE_SIZE,
                 bins: int = DEFAULT_BINS, top_k: int = DEFAULT_TOP_K, seed: int = 0):
        if sample_size < 2:
            raise ValueError("sample_size must be at least 2")
        self.columns = {role: dict(cols) for role, cols in columns.items()}
        self.sample_size = sample_size
        self.bins = bins
        self.top_k = top_k
        self.rng = np.random.default_rng(seed)
        self.rows = 0
        self.numeric = [(role, n) for role, cols in self.columns.items() for n, k in cols.items() if k == "numeric"]
        self.categorical = [(role, n) for role, cols in self.columns.items() for n, k in cols.items()
                            if k == "categorical"]
        self._moments = {key: _Moments() for key in self.numeric}
        self._categories = {key: _Categories() for key in self.categorical}
        # The row sample: the sample_size rows with the smallest random keys (uniform without replacement).
        self._keys = np.empty(0)
        self._sample = np.empty((0, len(self.numeric)))
        # The sampled rows' labels (category keys), beside the sample, for the calibration maps.
        labels = list(self.columns.get("label", {}))
        scored = any(role == "output" for role, _ in self.numeric)
        self._label = labels[0] if len(labels) == 1 and scored else None
        self._label_sample = np.empty(0, dtype=object)
        self._edges: dict[tuple[str, str], np.ndarray] | None = None
        self._bin_counts: dict[tuple[str, str], np.ndarray] = {}

    # pass 1 ------------------------------------------------------------------------------
    def observe(self, chunk: dict[str, Any]) -> None:
        n = count_rows(chunk)
        if n == 0:
            return
        self.rows += n
        matrix = np.empty((n, len(self.numeric)))
        for j, key in enumerate(self.numeric):
            x = to_float_array(chunk[key[1]]) if key[1] in chunk else np.full(n, np.nan)
            self._moments[key].update(x)
            matrix[:, j] = x
        for key in self.categorical:
            values = chunk.get(key[1])
            if values is None:
                self._categories[key].missing += n
            else:
                self._categories[key].update(values)
        keys = np.concatenate((self._keys, self.rng.random(n)))
        rows = np.concatenate((self._sample, matrix))
        labels = self._label_sample
        if self._label is not None:
            values = chunk.get(self._label)
            chunk_labels = np.empty(n, dtype=object)
            if values is not None:
                chunk_labels[:] = [category_key(v) for v in values]
            labels = np.concatenate((labels, chunk_labels))
        if keys.size > self.sample_size:
            keep = np.argpartition(keys, self.sample_size - 1)[: self.sample_size]
            keys, rows = keys[keep], rows[keep]
            labels = labels[keep] if self._label is not None else labels
        self._keys, self._sample, self._label_sample = keys, rows, labels

    @property
    def needs_second_pass(self) -> bool:
        """True when the sample is not all the data, so exact bin counts need another read."""
        return self.rows > self.sample_size

    def freeze(self) -> None:
        """Fix the numeric bin edges from the sample; count the bins on it when it is all the data."""
        self._edges = {key: quantile_edges(self._sample[:, j], self.bins) for j, key in enumerate(self.numeric)}
        self._bin_counts = {key: np.zeros(e.size + 1, dtype=np.int64) for key, e in self._edges.items()}
        if not self.needs_second_pass:
            for j, key in enumerate(self.numeric):
                self._bin_counts[key] += _bins(self._sample[:, j], self._edges[key])

    # pass 2 ------------------------------------------------------------------------------
    def count_bins(self, chunk: dict[str, Any]) -> None:
        if self._edges is None:
            raise RuntimeError("freeze() before count_bins()")
        for key in self.numeric:
            if key[1] in chunk:
                self._bin_counts[key] += _bins(to_float_array(chunk[key[1]]), self._edges[key])

    # the result --------------------------------------------------------------------------
    def build(self, *, source: str = "") -> ReferenceProfile:
        if self._edges is None:
            self.freeze()
        edges = self._edges
        assert edges is not None  # set by freeze()
        profile = ReferenceProfile(rows=self.rows, source=source,
                                   created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                   settings={"sample_size": self.sample_size, "bins": self.bins, "top_k": self.top_k})
        for j, key in enumerate(self.numeric):
            m = self._moments[key]
            sample = np.sort(self._sample[:, j])
            sample = sample[~np.isnan(sample)]
            stats = summary_statistics(sample)  # quantiles from the sample (exact when it is all rows)
            total = m.n + m.missing
            stats.update(mean=m.mean if m.n else math.nan, std=math.sqrt(max(m.m2, 0.0) / m.n) if m.n else math.nan,
                         min=m.min if m.n else math.nan, max=m.max if m.n else math.nan,
                         missing_ratio=m.missing / total if total else math.nan,
                         mad=median_abs_deviation(sample))  # for the input guard's robust z-scores
            profile.group(key[0])[key[1]] = NumericProfile(key[1], m.n, m.missing, edges[key],
                                                           self._bin_counts[key], stats, sample)
        for key in self.categorical:
            c = self._categories[key]
            ranked = sorted(((k, v) for k, v in c.counts.items() if k != OTHER), key=lambda kv: (-kv[1], kv[0]))
            top = ranked[: self.top_k]
            counts = np.array([v for _, v in top] + [c.present - sum(v for _, v in top)], dtype=np.int64)
            cardinality, estimated = c.cardinality()
            total = c.present + c.missing
            stats = {"missing_ratio": c.missing / total if total else math.nan, "entropy": entropy(counts),
                     "cardinality": float(cardinality)}
            profile.group(key[0])[key[1]] = CategoricalProfile(key[1], c.present, c.missing, [k for k, _ in top],
                                                               counts, cardinality, estimated, stats)
        features = [n for role, n in self.numeric if role == "feature"]
        if len(features) >= 2 and self._sample.shape[0] >= 2:
            idx = [self.numeric.index(("feature", n)) for n in features]
            x = self._sample[:, idx]
            profile.correlation_features = features
            profile.correlation = correlation_matrix(x)
            observed = [i for i, n in enumerate(features) if self._moments[("feature", n)].n > 0]
            if len(observed) >= 2:
                profile.pca_features = [features[i] for i in observed]
                profile.pca = PCAModel.fit(x[:, observed])
        # The input guard's per-event outlier model: Mahalanobis on the standardised numeric
        # features, fitted on the row sample, with the sample's own scores kept for calibration.
        usable = [n for n in features if self._moments[("feature", n)].n > 0]
        if usable and self._sample.shape[0] >= 2:
            idx = [self.numeric.index(("feature", n)) for n in usable]
            profile.outlier_features = usable
            profile.outlier = MahalanobisModel.fit(self._sample[:, idx])
        profile.calibration = self._calibration()
        profile.hash = profile.to_dict()["hash"]
        return profile


    def _calibration(self) -> ScoreCalibration | None:
        """Calibration maps of the score outputs against a binary label, on the sampled rows.

        The positive class is ``1`` (or ``true``) when the label is 0/1 (or boolean), else the
        class whose rows score higher on average (a score is the positive class's probability).
        """
        if self._label is None:
            return None
        labelled = np.array([k is not None for k in self._label_sample], dtype=bool)
        classes = sorted(set(self._label_sample[labelled].tolist()))
        if len(classes) != 2:
            return None
        maps = {}
        positive_by_output: dict[str, str] = {}
        for j, (role, name) in enumerate(self.numeric):
            score = self._sample[:, j]
            rows = labelled & np.isfinite(score)
            s, y = score[rows], self._label_sample[rows]
            if role != "output" or s.size == 0 or s.min() < 0.0 or s.max() > 1.0 or np.unique(s).size <= 2:
                continue  # not a probability-like score (a 0/1 class output is not calibrated)
            positive = _positive_class(classes, s, y)
            fitted = fit_calibration(s, y == positive)
            if fitted is not None:
                maps[name], positive_by_output[name] = fitted, positive
        if not maps:
            return None
        # One positive class for the section: the first score's; a score that disagrees is dropped.
        positive = next(iter(positive_by_output.values()))
        return ScoreCalibration(self._label, positive,
                                {n: m for n, m in maps.items() if positive_by_output[n] == positive})


def _positive_class(classes: list[str], score: np.ndarray, label: np.ndarray) -> str:
    if classes in (["0", "1"], ["false", "true"]):
        return classes[1]
    means = [float(score[label == c].mean()) for c in classes]
    return classes[int(np.argmax(means))]


def count_rows(chunk: dict[str, Any]) -> int:
    """The rows in a chunk of columns (the length of its first column)."""
    for values in chunk.values():
        return len(values)
    return 0


def _bins(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts in the right-closed bins of ``edges`` (NaN ignored); ``stats.bin_counts`` without a sort."""
    x = values[~np.isnan(values)]
    return np.bincount(np.searchsorted(edges, x, side="left"), minlength=edges.size + 1).astype(np.int64)


def build_profile(columns: dict[Role, dict[str, Any]], kinds: dict[str, Kind] | None = None, **kwargs) -> ReferenceProfile:
    """A profile of in-memory columns: ``{"feature": {name: values}, "output": {...}, "label": {...}}``.

    Kinds are inferred (``infer_kind``) unless given in ``kinds``. Used for warm-up references
    and tests; ``source`` may be passed.
    """
    kinds = kinds or {}
    source = kwargs.pop("source", "memory")
    spec = {role: {name: kinds.get(name) or infer_text_kind(values) for name, values in cols.items()}
            for role, cols in columns.items()}
    builder = ProfileBuilder(spec, **kwargs)
    chunk = {name: values for cols in columns.values() for name, values in cols.items()}
    builder.observe(chunk)
    builder.freeze()
    if builder.needs_second_pass:
        builder.count_bins(chunk)
    return builder.build(source=source)
