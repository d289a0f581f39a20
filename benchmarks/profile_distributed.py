#!/usr/bin/env python
"""`inferwatch profile` in one process vs on a two-worker Dask LocalCluster.

    .venv/bin/python benchmarks/profile_distributed.py               # 1M rows x 100 columns, a few minutes
    .venv/bin/python benchmarks/profile_distributed.py --rows 200000 # quicker

Writes 1M rows x 100 columns (90 numeric, 10 categorical) of Parquet in row groups of 100k rows,
then profiles it (a) with ``build_profile_from_file`` in one process and (b) with
``profile_with_dask`` against a LocalCluster (2 worker processes, 1 thread each) started by this
script. Each driver runs in its own child process so its peak RSS is its own (RUSAGE_SELF); the
workers' peak RSS is asked of the workers. The cluster's start-up is timed apart. Both profiles
are compared (every statistic, tests/profile_equality.py).

On a machine with 2 shared cores, two workers cannot beat one process: the figure to read is the
overhead (planning, shipping states, merging) and the driver's memory, which no longer holds the
data. This prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import machine_load, run_child_json, write_table_files  # noqa: E402


def driver(args: argparse.Namespace) -> int:
    """A child: profile one way, write the profile, print timings and this process's peak RSS."""
    t0 = time.perf_counter()
    if args.driver == "local":
        from inferwatch.reference import build_profile_from_file

        profile = build_profile_from_file(args.input, progress=False)
        run: dict = {}
    else:
        from distributed import Client

        from inferwatch.reference.dask_engine import profile_with_dask

        with Client(args.scheduler) as client:
            profile, stats = profile_with_dask(client, args.input)
        run = dict(vars(stats))
    wall = time.perf_counter() - t0
    profile.save(args.output)
    print(json.dumps({"seconds": wall, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      **run}))
    return 0


def run_driver(kind: str, path: Path, out: Path, scheduler: str = "") -> dict:
    cmd = [sys.executable, __file__, "--driver", kind, "--input", str(path), "--output", str(out)]
    if scheduler:
        cmd += ["--scheduler", scheduler]
    return run_child_json(cmd, f"{kind} driver", env={**os.environ, "PYTHONPATH": str(ROOT / "src")})


def _worker_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--cols", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--driver", choices=["local", "dask"], help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--scheduler", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.driver:
        return driver(args)

    import logging

    from distributed import Client, LocalCluster

    from inferwatch.reference import ReferenceProfile
    from profile_equality import assert_same_profile

    print(f"machine: {machine_load()}")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        path = d / "train.parquet"
        t0 = time.perf_counter()
        write_table_files({"parquet": path}, args.rows, args.cols, 10)
        print(f"input: {args.rows:,} rows x {args.cols} columns, {path.stat().st_size / 1e6:.0f} MB Parquet, "
              f"row groups of 100k (written in {time.perf_counter() - t0:.0f} s)")
        local = run_driver("local", path, d / "local.json")
        t0 = time.perf_counter()
        with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                          silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
            started = time.perf_counter() - t0
            dask = run_driver("dask", path, d / "dask.json", cluster.scheduler_address)
            workers_rss = client.run(_worker_peak_rss_mb)
        try:
            assert_same_profile(ReferenceProfile.load(d / "dask.json"), ReferenceProfile.load(d / "local.json"))
            same = "yes (every statistic; mean/std to 1e-9 relative)"
        except AssertionError as exc:
            same = f"NO: {exc}"
    rows = args.rows
    print()
    print("| | one process | Dask LocalCluster, %d workers x 1 thread |" % args.workers)
    print("|---|---|---|")
    print(f"| wall time of the profile | {local['seconds']:.1f} s | {dask['seconds']:.1f} s "
          f"(+ {started:.1f} s to start the cluster) |")
    print(f"| rows/s | {rows / local['seconds']:,.0f} | {rows / dask['seconds']:,.0f} |")
    print(f"| planning (footers, column kinds, scatter) | - | {dask['plan_seconds']:.2f} s |")
    print(f"| pass 1 on the workers incl. merging | - | {dask['observe_seconds']:.1f} s over {dask['pieces']} pieces |")
    print(f"| merging states on the driver | - | {dask['merge_seconds']:.2f} s "
          f"({100 * dask['merge_seconds'] / dask['seconds']:.1f}% of the wall time) |")
    print(f"| pass 2 (bin counts) | - | {dask['count_seconds']:.1f} s |")
    print(f"| driver peak RSS | {local['peak_rss_mb']:.0f} MB | {dask['peak_rss_mb']:.0f} MB |")
    print(f"| worker peak RSS | - | {', '.join(f'{v:.0f} MB' for v in workers_rss.values())} |")
    print(f"| same profile | | {same} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
