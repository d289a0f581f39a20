#!/usr/bin/env python
"""Hot paths in process: drift statistics, decoding a large batch, the push client's log().

    .venv/bin/python benchmarks/micro.py              # ~15-30 s
    .venv/bin/python benchmarks/micro.py --repeats 3  # best of 3 instead of 5

These timings were wall-clock assertions in the tests until a loaded machine failed them (2.2 s
against a 2.0 s bound). The tests now check what the bounds stood for without a clock (no
Python line runs per row: tests/stats/test_stats_scaling.py, tests/test_codecs.py; log()
returns while the server answers nothing: tests/test_client.py); the figures are printed here.

(a) Drift statistics: 100 numeric columns, 10,000 current rows against 10,000 reference rows,
    and 20 categorical columns of 11 bins: every statistic, as the drift monitor calls them
    (``compare_samples`` on a presorted column, then the separate calls), summaries, correlation
    drift and the PCA score. Best of --repeats, per group. A per-row Python loop anywhere would
    add seconds per column. (The test used to bound the first row at 2 s and the sum at 6 s;
    2026-12-07 on a shared, busy 2-core machine: 0.23 s and 2.2 s.)
(b) ``decode_exchange`` of a KServe v1 body of 10,000 positional rows x 32 features with
    10,000 two-class predictions, against ``json.loads`` of the same two bodies: the columnar
    transposition should cost a fraction of the parse. (The test used to bound it at 4 x parse
    + 50 ms.)
(c) ``InferwatchClient.log()`` per call, with the server down (nothing listens) and with a queue
    that is full, and ``flush()`` with nothing logged. (The tests used to bound 100 calls at
    0.5 s, and the empty flush at 1 s.)

This is a benchmark that prints figures, not a test: nothing here asserts a target.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import free_port, install_signal_handlers, machine, run_main  # noqa: E402


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    """The fastest of ``repeats`` runs, in seconds (the least disturbed by the rest of the machine)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def statistics(repeats: int) -> None:
    from inferwatch.stats import (
        PCAModel, bin_counts, chi_squared, compare_samples, correlation_drift, correlation_matrix, entropy, hellinger,
        js_distance, kl_divergence, ks_2samp, linf_distance, prepare_sample, psi, quantile_edges, summary_statistics,
        wasserstein, wasserstein_normalized,
    )

    n_numeric, n_categorical, n_rows = 100, 20, 10_000
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(n_rows, n_numeric))
    cur = rng.normal(0.05, size=(n_rows, n_numeric))
    ref_cols, cur_cols = np.asfortranarray(ref), np.asfortranarray(cur)  # columnar, as windows are
    profile = []
    for i in range(n_numeric):
        ref_sorted = prepare_sample(ref_cols[:, i])
        edges = quantile_edges(ref_sorted)
        profile.append((ref_sorted, edges, bin_counts(ref_sorted, edges, values_sorted=True), float(ref_sorted.std())))
    ref_cat = rng.integers(1, 1000, size=(n_categorical, 11))
    cur_cat = rng.integers(1, 1000, size=(n_categorical, 11))
    ref_corr = correlation_matrix(ref)
    pca = PCAModel.fit(ref)

    def numeric_hot_path() -> None:
        for i, (ref_sorted, edges, ref_counts, ref_std) in enumerate(profile):
            cur_sorted = prepare_sample(cur_cols[:, i])
            q = bin_counts(cur_sorted, edges, values_sorted=True)
            compare_samples(ref_sorted, cur_sorted, current_sorted=True, reference_std=ref_std)
            psi(ref_counts, q), js_distance(ref_counts, q), hellinger(ref_counts, q), kl_divergence(ref_counts, q)

    def numeric_plain_calls() -> None:
        for i, (ref_sorted, edges, ref_counts, _) in enumerate(profile):
            c = cur_cols[:, i]
            q = bin_counts(c, edges)
            ks_2samp(ref_sorted, c), wasserstein(ref_sorted, c), wasserstein_normalized(ref_sorted, c)
            psi(ref_counts, q), js_distance(ref_counts, q), hellinger(ref_counts, q), kl_divergence(ref_counts, q)

    def categorical() -> None:
        for r, c in zip(ref_cat, cur_cat):
            chi_squared(r, c), linf_distance(r, c), js_distance(r, c), psi(r, c), entropy(c)

    def summaries() -> None:
        for i in range(n_numeric):
            summary_statistics(cur_cols[:, i])

    timings = {
        "numeric (compare_samples)": best_of(numeric_hot_path, repeats),
        "numeric (separate calls)": best_of(numeric_plain_calls, repeats),
        "categorical": best_of(categorical, repeats),
        "summaries": best_of(summaries, repeats),
        "correlation drift": best_of(lambda: correlation_drift(ref_corr, cur), repeats),
        "pca drift score": best_of(lambda: pca.drift_score(cur), repeats),
    }
    print(f"(a) drift statistics, {n_numeric} numeric x {n_rows:,} vs {n_rows:,} rows, {n_categorical} categorical; "
          f"best of {repeats}")
    for name, seconds in timings.items():
        print(f"    {name:<28} {seconds * 1e3:8.1f} ms")
    print(f"    {'all':<28} {sum(timings.values()) * 1e3:8.1f} ms")


def positional_batch(repeats: int) -> None:
    from inferwatch.ingest.codecs import decode_exchange

    n_rows, n_features = 10_000, 32
    rows = [[float(i + k) for k in range(n_features)] for i in range(n_rows)]
    request = json.dumps({"instances": rows}).encode()
    response = json.dumps({"predictions": [[0.1, 0.9]] * n_rows}).encode()
    parse = best_of(lambda: (json.loads(request), json.loads(response)), repeats)
    decode = best_of(lambda: decode_exchange(request, response), repeats)
    print(f"(b) decode_exchange, {n_rows:,} positional rows x {n_features} features "
          f"({(len(request) + len(response)) / 1e6:.1f} MB of JSON); best of {repeats}")
    print(f"    {'json.loads of both bodies':<28} {parse * 1e3:8.1f} ms")
    print(f"    {'decode_exchange':<28} {decode * 1e3:8.1f} ms   ({decode / parse:.2f} x the parse)")


def client_log(repeats: int) -> None:
    from inferwatch.client import InferwatchClient

    calls = 10_000
    logging.getLogger("inferwatch.client").setLevel(logging.ERROR)  # the down server's warning is expected
    print(f"(c) InferwatchClient.log(), {calls:,} calls; best of {repeats}")
    # Nothing listens: every post fails at once, and log() must not notice.
    down = InferwatchClient(f"http://127.0.0.1:{free_port()}", flush_interval=0.05, timeout=0.5, backoff=0.01)
    # A full queue: every call is a drop (the sender holds no batch; it waits for a flush interval).
    full = InferwatchClient(f"http://127.0.0.1:{free_port()}", batch_size=10 * calls, max_queue=0, flush_interval=3600)
    try:
        for name, client in (("server down", down), ("queue full (drops)", full)):
            seconds = best_of(lambda: [client.log({"i": i, "x": 0.5}, prediction=i) for i in range(calls)], repeats)
            print(f"    {name:<28} {seconds / calls * 1e6:8.2f} us per call")
        empty = InferwatchClient(f"http://127.0.0.1:{free_port()}", flush_interval=3600)
        try:
            seconds = best_of(lambda: empty.flush(timeout=5), repeats)
            print(f"    {'flush() with nothing logged':<28} {seconds * 1e6:8.2f} us")
        finally:
            empty.close(timeout=1)
    finally:
        down.close(timeout=1)
        full.close(timeout=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    install_signal_handlers()
    print(f"machine: {machine()}")
    statistics(args.repeats)
    positional_batch(args.repeats)
    client_log(args.repeats)
    return 0


if __name__ == "__main__":
    run_main(main)
