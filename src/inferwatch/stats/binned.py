"""Binned drift scores of many features at once, and the chi-squared test with rare categories pooled.

``binned_scores`` applies ``psi``, ``js_distance``, ``hellinger``, ``kl_divergence`` (``numeric``)
and ``linf_distance``, ``total_variation`` (``categorical``) to every row of two (features x bins) count matrices in
one vectorised pass; tests hold each row equal to the registry's function
(``DRIFT_TESTS[name].function``). ``pooled_chi_squared`` is ``chi_squared_homogeneity`` after
Cochran's rule: categories too rare for the chi-squared approximation are pooled first.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
from scipy import special

from .categorical import chi_squared_homogeneity
from .numeric import DEFAULT_EPS

__all__ = ["BINNED_METHODS", "binned_scores", "pooled_chi_squared"]

#: The methods ``binned_scores`` computes (every other drift test needs the samples or a test).
BINNED_METHODS = frozenset({"psi", "js", "hellinger", "kl", "linf", "tv"})

_LN2 = math.log(2.0)


def binned_scores(reference_counts: np.ndarray, current_counts: np.ndarray, methods: Iterable[str],
                  eps: float = DEFAULT_EPS) -> dict[str, np.ndarray]:
    """The ``methods`` (of ``BINNED_METHODS``) for each row of two (features x bins) count matrices.

    Row i of each result equals the per-pair function on ``reference_counts[i]`` and
    ``current_counts[i]``: the same smoothing (``eps``) for PSI and KL, base-2 JS. The rows are
    features with the same number of bins; a row of all-zero counts gives NaN.
    """
    wanted = set(methods)
    out: dict[str, np.ndarray] = {}
    ref = np.asarray(reference_counts).astype(np.float64)
    cur = np.asarray(current_counts).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = ref / ref.sum(axis=1, keepdims=True)
        q = cur / cur.sum(axis=1, keepdims=True)
        k = p.shape[1]
        if wanted & {"psi", "kl"}:
            ps, qs = (p + eps) / (1.0 + k * eps), (q + eps) / (1.0 + k * eps)
            log_ratio = np.log(qs / ps)
            if "psi" in wanted:
                out["psi"] = np.sum((qs - ps) * log_ratio, axis=1)
            if "kl" in wanted:
                out["kl"] = np.sum(qs * log_ratio, axis=1)
        if "js" in wanted:
            m = (p + q) / 2.0
            js = (special.rel_entr(p, m).sum(axis=1) + special.rel_entr(q, m).sum(axis=1)) / 2.0
            out["js"] = np.sqrt(np.maximum(js, 0.0) / _LN2)
        if "hellinger" in wanted:
            out["hellinger"] = np.sqrt(0.5 * np.sum((np.sqrt(p) - np.sqrt(q)) ** 2, axis=1))
        if "linf" in wanted:
            out["linf"] = np.max(np.abs(p - q), axis=1)
        if "tv" in wanted:
            out["tv"] = np.sum(np.abs(p - q), axis=1) / 2.0
    return out


def pooled_chi_squared(reference_counts: np.ndarray, current_counts: np.ndarray,
                       min_expected: float = 5.0) -> tuple[float, float]:
    """Two-sample chi-squared (homogeneity: the reference is a sample too), with categories of
    expected count < ``min_expected`` pooled into one (Cochran).

    Without pooling a rare reference category seen a few times in a small window makes huge,
    meaningless statistics: the chi-squared approximation needs expected counts of about 5.
    Returns ``(statistic, p-value)``; ``(nan, nan)`` for an empty sample.
    """
    ref = np.asarray(reference_counts, dtype=np.float64)
    cur = np.asarray(current_counts, dtype=np.float64)
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
