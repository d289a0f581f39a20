#!/usr/bin/env python
"""The drift report page: how long ``render_report`` takes and how big the page is.

    .venv/bin/python benchmarks/report.py

A reference of 20,000 rows and a window of 10,000 rows (half the numbers shifted) over 20, 100 and
300 features (four numbers to one category, ten categories each): the time to count the window in
the reference's bins (``count_snapshot``), to evaluate drift on it (what ``GET /v1/report`` does
too) and to render the page, best of three, and the page's size. Timings on a shared machine are
noisy; the point is the order of magnitude a person waits for ``/v1/report``.
"""

from __future__ import annotations

import time

import numpy as np

from inferwatch.config import parse_config
from inferwatch.ingest.events import EventBatch
from inferwatch.monitors.drift import Evaluator, PreparedReference
from inferwatch.pipeline.window import Window
from inferwatch.reference import build_profile
from inferwatch.report import count_snapshot, render_report

CATEGORIES = [f"c{i}" for i in range(10)]


def data(n: int, features: int, rng: np.random.Generator, shift: float) -> dict[str, object]:
    cols: dict[str, object] = {}
    for j in range(features):
        if j % 5 == 4:
            cols[f"cat_{j}"] = list(rng.choice(CATEGORIES, n))
        else:
            cols[f"num_{j}"] = rng.normal(shift if j % 2 else 0.0, 1.0, n)
    return cols


def best(fn, repeat: int = 3) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    rng = np.random.default_rng(0)
    cfg = parse_config({}).drift
    print(f"{'features':>8} {'count ms':>9} {'evaluate ms':>12} {'render ms':>10} {'page KB':>8}")
    for features in (20, 100, 300):
        profile = build_profile({"feature": data(20_000, features, rng, 0.0), "output": {"p": rng.random(20_000)}})
        current = data(10_000, features, rng, 0.5)
        window = Window("1", capacity=10_000, max_age_seconds=1e9)
        window.append(EventBatch(10_000, features={k: list(v) for k, v in current.items()},
                                 outputs={"p": list(rng.beta(2, 5, 10_000))}))
        snapshot = window.snapshot()
        evaluator = Evaluator(PreparedReference.build(profile), cfg)
        count_s, counts = best(lambda: count_snapshot(profile, snapshot))
        evaluate_s, result = best(lambda: evaluator.evaluate(snapshot))
        render_s, page = best(lambda: render_report(model="m", version="1", reference=profile, current=counts,
                                                    drift=result))
        print(f"{features:>8} {count_s * 1e3:>9.1f} {evaluate_s * 1e3:>12.1f} {render_s * 1e3:>10.1f} "
              f"{len(page.encode()) / 1024:>8.0f}")


if __name__ == "__main__":
    main()
