"""A full evaluation stays vectorised: no line of Python runs per row.

A per-row Python loop anywhere in the statistics would make drift evaluation take seconds
instead of milliseconds. Timing it would depend on the machine (a loaded one failed a 2 s bound
at 2.2 s), so this counts the Python lines an evaluation executes instead: that number must not
grow with the rows. The timings themselves are figures printed by ``benchmarks/micro.py``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from conftest import python_lines

from inferwatch.stats import (
    PCAModel,
    bin_counts,
    chi_squared,
    compare_samples,
    correlation_drift,
    correlation_matrix,
    entropy,
    hellinger,
    js_distance,
    kl_divergence,
    ks_2samp,
    linf_distance,
    prepare_sample,
    psi,
    quantile_edges,
    summary_statistics,
    wasserstein,
    wasserstein_normalized,
)

N_NUMERIC, N_CATEGORICAL = 4, 3



def full_evaluation(n_rows: int) -> Callable[[], None]:
    """Every statistic of a drift evaluation, ``n_rows`` current rows against as many reference rows."""
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(n_rows, N_NUMERIC))
    cur = rng.normal(0.05, size=(n_rows, N_NUMERIC))
    ref_cols, cur_cols = np.asfortranarray(ref), np.asfortranarray(cur)  # columnar, as windows are
    profile = []
    for i in range(N_NUMERIC):
        ref_sorted = prepare_sample(ref_cols[:, i])
        edges = quantile_edges(ref_sorted)
        profile.append((ref_sorted, edges, bin_counts(ref_sorted, edges, values_sorted=True), float(ref_sorted.std())))
    ref_cat = rng.integers(1, 1000, size=(N_CATEGORICAL, 11))
    cur_cat = rng.integers(1, 1000, size=(N_CATEGORICAL, 11))
    ref_corr = correlation_matrix(ref)
    pca = PCAModel.fit(ref)

    def evaluate() -> None:
        for i, (ref_sorted, edges, ref_counts, ref_std) in enumerate(profile):
            # the hot path: one sort of the current column, then every numeric statistic
            cur_sorted = prepare_sample(cur_cols[:, i])
            q = bin_counts(cur_sorted, edges, values_sorted=True)
            compare_samples(ref_sorted, cur_sorted, current_sorted=True, reference_std=ref_std)
            psi(ref_counts, q), js_distance(ref_counts, q), hellinger(ref_counts, q), kl_divergence(ref_counts, q)
            # the separate calls
            c = cur_cols[:, i]
            q = bin_counts(c, edges)
            ks_2samp(ref_sorted, c), wasserstein(ref_sorted, c), wasserstein_normalized(ref_sorted, c)
            summary_statistics(c)
        for r, c in zip(ref_cat, cur_cat):
            chi_squared(r, c), linf_distance(r, c), js_distance(r, c), psi(r, c), entropy(c)
        correlation_drift(ref_corr, cur)
        pca.drift_score(cur)

    return evaluate


def test_a_full_evaluation_runs_no_python_per_row():
    small, large = 2_000, 8_000
    lines_small = python_lines(full_evaluation(small))
    lines_large = python_lines(full_evaluation(large))
    # Vectorised, both run the same lines; a loop over the rows of one column would add 6,000.
    assert lines_small > 0
    assert lines_large - lines_small < 100, (lines_small, lines_large)
