"""The input guard: data quality at the door, schema changes and per-event outlier scores.

The worker calls ``Guard.observe(version, batch)`` after each window append (a pipeline
observer). Every check is vectorised over the batch: the numeric features of a batch become one
(features x rows) float64 matrix in a single conversion, and missing values, NaN, infinities,
out-of-range values and the outlier score are array operations on it; categorical values are
looked up with C-level ``map`` calls. Python loops run per feature, never per event, except on
the slow paths of malformed columns and for the (rare) events written to the quarantine log.

Checks, against the schema of the reference profile (or ``payload.features``):
``missing`` (absent or null), ``nan``, ``infinite``, ``wrong_type`` (a string where a number
is expected, an object where a category is), ``out_of_range`` (outside the reference's
[min, max] widened by ``guard.range_tolerance`` of its span), ``unseen_category`` (not among
the reference's categories, checked when the profile holds all of them), ``unknown_feature``
(a name outside the schema: the most frequent ones become ``feature`` label values, see
``UnknownNames``; at most ``guard.max_unknown_features`` of them, the rest ``other``)
and ``duplicate`` (the whole feature vector equals one of the last N distinct vectors: row hashes
in a bounded set with a ring of evictions; ``feature="_event"``).

Outliers: the squared Mahalanobis distance of the standardised numeric features (the
profile's ``outlier`` model), divided by the threshold calibrated on the reference for
``guard.outlier_fpr``; a score above 1 is an outlier, and its largest robust z-scores (median
and MAD of the reference) name the features that made it odd.

Memory is bounded by configuration: per version a ring of per-event flags as long as the window
(for the ratios over the window), a ring of row hashes, and counters per (feature, issue) with
capped feature labels. ``GuardCollector`` publishes everything at scrape time.
"""

from __future__ import annotations

import logging
import math
import operator
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from itertools import compress, repeat
from typing import Any, Callable

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from inferwatch.config import Config, GuardConfig
from inferwatch.ingest.events import EventBatch
from inferwatch.exposition.metrics import OTHER
from inferwatch.support.jsonlines import REDACTED, RotatingFile, dumps, redact_value
from inferwatch.reference import CategoricalProfile, NumericProfile, ReferenceProfile
from inferwatch.stats.outlier import MahalanobisModel, robust_scale
from inferwatch.ingest.values import category_key

log = logging.getLogger(__name__)

ISSUES = ("missing", "nan", "infinite", "wrong_type", "out_of_range", "unseen_category", "unknown_feature",
          "duplicate")
MISSING, NAN, INFINITE, WRONG_TYPE, OUT_OF_RANGE, UNSEEN, UNKNOWN, DUPLICATE = range(len(ISSUES))
EVENT_FEATURE = "_event"  # the `feature` label of event-level issues (duplicate)
# inferwatch_outlier_score is the Mahalanobis distance over the calibrated threshold: 1 = the threshold.
SCORE_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 100.0)
_NUMBER_TYPES = frozenset({int, float, np.float64, np.float32, np.int64, np.int32})
_STR = {str}
_U64 = np.uint64
# Ring flags
_F_MISSING, _F_OUT_OF_RANGE = np.uint8(1), np.uint8(2)
_R_FAILED, _R_OUTLIER = np.uint8(1), np.uint8(2)


# --------------------------------------------------------------------------- the schema


@dataclass
class Schema:
    """What the guard checks against; built once per reference (or from the configuration)."""

    source: str  # "profile", "config" or "none"
    names: list[str]
    kinds: list[str]  # numeric, categorical or auto (declared without a type: presence only)
    lo: np.ndarray = field(default_factory=lambda: np.empty(0))  # per numeric feature
    hi: np.ndarray = field(default_factory=lambda: np.empty(0))
    categories: dict[str, dict[str, int]] = field(default_factory=dict)  # complete reference categories -> code
    outlier: MahalanobisModel | None = None
    outlier_rows: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.intp))  # into `numeric`
    threshold: float = math.nan
    threshold_resolved: bool = False
    median: np.ndarray = field(default_factory=lambda: np.empty(0))  # per outlier feature
    robust: np.ndarray = field(default_factory=lambda: np.empty(0))
    reference_hash: str = ""

    def __post_init__(self) -> None:
        self.index = {n: i for i, n in enumerate(self.names)}
        self.numeric = [n for n, k in zip(self.names, self.kinds) if k == "numeric"]
        self.categorical = [n for n, k in zip(self.names, self.kinds) if k == "categorical"]
        self.other = [n for n, k in zip(self.names, self.kinds) if k not in ("numeric", "categorical")]
        self.numeric_index = np.array([self.index[n] for n in self.numeric], dtype=np.intp)
        if self.lo.size != len(self.numeric):
            self.lo = np.full(len(self.numeric), -np.inf)
            self.hi = np.full(len(self.numeric), np.inf)

    @classmethod
    def none(cls) -> Schema:
        return cls("none", [], [])

    @classmethod
    def from_config(cls, specs) -> Schema:
        return cls("config", [s.name for s in specs], [s.type for s in specs])

    @classmethod
    def from_profile(cls, profile: ReferenceProfile, cfg: GuardConfig) -> Schema:
        names = list(profile.features)
        kinds = [profile.features[n].kind for n in names]
        lo, hi, categories = [], [], {}
        for name in names:
            col = profile.features[name]
            if isinstance(col, NumericProfile):
                mn, mx = col.statistics.get("min", math.nan), col.statistics.get("max", math.nan)
                if math.isfinite(mn) and math.isfinite(mx):
                    span = mx - mn if mx > mn else max(abs(mx), 1.0)
                    lo.append(mn - cfg.range_tolerance * span)
                    hi.append(mx + cfg.range_tolerance * span)
                else:
                    lo.append(-math.inf)
                    hi.append(math.inf)
            elif isinstance(col, CategoricalProfile) and col.bin_counts.size and col.bin_counts[-1] == 0 \
                    and col.count > 0:
                categories[name] = {c: i for i, c in enumerate(col.categories)}
        schema = cls("profile", names, kinds, np.array(lo, dtype=np.float64), np.array(hi, dtype=np.float64),
                     categories, reference_hash=profile.hash)
        if cfg.outliers:
            schema._prepare_outliers(profile, cfg)
        return schema

    def _prepare_outliers(self, profile: ReferenceProfile, cfg: GuardConfig) -> None:
        model, feats = profile.outlier, profile.outlier_features
        if model is None and profile.correlation is not None and profile.correlation_features:
            # A version 1 profile: the correlation matrix and moments, but no reference scores.
            feats = profile.correlation_features
            stats = [profile.features[n].statistics for n in feats]
            model = MahalanobisModel.from_correlation(
                np.array([s.get("mean", 0.0) for s in stats]),
                np.array([s.get("std", 1.0) if s.get("std", 0.0) > 0 else 1.0 for s in stats]),
                profile.correlation)
        feats = [n for n in feats if n in self.numeric]
        if model is None or not feats or len(feats) != model.n_features:
            return
        pos = {n: i for i, n in enumerate(self.numeric)}
        self.outlier = model
        self.outlier_rows = np.array([pos[n] for n in feats], dtype=np.intp)
        if model.reference_n:
            self.threshold = model.threshold(cfg.outlier_fpr)
            self.threshold_resolved = model.resolvable(cfg.outlier_fpr)
        else:  # chi-squared with d degrees of freedom: exact for Gaussian data, approximate otherwise
            from scipy import stats

            self.threshold = float(stats.chi2.isf(cfg.outlier_fpr, model.n_features))
            self.threshold_resolved = False
        if not self.threshold > 0:
            self.threshold = 1e-12
        median, robust = [], []
        for name in feats:
            s = profile.features[name].statistics
            median.append(s.get("p50", s.get("mean", 0.0)))
            robust.append(robust_scale(s.get("mad", math.nan), s.get("p75", math.nan) - s.get("p25", math.nan),
                                       s.get("std", math.nan)))
        self.median = np.array(median, dtype=np.float64)
        self.robust = np.array(robust, dtype=np.float64)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "features": list(self.names),
                               "numeric": len(self.numeric), "categorical": len(self.categorical),
                               "categories_checked": sorted(self.categories)}
        if self.reference_hash:
            out["reference_hash"] = self.reference_hash
        if self.outlier is not None:
            out["outliers"] = {"method": "mahalanobis", "features": [self.numeric[i] for i in self.outlier_rows],
                               "threshold": self.threshold, "calibrated_on_reference": self.threshold_resolved,
                               "reference_rows": self.outlier.reference_n}
        return out


# --------------------------------------------------------------------------- vectorised checks


def _splitmix(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, elementwise on uint64 (wrapping arithmetic)."""
    x = x ^ (x >> _U64(30))
    x = x * _U64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> _U64(27))
    x = x * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


def _name_seed(name: str) -> np.uint64:
    """An odd 64-bit multiplier per feature name: a row's hash is splitmix(sum of value bits x seed)."""
    return _U64((hash(name) | 1) & 0xFFFFFFFFFFFFFFFF)


def _hash_value(value: Any) -> int:
    try:
        return hash(value)
    except TypeError:  # lists and objects: their JSON text
        return hash(dumps(value))


def _column_hashes(values: list[Any], n: int, hashable: Any = None) -> np.ndarray:
    """uint64 hashes of any column: numbers by their float64 bits (vectorised), other values by hash().

    ``hashable`` is the column itself when the caller knows every value is hashable."""
    if hashable is not None:
        return np.fromiter(map(hash, values), dtype=np.int64, count=n).view(_U64)
    types = set(map(type, values))
    if types <= {float, int} and types:
        return _float_bits(np.asarray(values, dtype=np.float64))
    if types == _STR:
        return np.fromiter(map(hash, values), dtype=np.int64, count=n).view(_U64)
    return np.fromiter(map(_hash_value, values), dtype=np.int64, count=n).view(_U64)


def _float_bits(x: np.ndarray) -> np.ndarray:
    return (np.asarray(x, dtype=np.float64) + 0.0).view(_U64)  # + 0.0: -0.0 hashes as 0.0


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


@dataclass
class BatchCheck:
    """What the checks found in one batch. Masks are per row; counts per (feature row, issue)."""

    n: int
    counts: np.ndarray  # (len(labels), len(ISSUES)) int64
    labels: list[str]  # feature label of each counts row
    failed: np.ndarray  # bool per row: any issue
    flags: np.ndarray  # (schema features, n) uint8: _F_MISSING | _F_OUT_OF_RANGE
    scores: np.ndarray | None = None  # normalised outlier score per row
    outlier: np.ndarray | None = None
    cells: list[tuple[str, str, np.ndarray]] = field(default_factory=list)  # (feature, issue, mask) for reasons
    z: np.ndarray | None = None  # (outlier features, n) robust z-scores, for the top contributors
    x: np.ndarray | None = None  # (outlier features, n) values
    unknown: dict[str, int] = field(default_factory=dict)  # unknown name -> events present (frequent names)


class UnknownNames:
    """The frequent unknown feature names: a Space-Saving sketch (Metwally et al., 2005) of at most
    ``capacity`` names with the number of events each was present in.

    A name in the sketch has ``count`` (an overestimate) and ``error`` (how much of it was inherited
    from the name it evicted), so ``count - error`` events are guaranteed. Any name present in more
    than (all unknown-name occurrences) / capacity events is in the sketch. A client sending a new
    random key in every event keeps every one of them at a guaranteed 1: none of them ever looks
    frequent, and a renamed column (present in every event) stays in the sketch and climbs."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.entries: dict[str, list[int]] = {}  # name -> [count, error]

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, name: str, events: int) -> None:
        entry = self.entries.get(name)
        if entry is not None:
            entry[0] += events
            return
        if len(self.entries) < self.capacity:
            self.entries[name] = [events, 0]
            return
        victim = min(self.entries, key=lambda k: self.entries[k][0])
        floor = self.entries.pop(victim)[0]
        self.entries[name] = [floor + events, floor]

    def guaranteed(self, name: str) -> int:
        entry = self.entries.get(name)
        return entry[0] - entry[1] if entry is not None else 0

    def rank(self, name: str, among: Callable[[str], bool]) -> int:
        """How many names for which ``among`` holds are guaranteed more events than ``name``."""
        mine = self.guaranteed(name)
        return sum(1 for other, (c, e) in self.entries.items() if c - e > mine and other != name and among(other))

    def top(self, k: int) -> list[tuple[str, int]]:
        return sorted(((n, c - e) for n, (c, e) in self.entries.items()), key=lambda t: (-t[1], t[0]))[:k]


class Checker:
    """The vectorised checks of one schema. Stateless across batches except the unknown names."""

    def __init__(self, schema: Schema, cfg: GuardConfig, *, on_capped: Callable[[], None] | None = None):
        self.schema = schema
        self.cfg = cfg
        self.unknown: dict[str, int] = {}  # unknown names with a label -> row of the counts matrix
        self.names = UnknownNames(max(32, 4 * cfg.max_unknown_features))
        self.on_capped = on_capped
        f = len(schema.names)
        self.labels = [*schema.names, *([""] * cfg.max_unknown_features), OTHER, EVENT_FEATURE]
        self.other_row = f + cfg.max_unknown_features
        self.event_row = self.other_row + 1
        self.seeds = {n: _name_seed(n) for n in schema.names}

    def unknown_row(self, name: str, events: int) -> int:
        """The counts row of an unknown name present in ``events`` events of a batch.

        A name earns its own ``feature`` label once it was present in at least
        ``guard.unknown_feature_min_events`` events (guaranteed by the sketch) and it is among the
        most frequent names still without a label; labels are kept once given (a counter's label
        set must stay stable), at most ``guard.max_unknown_features``. Everything else is ``other``."""
        names = self.names
        names.add(name, events)  # labelled names too: /v1/status lists the frequent names by events
        row = self.unknown.get(name)
        if row is not None:
            return row
        free = self.cfg.max_unknown_features - len(self.unknown)
        if free > 0 and names.guaranteed(name) >= self.cfg.unknown_feature_min_events \
                and names.rank(name, lambda other: other not in self.unknown) < free:
            row = len(self.schema.names) + len(self.unknown)
            self.unknown[name] = row
            self.labels[row] = name
            return row
        if self.on_capped is not None:
            self.on_capped()
        return self.other_row

    def check(self, batch: EventBatch, *, want_cells: bool = False, want_hash: bool = True
              ) -> tuple[BatchCheck, np.ndarray | None]:
        s = self.schema
        n = batch.n
        features = batch.features
        counts = np.zeros((len(self.labels), len(ISSUES)), dtype=np.int64)
        failed = np.zeros(n, dtype=bool)
        flags = np.zeros((len(s.names), n), dtype=np.uint8)
        cells: list[tuple[str, str, np.ndarray]] = []
        hashes = np.zeros(n, dtype=_U64) if want_hash else None
        seeds = self.seeds

        def note(name: str, row: int, issue: int, mask: np.ndarray) -> None:
            c = int(np.count_nonzero(mask))
            if c:
                counts[row, issue] += c
                np.logical_or(failed, mask, out=failed)
                if want_cells:
                    cells.append((name, ISSUES[issue], mask))

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
            note(name, s.index[name], WRONG_TYPE, wrong)
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
            for issue, mask in ((MISSING, missing_num), (NAN, nan), (INFINITE, inf), (OUT_OF_RANGE, oor)):
                per = mask.sum(axis=1)
                counts[rows, issue] += per
                if per.any():
                    np.logical_or(failed, mask.any(axis=0), out=failed)
                    if want_cells:
                        cells.extend((s.numeric[j], ISSUES[issue], mask[j]) for j in np.flatnonzero(per))
            flags[rows] = missing_num.view(np.uint8) | (oor.view(np.uint8) << 1)
            if want_hash and present:
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
                flags[row] = _F_MISSING
                counts[row, MISSING] += n
                failed[:] = True
                if want_cells:
                    cells.append((name, "missing", np.ones(n, dtype=bool)))
                continue
            index = s.categories.get(name)  # category -> code, when the reference holds them all
            codes = None
            if index is not None:  # the common case first: every value one of the reference's strings
                try:
                    codes = np.fromiter(map(index.get, values, repeat(-1)), dtype=np.int64, count=n)
                except TypeError:  # unhashable values (lists, objects)
                    codes = None
            missing = None
            if codes is not None and codes.min(initial=0) >= 0:
                keys = values
            else:
                types = set(map(type, values))
                if types == _STR:
                    keys = values
                else:
                    missing = np.fromiter(map(operator.is_, values, repeat(None)), dtype=bool, count=n)
                    keys = list(map(str, values)) if types == {int} else list(map(category_key, values))
                    if name in s.categorical:
                        wrong = np.fromiter(map(operator.is_, keys, repeat(None)), dtype=bool, count=n) & ~missing
                        if wrong.any():  # a NaN or an infinity (pandas' missing category) is its own issue
                            kind = np.fromiter(map(_nonfinite, values), dtype=np.int8, count=n)
                            note(name, row, NAN, kind == 1)
                            note(name, row, INFINITE, kind == 2)
                            wrong &= kind == 0
                        note(name, row, WRONG_TYPE, wrong)
                    note(name, row, MISSING, missing)
                    flags[row] = missing.view(np.uint8)
                    if index is not None:  # values were not keys: look the keys up
                        codes = np.fromiter(map(index.get, keys, repeat(-1)), dtype=np.int64, count=n)
                if index is not None:
                    unseen = codes < 0
                    if missing is not None:
                        unseen &= np.fromiter(map(operator.is_not, keys, repeat(None)), dtype=bool, count=n)
                    note(name, row, UNSEEN, unseen)
            if want_hash:
                if codes is not None:  # a known category hashes as its code, anything else by value
                    h = (codes + 1).astype(_U64)
                    other = codes < 0
                    if other.any():
                        h[other] = _column_hashes(list(compress(keys, other)), int(np.count_nonzero(other)))
                else:
                    h = _column_hashes(values, n, keys if keys is values else None)
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
            # the most frequent first: within a batch too, labels go to the most present names
            for name in sorted(unknown, key=unknown.__getitem__, reverse=True) if len(unknown) > 1 else unknown:
                values = features[name]
                mask = np.ones(n, dtype=bool) if unknown[name] == n else \
                    np.fromiter(map(operator.is_not, values, repeat(None)), dtype=bool, count=n)
                note(name, self.unknown_row(name, unknown[name]), UNKNOWN, mask)
                if want_hash:  # present values only: the same value hashes alike whether or not others are absent
                    if unknown[name] == n:
                        h = _column_hashes(values, n)
                    else:
                        h = np.zeros(n, dtype=_U64)
                        h[mask] = _column_hashes(list(compress(values, mask)), unknown[name])
                    hashes += h * _name_seed(name)
        elif want_hash:
            for name, values in features.items():
                hashes += _column_hashes(values, n) * _name_seed(name)
        if hashes is not None:
            hashes = _splitmix(hashes)

        check = BatchCheck(n, counts, self.labels, failed, flags, cells=cells)
        if unknown:  # per name, for schema changes: only names with a label or in the sketch (bounded)
            check.unknown = {k: c for k, c in unknown.items() if k in self.unknown or k in self.names}
        if s.outlier is not None and s.outlier_rows.size and n:
            xo = x[s.outlier_rows]
            z = s.outlier.standardize(xo.T)
            check.scores = s.outlier.score_standardized(z) / s.threshold
            check.outlier = check.scores > 1.0
            check.x = xo
        return check, hashes


# --------------------------------------------------------------------------- per-version state


class Duplicates:
    """Row hashes of the last ``capacity`` distinct feature vectors: a sorted array (vectorised
    membership by binary search) and a ring that says which hash to evict next."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.ring = np.zeros(capacity, dtype=_U64)
        self.filled = 0
        self.head = 0
        self.sorted = np.empty(0, dtype=_U64)  # the remembered hashes, unique, ascending

    def __len__(self) -> int:
        return int(self.sorted.size)

    def check(self, hashes: np.ndarray) -> np.ndarray:
        """Mark rows whose vector was seen before (earlier in the batch or in memory); remember the rest."""
        n = hashes.size
        mem = self.sorted
        if mem.size:
            pos = np.minimum(np.searchsorted(mem, hashes), mem.size - 1)
            dup = mem[pos] == hashes
        else:
            dup = np.zeros(n, dtype=bool)
        order = np.argsort(hashes, kind="stable")
        ordered = hashes[order]
        again = ordered[1:] == ordered[:-1]  # every occurrence after the first, in batch order
        if again.any():
            dup[order[1:][again]] = True
        new = hashes[~dup]
        if new.size > self.capacity:
            new = new[-self.capacity:]
        k = new.size
        if k:
            if self.head + k <= self.capacity:
                positions: np.ndarray | slice = slice(self.head, self.head + k)
                old = self.ring[self.head: min(self.head + k, self.filled)]
            else:
                positions = (self.head + np.arange(k)) % self.capacity
                old = self.ring[positions[positions < self.filled]]
            if old.size:  # each evicted hash is in memory exactly once
                mem = np.delete(mem, np.searchsorted(mem, np.sort(old)))
            self.ring[positions] = new
            new = np.sort(new)
            self.sorted = np.insert(mem, np.searchsorted(mem, new), new)
            self.head = int((self.head + k) % self.capacity)
            self.filled = min(self.capacity, self.filled + k)
        return dup


class VersionState:
    """Counters, the per-event flag ring (ratios over the window) and recent schema evidence."""

    def __init__(self, checker: Checker, capacity: int, max_age_seconds: float, cfg: GuardConfig):
        f = len(checker.schema.names)
        self.capacity = capacity
        self.max_age_seconds = max_age_seconds
        self.flags = np.zeros((f, capacity), dtype=np.uint8)
        self.rows = np.zeros(capacity, dtype=np.uint8)
        self.stamps = np.full(capacity, -np.inf)
        self.head = 0
        self.size = 0
        self.recent_events = deque()  # (n, {unknown name: events present}) of the last schema_window_events
        self.recent_total = 0
        self.schema_window = cfg.schema_window_events
        self.duplicates = Duplicates(cfg.duplicate_memory_events or capacity) if cfg.duplicates else None
        self.lock = threading.Lock()
        self.changes: dict[tuple[str, str], float] = {}  # (feature, change) -> since
        self._ratios: tuple[float, dict[str, Any]] | None = None

    def record(self, check: BatchCheck, stamps: list[float] | None, now: float) -> None:
        n = check.n
        kept = min(n, self.capacity)
        if self.head + kept <= self.capacity:  # no wrap: slices, not index arrays
            positions: np.ndarray | slice = slice(self.head, self.head + kept)
        else:
            positions = (self.head + np.arange(kept)) % self.capacity
        row = check.failed[-kept:].view(np.uint8) | ((check.outlier[-kept:].view(np.uint8) << 1)
                                                     if check.outlier is not None else np.uint8(0))
        try:
            ts = np.asarray(stamps[-kept:], dtype=np.float64) if stamps is not None else np.full(kept, now)
        except (TypeError, ValueError):
            ts = np.full(kept, now)
        unknown = check.unknown
        with self.lock:
            self.flags[:, positions] = check.flags[:, -kept:]
            self.rows[positions] = row
            self.stamps[positions] = ts
            self.head = int((self.head + kept) % self.capacity)
            self.size = min(self.capacity, self.size + kept)
            self.recent_events.append((n, unknown))
            self.recent_total += n
            while self.recent_events and self.recent_total - self.recent_events[0][0] >= self.schema_window:
                self.recent_total -= self.recent_events.popleft()[0]

    def window_ratios(self, names: list[str], now: float) -> dict[str, Any]:
        """Missing and out-of-range share per feature, failed and outlier share, over the live window."""
        cached = self._ratios
        if cached is not None and now - cached[0] < 1.0:
            return cached[1]
        with self.lock:
            live = self.stamps >= now - self.max_age_seconds
            n = int(np.count_nonzero(live))
            flags = self.flags[:, live]
            rows = self.rows[live]
        out: dict[str, Any] = {"events": n}
        if n:
            out["missing"] = dict(zip(names, (np.count_nonzero(flags & _F_MISSING, axis=1) / n).tolist()))
            out["out_of_range"] = dict(zip(names, (np.count_nonzero(flags & _F_OUT_OF_RANGE, axis=1) / n).tolist()))
            out["failed"] = np.count_nonzero(rows & _R_FAILED) / n
            out["outliers"] = np.count_nonzero(rows & _R_OUTLIER) / n
        self._ratios = (now, out)
        return out

    def recent(self) -> tuple[int, np.ndarray, int, dict[str, int]]:
        """The last ``schema_window_events`` events: their number and missing count per schema feature
        (from the flag ring), and the events of the last batches covering them with the number of
        events each frequent unknown name was present in."""
        with self.lock:
            window = min(self.size, self.schema_window)
            positions = (self.head - 1 - np.arange(window)) % self.capacity
            missing = np.count_nonzero(self.flags[:, positions] & _F_MISSING, axis=1)
            unknown: dict[str, int] = {}
            for _, present in self.recent_events:
                for r, c in present.items():
                    unknown[r] = unknown.get(r, 0) + c
            return window, missing, self.recent_total, unknown


# --------------------------------------------------------------------------- quarantine


class QuarantineLog:
    """JSON lines of events that failed a check or were outliers, rotated like the prediction log."""

    def __init__(self, path: str, max_bytes: int, backup_count: int):
        self.path = path
        self._file = RotatingFile(path, max_bytes, backup_count)
        self.written = 0
        self.errors = 0
        self._lock = threading.Lock()
        self._failing = False

    def write(self, lines: list[bytes], lost: int = 0) -> None:
        with self._lock:
            if self._file is None:
                self.errors += len(lines) + lost
                return
            try:
                self._file.write(lines)
                self._failing = False
            except Exception as exc:  # noqa: BLE001 - a failing disk never stops monitoring
                if not self._failing:
                    log.warning("quarantine log: cannot write %s: %s", self.path, exc)
                    self._failing = True
            self.written += self._file.progress
            self.errors += lost + len(lines) - self._file.progress

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


# --------------------------------------------------------------------------- the guard


class Guard:
    """Owns the schema, the per-version states and the quarantine log; ``observe`` is the worker's hook."""

    def __init__(self, cfg: Config, *, reference: Callable[[], ReferenceProfile | None] | None = None,
                 on_error: Callable[[], None] | None = None, on_capped: Callable[[], None] | None = None,
                 clock=time.time):
        self.cfg = cfg
        self.gcfg = cfg.guard
        self.model = cfg.model.name
        self.reference = reference  # e.g. the drift engine's current profile (file or warm-up)
        self.on_error = on_error
        self.on_capped = on_capped
        self.clock = clock
        self._profile: ReferenceProfile | None = None
        self.checker = Checker(self._config_schema(), self.gcfg, on_capped=on_capped)
        self.states: dict[str, VersionState] = {}
        self.totals: dict[tuple[str, str, str], int] = {}  # (version, feature, issue) -> count
        self.events: dict[tuple[str, str], int] = {}  # (version, passed|failed) -> count
        self.outliers: dict[str, int] = {}
        self.histograms: dict[str, tuple[np.ndarray, float]] = {}  # version -> (bucket counts, sum)
        self.errors = 0
        self._lock = threading.Lock()
        # The prediction log's redacted fields stay out of the quarantine log and the outlier notes too.
        self.redact = frozenset(cfg.prediction_log.redact)
        q = self.gcfg.quarantine
        self.quarantine = QuarantineLog(q.path, q.max_bytes, q.backup_count) if q.path else None

    def _config_schema(self) -> Schema:
        specs = self.cfg.payload.features
        return Schema.from_config(specs) if specs else Schema.none()

    @property
    def schema(self) -> Schema:
        return self.checker.schema

    def _refresh_schema(self) -> None:
        profile = self.reference() if self.reference is not None else None
        if profile is self._profile:
            return
        self._profile = profile
        schema = Schema.from_profile(profile, self.gcfg) if profile is not None else self._config_schema()
        self.checker = Checker(schema, self.gcfg, on_capped=self.on_capped)
        with self._lock:
            self.states = {}  # flags and schema evidence belong to a schema; counters carry on
        log.info("input guard: schema from %s, %d features", schema.source, len(schema.names))

    def _state(self, version: str) -> VersionState:
        state = self.states.get(version)
        if state is None:
            with self._lock:
                state = self.states.get(version)
                if state is None:
                    state = VersionState(self.checker, self.cfg.window.max_events, self.cfg.window.max_age_seconds,
                                         self.gcfg)
                    self.states = {**self.states, version: state}
        return state

    def observe(self, version: str, batch: EventBatch) -> None:
        """Check a windowed batch (the worker thread; never raises)."""
        if not self.gcfg.enabled or batch.n == 0:
            return
        try:
            self._observe(version, batch)
        except Exception:  # noqa: BLE001 - fail open
            log.exception("input guard failed on a batch")
            self.errors += 1
            if self.on_error is not None:
                try:
                    self.on_error()
                except Exception:  # noqa: BLE001
                    pass

    def _observe(self, version: str, batch: EventBatch) -> None:
        self._refresh_schema()
        checker = self.checker
        state = self._state(version)
        check, hashes = checker.check(batch, want_cells=self.quarantine is not None,
                                      want_hash=state.duplicates is not None)
        if hashes is not None:
            dup = state.duplicates.check(hashes)
            c = int(np.count_nonzero(dup))
            if c:
                check.counts[checker.event_row, DUPLICATE] += c
                check.failed |= dup
                if self.quarantine is not None:
                    check.cells.append((EVENT_FEATURE, "duplicate", dup))
        now = self.clock()
        state.record(check, batch.timestamps, now)
        failed = int(np.count_nonzero(check.failed))
        with self._lock:
            totals = self.totals
            for r, i in zip(*np.nonzero(check.counts)):
                key = (version, check.labels[r], ISSUES[i])
                totals[key] = totals.get(key, 0) + int(check.counts[r, i])
            self.events[(version, "failed")] = self.events.get((version, "failed"), 0) + failed
            self.events[(version, "passed")] = self.events.get((version, "passed"), 0) + check.n - failed
            if check.scores is not None:
                buckets, total = self.histograms.get(version, (np.zeros(len(SCORE_BUCKETS) + 1, np.int64), 0.0))
                finite = check.scores[np.isfinite(check.scores)]
                buckets = buckets + np.bincount(np.searchsorted(SCORE_BUCKETS, finite, side="left"),
                                                minlength=len(SCORE_BUCKETS) + 1)
                self.histograms[version] = (buckets, total + float(finite.sum()))
                self.outliers[version] = self.outliers.get(version, 0) + int(np.count_nonzero(check.outlier))
        outliers = np.flatnonzero(check.outlier) if check.outlier is not None else np.empty(0, np.intp)
        if outliers.size:
            batch.annotations = {**(batch.annotations or {}),
                                 **{int(i): {"outlier": o} for i, o in zip(outliers, self._explain(check, outliers))}}
        if self.quarantine is not None and (failed or outliers.size):
            self._quarantine(version, batch, check)

    def _explain(self, check: BatchCheck, rows: np.ndarray) -> list[dict[str, Any]]:
        """Score and top contributing features (largest |robust z|) of the outlier rows."""
        s = self.schema
        names = [s.numeric[i] for i in s.outlier_rows]
        x = check.x[:, rows]
        z = (x - s.median[:, None]) / s.robust[:, None]
        k = min(self.gcfg.top_features, len(names))
        mag = np.where(np.isfinite(z), np.abs(z), -1.0)
        top = np.argsort(-mag, axis=0, kind="stable")[:k]
        out = []
        for col, i in enumerate(rows):
            features = [{"feature": names[j],
                         "value": REDACTED if names[j] in self.redact else _finite(x[j, col]),
                         "robust_z": _finite(round(z[j, col], 3))}
                        for j in top[:, col] if mag[j, col] >= 0]
            out.append({"score": round(float(check.scores[i]), 4), "threshold": s.threshold, "top_features": features})
        return out

    def _quarantine(self, version: str, batch: EventBatch, check: BatchCheck) -> None:
        bad = check.failed.copy()
        if check.outlier is not None:
            bad |= check.outlier
        idx = np.flatnonzero(bad)
        reasons: dict[int, list[dict[str, str]]] = {int(i): [] for i in idx}
        for feature, issue, mask in check.cells:
            for i in np.flatnonzero(mask):
                reasons[int(i)].append({"feature": feature, "issue": issue})
        ids = batch.ensure_ids()
        stamps = batch.ensure_timestamps()
        annotations = batch.annotations or {}
        lines, lost = [], 0
        for i in reasons:
            try:
                line = {"prediction_id": ids[i], "timestamp_unix": stamps[i], "model": self.model,
                        "model_version": version, "reasons": reasons[i],
                        "features": {name: redact_value(name, column[i], self.redact)
                                     for name, column in batch.features.items()}}
                if i in annotations and "outlier" in annotations[i]:
                    line["outlier"] = annotations[i]["outlier"]
                lines.append((dumps(line) + "\n").encode("utf-8"))
            except Exception:  # noqa: BLE001
                lost += 1
        self.quarantine.write(lines, lost)

    # --- reading ------------------------------------------------------------------------------
    def schema_changes(self, version: str, state: VersionState) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The detected changes of a version and its before/after view (for gauges and status)."""
        s = self.schema
        g = self.gcfg
        events, missing, batch_events, unknown = state.recent()
        now = self.clock()
        current: dict[tuple[str, str], float] = {}
        if events >= g.schema_min_events and s.names:
            for name, count in zip(s.names, missing.tolist()):
                if count >= g.schema_change_share * events:
                    current[(name, "missing")] = count / events
            for name, count in unknown.items():  # one name in nearly all events: random keys never are
                if count >= g.schema_change_share * batch_events:
                    current[(name, "added")] = count / batch_events
        with state.lock:
            state.changes = {key: state.changes.get(key, now) for key in current}
            since = dict(state.changes)
        labelled = self.checker.unknown
        changes = [{"feature": f, "change": c, "share": round(share, 4), "since": since[(f, c)],
                    **({"label": OTHER} if c == "added" and f not in labelled else {})}
                   for (f, c), share in sorted(current.items())]
        gone = [f for (f, c) in current if c == "missing"]
        added = [f for (f, c) in current if c == "added"]
        view = {"recent_events": events, "before": list(s.names),
                "after": [n for n in s.names if n not in gone] + added, "changes": changes}
        if len(gone) == 1 and len(added) == 1:
            view["possible_rename"] = {"from": gone[0], "to": added[0]}
        return changes, view

    def status(self) -> dict[str, Any]:
        now = self.clock()
        versions = {}
        for version, state in self.states.items():
            _, view = self.schema_changes(version, state)
            ratios = state.window_ratios(self.schema.names, now)
            versions[version] = {
                "schema": view,
                "window": {"events": ratios["events"], "failed_ratio": ratios.get("failed"),
                           "outlier_ratio": ratios.get("outliers")},
                "issues": {f"{feature}:{issue}": count for (v, feature, issue), count in sorted(self.totals.items())
                           if v == version},
                "events": {result: self.events.get((version, result), 0) for result in ("passed", "failed")},
                "outliers": self.outliers.get(version, 0),
            }
        out = {"enabled": self.gcfg.enabled, "schema": self.schema.describe(), "errors": self.errors,
               "unknown_features": sorted(self.checker.unknown),
               "frequent_unknown_features": [{"feature": n, "events": c} for n, c in self.checker.names.top(20)],
               "versions": versions}
        if self.quarantine is not None:
            out["quarantine"] = {"path": self.quarantine.path, "written": self.quarantine.written,
                                 "errors": self.quarantine.errors}
        return out

    def close(self) -> None:
        if self.quarantine is not None:
            self.quarantine.close()


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


# --------------------------------------------------------------------------- the collector


class GuardCollector:
    """Publishes the guard's counters, window ratios, schema changes and outlier histogram."""

    def __init__(self, guard: Guard):
        self.guard = guard

    def describe(self):
        return []

    def collect(self):
        g = self.guard
        model = g.model
        mv = ["model", "model_version"]
        issues = CounterMetricFamily(
            "inferwatch_data_quality_issues",
            "Data quality issues found in windowed events, by feature and issue (missing, nan, infinite, wrong_type, "
            "out_of_range, unseen_category, unknown_feature, duplicate).", labels=[*mv, "feature", "issue"])
        events = CounterMetricFamily(
            "inferwatch_data_quality_events",
            "Events checked by the input guard, by result (passed, or failed: at least one issue).",
            labels=[*mv, "result"])
        missing = GaugeMetricFamily("inferwatch_feature_missing_ratio",
                                    "Share of the window's events in which the feature is missing (absent or null).",
                                    labels=[*mv, "feature"])
        oor = GaugeMetricFamily("inferwatch_feature_out_of_range_ratio",
                                "Share of the window's events with the feature outside the reference range "
                                "(widened by guard.range_tolerance).", labels=[*mv, "feature"])
        failed = GaugeMetricFamily("inferwatch_data_quality_failed_events_ratio",
                                   "Share of the window's events with at least one data quality issue.", labels=mv)
        changed = GaugeMetricFamily(
            "inferwatch_schema_changed",
            "1 if a schema feature is missing from (change=missing), or a new feature is present in (change=added), "
            "nearly all recent events, else 0.", labels=[*mv, "feature", "change"])
        outliers = CounterMetricFamily("inferwatch_outliers",
                                       "Events whose outlier score exceeded the threshold calibrated on the reference.",
                                       labels=mv)
        ratio = GaugeMetricFamily("inferwatch_outlier_ratio", "Share of the window's events that are outliers.",
                                  labels=mv)
        score = HistogramMetricFamily(
            "inferwatch_outlier_score",
            "Per-event outlier score: Mahalanobis distance over the calibrated threshold (above 1 = outlier).",
            labels=mv)
        threshold = GaugeMetricFamily(
            "inferwatch_outlier_threshold",
            "The squared Mahalanobis distance an event must exceed to be an outlier (calibrated on the reference "
            "for guard.outlier_fpr).", labels=["model"])
        with g._lock:
            totals = dict(g.totals)
            counts = dict(g.events)
            n_out = dict(g.outliers)
            hists = dict(g.histograms)
        for (version, feature, issue), value in sorted(totals.items()):
            issues.add_metric([model, version, feature, issue], value)
        for (version, result), value in sorted(counts.items()):
            events.add_metric([model, version, result], value)
        schema = g.schema
        now = g.clock()
        for version, state in g.states.items():
            base = [model, version]
            r = state.window_ratios(schema.names, now)
            if r["events"]:
                for name, value in r["missing"].items():
                    missing.add_metric([*base, name], value)
                for name in schema.numeric:
                    oor.add_metric([*base, name], r["out_of_range"][name])
                failed.add_metric(base, r["failed"])
                if schema.outlier is not None:
                    ratio.add_metric(base, r["outliers"])
            detected, _ = g.schema_changes(version, state)
            on = {(c.get("label", c["feature"]), c["change"]) for c in detected}
            for name in schema.names:
                changed.add_metric([*base, name, "missing"], 1.0 if (name, "missing") in on else 0.0)
            for name in [*g.checker.unknown, OTHER]:  # other: a new feature without a label of its own
                changed.add_metric([*base, name, "added"], 1.0 if (name, "added") in on else 0.0)
        for version, (buckets, total) in sorted(hists.items()):
            cumulative = np.cumsum(buckets)
            score.add_metric([model, version],
                             [*((repr(b), float(c)) for b, c in zip(SCORE_BUCKETS, cumulative[:-1])),
                              ("+Inf", float(cumulative[-1]))], total)
            outliers.add_metric([model, version], n_out.get(version, 0))
        if schema.outlier is not None:
            threshold.add_metric([model], schema.threshold)
        yield from (issues, events, missing, oor, failed, changed, outliers, ratio, score, threshold)
        if g.quarantine is not None:
            lines = CounterMetricFamily("inferwatch_quarantine_log_lines", "Lines written to the quarantine log.")
            lines.add_metric([], g.quarantine.written)
            yield lines
            errors = CounterMetricFamily("inferwatch_quarantine_log_errors",
                                         "Quarantine log lines lost to write or encoding errors.")
            errors.add_metric([], g.quarantine.errors)
            yield errors


__all__ = ["Guard", "GuardCollector", "Schema", "Checker", "Duplicates", "UnknownNames", "ISSUES", "EVENT_FEATURE",
           "SCORE_BUCKETS"]
