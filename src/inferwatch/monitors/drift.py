"""The drift engine: reference vs window, in a background thread, published by a collector.

Every ``drift.interval_seconds`` the engine takes a consistent ``snapshot()`` of each model
version's window and compares it with the reference profile: per feature every statistic of
its type (numeric: ks, psi, js, hellinger, kl, wasserstein; categorical: chi2, linf, js, psi),
basic statistics side by side, a drift decision per feature (the method chosen by window size
and type unless configured, p-values corrected for multiple testing), the share of drifted
features and a dataset decision, PCA reconstruction error and correlation drift; the same for
each model output. Nothing is computed in a request or a scrape: ``DriftCollector`` yields the
last results, so a feature or version that is gone simply stops being exported.

For fleets, ``observe`` (called by the worker after each window append) adds every event to
cumulative per-bin counters (``inferwatch_feature_bin_total``) and the reference proportions
are exported beside them; ``FLEET_PSI_RULES`` computes PSI across all replicas in PromQL.
docs/drift.md explains the defaults and why.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from scipy import special

from .background import BackgroundWorker, EngineCollector
from inferwatch.config import Config, DriftConfig
from inferwatch.ingest.events import EventBatch
from inferwatch.reference import (
    CategoricalProfile, NumericProfile, ReferenceProfile, build_profile,
)
from inferwatch.stats import (
    benjamini_hochberg, chi_squared_homogeneity, compare_samples, compare_samples_rows, correlation_drift,
)
from inferwatch.stats.numeric import DEFAULT_EPS
from inferwatch.stats.registry import CATEGORICAL_METHODS, DEFAULT_THRESHOLDS, NUMERIC_METHODS, P_VALUE_METHODS
from inferwatch.pipeline.segments import SegmentLabeler
from inferwatch.ingest.values import PRESENT, category_key
from inferwatch.pipeline.window import ColumnSnapshot, WindowSnapshot, WindowStore

log = logging.getLogger(__name__)

NUMERIC_STATISTICS = ("mean", "std", "min", "max", "p05", "p25", "p50", "p75", "p95", "missing_ratio")
CATEGORICAL_STATISTICS = ("missing_ratio", "entropy", "cardinality", "unseen_ratio")
_QUANTILES = (("p05", 0.05), ("p25", 0.25), ("p50", 0.50), ("p75", 0.75), ("p95", 0.95))
_LN2 = math.log(2.0)


# --------------------------------------------------------------------------- prepared reference


@dataclass
class _NumericRef:
    name: str
    profile: NumericProfile
    counts: np.ndarray
    sample: np.ndarray
    std: float


@dataclass
class _CategoricalRef:
    name: str
    profile: CategoricalProfile
    counts: np.ndarray
    index: dict[str, int]


@dataclass
class PreparedReference:
    """A profile with what every evaluation needs precomputed (stacked samples, PCA complement)."""

    profile: ReferenceProfile
    numeric: dict[str, dict[str, _NumericRef]]  # role -> name -> ref
    categorical: dict[str, dict[str, _CategoricalRef]]
    pca_complement: np.ndarray | None = None  # orthonormal basis of the residual subspace

    @classmethod
    def build(cls, profile: ReferenceProfile) -> PreparedReference:
        numeric: dict[str, dict[str, _NumericRef]] = {"feature": {}, "output": {}}
        categorical: dict[str, dict[str, _CategoricalRef]] = {"feature": {}, "output": {}}
        for role, group in (("feature", profile.features), ("output", profile.outputs)):
            for name, col in group.items():
                if isinstance(col, NumericProfile):
                    std = col.statistics.get("std", math.nan)
                    if not math.isfinite(std):
                        std = float(col.sample.std()) if col.sample.size else math.nan
                    numeric[role][name] = _NumericRef(name, col, col.bin_counts, col.sample, std)
                else:
                    categorical[role][name] = _CategoricalRef(name, col, col.bin_counts, col.index())
        complement = None
        pca = profile.pca
        if pca is not None and pca.n_components > pca.n_features // 2:
            # Residual = z W^T W for an orthonormal basis W of the complement: cheaper when k > d/2.
            _, _, vt = np.linalg.svd(pca.components, full_matrices=True)
            complement = vt[pca.n_components:].copy()
        return cls(profile, numeric, categorical, complement)


# --------------------------------------------------------------------------- results


@dataclass
class ColumnResult:
    name: str
    kind: str
    n: int
    scores: dict[str, float] = field(default_factory=dict)
    p_values: dict[str, float] = field(default_factory=dict)
    method: str = ""
    threshold: float = math.nan
    drifted: bool = False
    statistics: dict[str, float] = field(default_factory=dict)


@dataclass
class VersionResult:
    version: str
    events: int
    timestamp: float
    duration: float = 0.0
    features: list[ColumnResult] = field(default_factory=list)
    outputs: list[ColumnResult] = field(default_factory=list)
    drifted_ratio: float = math.nan
    dataset_drifted: bool = False
    multivariate: float = math.nan
    correlation: float = math.nan

    def summary(self) -> dict[str, Any]:
        return {"timestamp": self.timestamp, "duration_seconds": round(self.duration, 6), "events": self.events,
                "features_evaluated": len(self.features),
                "drifted_features": sorted(c.name for c in self.features if c.drifted),
                "drifted_features_ratio": _json_float(self.drifted_ratio), "dataset_drifted": self.dataset_drifted,
                "drifted_outputs": sorted(c.name for c in self.outputs if c.drifted),
                "multivariate_drift_score": _json_float(self.multivariate),
                "correlation_drift_score": _json_float(self.correlation)}


def _json_float(v: float) -> float | None:
    return v if isinstance(v, float) and math.isfinite(v) else None


# --------------------------------------------------------------------------- evaluation


def _binned_scores(ref: np.ndarray, cur: np.ndarray, methods: set[str], eps: float = DEFAULT_EPS) -> dict[str, float]:
    """PSI, JS, Hellinger and KL of rows of counts (features x bins), vectorised over rows.

    The formulas of ``inferwatch.stats.numeric`` (psi, js_distance, hellinger, kl_divergence)
    applied to each row; rows are features with the same number of bins.
    """
    out: dict[str, np.ndarray] = {}
    ref = ref.astype(np.float64)
    cur = cur.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = ref / ref.sum(axis=1, keepdims=True)
        q = cur / cur.sum(axis=1, keepdims=True)
        k = p.shape[1]
        if methods & {"psi", "kl"}:
            ps, qs = (p + eps) / (1.0 + k * eps), (q + eps) / (1.0 + k * eps)
            log_ratio = np.log(qs / ps)
            if "psi" in methods:
                out["psi"] = np.sum((qs - ps) * log_ratio, axis=1)
            if "kl" in methods:
                out["kl"] = np.sum(qs * log_ratio, axis=1)
        if "js" in methods:
            m = (p + q) / 2.0
            js = (special.rel_entr(p, m).sum(axis=1) + special.rel_entr(q, m).sum(axis=1)) / 2.0
            out["js"] = np.sqrt(np.maximum(js, 0.0) / _LN2)
        if "hellinger" in methods:
            out["hellinger"] = np.sqrt(0.5 * np.sum((np.sqrt(p) - np.sqrt(q)) ** 2, axis=1))
        if "linf" in methods:
            out["linf"] = np.max(np.abs(p - q), axis=1)
    return out


def _pooled_chi2(ref: np.ndarray, cur: np.ndarray, min_expected: float = 5.0) -> tuple[float, float]:
    """Two-sample chi-squared (homogeneity: the reference is a sample too), with categories of
    expected count < ``min_expected`` pooled into one (Cochran).

    Without pooling a rare reference category seen a few times in a small window makes huge,
    meaningless statistics: the chi-squared approximation needs expected counts of about 5.
    """
    n = cur.sum()
    total = ref.sum()
    if n <= 0 or total <= 0:
        return math.nan, math.nan
    expected = ref / total * n
    rare = expected < min_expected
    if rare.sum() >= 1 and (~rare).sum() >= 1:
        ref = np.append(ref[~rare], ref[rare].sum())
        cur = np.append(cur[~rare], cur[rare].sum())
        if ref[-1] / total * n < min_expected:  # still too small: fold it into the smallest category
            j = int(np.argmin(ref[:-1]))
            ref[j] += ref[-1]
            cur[j] += cur[-1]
            ref, cur = ref[:-1], cur[:-1]
    return chi_squared_homogeneity(ref, cur)


def _summary_rows(s: np.ndarray) -> dict[str, np.ndarray]:
    """``_quantiles_sorted`` for every row of a (features x n) matrix of sorted NaN-free rows."""
    n = s.shape[1]
    out: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore", over="ignore"):
        out["mean"] = s.mean(axis=1)
        out["std"] = s.std(axis=1)
        out["min"], out["max"] = s[:, 0], s[:, -1]
        for name, q in _QUANTILES:
            pos = q * (n - 1)
            lo = int(math.floor(pos))
            frac = pos - lo
            a, b = s[:, lo], s[:, min(lo + 1, n - 1)]
            out[name] = a if frac == 0 else a + (b - a) * frac
    return out


def _quantiles_sorted(s: np.ndarray) -> dict[str, float]:
    """mean, std, min, max and quantiles of a sorted NaN-free sample (``summary_statistics``'s definitions)."""
    out: dict[str, float] = {}
    n = s.size
    with np.errstate(invalid="ignore", over="ignore"):
        out.update(mean=float(s.mean()), std=float(s.std()), min=float(s[0]), max=float(s[-1]))
        for name, q in _QUANTILES:
            pos = q * (n - 1)
            lo = int(math.floor(pos))
            frac = pos - lo
            a, b = s[lo], s[min(lo + 1, n - 1)]
            out[name] = float(a if frac == 0 else a + (b - a) * frac)
    return out


def _correlation_drift(ref_corr: np.ndarray, x: np.ndarray, has_nan: bool) -> float:
    """``stats.correlation_drift`` with a fast path for a window without missing values.

    The same Pearson correlations (one centred matrix product, constant columns NaN); with
    missing values the library's pairwise computation is used.
    """
    if x.shape[0] < 2 or has_nan:
        return correlation_drift(ref_corr, x)
    xc = x - x.mean(axis=0)
    sxy = xc.T @ xc
    var = np.diag(sxy).copy()
    constant = np.ptp(x, axis=0) == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.clip(sxy / np.sqrt(np.outer(var, var)), -1.0, 1.0)
    r[constant, :] = np.nan
    r[:, constant] = np.nan
    iu = np.triu_indices(r.shape[0], k=1)
    delta = np.abs(r[iu] - ref_corr[iu])
    delta = delta[~np.isnan(delta)]
    return float(delta.max()) if delta.size else math.nan


class Evaluator:
    """Compares window snapshots with one prepared reference. Pure computation; no threads."""

    def __init__(self, reference: PreparedReference, cfg: DriftConfig):
        self.ref = reference
        self.cfg = cfg
        self.thresholds = {**DEFAULT_THRESHOLDS, **cfg.thresholds}

    def _published(self, kind: str) -> set[str]:
        all_methods = NUMERIC_METHODS if kind == "numeric" else CATEGORICAL_METHODS
        return {m for m in all_methods if not self.cfg.methods or m in self.cfg.methods}

    def decision(self, name: str, kind: str, n: int) -> tuple[str, float] | None:
        """(method, threshold) of a column's drift decision; None when disabled."""
        override = self.cfg.features.get(name)
        if override is not None and not override.enabled:
            return None
        method = override.method if override is not None else "auto"
        if method == "auto":
            method = self.cfg.numeric_method if kind == "numeric" else self.cfg.categorical_method
        allowed = NUMERIC_METHODS if kind == "numeric" else CATEGORICAL_METHODS
        if method == "auto" or method not in allowed:
            small = n <= self.cfg.sample_test_max_events
            if kind == "numeric":
                method = "ks" if small else "wasserstein"
            else:
                method = "chi2" if small else "js"
        if method in P_VALUE_METHODS:
            threshold = self.cfg.alpha
        else:
            threshold = self.thresholds.get(method, DEFAULT_THRESHOLDS.get(method, 0.1))
        if override is not None and override.threshold > 0:
            threshold = override.threshold
        return method, threshold

    # --- columns --------------------------------------------------------------------------
    def _numeric(self, role: str, snapshot: WindowSnapshot) -> list[ColumnResult]:
        refs = self.ref.numeric[role]
        columns = snapshot.features if role == "feature" else snapshot.outputs
        total = snapshot.n
        min_events = self.cfg.min_events
        results: list[ColumnResult] = []
        ready: list[tuple[_NumericRef, ColumnResult, np.ndarray]] = []
        for name, ref in refs.items():
            col = columns.get(name)
            if col is None or col.kind != "numeric":
                continue
            values = col.values[col.state == PRESENT]
            values = values[~np.isnan(values)]
            result = ColumnResult(name, "numeric", int(values.size))
            if values.size < min_events:
                continue
            result.statistics["missing_ratio"] = 1.0 - values.size / total if total else math.nan
            ready.append((ref, result, values))
        if not ready:
            return results
        wanted = self._published("numeric")
        decisions = {r.name: self.decision(r.name, "numeric", r.n) for _, r, _ in ready}
        need = wanted | {d[0] for d in decisions.values() if d}
        # Group by (reference sample size, window size): each group is one vectorised pass.
        groups: dict[tuple[int, int, int], list[int]] = {}
        for i, (ref, result, values) in enumerate(ready):
            groups.setdefault((ref.sample.size, values.size, ref.counts.size), []).append(i)
        for (n1, n2, k), idx in groups.items():
            cur_sorted = np.sort(np.stack([ready[i][2] for i in idx]), axis=1)
            summary = _summary_rows(cur_sorted)
            for row, i in enumerate(idx):
                ready[i][1].statistics.update({name: float(v[row]) for name, v in summary.items()})
            ref_counts = np.stack([ready[i][0].counts for i in idx])
            cum = np.array([np.searchsorted(cur_sorted[row], ready[i][0].profile.edges, side="right")
                            for row, i in enumerate(idx)], dtype=np.int64).reshape(len(idx), k - 1)
            cur_counts = np.diff(cum, axis=1, prepend=0, append=n2)
            binned = _binned_scores(ref_counts, cur_counts, need & {"psi", "js", "hellinger", "kl"})
            if need & {"ks", "wasserstein"} and n1 > 0:
                if min(n1, n2) >= 100:
                    ks, p, _, w_norm = compare_samples_rows(
                        np.stack([ready[i][0].sample for i in idx]), cur_sorted,
                        reference_std=np.array([ready[i][0].std for i in idx]))
                else:  # small samples: the exact p-value (cheap at this size)
                    cmp = [compare_samples(ready[i][0].sample, cur_sorted[row], current_sorted=True,
                                           reference_std=ready[i][0].std) for row, i in enumerate(idx)]
                    ks = np.array([c.ks_statistic for c in cmp])
                    p = np.array([c.ks_pvalue for c in cmp])
                    w_norm = np.array([c.wasserstein_normalized for c in cmp])
                binned.update(ks=ks, wasserstein=w_norm)
            else:
                p = None
            for row, i in enumerate(idx):
                result = ready[i][1]
                d = decisions[result.name]
                own = wanted | ({d[0]} if d else set())
                for method, values in binned.items():
                    if method in own:
                        result.scores[method] = float(values[row])
                if p is not None and "ks" in own:
                    result.p_values["ks"] = float(p[row])
        for ref, result, _ in ready:
            d = decisions[result.name]
            if d is not None:
                result.method, result.threshold = d
            results.append(result)
        return results

    def _categorical(self, role: str, snapshot: WindowSnapshot) -> list[ColumnResult]:
        refs = self.ref.categorical[role]
        columns = snapshot.features if role == "feature" else snapshot.outputs
        total = snapshot.n
        wanted = self._published("categorical")
        results = []
        for name, ref in refs.items():
            col = columns.get(name)
            if col is None:
                continue
            k = ref.counts.size
            if col.kind == "categorical":
                lookup = np.array([ref.index.get(c, k - 1) for c in col.categories] + [k - 1], dtype=np.intp)
                codes = col.values[col.state == PRESENT]
                counts = np.bincount(lookup[codes], minlength=k)
                distinct = int(np.count_nonzero(np.bincount(codes, minlength=len(col.categories) + 1)))
            else:  # numbers in a column the reference saw as categories: their text is the category
                present = col.values[col.state == PRESENT]
                keys = [category_key(float(v)) for v in present]
                idx = np.array([ref.index.get(key, k - 1) for key in keys if key is not None], dtype=np.intp)
                counts = np.bincount(idx, minlength=k)
                distinct = len({key for key in keys if key is not None})
            n = int(counts.sum())
            if n < self.cfg.min_events:
                continue
            result = ColumnResult(name, "categorical", n)
            d = self.decision(name, "categorical", n)
            need = wanted | ({d[0]} if d else set())
            scores = _binned_scores(ref.counts[None, :], counts[None, :], need & {"psi", "js", "linf"})
            result.scores.update({m: float(v[0]) for m, v in scores.items()})
            if "chi2" in need:
                stat, p = _pooled_chi2(ref.counts.astype(np.float64), counts.astype(np.float64))
                result.scores["chi2"], result.p_values["chi2"] = stat, p
            with np.errstate(divide="ignore", invalid="ignore"):
                share = counts / n
                ent = float(-np.sum(np.where(share > 0, share * np.log(share), 0.0)))
            # Never-seen: outside the reference's categories (exact when the reference had <= top-K).
            unseen = int(counts[-1]) if ref.counts[-1] == 0 else 0
            result.statistics.update(missing_ratio=1.0 - n / total if total else math.nan, entropy=ent,
                                     cardinality=float(distinct), unseen_ratio=unseen / n)
            if d is not None:
                result.method, result.threshold = d
            results.append(result)
        return results

    def _decide(self, columns: list[ColumnResult]) -> None:
        """Flags: p-value methods corrected together, distances against their thresholds."""
        tested = [c for c in columns if c.method in P_VALUE_METHODS]
        if tested:
            pv = np.array([c.p_values.get(c.method, math.nan) for c in tested])
            alphas = np.array([c.threshold for c in tested])
            correction = self.cfg.correction
            if correction == "bonferroni":
                m = int(np.count_nonzero(~np.isnan(pv)))
                flags = ~np.isnan(pv) & (pv * m <= alphas)
            elif correction == "bh" and np.all(alphas == alphas[0]):
                flags = benjamini_hochberg(pv, float(alphas[0]))
            elif correction == "bh":
                flags = benjamini_hochberg(pv / alphas * self.cfg.alpha, self.cfg.alpha)
            else:
                flags = ~np.isnan(pv) & (pv <= alphas)
            for c, flag in zip(tested, flags):
                c.drifted = bool(flag)
        for c in columns:
            if c.method and c.method not in P_VALUE_METHODS:
                score = c.scores.get(c.method, math.nan)
                c.drifted = bool(score >= c.threshold)

    # --- the whole window ----------------------------------------------------------------
    def evaluate(self, snapshot: WindowSnapshot, now: float | None = None, *,
                 multivariate: bool = True) -> VersionResult:
        start = time.perf_counter()
        result = VersionResult(snapshot.model_version, snapshot.n, time.time() if now is None else now)
        if snapshot.n >= self.cfg.min_events:
            result.features = self._numeric("feature", snapshot) + self._categorical("feature", snapshot)
            result.outputs = self._numeric("output", snapshot) + self._categorical("output", snapshot)
            self._decide(result.features)
            self._decide(result.outputs)
            decided = [c for c in result.features if c.method]
            if decided:
                flagged = sum(c.drifted for c in decided)
                result.drifted_ratio = flagged / len(decided)
                needed = max(1, math.ceil(self.cfg.dataset_drift_share * len(decided) - 1e-9))
                result.dataset_drifted = flagged >= needed
            if multivariate:
                result.multivariate, result.correlation = self._multivariate(snapshot)
        result.duration = time.perf_counter() - start
        return result

    def _matrix(self, snapshot: WindowSnapshot, names: list[str]) -> tuple[np.ndarray, bool]:
        """(rows x features) values, column-major, NaN where not present; and whether any is NaN."""
        x = np.empty((snapshot.n, len(names)), order="F")
        has_nan = False
        for j, name in enumerate(names):
            col = snapshot.features.get(name)
            if col is None or col.kind != "numeric":
                x[:, j] = np.nan
                has_nan = True
                continue
            x[:, j] = col.values
            if col.state.any():  # PRESENT is 0
                x[col.state != PRESENT, j] = np.nan
                has_nan = True
            elif not has_nan and np.isnan(col.values).any():
                has_nan = True
        return x, has_nan

    def _multivariate(self, snapshot: WindowSnapshot) -> tuple[float, float]:
        """PCA reconstruction-error ratio and correlation drift, sharing one standardised matrix."""
        profile = self.ref.profile
        multivariate = correlation = math.nan
        pca = profile.pca
        if pca is not None and snapshot.n:
            x, has_nan = self._matrix(snapshot, profile.pca_features)
            z = np.subtract(x, pca.mean, order="F")
            z /= pca.scale
            if has_nan:
                z[np.isnan(z)] = 0.0
            multivariate = self._pca_score(z)
            if profile.correlation is not None and profile.correlation_features == profile.pca_features:
                # Correlations are unchanged by the per-column standardisation.
                correlation = _correlation_drift(profile.correlation, x if has_nan else z, has_nan)
                return multivariate, correlation
        if profile.correlation is not None and profile.correlation_features and snapshot.n:
            x, has_nan = self._matrix(snapshot, profile.correlation_features)
            correlation = _correlation_drift(profile.correlation, x, has_nan)
        return multivariate, correlation

    def _pca_score(self, z: np.ndarray) -> float:
        """``PCAModel.drift_score`` of standardised rows (NaN already 0)."""
        pca = self.ref.profile.pca
        complement = self.ref.pca_complement
        if complement is not None:  # |residual|^2 = |z W^T|^2 for an orthonormal complement W
            r = z @ complement.T
        else:
            r = z - (z @ pca.components.T) @ pca.components
        err = float(np.einsum("ij,ij->", r, r)) / (z.shape[0] * pca.n_features)
        if pca.ref_error_mean > 0:
            return err / pca.ref_error_mean
        return 1.0 if err <= 1e-24 else math.inf


def _subset(snapshot: WindowSnapshot, rows: np.ndarray, drop: str = "") -> WindowSnapshot:
    """The snapshot's ``rows`` (indices) as a snapshot of their own, without the column ``drop``."""
    def take(group: dict[str, ColumnSnapshot]) -> dict[str, ColumnSnapshot]:
        return {name: ColumnSnapshot(c.kind, c.values[rows], c.state[rows], c.categories)
                for name, c in group.items() if name != drop}

    return WindowSnapshot(snapshot.model_version, snapshot.prediction_ids[rows], snapshot.timestamps[rows],
                          take(snapshot.features), take(snapshot.outputs))


# --------------------------------------------------------------------------- bin counters


class BinCounters:
    """Cumulative counts of one model version's events in the reference bins of every feature.

    ``add`` is called by the worker after each window append: numeric features of a batch are
    binned together (one comparison against a padded edge matrix, one bincount), categorical
    ones through the category index. Missing and non-numeric values are not counted.
    """

    def __init__(self, reference: PreparedReference):
        self.numeric = list(reference.numeric["feature"].values())
        self.categorical = list(reference.categorical["feature"].values())
        sizes = [r.counts.size for r in self.numeric] + [r.counts.size for r in self.categorical]
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
            except (TypeError, ValueError):
                from inferwatch.ingest.values import to_numeric

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
        with self.lock:
            counts = self.counts.copy()
        for r, offset in zip([*self.numeric, *self.categorical], self.offsets):
            for b, label in enumerate(r.profile.bin_labels()):
                yield r.name, label, int(counts[offset + b])

    def column_counts(self, name: str) -> np.ndarray | None:
        for r, offset in zip([*self.numeric, *self.categorical], self.offsets):
            if r.name == name:
                with self.lock:
                    return self.counts[offset: offset + r.counts.size].copy()
        return None


# --------------------------------------------------------------------------- the engine


class DriftEngine(BackgroundWorker):
    """Owns the reference, the background evaluation thread, the bin counters and the results."""

    thread_name = "inferwatch-drift"

    def __init__(self, cfg: Config, windows: WindowStore, *, profile: ReferenceProfile | None = None,
                 version_label=None, on_error=None, clock=time.time, segments: SegmentLabeler | None = None):
        self.cfg = cfg
        # Drift per segment value (segments.drift): {version: {(segment, value): result}}.
        self.segments = segments if segments is not None and segments.enabled and cfg.segments.drift else None
        self.segment_results: dict[str, dict[tuple[str, str], VersionResult]] = {}
        self.model = cfg.model.name
        self.windows = windows
        self.clock = clock
        self.on_error = on_error
        self.main_version = version_label(cfg.model.version) if version_label else cfg.model.version
        self.warmup_events = cfg.reference.warmup_events
        self.reference_type = "file" if profile is not None else ("warmup" if self.warmup_events else "none")
        self.prepared: PreparedReference | None = None
        self.evaluator: Evaluator | None = None
        self.results: dict[str, VersionResult] = {}
        self.counters: dict[str, BinCounters] = {}
        self.errors = 0
        self.evaluations = 0
        self._counters_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if profile is not None:
            self.set_reference(profile)

    @classmethod
    def from_config(cls, cfg: Config, windows: WindowStore, **kwargs) -> DriftEngine | None:
        if not cfg.reference.enabled:
            return None
        profile = ReferenceProfile.load(cfg.reference.path) if cfg.reference.path else None
        return cls(cfg, windows, profile=profile, **kwargs)

    @property
    def reference(self) -> ReferenceProfile | None:
        return self.prepared.profile if self.prepared is not None else None

    def set_reference(self, profile: ReferenceProfile) -> None:
        prepared = PreparedReference.build(profile)
        # The reference's categories keep their own codes in every window, whatever arrives first.
        self.windows.seed_categories(*({name: list(col.categories) for name, col in group.items()
                                        if isinstance(col, CategoricalProfile)}
                                       for group in (profile.features, profile.outputs)))
        self.evaluator = Evaluator(prepared, self.cfg.drift)
        with self._counters_lock:
            self.counters = {}
            self.prepared = prepared
        if self.cfg.drift.bin_counters:
            self._bin_counters(self.main_version)  # exported at 0 from the start: clean increase()
        log.info("drift reference (%s): %s", self.reference_type, profile.describe())

    # --- the worker's hook ------------------------------------------------------------------
    def _bin_counters(self, version: str) -> BinCounters | None:
        counters = self.counters.get(version)
        if counters is None and self.prepared is not None:
            with self._counters_lock:
                counters = self.counters.get(version)
                if counters is None:
                    counters = BinCounters(self.prepared)
                    self.counters = {**self.counters, version: counters}
        return counters

    def observe(self, version: str, batch: EventBatch) -> None:
        """Count a windowed batch in the reference bins (the worker thread; never raises)."""
        if self.prepared is None or not self.cfg.drift.bin_counters or batch.n == 0:
            return
        try:
            counters = self._bin_counters(version)
            if counters is not None:
                counters.add(batch.features, batch.n)
        except Exception:  # noqa: BLE001 - fail open
            log.exception("drift bin counting failed")
            self._error()

    def _error(self) -> None:
        self.errors += 1
        if self.on_error is not None:
            try:
                self.on_error()
            except Exception:  # noqa: BLE001
                pass

    # --- warm-up ------------------------------------------------------------------------------
    def warmup_progress(self) -> int:
        window = self.windows.windows().get(self.main_version)
        return 0 if window is None else min(window.appended_total, self.warmup_events)

    def try_warmup(self) -> bool:
        """Freeze the first ``warmup_events`` events of the main version's window as the reference."""
        if self.prepared is not None or not self.warmup_events:
            return self.prepared is not None
        window = self.windows.windows().get(self.main_version)
        if window is None or window.appended_total < self.warmup_events:
            return False
        snapshot = window.snapshot()
        n = min(self.warmup_events, snapshot.n)
        if n < 2:
            return False
        columns: dict[str, dict[str, Any]] = {"feature": {}, "output": {}}
        kinds: dict[str, str] = {}
        for role, group in (("feature", snapshot.features), ("output", snapshot.outputs)):
            for name, col in group.items():
                kinds[name] = col.kind
                if col.kind == "numeric":
                    columns[role][name] = np.where(col.state[:n] == PRESENT, col.values[:n], np.nan)
                else:
                    columns[role][name] = list(col.category_values()[:n])
        profile = build_profile(columns, kinds, source=f"warmup:{self.main_version}:{n} events",
                                sample_size=max(n, 2))
        self.set_reference(profile)
        return True

    # --- evaluation -----------------------------------------------------------------------------
    def evaluate_all(self) -> dict[str, VersionResult]:
        evaluator = self.evaluator
        if evaluator is None:
            return {}
        results: dict[str, VersionResult] = {}
        segment_results: dict[str, dict[tuple[str, str], VersionResult]] = {}
        now = self.clock()
        for version, window in self.windows.windows().items():
            try:
                snapshot = window.snapshot(now)
                results[version] = evaluator.evaluate(snapshot, now=now)
                if self.segments is not None:
                    segment_results[version] = self.evaluate_segments(evaluator, snapshot, now)
            except Exception:  # noqa: BLE001 - one bad window must not stop the others
                log.exception("drift evaluation of version %s failed", version)
                self._error()
                if version in self.results:
                    results[version] = self.results[version]
                if version in self.segment_results:
                    segment_results[version] = self.segment_results[version]
        self.results = results
        self.segment_results = segment_results
        self.evaluations += 1
        return results

    def evaluate_segments(self, evaluator: Evaluator, snapshot: WindowSnapshot,
                          now: float) -> dict[tuple[str, str], VersionResult]:
        """Each segment value's rows of the snapshot, evaluated like a window of their own.

        The rows of one segment feature partition the window, so the cost is about one more
        evaluation per segment feature; values with fewer than ``drift.min_events`` rows are
        skipped by the evaluator's own bound, and the segment feature is left out of its segments
        (it is constant there). PCA and correlation drift are not sliced.
        """
        labeler = self.segments
        out: dict[tuple[str, str], VersionResult] = {}
        min_events = self.cfg.drift.min_events
        for feature in labeler.features:
            column = snapshot.features.get(feature)
            if column is None:
                continue
            for value, rows in labeler.groups(feature, labeler.column_labels(feature, column)).items():
                if rows.size < min_events:
                    continue
                sub = _subset(snapshot, rows, drop=feature)
                out[(feature, value)] = evaluator.evaluate(sub, now=now, multivariate=False)
        return out

    def _run(self) -> None:
        interval = self.cfg.drift.interval_seconds
        next_due = time.monotonic()
        while not self._stop.is_set():
            try:
                if self.prepared is None:
                    self.try_warmup()
                if self.prepared is not None and time.monotonic() >= next_due:
                    self.evaluate_all()
                    next_due = time.monotonic() + interval
            except Exception:  # noqa: BLE001
                log.exception("drift engine failed")
                self._error()
                next_due = time.monotonic() + interval
            wait = min(max(next_due - time.monotonic(), 0.01), 1.0) if self.prepared is None else \
                max(next_due - time.monotonic(), 0.01)
            self._stop.wait(wait)

    def status(self) -> dict[str, Any]:
        profile = self.reference
        reference: dict[str, Any] = {"type": self.reference_type, "ready": profile is not None}
        if profile is not None:
            reference.update(hash=profile.hash, source=profile.source, rows=profile.rows,
                             created_at=profile.created_at, features=sorted(profile.features),
                             outputs=sorted(profile.outputs), memory_bytes=profile.memory_bytes())
        if self.reference_type == "warmup":
            reference["warmup_events"] = self.warmup_events
            reference["warmup_collected"] = self.warmup_progress() if profile is None else self.warmup_events
        return {"reference": reference, "interval_seconds": self.cfg.drift.interval_seconds,
                "evaluations": self.evaluations, "errors": self.errors,
                "versions": {v: r.summary() for v, r in self.results.items()},
                "segments": {v: {f"{segment}={value}": r.summary() for (segment, value), r in seg.items()}
                             for v, seg in self.segment_results.items()}}


# --------------------------------------------------------------------------- the collector


class DriftCollector(EngineCollector):
    """Yields the engine's last results at scrape time (nothing is computed here)."""

    def collect(self):
        e = self.engine
        model = e.model
        mv = ["model", "model_version"]
        fam = {
            "score": GaugeMetricFamily("inferwatch_feature_drift_score",
                                       "Drift of a feature from its reference, by method.", labels=[*mv, "feature", "method"]),
            "p": GaugeMetricFamily("inferwatch_feature_drift_p_value",
                                   "p-value of a feature's drift test (ks, chi2), before correction.",
                                   labels=[*mv, "feature", "method"]),
            "drifted": GaugeMetricFamily("inferwatch_feature_drifted",
                                         "1 if the feature drifted by its decision (method: the one that decided), "
                                         "else 0.", labels=[*mv, "feature", "method"]),
            "stat": GaugeMetricFamily("inferwatch_feature_statistic",
                                      "A basic statistic of a feature in the reference and in the current window.",
                                      labels=[*mv, "feature", "statistic", "source"]),
            "pscore": GaugeMetricFamily("inferwatch_prediction_drift_score",
                                        "Drift of a model output from its reference, by method.",
                                        labels=[*mv, "output", "method"]),
            "pp": GaugeMetricFamily("inferwatch_prediction_drift_p_value",
                                    "p-value of a model output's drift test (ks, chi2), before correction.",
                                    labels=[*mv, "output", "method"]),
            "pdrifted": GaugeMetricFamily("inferwatch_prediction_drifted",
                                          "1 if the model output drifted by its decision (method: the one that "
                                          "decided), else 0.", labels=[*mv, "output", "method"]),
            "ratio": GaugeMetricFamily("inferwatch_drifted_features_ratio",
                                       "Share of evaluated features that drifted.", labels=mv),
            "dataset": GaugeMetricFamily("inferwatch_dataset_drifted",
                                         "1 if the inputs as a whole drifted (drift.dataset_drift_share), else 0.",
                                         labels=mv),
            "mv": GaugeMetricFamily("inferwatch_multivariate_drift_score",
                                    "PCA reconstruction error of the window over the reference's (about 1 = no drift).",
                                    labels=[*mv, "method"]),
            "corr": GaugeMetricFamily("inferwatch_correlation_drift_score",
                                      "Largest absolute change of a pairwise feature correlation.", labels=mv),
            "duration": GaugeMetricFamily("inferwatch_drift_evaluation_duration_seconds",
                                          "Time the last drift evaluation of the window took.", labels=mv),
            "last": GaugeMetricFamily("inferwatch_drift_last_evaluation_timestamp_seconds",
                                      "When drift was last evaluated (Unix time).", labels=mv),
            "events": GaugeMetricFamily("inferwatch_drift_window_events",
                                        "Events in the window snapshot the last drift evaluation used.", labels=mv),
        }
        profile = e.reference
        ref_stats: dict[str, dict[str, float]] = {}
        if profile is not None:
            for name, col in profile.features.items():
                ref_stats[name] = col.statistics
        for version, r in e.results.items():
            base = [model, version]
            for c in r.features:
                for method, value in c.scores.items():
                    fam["score"].add_metric([*base, c.name, method], value)
                for method, value in c.p_values.items():
                    fam["p"].add_metric([*base, c.name, method], value)
                if c.method:
                    fam["drifted"].add_metric([*base, c.name, c.method], 1.0 if c.drifted else 0.0)
                if e.cfg.drift.summary_statistics:
                    names = NUMERIC_STATISTICS if c.kind == "numeric" else CATEGORICAL_STATISTICS
                    reference = ref_stats.get(c.name, {})
                    for stat in names:
                        if stat in c.statistics:
                            fam["stat"].add_metric([*base, c.name, stat, "current"], c.statistics[stat])
                        ref_value = 0.0 if stat == "unseen_ratio" else reference.get(stat)
                        if ref_value is not None:
                            fam["stat"].add_metric([*base, c.name, stat, "reference"], ref_value)
            for c in r.outputs:
                for method, value in c.scores.items():
                    fam["pscore"].add_metric([*base, c.name, method], value)
                for method, value in c.p_values.items():
                    fam["pp"].add_metric([*base, c.name, method], value)
                if c.method:
                    fam["pdrifted"].add_metric([*base, c.name, c.method], 1.0 if c.drifted else 0.0)
            if r.features:
                fam["ratio"].add_metric(base, r.drifted_ratio)
                fam["dataset"].add_metric(base, 1.0 if r.dataset_drifted else 0.0)
            if not math.isnan(r.multivariate):
                fam["mv"].add_metric([*base, "pca_reconstruction"], r.multivariate)
            if not math.isnan(r.correlation):
                fam["corr"].add_metric(base, r.correlation)
            fam["duration"].add_metric(base, r.duration)
            fam["last"].add_metric(base, r.timestamp)
            fam["events"].add_metric(base, r.events)
        yield from fam.values()
        yield from _segment_families(model, e.segment_results)
        info = GaugeMetricFamily("inferwatch_reference_info",
                                 "Always 1; the drift reference in use (type: file or warmup).",
                                 labels=["model", "hash", "type", "source", "rows"])
        if profile is not None:
            info.add_metric([model, profile.hash, e.reference_type, profile.source, str(profile.rows)], 1.0)
        yield info
        if e.reference_type == "warmup":
            yield GaugeMetricFamily("inferwatch_reference_warmup_events",
                                    "Production events collected toward the warm-up reference, of "
                                    "reference.warmup_events.", value=e.warmup_progress() if profile is None
                                    else e.warmup_events)
        ratio = GaugeMetricFamily("inferwatch_feature_reference_ratio",
                                  "Share of the reference in each bin of a feature (for fleet-wide PSI).",
                                  labels=["model", "feature", "bin"])
        if profile is not None and e.cfg.drift.bin_counters:
            for name, col in profile.features.items():
                for label, value in zip(col.bin_labels(), col.proportions):
                    ratio.add_metric([model, name, label], float(value))
        yield ratio
        bins = CounterMetricFamily("inferwatch_feature_bin",
                                   "Events per reference bin of a feature since the sidecar started "
                                   "(numeric: quantile bins 0..k of the reference; categorical: top-K + other).",
                                   labels=["model", "model_version", "feature", "bin"])
        for version, counters in e.counters.items():
            for name, label, value in counters.series():
                bins.add_metric([model, version, name, label], value)
        yield bins


def _segment_families(model: str, results: dict[str, dict[tuple[str, str], VersionResult]]):
    """Per-segment drift: the decision's score and flag per feature/output, and the drifted share.

    Only the decision method is published per segment value (not every method): the series are
    segments x values x features, so one per feature keeps them bounded by configuration.
    """
    seg = ["model", "model_version", "segment", "value"]
    score = GaugeMetricFamily("inferwatch_segment_feature_drift_score",
                              "Drift of a feature within one segment value, by the feature's decision method.",
                              labels=[*seg, "feature", "method"])
    drifted = GaugeMetricFamily("inferwatch_segment_feature_drifted",
                                "1 if the feature drifted within the segment value by its decision, else 0.",
                                labels=[*seg, "feature"])
    ratio = GaugeMetricFamily("inferwatch_segment_drifted_features_ratio",
                              "Share of evaluated features that drifted within the segment value.", labels=seg)
    pscore = GaugeMetricFamily("inferwatch_segment_prediction_drift_score",
                               "Drift of a model output within one segment value, by its decision method.",
                               labels=[*seg, "output", "method"])
    events = GaugeMetricFamily("inferwatch_segment_drift_window_events",
                               "Events of the segment value in the window snapshot the last evaluation used.",
                               labels=seg)
    for version, by_segment in results.items():
        for (segment, value), r in by_segment.items():
            base = [model, version, segment, value]
            for c in r.features:
                if c.method and c.method in c.scores:
                    score.add_metric([*base, c.name, c.method], c.scores[c.method])
                    drifted.add_metric([*base, c.name], 1.0 if c.drifted else 0.0)
            for c in r.outputs:
                if c.method and c.method in c.scores:
                    pscore.add_metric([*base, c.name, c.method], c.scores[c.method])
            if r.features:
                ratio.add_metric(base, r.drifted_ratio)
            events.add_metric(base, r.events)
    yield from (score, drifted, ratio, pscore, events)


__all__ = ["DriftEngine", "DriftCollector", "Evaluator", "PreparedReference", "BinCounters"]
