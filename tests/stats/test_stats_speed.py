"""Speed smoke test: a full evaluation must stay vectorised (a per-row loop would fail it)."""

from __future__ import annotations

import time

import numpy as np

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

N_NUMERIC, N_CATEGORICAL, N_ROWS = 100, 20, 10_000


def _best_of(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def test_full_evaluation_speed():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(N_ROWS, N_NUMERIC))
    cur = rng.normal(0.05, size=(N_ROWS, N_NUMERIC))
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

    def numeric_hot_path():
        for i, (ref_sorted, edges, ref_counts, ref_std) in enumerate(profile):
            cur_sorted = prepare_sample(cur_cols[:, i])
            q = bin_counts(cur_sorted, edges, values_sorted=True)
            compare_samples(ref_sorted, cur_sorted, current_sorted=True, reference_std=ref_std)
            psi(ref_counts, q), js_distance(ref_counts, q), hellinger(ref_counts, q), kl_divergence(ref_counts, q)

    def numeric_plain_calls():
        for i, (ref_sorted, edges, ref_counts, _) in enumerate(profile):
            c = cur_cols[:, i]
            q = bin_counts(c, edges)
            ks_2samp(ref_sorted, c), wasserstein(ref_sorted, c), wasserstein_normalized(ref_sorted, c)
            psi(ref_counts, q), js_distance(ref_counts, q), hellinger(ref_counts, q), kl_divergence(ref_counts, q)

    def categorical():
        for r, c in zip(ref_cat, cur_cat):
            chi_squared(r, c), linf_distance(r, c), js_distance(r, c), psi(r, c), entropy(c)

    def summaries():
        for i in range(N_NUMERIC):
            summary_statistics(cur_cols[:, i])

    timings = {
        "numeric (compare_samples)": _best_of(numeric_hot_path),
        "numeric (separate calls)": _best_of(numeric_plain_calls),
        "categorical": _best_of(categorical),
        "summaries": _best_of(summaries),
        "correlation drift": _best_of(lambda: correlation_drift(ref_corr, cur)),
        "pca drift score": _best_of(lambda: pca.drift_score(cur)),
    }
    print(f"\nstats timing, {N_NUMERIC} numeric x {N_ROWS} vs {N_ROWS} rows, {N_CATEGORICAL} categorical:")
    for name, seconds in timings.items():
        print(f"  {name:28s} {seconds * 1e3:8.1f} ms")
    # Generous: typically ~0.1 s; a per-row Python loop anywhere takes many seconds.
    assert timings["numeric (compare_samples)"] < 2.0
    assert sum(timings.values()) < 6.0
