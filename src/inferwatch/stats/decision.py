"""Turning per-feature p-values into drift flags under multiple testing.

Testing 100 features at alpha = 0.05 flags about 5 of them by chance in every
window; these corrections bound that. NaN p-values (a feature that could not be
tested, e.g. an empty window) are never flagged and do not count as tests.
"""

from __future__ import annotations

import numpy as np

__all__ = ["bonferroni", "benjamini_hochberg", "corrected", "drift_decisions", "drifted_share"]


def _pvalues(p_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(p_values, dtype=np.float64).ravel()
    return p, ~np.isnan(p)


def bonferroni(p_values: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    """Flag ``p * m <= alpha`` (m = number of non-NaN p-values).

    Controls the family-wise error rate (chance of any false flag) at alpha;
    conservative when features are many or correlated.
    """
    p, valid = _pvalues(p_values)
    m = int(valid.sum())
    flags = np.zeros(p.shape, dtype=bool)
    flags[valid] = p[valid] * m <= alpha
    return flags


def benjamini_hochberg(p_values: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    """Benjamini-Hochberg step-up: flag ``p_adj <= alpha``.

    Sorted ascending, ``p_adj(i) = min_{j >= i} p(j) * m / j`` (clipped to 1),
    the adjustment of ``scipy.stats.false_discovery_control(p, method="bh")``.
    Controls the expected share of false flags among flags (FDR) at alpha for
    independent or positively dependent tests; more powerful than Bonferroni.
    """
    p, valid = _pvalues(p_values)
    flags = np.zeros(p.shape, dtype=bool)
    pv = p[valid]
    m = pv.size
    if m == 0:
        return flags
    order = np.argsort(pv, kind="stable")
    adj = pv[order] * (m / np.arange(1, m + 1, dtype=np.float64))
    adj = np.minimum.accumulate(adj[::-1])[::-1]
    adj = np.clip(adj, 0.0, 1.0)
    sub = np.empty(m, dtype=bool)
    sub[order] = adj <= alpha
    flags[valid] = sub
    return flags


def corrected(p_values: np.ndarray, alphas: np.ndarray, correction: str, alpha: float) -> np.ndarray:
    """Significance of each p-value against its own level ``alphas[i]``, corrected as one family.

    ``correction``: ``bonferroni`` (``p * m <= alpha_i``), ``bh`` (Benjamini-Hochberg at ``alpha``,
    each p-value scaled by ``alpha / alpha_i`` when the levels differ) or ``none`` (``p <= alpha_i``).
    """
    p, valid = _pvalues(p_values)
    levels = np.asarray(alphas, dtype=np.float64).ravel()
    if correction == "bonferroni":
        m = int(valid.sum())
        return valid & (np.where(valid, p, np.inf) * m <= levels)
    if correction == "bh":
        if p.size and np.all(levels == levels[0]):
            return benjamini_hochberg(p, float(levels[0]))
        return benjamini_hochberg(p / levels * alpha, alpha)
    return valid & (np.where(valid, p, np.inf) <= levels)


def drift_decisions(p_values: np.ndarray, effects: np.ndarray, min_effects: np.ndarray, alphas: np.ndarray, *,
                    correction: str, alpha: float) -> np.ndarray:
    """The drift rule, one flag per piece of evidence: its p-value is significant after the
    multiple-testing correction over **every** row together, **and** its effect size is at least
    its minimum effect.

    A row is one statistic on one view of one column (the full window's KS test of a feature, the
    recent events' one, ...). Correcting over all rows keeps the chance of any false flag per
    evaluation at ``alpha`` however many views look at a column; the effect gate only removes
    flags, so it cannot add false alarms, and it stops a large window from flagging a change too
    small to matter. A NaN effect never passes the gate.
    """
    significant = corrected(p_values, alphas, correction, alpha)
    effect = np.asarray(effects, dtype=np.float64).ravel()
    with np.errstate(invalid="ignore"):
        return significant & (effect >= np.asarray(min_effects, dtype=np.float64).ravel())


def drifted_share(flags: np.ndarray) -> float:
    """Share of flagged features, in [0, 1]; NaN when there are no features."""
    f = np.asarray(flags, dtype=bool).ravel()
    return float(f.mean()) if f.size else float("nan")
