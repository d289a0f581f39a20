#!/usr/bin/env python
"""Performance estimated without labels (CBPE) against the realised metrics, where the truth is known.

    .venv/bin/python benchmarks/cbpe.py            # 30 seeds per cell, ~2 minutes on 2 busy cores
    .venv/bin/python benchmarks/cbpe.py --quick    # 5 seeds

A logistic truth ``P(y | x) = sigmoid(x . W + B)`` over two normal features, and a model whose
score is ``sigmoid(k (x . W + B))``: calibrated at k = 1, overconfident at k = 3, underconfident
at k = 0.5. The reference (the score and the label, the first feature centred at 0.5) is fitted
into a calibration map exactly as ``inferwatch profile`` does (``fit_calibration``); a window of
5,000 rows is drawn with the first feature centred at 0.5 (no shift), -0.2 (toward the decision
boundary: accuracy falls) or 1.5 (away from it), and its accuracy and ROC-AUC are estimated from
the scores alone, then compared with the realised values on the window's own labels. Each cell:
mean and largest |estimate - realised| over the seeds, for the calibrated estimate and for the
scores trusted as probabilities (what inferwatch did before issue 16), and how often the
realised value was inside the published band (estimate +- 2 standard errors).

Then the same over reference sizes (the profile's ``--sample-size``), and the time to fit a map
and to estimate one window.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import accuracy_score, roc_auc_score

from inferwatch.stats.calibration import fit_calibration
from inferwatch.stats.performance import estimate_binary_performance, estimate_standard_errors

W, B = np.array([1.5, -1.0]), 0.3
REFERENCE_MEAN = 0.5
SHIFTS = {"none": REFERENCE_MEAN, "toward": -0.2, "away": 1.5}
WINDOW = 5000


def simulate(rng: np.random.Generator, n: int, mean: float, k: float) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=(n, 2)) + np.array([mean, 0.0])
    logit = x @ W + B
    y = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    return 1.0 / (1.0 + np.exp(-k * logit)), y


def trial(seed: int, reference_rows: int, mean: float, k: float) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    calibration = fit_calibration(*simulate(rng, reference_rows, REFERENCE_MEAN, k))
    assert calibration is not None
    score, y = simulate(rng, WINDOW, mean, k)
    decided = score >= 0.5
    probability = calibration.apply(score)
    calibrated = estimate_binary_performance(score, decided, probability=probability)
    trusted = estimate_binary_performance(score, decided)
    se = estimate_standard_errors(score, probability, decided, reference_rows=calibration.rows)
    realised = {"accuracy": accuracy_score(y, decided), "roc_auc": roc_auc_score(y, score)}
    out: dict[str, float] = {}
    for m, value in realised.items():
        out[f"{m}"] = value
        out[f"{m}_err"] = calibrated[m] - value
        out[f"{m}_trusted_err"] = trusted[m] - value
        out[f"{m}_covered"] = float(abs(calibrated[m] - value) <= 2 * se[m])
        out[f"{m}_se"] = se[m]
    return out


def table(seeds: int, reference_rows: int) -> None:
    print(f"reference {reference_rows:,} rows, window {WINDOW:,}, {seeds} seeds per cell; "
          "err = estimate - realised: mean / largest |err|")
    print(f"{'scores':<15} {'shift':<7} {'acc':>6} {'calibrated err':>16} {'trusted err':>12} {'in ±2se':>8}"
          f" {'auc':>6} {'calibrated err':>16} {'trusted err':>12} {'in ±2se':>8}")
    for k, name in ((1.0, "calibrated"), (3.0, "overconfident"), (0.5, "underconfident")):
        for shift, mean in SHIFTS.items():
            rows = [trial(seed, reference_rows, mean, k) for seed in range(seeds)]
            cells = []
            for m in ("accuracy", "roc_auc"):
                err = np.array([r[f"{m}_err"] for r in rows])
                trusted = np.mean([r[f"{m}_trusted_err"] for r in rows])
                cells.append(f"{np.mean([r[m] for r in rows]):6.3f} {err.mean():+7.4f} / {np.abs(err).max():.3f}"
                             f" {trusted:+12.3f} {np.mean([r[f'{m}_covered'] for r in rows]):8.0%}")
            print(f"{name:<15} {shift:<7} {cells[0]} {cells[1]}")
    print()


def sizes(seeds: int) -> None:
    print(f"largest |err| over every cell above, {seeds} seeds each, by reference size (window {WINDOW:,})")
    for reference_rows in (2_000, 5_000, 10_000, 20_000):
        worst = {"accuracy": 0.0, "roc_auc": 0.0}
        for k in (1.0, 3.0, 0.5):
            for mean in SHIFTS.values():
                for seed in range(seeds):
                    r = trial(seed, reference_rows, mean, k)
                    for m in worst:
                        worst[m] = max(worst[m], abs(r[f"{m}_err"]))
        print(f"  {reference_rows:>6,} rows: accuracy {worst['accuracy']:.3f}, roc_auc {worst['roc_auc']:.3f}")
    print()


def timing() -> None:
    rng = np.random.default_rng(0)
    for rows in (10_000, 100_000):
        s, y = simulate(rng, rows, REFERENCE_MEAN, 3.0)
        start = time.perf_counter()
        calibration = fit_calibration(s, y)
        fit = time.perf_counter() - start
        assert calibration is not None
        score, _ = simulate(rng, rows, 1.5, 3.0)
        start = time.perf_counter()
        probability = calibration.apply(score)
        estimate_binary_performance(score, score >= 0.5, probability=probability)
        estimated = time.perf_counter() - start
        start = time.perf_counter()
        estimate_standard_errors(score, probability, score >= 0.5)
        errors = time.perf_counter() - start
        print(f"  {rows:>7,} rows: fit {fit * 1e3:7.1f} ms ({calibration.knots_x.size} knots); "
              f"estimate {estimated * 1e3:6.1f} ms; standard errors (200 draws) {errors * 1e3:7.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 seeds per cell")
    parser.add_argument("--seeds", type=int, default=30)
    args = parser.parse_args()
    seeds = 5 if args.quick else args.seeds
    table(seeds, 20_000)
    table(seeds, 10_000)
    sizes(max(3, seeds // 3))
    print("time (one window, one core):")
    timing()


if __name__ == "__main__":
    main()
