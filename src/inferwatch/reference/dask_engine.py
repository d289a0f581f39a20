"""``inferwatch profile --engine dask``: the two passes of a profile on a Dask cluster.

The driver (this process) plans the columns and the pieces (``distributed``), maps the pieces to
builder states on the workers, merges the states as they arrive (one at a time: the driver holds
the merged state and one more), freezes the bins, ships the edges to the workers and adds up the
bin counts of a second distributed pass. Dask is an optional extra (``inferwatch[dask]``); the
serving path never imports this module.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from inferwatch.ingest.tables import detect_format, expand_sources
from .builder import DEFAULT_BINS, DEFAULT_SAMPLE_SIZE, DEFAULT_TOP_K, ProfileBuilder
from .distributed import PIECE_ROWS, Piece, count_file_rows, count_piece, observe_piece, parquet_pieces
from .format import ReferenceProfile
from .readers import plan_columns

CONNECT_TIMEOUT = 5.0  # seconds: a scheduler that cannot be reached is an error, not a hang
WORKER_WAIT = 60.0  # seconds a reachable scheduler may take to have its first worker


@dataclass
class DaskRun:
    """What a distributed profile cost, for the progress line and the benchmark."""

    workers: int = 0
    pieces: int = 0
    plan_seconds: float = 0.0
    observe_seconds: float = 0.0
    merge_seconds: float = 0.0  # driver time spent merging states (inside observe_seconds)
    count_seconds: float = 0.0


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise RuntimeError("--engine dask needs dask.distributed: pip install 'inferwatch[dask]'") from None
    return distributed


@contextmanager
def dask_client(scheduler: str | None = None, *, workers: int | None = None,
                timeout: float = CONNECT_TIMEOUT) -> Iterator[Any]:
    """A client of the scheduler at ``scheduler``, or of a LocalCluster of ``workers`` processes
    (one thread each; default: one per CPU) started here and stopped on exit."""
    distributed = _distributed()
    if scheduler:
        try:
            client = distributed.Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise RuntimeError(f"cannot reach the Dask scheduler at {scheduler} within {timeout:g} s: {exc}") from None
        try:
            try:
                client.wait_for_workers(1, timeout=WORKER_WAIT)
            except (OSError, TimeoutError):
                raise RuntimeError(f"the Dask scheduler at {scheduler} has had no worker for {WORKER_WAIT:g} s") \
                    from None
            yield client
        finally:
            client.close()
        return
    cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       dashboard_address=":0", silence_logs=logging.ERROR)
    try:
        with distributed.Client(cluster) as client:
            yield client
    finally:
        cluster.close()


def _file_layout(path: str, fmt: str, piece_rows: int, count: bool) -> tuple[int, list[Piece]]:
    """(rows, pieces numbered from 0) of one file; a text file is counted only when ``count``."""
    if fmt == "parquet":
        pieces = parquet_pieces(path, 0, piece_rows)
        return sum(p.rows or 0 for p in pieces), pieces
    return (count_file_rows(path, fmt) if count else 0), [Piece(path, fmt, 0)]


def plan_pieces(client: Any, paths: list[str], fmt: str | None, piece_rows: int = PIECE_ROWS) -> list[Piece]:
    """Every file's pieces, numbered as one input: footers give a Parquet file's rows; CSV and JSON
    lines files before the last are counted on the workers first (one more read of those)."""
    fmts = [fmt or detect_format(p) for p in paths]
    layouts = client.gather(client.map(_file_layout, paths, fmts, [piece_rows] * len(paths),
                                       [i < len(paths) - 1 for i in range(len(paths))], pure=False))
    pieces: list[Piece] = []
    offset = 0
    for rows, file_pieces in layouts:
        pieces += [dataclasses.replace(p, first_row=p.first_row + offset) for p in file_pieces]
        offset += rows
    return pieces


def profile_with_dask(client: Any, source: str, *, fmt: str | None = None, features: list[str] | None = None,
                      categorical: Iterable[str] = (), numeric: Iterable[str] = (),
                      prediction_columns: dict[str, str] | None = None, label_column: str | None = None,
                      sample_size: int = DEFAULT_SAMPLE_SIZE, bins: int = DEFAULT_BINS, top_k: int = DEFAULT_TOP_K,
                      chunk_rows: int = 20_000, seed: int = 0,
                      piece_rows: int = PIECE_ROWS) -> tuple[ReferenceProfile, DaskRun]:
    """The profile of ``source`` (a file or a glob) computed on the cluster behind ``client``:
    the same profile as ``build_profile_from_file`` on the same rows (docs/reference-profile.md)."""
    distributed = _distributed()
    run = DaskRun(workers=len(client.scheduler_info(n_workers=-1)["workers"]))
    start = time.perf_counter()
    paths = expand_sources(source)
    plan = plan_columns(paths[0], fmt=fmt, features=features, categorical=categorical, numeric=numeric,
                        prediction_columns=prediction_columns, label_column=label_column,
                        sample_size=sample_size, bins=bins, top_k=top_k, seed=seed)
    pieces = plan_pieces(client, paths, fmt, piece_rows)
    run.pieces = len(pieces)
    plan_future = client.scatter(plan, broadcast=True)
    run.plan_seconds = time.perf_counter() - start

    start = time.perf_counter()
    merged: ProfileBuilder | None = None
    futures = client.map(observe_piece, pieces, plan=plan_future, chunk_rows=chunk_rows, pure=False)
    for future in distributed.as_completed(futures):
        state = future.result()
        future.release()
        began = time.perf_counter()
        merged = state if merged is None else merged.merge(state)
        run.merge_seconds += time.perf_counter() - began
    del futures
    assert merged is not None  # plan_columns refused an input without rows
    merged.freeze()
    run.observe_seconds = time.perf_counter() - start

    start = time.perf_counter()
    if merged.needs_second_pass:
        edges = client.scatter(merged.bin_edges(), broadcast=True)
        futures = client.map(count_piece, pieces, plan=plan_future, edges=edges, chunk_rows=chunk_rows, pure=False)
        for future in distributed.as_completed(futures):
            merged.add_bin_counts(future.result())
            future.release()
    run.count_seconds = time.perf_counter() - start
    return merged.build(source=os.path.basename(source)), run
