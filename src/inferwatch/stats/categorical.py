"""Drift statistics for categorical features.

Inputs are count vectors aligned on the same categories: the reference's top-K
categories plus one "other" bucket, counted once for the reference profile and
once per window. PSI and Jensen-Shannon are the binned statistics of
``numeric`` applied to these counts (one implementation for both families).
Empty counts give NaN results, never exceptions.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from .numeric import DEFAULT_EPS, js_distance, proportions, psi

__all__ = ["chi_squared", "chi_squared_homogeneity", "linf_distance", "total_variation", "js_distance", "psi",
           "unseen_ratio", "entropy"]

_NAN = float("nan")


def _counts(counts: np.ndarray) -> np.ndarray:
    return np.asarray(counts, dtype=np.float64).ravel()


def chi_squared(ref_counts: np.ndarray, cur_counts: np.ndarray, eps: float = DEFAULT_EPS) -> tuple[float, float]:
    """Pearson goodness-of-fit of the current counts to the reference proportions.

    ``statistic = sum((o - e)**2 / e)`` with ``e = ref proportion * n_current``,
    p-value from chi2 with k-1 degrees of freedom: equal to
    ``scipy.stats.chisquare(cur, f_exp=ref / ref.sum() * cur.sum())`` whenever every
    reference count is positive. The reference proportions are taken as exact
    (reasonable for a reference much larger than the window).

    Zero expected counts: categories empty in both samples are dropped (they carry
    no information and would make 0/0). If a remaining category is empty in the
    reference only, the reference proportions are smoothed with
    ``proportions(., eps)`` so a newly appearing category gives a large finite
    statistic instead of infinity. Fewer than two categories left: ``(0.0, 1.0)``.
    Empty reference or current: ``(nan, nan)``.
    """
    ref, cur = _counts(ref_counts), _counts(cur_counts)
    if ref.shape != cur.shape:
        raise ValueError(f"count vectors differ in length: {ref.size} != {cur.size}")
    n_cur = cur.sum()
    if not (n_cur > 0 and ref.sum() > 0):
        return _NAN, _NAN
    keep = (ref > 0) | (cur > 0)
    ref, cur = ref[keep], cur[keep]
    if ref.size < 2:
        return 0.0, 1.0
    p = proportions(ref, eps if np.any(ref == 0) else 0.0)
    expected = p * n_cur
    stat = float(np.sum((cur - expected) ** 2 / expected))
    return stat, float(special.chdtrc(ref.size - 1, stat))


def chi_squared_homogeneity(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[float, float]:
    """Pearson chi-squared test that two samples come from one categorical distribution.

    The 2 x k contingency table (reference counts, current counts) against the pooled
    proportions, k-1 degrees of freedom: equal to
    ``scipy.stats.chi2_contingency([ref, cur], correction=False)[:2]`` for k > 2 (and for
    k = 2 without Yates's correction). Unlike ``chi_squared`` it accounts for the reference
    being a sample too: with a reference ten times the window, the goodness-of-fit test's
    false-positive rate at a Bonferroni level of 1e-4 was 3e-4 (benchmarks/detection_quality.py).
    Categories empty in both samples are dropped; fewer than two left: ``(0.0, 1.0)``; an
    empty sample: ``(nan, nan)``.
    """
    ref, cur = _counts(ref_counts), _counts(cur_counts)
    if ref.shape != cur.shape:
        raise ValueError(f"count vectors differ in length: {ref.size} != {cur.size}")
    n_ref, n_cur = ref.sum(), cur.sum()
    if not (n_cur > 0 and n_ref > 0):
        return _NAN, _NAN
    keep = (ref > 0) | (cur > 0)
    ref, cur = ref[keep], cur[keep]
    if ref.size < 2:
        return 0.0, 1.0
    pooled = (ref + cur) / (n_ref + n_cur)
    e_ref, e_cur = pooled * n_ref, pooled * n_cur
    stat = float(np.sum((ref - e_ref) ** 2 / e_ref) + np.sum((cur - e_cur) ** 2 / e_cur))
    return stat, float(special.chdtrc(ref.size - 1, stat))


def linf_distance(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """L-infinity distance ``max_i |p_i - q_i|`` between the category proportions.

    The largest change in any one category's share, in [0, 1]; symmetric, no smoothing.
    """
    p, q = proportions(ref_counts), proportions(cur_counts)
    if p.shape != q.shape:
        raise ValueError(f"count vectors differ in length: {p.size} != {q.size}")
    if p.size == 0:
        return _NAN
    return float(np.max(np.abs(p - q)))


def total_variation(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """Total variation distance ``sum_i abs(p_i - q_i) / 2`` between the category proportions.

    The share of probability mass that has to move to turn one distribution into the other, in
    [0, 1]: the categorical counterpart of the KS statistic (the mass moved across one cut). One
    value changes it by at most 1/n. Equals ``scipy.spatial.distance.cityblock(p, q) / 2``.
    """
    p, q = proportions(ref_counts), proportions(cur_counts)
    if p.shape != q.shape:
        raise ValueError(f"count vectors differ in length: {p.size} != {q.size}")
    if p.size == 0:
        return _NAN
    return float(np.sum(np.abs(p - q)) / 2.0)


def unseen_ratio(cur_counts_unseen: int | np.ndarray, n: int) -> float:
    """Share of the n current observations whose category the reference never saw.

    ``cur_counts_unseen`` is a count or a vector of counts (summed). n <= 0 gives NaN.
    """
    if n <= 0:
        return _NAN
    return float(np.sum(cur_counts_unseen)) / float(n)


def entropy(counts: np.ndarray) -> float:
    """Shannon entropy ``-sum(p * ln p)`` of the category proportions, in nats.

    Equals ``scipy.stats.entropy(counts)``; all-zero or empty counts give NaN.
    """
    p = proportions(counts)
    if p.size == 0:
        return _NAN
    return float(np.sum(special.entr(p)))
