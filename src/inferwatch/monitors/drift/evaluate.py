"""The drift evaluator: a window snapshot and a prepared reference in, results out.

Pure computation (no threads, no metrics): per column every statistic of its type that
``drift.methods`` publishes, basic statistics side by side, a drift decision per column (by
default one rule at every window size: the test is significant after the multiple-testing
correction and the effect, the share of mass that moved, reaches ``drift.min_effect``; on the
whole window and on its most recent events), the share of drifted features and a dataset
decision, PCA reconstruction error and correlation drift. The methods, which of them decide by a p-value and their default thresholds
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
from inferwatch.stats import compare_samples, compare_samples_rows
from inferwatch.stats.binned import BINNED_METHODS, binned_scores, pooled_chi_squared
from inferwatch.stats.decision import drift_decisions
from inferwatch.stats.registry import DEFAULT_THRESHOLDS, EFFECT_METHODS, P_VALUE_METHODS, methods_for
from inferwatch.stats.seen import SeenValues, unseen_test
from inferwatch.stats.vectorised import (correlation_drift_fast, pca_drift_score_standardised, robust_standardised,
                                         summary_statistics_rows)

from .prepared import PreparedNumeric, PreparedReference
from .results import ColumnResult, Evidence, VersionResult

KINDS = ("numeric", "categorical")
# drift.numeric_method / categorical_method "auto": the test, at every window size (its effect gate
# is drift.min_effect on stats.registry's EFFECT_METHODS).
_AUTO_METHODS = {"numeric": "ks", "categorical": "chi2"}


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

    def decision(self, name: str, kind: str) -> tuple[str, float] | None:
        """(method, threshold) of a column's drift decision; None when disabled. For a test the
        threshold is its level (alpha) before correction."""
        override = self.cfg.features.get(name)
        if override is not None and not override.enabled:
            return None
        method = override.method if override is not None else "auto"
        if method == "auto":
            method = self.cfg.numeric_method if kind == "numeric" else self.cfg.categorical_method
        # "unseen" is evidence of its own beside every categorical decision, never the decision.
        if method == "auto" or method not in self.methods[kind] or method == "unseen":
            method = _AUTO_METHODS[kind]
        threshold = self.cfg.alpha if method in P_VALUE_METHODS else self.thresholds.get(method, 0.1)
        if override is not None and override.threshold > 0:
            threshold = override.threshold
        return method, threshold

    def min_effect(self, name: str) -> float:
        """The effect a column's test decision also needs (``drift.features.<name>.min_effect``)."""
        override = self.cfg.features.get(name)
        if override is not None and override.min_effect >= 0:
            return override.min_effect
        return self.cfg.min_effect

    @staticmethod
    def _needed(wanted: set[str], decision: tuple[str, float] | None) -> set[str]:
        """The published methods, plus the decision's method and its effect (always computed)."""
        if decision is None:
            return wanted
        return wanted | {decision[0]} | ({EFFECT_METHODS[decision[0]]} if decision[0] in EFFECT_METHODS else set())

    def _evidence(self, c: ColumnResult, view: str) -> Evidence | None:
        """What a test-decided column contributes to the drift rule from this view; None otherwise."""
        effect = EFFECT_METHODS.get(c.method)
        if effect is None:
            return None
        return Evidence(view, c.method, c.p_values.get(c.method, math.nan), c.scores.get(effect, math.nan),
                        self.min_effect(c.name), c.threshold)

    # --- columns --------------------------------------------------------------------------
    def _numeric(self, role: str, snapshot: WindowSnapshot, lean: bool = False) -> list[ColumnResult]:
        """Numeric columns; ``lean``: only the decision's statistics (the recent view)."""
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
        wanted = set() if lean else self.published["numeric"]
        decisions = {r.name: self.decision(r.name, "numeric") for _, r, _ in ready}
        need = set().union(*(self._needed(wanted, d) for d in decisions.values())) if decisions else wanted
        # Group by (reference sample size, window size): each group is one vectorised pass.
        groups: dict[tuple[int, int, int], list[int]] = {}
        for i, (ref, result, values) in enumerate(ready):
            groups.setdefault((ref.sample.size, values.size, ref.counts.size), []).append(i)
        for (n1, n2, k), idx in groups.items():
            cur_sorted = np.sort(np.stack([ready[i][2] for i in idx]), axis=1)
            if not lean:
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
                own = self._needed(wanted, d)
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

    def _categorical(self, role: str, snapshot: WindowSnapshot, lean: bool = False) -> list[ColumnResult]:
        """Categorical columns; ``lean``: only the decision's statistics (the recent view)."""
        refs = self.ref.categorical[role]
        columns = snapshot.features if role == "feature" else snapshot.outputs
        total = snapshot.n
        wanted: set[str] = set() if lean else self.published["categorical"]
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
            d = self.decision(name, "categorical")
            need = self._needed(wanted, d)
            scores = binned_scores(ref.counts[None, :], counts[None, :], need)
            result.scores.update({m: float(v[0]) for m, v in scores.items()})
            if "chi2" in need:
                stat, p = pooled_chi_squared(ref.counts, counts)
                result.scores["chi2"], result.p_values["chi2"] = stat, p
            with np.errstate(divide="ignore", invalid="ignore"):
                share = counts / n
                ent = float(-np.sum(np.where(share > 0, share * np.log(share), 0.0)))
            seen = ref.profile.seen
            if seen is not None and lean:  # the recent view tests the shares only
                unseen = 0
            elif seen is not None:  # format 4: every value the reference held (docs/drift.md#new-categories)
                unseen = _unseen_count(seen, col, col.values[col.state == PRESENT]) if col.kind == "categorical" \
                    else _unseen_keys(seen, keys)
                self._unseen_evidence(result, unseen, n, ref.profile.expected_unseen)
            else:  # an older profile: outside the top-K categories, exact when they were all of them
                unseen = int(counts[-1]) if ref.counts[-1] == 0 else 0
            result.statistics.update(missing_ratio=1.0 - n / total if total else math.nan, entropy=ent,
                                     cardinality=float(distinct), unseen_ratio=unseen / n)
            if d is not None:
                result.method, result.threshold = d
            results.append(result)
        return results

    def _unseen_evidence(self, result: ColumnResult, unseen: int, n: int, expected: float) -> None:
        """The new-values test as evidence of its own (``view="unseen"``), decided by the same
        rule: significant after the correction over every test of the window, and the excess
        share of new values (mass the reference never held, so moved) at least the column's
        minimum effect."""
        override = self.cfg.features.get(result.name)
        if override is not None and not override.enabled:
            return
        p = unseen_test(unseen, n, expected)
        excess = max(0.0, unseen / n - expected) if math.isfinite(expected) else math.nan
        result.scores["unseen"], result.p_values["unseen"] = excess, p
        result.evidence.append(Evidence("unseen", "unseen", p, excess, self.min_effect(result.name), self.cfg.alpha))

    def _decide(self, columns: list[ColumnResult]) -> None:
        """Flags: every column's evidence decided together by one rule, distances against thresholds.

        The rule is ``stats.decision.drift_decisions``: a piece of evidence (a test on one view of
        a column) drifts when its p-value is significant after the multiple-testing correction over
        all the evidence of these columns and its effect reaches its minimum effect; a column
        drifts when any of its evidence does. A new statistic takes part in the same decision by
        adding an ``Evidence`` to its column before this runs.
        """
        rows = [(c, e) for c in columns for e in c.evidence]
        if rows:
            flags = drift_decisions(np.array([e.p_value for _, e in rows]), np.array([e.effect for _, e in rows]),
                                    np.array([e.min_effect for _, e in rows]), np.array([e.alpha for _, e in rows]),
                                    correction=self.cfg.correction, alpha=self.cfg.alpha)
            for (c, e), flag in zip(rows, flags):
                e.drifted = bool(flag)
                c.drifted = c.drifted or e.drifted
        for c in columns:
            if c.method and c.method not in P_VALUE_METHODS:
                score = c.scores.get(c.method, math.nan)
                c.drifted = bool(score >= c.threshold)

    def _add_evidence(self, snapshot: WindowSnapshot, result: VersionResult) -> None:
        """The full window's evidence of every test-decided column, and the recent events' beside it.

        The recent view is the last ``drift.recent_events`` rows (the snapshot is oldest first),
        looked at when the window holds at least twice as many: an abrupt change fills it within an
        evaluation or two however long the window is, where it is still a small share of the
        whole window. Its tests join the full window's in one corrected family.
        """
        for c in (*result.features, *result.outputs):
            e = self._evidence(c, "full")
            if e is not None:
                c.evidence.append(e)
        size = self.cfg.recent_events
        if not size or snapshot.n < 2 * size:
            return
        recent = subset(snapshot, np.arange(snapshot.n - size, snapshot.n))
        for role, columns in (("feature", result.features), ("output", result.outputs)):
            by_name = {c.name: c for c in columns if c.evidence}
            for rc in self._numeric(role, recent, lean=True) + self._categorical(role, recent, lean=True):
                full = by_name.get(rc.name)
                e = self._evidence(rc, "recent")
                if full is not None and e is not None and rc.method == full.method:
                    full.evidence.append(e)

    # --- the whole window ----------------------------------------------------------------
    def evaluate(self, snapshot: WindowSnapshot, now: float | None = None, *,
                 multivariate: bool = True) -> VersionResult:
        start = time.perf_counter()
        result = VersionResult(snapshot.model_version, snapshot.n, time.time() if now is None else now)
        if snapshot.n >= self.cfg.min_events:
            result.features = self._numeric("feature", snapshot) + self._categorical("feature", snapshot)
            result.outputs = self._numeric("output", snapshot) + self._categorical("output", snapshot)
            self._add_evidence(snapshot, result)
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
                self._decide_multivariate(result)
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

    def _decide_multivariate(self, result: VersionResult) -> None:
        """PCA and correlation drift against the reference's resampled thresholds for this window
        size (each the 0.995 quantile of stationary windows: the two together alarm on at most 1%
        of them, like the per-feature rule at drift.alpha 0.01). Nothing without thresholds."""
        thresholds = self.ref.profile.multivariate_thresholds
        if thresholds is None:
            return
        for method, score in (("pca_reconstruction", result.multivariate), ("correlation", result.correlation)):
            threshold = thresholds.threshold(method, result.events)
            if math.isfinite(score) and math.isfinite(threshold):
                result.multivariate_thresholds[method] = threshold
                result.multivariate_drifted[method] = bool(score > threshold)

    def _multivariate(self, snapshot: WindowSnapshot) -> tuple[float, float]:
        """PCA reconstruction-error ratio and correlation drift, sharing one standardised matrix
        whose values are clipped at ``ROBUST_Z`` reference standard deviations (so that no single
        value decides either; ``stats.resampling`` calibrates on the same clipped values)."""
        profile = self.ref.profile
        multivariate = correlation = math.nan
        pca = profile.pca
        if pca is not None and snapshot.n:
            x, has_nan = self._matrix(snapshot, profile.pca_features)
            z = robust_standardised(x, pca.mean, pca.scale)
            shared = profile.correlation is not None and profile.correlation_features == profile.pca_features
            if shared and profile.correlation is not None:  # unchanged by standardising (NaN: pairwise)
                correlation = correlation_drift_fast(profile.correlation, z, has_nan=has_nan)
            if has_nan:
                z[np.isnan(z)] = 0.0
            multivariate = pca_drift_score_standardised(pca, z, self.ref.pca_complement)
            if shared:
                return multivariate, correlation
        if profile.correlation is not None and profile.correlation_features and snapshot.n:
            x, has_nan = self._matrix(snapshot, profile.correlation_features)
            correlation = correlation_drift_fast(profile.correlation, x, has_nan=has_nan)
        return multivariate, correlation


def _unseen_count(seen: SeenValues, col: ColumnSnapshot, codes: np.ndarray) -> int:
    """Present values of a categorical column the reference never held: the window's own flags
    (judged when written, so values filed under ``other`` count too), else its vocabulary hashed."""
    if col.unseen is not None:
        return int(np.count_nonzero(col.unseen[col.state == PRESENT]))
    per_code = np.bincount(codes, minlength=len(col.categories) + 1)[: len(col.categories)]
    used = np.flatnonzero(per_code)
    new = ~seen.contains([col.categories[i] for i in used])
    return int(per_code[used][new].sum())


def _unseen_keys(seen: SeenValues, keys: list[str | None]) -> int:
    """Keys (one per present value) the reference never held: each distinct key hashed once."""
    distinct, counts = np.unique(np.array([k for k in keys if k is not None], dtype=object), return_counts=True)
    if distinct.size == 0:
        return 0
    return int(counts[~seen.contains(distinct.tolist())].sum())


def subset(snapshot: WindowSnapshot, rows: np.ndarray, drop: str = "") -> WindowSnapshot:
    """The snapshot's ``rows`` (indices) as a snapshot of their own, without the column ``drop``."""
    def take(group: dict[str, ColumnSnapshot]) -> dict[str, ColumnSnapshot]:
        return {name: ColumnSnapshot(c.kind, c.values[rows], c.state[rows], c.categories,
                                     None if c.unseen is None else c.unseen[rows])
                for name, c in group.items() if name != drop}

    return WindowSnapshot(snapshot.model_version, snapshot.prediction_ids[rows], snapshot.timestamps[rows],
                          take(snapshot.features), take(snapshot.outputs))
