#!/usr/bin/env python
"""What capped slots cost on the request path and in the worker.

    .venv/bin/python benchmarks/label_slots.py

(a) ``Metrics.version_label``, called for every pushed batch and every v2 response that names its
    version: the configured (reserved) version, another version holding a slot, and a junk
    version that overflows to ``other`` (a new value per call, the worst case for the sketch),
    against a plain set lookup (what a first-come cap cost).
(b) ``Window.append`` of one-row batches with 20 features: the schema reserved, discovered from
    traffic (each column's presence counted), and with 300 junk names per batch once the columns
    are full (each name goes through the sketch).

This is a benchmark that prints figures, not a test: nothing here asserts a bound.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry

from inferwatch.exposition.metrics import Metrics
from inferwatch.ingest.events import EventBatch
from inferwatch.pipeline.window import Window


def per_call(fn, calls: int) -> float:
    """Median over 5 runs of the seconds per call."""
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        fn(calls)
        runs.append((time.perf_counter() - start) / calls)
    return sorted(runs)[2]


def versions() -> None:
    metrics = Metrics("m", CollectorRegistry(), max_model_versions=8, reserved_versions=["1"],
                      sidecar_process_metrics=False)
    for v in range(7):
        metrics.version_label(f"v{v}", "1")
    label = metrics.version_label
    seen = {"1", *(f"v{v}" for v in range(7))}

    def reserved(n):
        for _ in range(n):
            label("1", "1")

    def held(n):
        for _ in range(n):
            label("v3", "1")

    def junk(n):
        for i in range(n):
            label(f"junk{i}", "1")

    def set_lookup(n):
        for _ in range(n):
            "v3" in seen  # noqa: B015 - the old cap's fast path

    print("(a) Metrics.version_label, per call")
    for name, fn in (("configured version (reserved)", reserved), ("another version holding a slot", held),
                     ("junk version, a new one each call", junk), ("baseline: a set lookup", set_lookup)):
        print(f"    {name:38s} {per_call(fn, 100_000) * 1e9:8.0f} ns")


def columns() -> None:
    names = [f"f{i}" for i in range(20)]
    batch = EventBatch(1, features={n: [1.5] for n in names}, timestamps=[1000.0])
    junk_batch = EventBatch(1, features={**{n: [1.5] for n in names}, **{f"junk{i}": [1.0] for i in range(300)}},
                            timestamps=[1000.0])

    def run(window: Window, b: EventBatch):
        def go(n):
            for _ in range(n):
                window.append(b)
        return go

    print("(b) Window.append, one-row batches, per batch")
    schema = Window("1", capacity=1000, max_age_seconds=1e9, reserved_features=names, clock=lambda: 2000.0)
    traffic = Window("1", capacity=1000, max_age_seconds=1e9, clock=lambda: 2000.0)
    full = Window("1", capacity=1000, max_age_seconds=1e9, max_features=20, clock=lambda: 2000.0)
    full.append(batch)
    for name, window, b in (("20 features, the schema's", schema, batch),
                            ("20 features, discovered from traffic", traffic, batch),
                            ("the same + 300 junk names, columns full", full, junk_batch)):
        print(f"    {name:40s} {per_call(run(window, b), 2_000) * 1e6:8.1f} us")


if __name__ == "__main__":
    versions()
    columns()
