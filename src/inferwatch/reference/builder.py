"""Building a reference profile in a stream of column chunks, in bounded memory.

``ProfileBuilder.observe`` takes chunks of columns and keeps bounded state (running moments, a
uniform row sample of ``sample_size`` rows kept by smallest random keys, capped category
counters, a KMV distinct-count sketch), then ``freeze`` fixes the bin edges from the sample and,
when the input had more rows than the sample, ``count_bins`` over a second pass gives exact
reference bin counts.

The state is mergeable, so any engine can profile partitions in parallel (docs/reference-profile.md,
"Profiles on a cluster"): each partition is observed by its own builder, given the id of its first
row (``row_offset``; a row's sample key is a hash of the seed and its id, so the sample does not
depend on how rows were split), the builders are combined with ``merge`` / ``merge_states``, the
merged builder is frozen, its ``bin_edges()`` are shipped back to the partitions, each counts its
bins (``BinEdges.count``) and ``add_bin_counts(merge_bin_counts(...))`` completes the profile. ``build_profile`` does it all for in-memory columns (warm-up references);
``readers.build_profile_from_file`` drives the builder over a file. With a binary label, the
sample also keeps each row's label, and every score output (numeric, within [0, 1]) gets a
calibration map fitted on the sampled rows (``stats.calibration``).
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Sequence, cast

import numpy as np

from inferwatch.exposition.metrics import OTHER  # the bucket of categories outside the top-K
from inferwatch.ingest.values import Kind, category_key, infer_text_kind, to_float_array
from inferwatch.stats import (
    MahalanobisModel, PCAModel, correlation_matrix, entropy, median_abs_deviation, quantile_edges, summary_statistics,
)
from inferwatch.stats.calibration import fit_calibration
from inferwatch.stats.resampling import DEFAULT_DRAWS, DEFAULT_QUANTILE, WINDOW_SIZES, resampled_thresholds
from inferwatch.stats.seen import SeenValues, expected_unseen_rate
from .format import CategoricalProfile, MultivariateThresholds, NumericProfile, ReferenceProfile, Role, ScoreCalibration

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

    def merge(self, other: _Moments) -> None:
        """Chan et al.'s pairwise combination: the same numbers as one pass up to float rounding."""
        self.missing += other.missing
        if other.n == 0:
            return
        n = self.n + other.n
        delta = other.mean - self.mean
        self.mean += delta * other.n / n
        self.m2 += other.m2 + delta * delta * self.n * other.n / n
        self.n = n
        self.min, self.max = min(self.min, other.min), max(self.max, other.max)


class _Categories:
    """Capped category counts (the rarest half pruned at the cap) and a KMV distinct-count sketch."""

    __slots__ = ("counts", "missing", "present", "pruned", "hashes", "seen")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.missing = 0
        self.present = 0
        self.pruned = False
        self.hashes = np.empty(0, dtype=np.uint64)
        self.seen = SeenValues()  # every key, for new categories (exact, then a Bloom filter)

    def update(self, values: Iterable[Any]) -> None:
        keys = [category_key(v) for v in values]
        counted = Counter(keys)
        self.missing += counted.pop(None, 0)
        chunk = cast("Counter[str]", counted)  # None (missing) popped above: the rest are strings
        self.present += sum(chunk.values())
        counts = self.counts
        for key, c in chunk.items():
            counts[key] = counts.get(key, 0) + c
        self._prune()
        new = np.fromiter((int.from_bytes(hashlib.blake2b(k.encode("utf-8", "surrogatepass"), digest_size=8)
                                          .digest(), "little") for k in chunk), dtype=np.uint64, count=len(chunk))
        merged = np.union1d(self.hashes, new)
        self.hashes = merged[:_KMV_K]
        self.seen.add(chunk)

    def _prune(self) -> None:
        if len(self.counts) > _COUNTER_CAP:
            keep = sorted(self.counts.items(), key=lambda kv: -kv[1])[: _COUNTER_CAP // 2]
            self.counts = dict(keep)
            self.pruned = True

    def merge(self, other: _Categories) -> None:
        """Counts add up (exact while a column has at most ``_COUNTER_CAP`` categories); the
        KMV sketch of a union is the smallest hashes of both sketches, whatever the order."""
        self.missing += other.missing
        self.present += other.present
        self.pruned = self.pruned or other.pruned
        counts = self.counts
        for key, c in other.counts.items():
            counts[key] = counts.get(key, 0) + c
        self._prune()
        self.hashes = np.union1d(self.hashes, other.hashes)[:_KMV_K]
        self.seen.merge(other.seen)  # exact sets by union up to the cap, Bloom filters by OR

    def expected_unseen(self) -> float:
        """Good-Turing: the share of values seen once. After pruning, only keys kept with a
        count of 2 or more are known not to be singletons, so the rest of the mass bounds it."""
        if self.pruned:
            repeated = sum(c for c in self.counts.values() if c >= 2)
            return expected_unseen_rate(self.present - repeated, self.present)
        return expected_unseen_rate(sum(1 for c in self.counts.values() if c == 1), self.present)

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

    Every row has an id: its position in the input unless ``observe`` is told otherwise
    (``row_offset``). The row sample keeps the ``sample_size`` rows whose keys, a hash of
    (seed, id), are smallest, so builders that observed disjoint id ranges merge into exactly
    the sample one builder would have kept over all the rows. A builder pickles to about
    ``sample_size`` x (numeric columns + 2) x 8 bytes plus its category counters.
    """

    def __init__(self, columns: dict[Role, dict[str, Kind]], *, sample_size: int = DEFAULT_SAMPLE_SIZE,
                 bins: int = DEFAULT_BINS, top_k: int = DEFAULT_TOP_K, seed: int = 0):
        if sample_size < 2:
            raise ValueError("sample_size must be at least 2")
        self.columns = {role: dict(cols) for role, cols in columns.items()}
        self.sample_size = sample_size
        self.bins = bins
        self.top_k = top_k
        self.seed = seed
        self.rows = 0
        self._next_id = 0  # the id of the next row observed without a row_offset
        self.numeric = [(role, n) for role, cols in self.columns.items() for n, k in cols.items() if k == "numeric"]
        self.categorical = [(role, n) for role, cols in self.columns.items() for n, k in cols.items()
                            if k == "categorical"]
        self._moments = {key: _Moments() for key in self.numeric}
        self._categories = {key: _Categories() for key in self.categorical}
        # The row sample: the sample_size rows with the smallest keys (uniform without replacement).
        self._keys = np.empty(0, dtype=np.uint64)
        self._sample = np.empty((0, len(self.numeric)))
        # The sampled rows' labels (category keys), beside the sample, for the calibration maps.
        labels = list(self.columns.get("label", {}))
        scored = any(role == "output" for role, _ in self.numeric)
        self._label = labels[0] if len(labels) == 1 and scored else None
        self._label_sample = np.empty(0, dtype=object)
        self._edges: dict[tuple[str, str], np.ndarray] | None = None
        self._bin_counts: dict[tuple[str, str], np.ndarray] = {}

    # pass 1 ------------------------------------------------------------------------------
    def observe(self, chunk: dict[str, Any], *, row_offset: int | None = None) -> None:
        """Add a chunk of rows. ``row_offset`` is the id of its first row (the next rows follow
        on); without it the chunk follows the rows this builder saw before. Partitions observed
        by different builders must have disjoint ids: their positions in the whole input give
        the very sample of a single pass."""
        if self._edges is not None:
            raise RuntimeError("observe() after freeze()")
        n = count_rows(chunk)
        start = self._next_id if row_offset is None else row_offset
        if start < 0:
            raise ValueError("row_offset must be >= 0")
        self._next_id = start + n
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
        chunk_labels = np.empty(n if self._label is not None else 0, dtype=object)
        if self._label is not None:
            values = chunk.get(self._label)
            if values is not None:
                chunk_labels[:] = [category_key(v) for v in values]
        self._add_to_sample(row_keys(self.seed, start, n), matrix, chunk_labels)

    def _add_to_sample(self, keys: np.ndarray, rows: np.ndarray, labels: np.ndarray) -> None:
        keys = np.concatenate((self._keys, keys))
        rows = np.concatenate((self._sample, rows))
        if self._label is not None:
            labels = np.concatenate((self._label_sample, labels))
        if keys.size > self.sample_size:
            keep = np.argpartition(keys, self.sample_size - 1)[: self.sample_size]
            keys, rows = keys[keep], rows[keep]
            labels = labels[keep] if self._label is not None else labels
        self._keys, self._sample = keys, rows
        if self._label is not None:
            self._label_sample = labels

    # merging -----------------------------------------------------------------------------
    def merge(self, other: ProfileBuilder) -> ProfileBuilder:
        """Fold another builder's state into this one (returns self) before either is frozen.

        Both must have the same columns and settings and must have observed disjoint row ids.
        Counts, min, max, the category counters (below ``_COUNTER_CAP`` categories a column),
        the KMV sketch and the row sample are exactly those of one builder over all the rows,
        in any merge order; mean and std equal them up to floating-point rounding (the
        pairwise update of Chan et al., as a single pass itself rounds differently per chunking).
        """
        if self._edges is not None or other._edges is not None:
            raise RuntimeError("merge() before freeze()")
        mine = (self.columns, self.sample_size, self.bins, self.top_k, self.seed)
        theirs = (other.columns, other.sample_size, other.bins, other.top_k, other.seed)
        if mine != theirs:
            raise ValueError("cannot merge profile builders with different columns or settings "
                             "(columns, sample_size, bins, top_k and seed must match)")
        before = self._keys.size + other._keys.size
        self.rows += other.rows
        self._next_id = max(self._next_id, other._next_id)
        for key, m in self._moments.items():
            m.merge(other._moments[key])
        for key, c in self._categories.items():
            c.merge(other._categories[key])
        self._add_to_sample(other._keys, other._sample, other._label_sample)
        if np.unique(self._keys).size != self._keys.size or before < self._keys.size:
            raise ValueError("merged builders observed the same row ids: give each partition a disjoint "
                             "row_offset range")
        return self

    @property
    def needs_second_pass(self) -> bool:
        """True when the sample is not all the data, so exact bin counts need another read."""
        return self.rows > self.sample_size

    def freeze(self) -> None:
        """Fix the numeric bin edges from the sample; count the bins on it when it is all the data."""
        # The sample in key order, so everything computed from it (sums in the correlation, PCA,
        # calibration) rounds the same way however the rows arrived.
        order = np.argsort(self._keys, kind="stable")
        self._keys, self._sample = self._keys[order], self._sample[order]
        if self._label is not None:
            self._label_sample = self._label_sample[order]
        self._edges = {key: quantile_edges(self._sample[:, j], self.bins) for j, key in enumerate(self.numeric)}
        self._bin_counts = {key: np.zeros(e.size + 1, dtype=np.int64) for key, e in self._edges.items()}
        if not self.needs_second_pass:
            for j, key in enumerate(self.numeric):
                self._bin_counts[key] += _bins(self._sample[:, j], self._edges[key])

    # pass 2 ------------------------------------------------------------------------------
    def count_bins(self, chunk: dict[str, Any]) -> None:
        self.add_bin_counts(self.bin_edges().count(chunk))

    def bin_edges(self) -> BinEdges:
        """The fixed bin edges (after ``freeze``), small and picklable, for counting elsewhere."""
        if self._edges is None:
            raise RuntimeError("freeze() before bin_edges()")
        return BinEdges(dict(self._edges))

    def add_bin_counts(self, counts: dict[tuple[str, str], np.ndarray]) -> None:
        """Add bin counts of the second pass (``BinEdges.count`` of chunks, ``merge_bin_counts``)."""
        if self._edges is None:
            raise RuntimeError("freeze() before count_bins()")
        if not self.needs_second_pass:
            raise RuntimeError("the bins were counted on the sample (it holds every row): no second pass")
        for key, c in counts.items():
            self._bin_counts[key] += c

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
            seen = copy.copy(c.seen)  # folded for the file; the builder keeps its own (mergeable) bits
            seen.fold()
            profile.group(key[0])[key[1]] = CategoricalProfile(key[1], c.present, c.missing, [k for k, _ in top],
                                                               counts, cardinality, estimated, stats,
                                                               seen=seen, expected_unseen=c.expected_unseen())
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
            profile.multivariate_thresholds = _multivariate_thresholds(profile, x, observed, self.seed)
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


@dataclass(frozen=True)
class BinEdges:
    """The inner bin edges of every numeric column (``ProfileBuilder.bin_edges``)."""

    edges: dict[tuple[str, str], np.ndarray]

    def count(self, chunk: dict[str, Any]) -> dict[tuple[str, str], np.ndarray]:
        """Bin counts of one chunk of the second pass (a column the chunk lacks counts nothing)."""
        return {key: _bins(to_float_array(chunk[key[1]]), e) for key, e in self.edges.items() if key[1] in chunk}


def merge_bin_counts(counts: Iterable[dict[tuple[str, str], np.ndarray]]) -> dict[tuple[str, str], np.ndarray]:
    """The sum of per-partition bin counts."""
    total: dict[tuple[str, str], np.ndarray] = {}
    for part in counts:
        for key, c in part.items():
            total[key] = total[key] + c if key in total else np.array(c, dtype=np.int64)
    return total


def merge_states(states: Sequence[ProfileBuilder]) -> ProfileBuilder:
    """One builder holding the merged state of ``states`` (which are left unchanged)."""
    if not states:
        raise ValueError("merge_states() needs at least one builder")
    merged = copy.deepcopy(states[0])
    for state in states[1:]:
        merged.merge(state)
    return merged


_GAMMA, _MIX1, _MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def row_keys(seed: int, start: int, n: int) -> np.ndarray:
    """The sample keys of rows ``start .. start+n-1``: splitmix64's output for (seed, id).

    Each step (adding, multiplying by an odd constant, xor-shifting) is a bijection of 64-bit
    words, so distinct ids never share a key (no ties), and a row's key depends only on the
    seed and its id, not on the chunk or partition it came in.
    """
    base = (int(seed) * 0xD1B54A32D192ED03 + start + 1) % 2**64
    x = (np.arange(n, dtype=np.uint64) + np.uint64(base)) * _GAMMA  # wraps modulo 2**64, like splitmix64
    x = (x ^ (x >> np.uint64(30))) * _MIX1
    x = (x ^ (x >> np.uint64(27))) * _MIX2
    return x ^ (x >> np.uint64(31))


def _multivariate_thresholds(profile: ReferenceProfile, x: np.ndarray, observed: list[int],
                             seed: int) -> MultivariateThresholds | None:
    """PCA and correlation drift thresholds by window size, resampled from the row sample ``x``."""
    pca_rows = x[:, observed] if profile.pca is not None else None
    found = resampled_thresholds(x, profile.correlation, pca_rows, profile.pca, rng=np.random.default_rng(seed))
    if found is None:
        return None
    return MultivariateThresholds(DEFAULT_QUANTILE, DEFAULT_DRAWS, list(WINDOW_SIZES), *found)


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
