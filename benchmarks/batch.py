#!/usr/bin/env python
"""Reading tables and `inferwatch batch`: the readers' MB/s against the old reader, and batch rows/s.

    .venv/bin/python benchmarks/batch.py                   # 1M rows x 100 columns: ~10 minutes on 2 busy cores
    .venv/bin/python benchmarks/batch.py --rows 200000     # quicker

Writes rows x 100 columns (89 numbers, 10 categories and a score) as Parquet and CSV, then, each
in a child process of its own (so its peak RSS is its own):

(a) the readers over every chunk of each file, numeric columns to float64 as ``inferwatch profile``
    asks (20,000-row chunks): the reader before issue 18 (``reference/readers.py`` at git HEAD~,
    Python's ``csv`` module), the standard-library fallback of ``ingest/tables.py`` and its
    pyarrow path (the default when pyarrow is installed). MB/s is the file's size over the wall
    time, MB/CPU s over the reading process's CPU time (the per-core rate on a busy machine).
(b) ``inferwatch batch`` (``BatchRun``: read, window, input guard, outputs, drift at the end) on
    the Parquet file against a profile of the same data, in rows/s.

(c) ``inferwatch batch --engine dask`` (``DaskBatchRun``) on the same file and profile, on a
    two-worker LocalCluster started in its child first (its start is printed apart): rows/s, the
    driver's merge overhead (adding the partitions' counters and joining their tails, then
    feeding the joined window and evaluating it) and the peak RSS of the driver and of each worker.

``--batch-only`` runs (b) and (c) alone. On a shared 2-core machine wall times are noisy (the load
average is printed). This prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import machine_load, run_child_json, write_table_files  # noqa: E402

OLD_READER_COMMIT = "4a4ab67"   # the last commit before ingest/tables.py: readers.py parsed CSV in Python


def write_inputs(tmp: Path, rows: int, cols: int, n_cat: int) -> dict[str, Path]:
    """A Parquet and a CSV file of the same rows, the last column a score."""
    return write_table_files({"parquet": tmp / "scored.parquet", "csv": tmp / "scored.csv"}, rows, cols, n_cat,
                             score=True)


def _old_reader(tmp: Path):
    """``iter_file_chunks`` of the reader before issue 18, loaded from git as a module of its own."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{OLD_READER_COMMIT}:src/inferwatch/reference/readers.py"],
                            capture_output=True, text=True, check=True).stdout
    source = source.replace("from .builder import", "from inferwatch.reference.builder import") \
                   .replace("from .format import", "from inferwatch.reference.format import")
    path = tmp / "old_readers.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_readers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.iter_file_chunks


def child(args: argparse.Namespace) -> int:
    """One measurement in this process: prints seconds, rows and peak RSS as JSON."""
    numeric = lambda name: name.startswith("x") or name == "score"  # noqa: E731
    # Imports before the clock: pyarrow alone takes about a second to import.
    from inferwatch.batch import BatchOptions, BatchRun
    from inferwatch.config import load_config
    from inferwatch.ingest.tables import iter_table_chunks

    if args.child == "batch-dask":
        return child_dask(args)
    old_reader = _old_reader(Path(args.tmp)) if args.child == "old" else None
    rows = 0
    t0, cpu0 = time.perf_counter(), time.process_time()
    if args.child == "batch":
        cfg = load_config(None, {"model.name": "bench", "model.version": "1", "upstream.url": "http://127.0.0.1:9",
                                 "reference.path": args.reference})
        run = BatchRun(cfg, BatchOptions(args.input, batch_id="bench", prediction_columns={"score": "score"}))
        rows = run.run().rows
    elif old_reader is not None:
        for chunk in old_reader(args.input, chunk_rows=20_000, numeric=numeric):
            rows += len(next(iter(chunk.values())))
    else:
        for c in iter_table_chunks(args.input, chunk_rows=20_000, numeric=numeric, engine=args.child):
            rows += c.rows
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "rows": rows,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    return 0


def child_dask(args: argparse.Namespace) -> int:
    """``batch --engine dask`` on a two-worker LocalCluster: prints its figures as JSON."""
    import logging

    from distributed import Client, LocalCluster

    from inferwatch.batch import BatchOptions
    from inferwatch.batch_dask import DaskBatchRun
    from inferwatch.config import load_config

    def peak_rss_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    t0 = time.perf_counter()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        client.run(lambda: __import__("inferwatch.batch_dask"))   # imports before the clock, as in one process
        start_seconds = time.perf_counter() - t0
        cfg = load_config(None, {"model.name": "bench", "model.version": "1", "upstream.url": "http://127.0.0.1:9",
                                 "reference.path": args.reference})
        run = DaskBatchRun(cfg, BatchOptions(args.input, batch_id="bench", prediction_columns={"score": "score"}),
                           client)
        t1, cpu1 = time.perf_counter(), time.process_time()
        rows = run.run().rows
        seconds, cpu = time.perf_counter() - t1, time.process_time() - cpu1
        workers = sorted(client.run(peak_rss_mb).values())
    s = run.stats
    print(json.dumps({"seconds": seconds, "driver_cpu_seconds": cpu, "rows": rows, "start_seconds": start_seconds,
                      "pieces": s.pieces, "workers": s.workers, "plan_seconds": s.plan_seconds,
                      "partitions_seconds": s.partitions_seconds, "merge_seconds": s.merge_seconds,
                      "tail_seconds": s.tail_seconds, "tail_rows": s.tail_rows,
                      "peak_rss_mb": peak_rss_mb(), "worker_peak_rss_mb": workers}))
    return 0


def measure(kind: str, path: Path, tmp: Path, reference: Path | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--input", str(path), "--tmp", str(tmp)]
    if reference is not None:
        cmd += ["--reference", str(reference)]
    return run_child_json(cmd, f"{kind} on {path.name}",
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1",
                               "OPENBLAS_NUM_THREADS": "1"})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--cols", type=int, default=100)
    parser.add_argument("--skip-old", action="store_true", help="leave out the old reader (slow on CSV)")
    parser.add_argument("--batch-only", action="store_true", help="only inferwatch batch: one process and Dask")
    parser.add_argument("--child", choices=["old", "python", "arrow", "batch", "batch-dask"], help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    parser.add_argument("--reference", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    print(f"machine: {machine_load()}")
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        t0 = time.perf_counter()
        paths = write_inputs(tmp, args.rows, args.cols, 10)
        sizes = {fmt: p.stat().st_size / 1e6 for fmt, p in paths.items()}
        print(f"input: {args.rows:,} rows x {args.cols} columns; Parquet {sizes['parquet']:.0f} MB, CSV "
              f"{sizes['csv']:.0f} MB (written in {time.perf_counter() - t0:.0f} s)")
        if not args.batch_only:
            print()
            print(f"{'reader':<34} {'format':<8} {'seconds':>8} {'MB/s':>7} {'CPU s':>7} {'MB/CPU s':>9} "
                  f"{'rows/s':>10} {'peak RSS MB':>12}")
        readers = [("old", "before issue 18 (Python csv)"), ("python", "ingest.tables, standard library"),
                   ("arrow", "ingest.tables, pyarrow (default)")]
        for fmt in ("csv", "parquet") if not args.batch_only else ():
            for kind, label in readers:
                if kind == "old" and args.skip_old:
                    continue
                if fmt == "parquet" and kind == "python":
                    continue  # Parquet has one reader (pyarrow's) either way
                r = measure(kind, paths[fmt], tmp)
                assert r["rows"] == args.rows, r
                print(f"{label:<34} {fmt:<8} {r['seconds']:>8.1f} {sizes[fmt] / r['seconds']:>7.1f} "
                      f"{r['cpu_seconds']:>7.1f} {sizes[fmt] / r['cpu_seconds']:>9.1f} "
                      f"{r['rows'] / r['seconds']:>10,.0f} {r['peak_rss_mb']:>12.0f}", flush=True)

        from inferwatch.reference import build_profile_from_file

        reference = tmp / "reference.json"
        build_profile_from_file(str(paths["parquet"]), prediction_columns={"score": "score"},
                                progress=False).save(reference)
        r = measure("batch", paths["parquet"], tmp, reference)
        d = measure("batch-dask", paths["parquet"], tmp, reference)
        assert r["rows"] == d["rows"] == args.rows, (r, d)
        merge = d["merge_seconds"] + d["tail_seconds"]
        print()
        print(f"inferwatch batch, Parquet       {'seconds':>8} {'rows/s':>10} {'merge s':>8} {'peak RSS MB':>12}  ")
        print(f"{'one process':<31} {r['seconds']:>8.1f} {r['rows'] / r['seconds']:>10,.0f} {'-':>8} "
              f"{r['peak_rss_mb']:>12.0f}  ({r['cpu_seconds']:.1f} CPU s)")
        print(f"{'dask, 2-worker LocalCluster':<31} {d['seconds']:>8.1f} {d['rows'] / d['seconds']:>10,.0f} "
              f"{merge:>8.2f} {d['peak_rss_mb']:>12.0f}  (driver; workers "
              f"{' / '.join(f'{w:.0f}' for w in d['worker_peak_rss_mb'])} MB)")
        print(f"  dask: {d['pieces']} partitions on {d['workers']} workers; planning {d['plan_seconds']:.2f} s, "
              f"partitions {d['partitions_seconds']:.1f} s, merging counters and tails {d['merge_seconds']:.2f} s, "
              f"the joined window ({d['tail_rows']:,} rows) fed and evaluated {d['tail_seconds']:.2f} s; "
              f"cluster start {d['start_seconds']:.1f} s (not counted)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
