#!/usr/bin/env python
"""Drift engine speed and memory.

    .venv/bin/python benchmarks/drift.py                  # ~10 minutes on 2 busy cores (the 1M-row CSV dominates)
    .venv/bin/python benchmarks/drift.py --skip-profile   # evaluation and memory only
    .venv/bin/python benchmarks/drift.py --evidently-python /path/to/venv/bin/python

(a) One full evaluation: 100 numeric + 20 categorical features, a reference profile of 10k rows,
    a window of 10k events; every statistic of every feature (numeric: ks, psi, js, hellinger, kl,
    wasserstein; categorical: chi2, linf, js, psi), basic statistics, decisions, PCA
    reconstruction error and correlation drift. Timed as ``Evaluator.evaluate`` on a window
    snapshot (best and median of N), and the snapshot itself separately. Target: <= 100 ms.
(b) Evidently's DataDriftPreset on the same data, when ``evidently`` is importable here or in the
    interpreter given by ``--evidently-python`` (it pulls in pandas, scikit-learn, uvloop, ...:
    keep it out of the sidecar's environment). Target: inferwatch >= 50x faster.
(c) Memory: the profile in memory and as JSON, the window (window.max_events x columns).
(d) ``inferwatch profile`` on 1M rows x 100 columns (90 numeric, 10 categorical), as Parquet and
    as CSV: wall time, CPU time and peak RSS of each ``inferwatch profile`` child process.

This prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from inferwatch.config import parse_config  # noqa: E402
from inferwatch.monitors.drift import Evaluator, PreparedReference  # noqa: E402
from inferwatch.ingest.events import EventBatch  # noqa: E402
from inferwatch.reference import build_profile  # noqa: E402
from inferwatch.pipeline.window import Window  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import machine as harness_machine, write_table_files  # noqa: E402

N_NUMERIC, N_CATEGORICAL, N_ROWS = 100, 20, 10_000
CATEGORIES = [f"v{i}" for i in range(12)]


def machine() -> str:
    blas = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or "default"
    return (f"{harness_machine()}, numpy {np.__version__}, BLAS threads {blas}, "
            f"load average {os.getloadavg()[0]:.1f} (shared machine: wall times grow with it)")


def data(n: int, rng: np.random.Generator, shift: float = 0.0) -> dict[str, list | np.ndarray]:
    cols: dict[str, list | np.ndarray] = {}
    for i in range(N_NUMERIC):
        kind = i % 3
        if kind == 0:
            cols[f"n{i}"] = rng.normal(shift, 1.0, n)
        elif kind == 1:
            cols[f"n{i}"] = rng.lognormal(1.0 + shift, 0.5, n)
        else:
            cols[f"n{i}"] = rng.poisson(5.0, n).astype(np.float64)
    p = np.linspace(2, 1, len(CATEGORIES))
    p /= p.sum()
    for i in range(N_CATEGORICAL):
        cols[f"c{i}"] = list(rng.choice(CATEGORIES, n, p=p))
    return cols


def bench_evaluation(args) -> tuple[dict, dict]:
    rng = np.random.default_rng(1)
    ref = data(N_ROWS, rng)
    cur = data(N_ROWS, rng, shift=0.05)
    profile = build_profile({"feature": ref})
    evaluator = Evaluator(PreparedReference.build(profile), parse_config({}).drift)
    window = Window("1", capacity=N_ROWS, max_age_seconds=1e9)
    window.append(EventBatch(N_ROWS, features={k: (list(v) if isinstance(v, np.ndarray) else v)
                                              for k, v in cur.items()}))
    snap_times, eval_times, eval_cpu = [], [], []
    result = None
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        snapshot = window.snapshot()
        t1 = time.perf_counter()
        c1 = time.process_time()
        result = evaluator.evaluate(snapshot)
        c2 = time.process_time()
        t2 = time.perf_counter()
        snap_times.append(t1 - t0)
        eval_times.append(t2 - t1)
        eval_cpu.append(c2 - c1)
    series = sum(len(c.scores) + len(c.p_values) for c in result.features)
    timing = {"evaluate_best_ms": 1000 * min(eval_times), "evaluate_median_ms": 1000 * statistics.median(eval_times),
              "evaluate_cpu_median_ms": 1000 * statistics.median(eval_cpu),
              "snapshot_median_ms": 1000 * statistics.median(snap_times), "features": len(result.features),
              "scores": series}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "reference.json"
        profile.save(path)
        size = path.stat().st_size
    memory = {"profile_bytes": profile.memory_bytes(), "profile_json_bytes": size,
              "window_bytes": window.memory_bytes()}
    return timing, {"memory": memory, "ref": ref, "cur": cur}


EVIDENTLY_SCRIPT = r"""
import json, sys, time
import numpy as np, pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset
d = np.load(sys.argv[1], allow_pickle=True)
ref = pd.DataFrame({k[4:]: d[k] for k in d.files if k.startswith("ref_")})
cur = pd.DataFrame({k[4:]: d[k] for k in d.files if k.startswith("cur_")})
times = []
for _ in range(int(sys.argv[2])):
    t = time.perf_counter()
    Report([DataDriftPreset()]).run(reference_data=ref, current_data=cur)
    times.append(time.perf_counter() - t)
import evidently
print(json.dumps({"best_s": min(times), "median_s": sorted(times)[len(times) // 2], "version": evidently.__version__}))
"""


def bench_evidently(args, ref, cur) -> dict | None:
    python = args.evidently_python
    if python is None:
        try:
            import evidently  # noqa: F401

            python = sys.executable
        except ImportError:
            return None
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "data.npz"
        arrays = {f"ref_{k}": np.asarray(v) for k, v in ref.items()}
        arrays.update({f"cur_{k}": np.asarray(v) for k, v in cur.items()})
        np.savez(npz, **arrays)
        script = Path(tmp) / "ev.py"
        script.write_text(EVIDENTLY_SCRIPT)
        out = subprocess.run([python, str(script), str(npz), str(args.evidently_repeats)], capture_output=True,
                             text=True, timeout=1800)
        if out.returncode != 0:
            print(f"evidently failed:\n{out.stderr[-2000:]}", file=sys.stderr)
            return None
        return json.loads(out.stdout.strip().splitlines()[-1])


def write_inputs(tmp: Path, rows: int, cols: int, n_cat: int) -> dict[str, Path]:
    """A Parquet and a CSV file of rows x cols (n_cat categorical), written in chunks."""
    return write_table_files({"parquet": tmp / "train.parquet", "csv": tmp / "train.csv"}, rows, cols, n_cat)


def bench_profile(args) -> list[dict]:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        print("pyarrow is not installed: skipping the 1M-row profile (pip install 'inferwatch[parquet]')",
              file=sys.stderr)
        return []
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        paths = write_inputs(tmp, args.rows, 100, 10)
        print(f"  wrote inputs in {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
        for fmt in args.formats:
            path = paths[fmt]
            log = tmp / f"profile-{fmt}.log"
            t0 = time.perf_counter()
            with open(log, "wb") as f:
                proc = subprocess.Popen([sys.executable, "-m", "inferwatch", "profile", "--input", str(path),
                                         "--output", str(tmp / f"ref-{fmt}.json")], stdout=f, stderr=subprocess.STDOUT,
                                        env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
                # This child's own peak RSS: RUSAGE_CHILDREN would be the largest of every child so far
                # (the Evidently process among them).
                _, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                print(f"profile failed: {log.read_text()[-2000:]}", file=sys.stderr)
                continue
            out.append({"format": fmt, "size_mb": path.stat().st_size / 1e6, "seconds": wall,
                        "cpu_seconds": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024.0,
                        "rows": args.rows})
            print(f"  {fmt}: {wall:.1f}s", file=sys.stderr, flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--evidently-python", metavar="PYTHON", help="an interpreter that has evidently")
    parser.add_argument("--evidently-repeats", type=int, default=3)
    parser.add_argument("--skip-profile", action="store_true")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--formats", type=lambda s: s.split(","), default=["parquet", "csv"])
    args = parser.parse_args()
    print(f"machine: {machine()}")
    timing, extra = bench_evaluation(args)
    mem = extra["memory"]
    print()
    print(f"| one full evaluation ({N_NUMERIC} numeric + {N_CATEGORICAL} categorical, ref 10k, window 10k) | value |")
    print("|---|---|")
    print(f"| evaluate, best of {args.repeats} | {timing['evaluate_best_ms']:.1f} ms |")
    print(f"| evaluate, median | {timing['evaluate_median_ms']:.1f} ms |")
    print(f"| evaluate, CPU time of the process, median (less sensitive to a busy machine) | "
          f"{timing['evaluate_cpu_median_ms']:.1f} ms |")
    print(f"| window snapshot (copy under the lock), median | {timing['snapshot_median_ms']:.1f} ms |")
    print(f"| scores and p-values computed | {timing['scores']} |")
    ev = bench_evidently(args, extra["ref"], extra["cur"])
    if ev is None:
        print("| Evidently DataDriftPreset | not installed (see --evidently-python) |")
    else:
        ratio = ev["median_s"] * 1000 / timing["evaluate_median_ms"]
        print(f"| Evidently {ev['version']} DataDriftPreset, median of {args.evidently_repeats} | "
              f"{ev['median_s'] * 1000:.0f} ms |")
        print(f"| inferwatch faster by (median / median) | {ratio:.0f}x |")
    print()
    print("| memory | bytes |")
    print("|---|---|")
    print(f"| reference profile in memory (samples, bins, correlation, PCA) | {mem['profile_bytes'] / 1e6:.1f} MB |")
    print(f"| reference profile as JSON | {mem['profile_json_bytes'] / 1e6:.1f} MB |")
    print(f"| window: 10k events x 120 columns | {mem['window_bytes'] / 1e6:.1f} MB |")
    if not args.skip_profile:
        rows = bench_profile(args)
        if rows:
            print()
            print(f"| inferwatch profile, {args.rows:,} rows x 100 columns | input | time | CPU time | peak RSS |")
            print("|---|---|---|---|---|")
            for r in rows:
                print(f"| {r['format']} | {r['size_mb']:.0f} MB | {r['seconds']:.1f} s | {r['cpu_seconds']:.1f} s | "
                      f"{r['peak_rss_mb']:.0f} MB |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
