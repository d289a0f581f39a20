"""The drift evaluator: a window snapshot and a prepared reference in, results out.

Pure computation (no threads, no metrics): per column every statistic of its type that
``drift.methods`` publishes, basic statistics side by side, a drift decision per column (the
method chosen by window size and type unless configured, p-values corrected for multiple
testing), the share of drifted features and a dataset decision, PCA reconstruction error and
correlation drift. The methods, which of them decide by a p-value and their default thresholds
come from ``stats.registry``; the statistics themselves from ``stats``.
"""

from __future__ import annotations

import math
import time

import numpy as np

from inferwatch.config import DriftConfig
from inferwatch.ingest.values import PRESENT, category_key
from inferwatch.pipeline.segments import SegmentLabeler
from inferwatch.pipeline.window import ColumnSnapshot, WindowSnapshot
from inferwatch.stats import benjamini_hochberg, compare_samples, compare_samples_rows
from inferwatch.stats.binned import BINNED_METHODS, binned_scores, pooled_chi_squared
from inferwatch.stats.registry import DEFAULT_THRESHOLDS, P_VALUE_METHODS, methods_for
from inferwatch.stats.vectorised import correlation_drift_fast, pca_drift_score_standardised, summary_statistics_rows

from .prepared import PreparedNumeric, PreparedReference
from .results import ColumnResult, VersionResult

KINDS = ("numeric", "categorical")
# drift.numeric_method / categorical_method "auto": (a test while the window is small, a distance above).
_AUTO_METHODS = {"numeric": ("ks", "wasserstein"), "categorical": ("chi2", "js")}


class Evaluator:
    """Compares window snapshots with one prepared reference. Pure computation; no threads."""

    def __init__(self, reference: PreparedReference, cfg: DriftConfig):
        self.ref = reference
        self.cfg = cfg
        self.thresholds = {**DEFAULT_THRESHOLDS, **cfg.thresholds}
        self.methods = {kind: methods_for(kind) for kind in KINDS}
        # Scores published for every column of a kind (the decision's method is added per column).
        self.published = {kind: {m for m in self.methods[kind] if not cfg.methods or m in cfg.methods}
                          for kind in KINDS}

    def decision(self, name: str, kind: str, n: int) -> tuple[str, float] | None:
        """(method, threshold) of a column's drift decision; None when disabled."""
        override = self.cfg.features.get(name)
        if override is not None and not override.enabled:
            return None
        method = override.method if override is not None else "auto"
        if method == "auto":
            method = self.cfg.numeric_method if kind == "numeric" else self.cfg.categorical_method
        if method == "auto" or method not in self.methods[kind]:
            test, distance = _AUTO_METHODS[kind]
            method = test if n <= self.cfg.sample_test_max_events else distance
        threshold = self.cfg.alpha if method in P_VALUE_METHODS else self.thresholds.get(method, 0.1)
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
        ready: list[tuple[PreparedNumeric, ColumnResult, np.ndarray]] = []
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
        wanted = self.published["numeric"]
        decisions = {r.name: self.decision(r.name, "numeric", r.n) for _, r, _ in ready}
        need = wanted | {d[0] for d in decisions.values() if d}
        # Group by (reference sample size, window size): each group is one vectorised pass.
        groups: dict[tuple[int, int, int], list[int]] = {}
        for i, (ref, result, values) in enumerate(ready):
            groups.setdefault((ref.sample.size, values.size, ref.counts.size), []).append(i)
        for (n1, n2, k), idx in groups.items():
            cur_sorted = np.sort(np.stack([ready[i][2] for i in idx]), axis=1)
            summary = summary_statistics_rows(cur_sorted)
            for row, i in enumerate(idx):
                ready[i][1].statistics.update({name: float(v[row]) for name, v in summary.items()})
            ref_counts = np.stack([ready[i][0].counts for i in idx])
            cum = np.array([np.searchsorted(cur_sorted[row], ready[i][0].profile.edges, side="right")
                            for row, i in enumerate(idx)], dtype=np.int64).reshape(len(idx), k - 1)
            cur_counts = np.diff(cum, axis=1, prepend=0, append=n2)
            scores = binned_scores(ref_counts, cur_counts, need)
            p: np.ndarray | None = None
            if need - BINNED_METHODS and n1 > 0:  # the sample-based ones: ks and wasserstein
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
                scores.update(ks=ks, wasserstein=w_norm)
            for row, i in enumerate(idx):
                result = ready[i][1]
                d = decisions[result.name]
                own = wanted | ({d[0]} if d else set())
                for method, values in scores.items():
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
        wanted = self.published["categorical"]
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
            scores = binned_scores(ref.counts[None, :], counts[None, :], need)
            result.scores.update({m: float(v[0]) for m, v in scores.items()})
            if "chi2" in need:
                stat, p = pooled_chi_squared(ref.counts, counts)
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

    def evaluate_segments(self, snapshot: WindowSnapshot, labeler: SegmentLabeler,
                          now: float | None = None) -> dict[tuple[str, str], VersionResult]:
        """Each segment value's rows of the snapshot, evaluated like a window of their own.

        The rows of one segment feature partition the window, so the cost is about one more
        evaluation per segment feature; values with fewer than ``drift.min_events`` rows are
        skipped by the evaluator's own bound, and the segment feature is left out of its segments
        (it is constant there). PCA and correlation drift are not sliced.
        """
        out: dict[tuple[str, str], VersionResult] = {}
        for feature in labeler.features:
            column = snapshot.features.get(feature)
            if column is None:
                continue
            for value, rows in labeler.groups(feature, labeler.column_labels(feature, column)).items():
                if rows.size < self.cfg.min_events:
                    continue
                sub = subset(snapshot, rows, drop=feature)
                out[(feature, value)] = self.evaluate(sub, now=now, multivariate=False)
        return out

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
            multivariate = pca_drift_score_standardised(pca, z, self.ref.pca_complement)
            if profile.correlation is not None and profile.correlation_features == profile.pca_features:
                # Correlations are unchanged by the per-column standardisation.
                correlation = correlation_drift_fast(profile.correlation, x if has_nan else z, has_nan=has_nan)
                return multivariate, correlation
        if profile.correlation is not None and profile.correlation_features and snapshot.n:
            x, has_nan = self._matrix(snapshot, profile.correlation_features)
            correlation = correlation_drift_fast(profile.correlation, x, has_nan=has_nan)
        return multivariate, correlation


def subset(snapshot: WindowSnapshot, rows: np.ndarray, drop: str = "") -> WindowSnapshot:
    """The snapshot's ``rows`` (indices) as a snapshot of their own, without the column ``drop``."""
    def take(group: dict[str, ColumnSnapshot]) -> dict[str, ColumnSnapshot]:
        return {name: ColumnSnapshot(c.kind, c.values[rows], c.state[rows], c.categories)
                for name, c in group.items() if name != drop}

    return WindowSnapshot(snapshot.model_version, snapshot.prediction_ids[rows], snapshot.timestamps[rows],
                          take(snapshot.features), take(snapshot.outputs))
