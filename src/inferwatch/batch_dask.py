"""``inferwatch batch --engine dask``: a scored table's partitions monitored on a Dask cluster.

Each worker reads and decodes its partition (a CSV or JSON lines file, or a run of Parquet row
groups, numbered by its first row in the whole input) and runs it through a ``BatchRun`` of its
own, so every per-row counter (events, the input guard's issue counts, the output histograms,
the reference-bin counters, segment events, labels, the confusion matrix) is counted where the
rows are. It returns those counter families and the partition's *tail*: its last
``window.max_events`` rows and its last ``performance.max_events`` labelled rows. The driver adds
the counters up and concatenates the tails in table order, which gives the rows a single process
ends with in its window and its labelled window; it feeds those rows (under their own ids) to a
``BatchRun`` of its own and evaluates drift, the guard's window ratios and performance on them,
exactly as the single process does. The pushed gauges are the driver's, the pushed counters the
workers' sums (docs/configuration.md, "inferwatch batch", "On a Dask cluster").

Not exactly mergeable, and named in the summary when it can matter:
- duplicates: the guard's duplicate memory is per process, so a row repeating one in an earlier
  partition (or, for the window ratios, before the tail) is not flagged;
- first-come label caps (``limits.max_categories``, ``segments.max_values``, version slots):
  each worker gives its slots to the values it meets first, so once a cap overflows the split
  between named values and ``other`` depends on the partitions;
- a histogram's ``_sum`` is a float sum added in another order (equal to about 1e-12 relative).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric

from inferwatch.batch import BatchError, BatchOptions, BatchRun, BatchSummary, ColumnChoice
from inferwatch.config import Config
from inferwatch.ingest.tables import TableChunk, expand_sources, iter_table_chunks
from inferwatch.reference.dask_engine import plan_pieces
from inferwatch.reference.distributed import PIECE_ROWS, Piece

# Families summed across partitions: they count rows (prometheus_client's types).
ADDITIVE_TYPES = ("counter", "histogram", "summary")
CAVEATS = ("duplicates across partitions are not flagged",
           "first-come label caps are per partition once a cap overflows")


@dataclass
class Tail:
    """Rows of a table by their position in it (``rows``), as the values ``BatchRun.feed`` takes,
    trimmed to the last ``keep_rows`` rows plus the last ``keep_labelled`` labelled ones."""

    keep_rows: int
    keep_labelled: int
    label_column: str | None
    rows: list[int] = field(default_factory=list)
    columns: dict[str, list[Any]] = field(default_factory=dict)

    def add(self, rows: list[int], columns: dict[str, list[Any]]) -> None:
        """Rows after every row held (table order)."""
        self.rows.extend(rows)
        for name, values in columns.items():
            self.columns.setdefault(name, []).extend(values)
        # Trim only once the rows held are twice the bound: a trim costs a pass over them.
        if len(self.rows) > 2 * (self.keep_rows + self.keep_labelled) + 1:
            self.trim()

    def extend(self, other: Tail) -> None:
        self.add(other.rows, other.columns)

    def trim(self) -> None:
        n = len(self.rows)
        keep = np.zeros(n, dtype=bool)
        keep[max(n - self.keep_rows, 0):] = True
        if self.label_column is not None and self.keep_labelled > 0:
            labelled = np.flatnonzero([v is not None for v in self.columns.get(self.label_column, [])])
            keep[labelled[-self.keep_labelled:]] = True
        if keep.all():
            return
        index = np.flatnonzero(keep).tolist()
        self.rows = [self.rows[i] for i in index]
        self.columns = {name: [values[i] for i in index] for name, values in self.columns.items()}

    def chunks(self, source: str, chunk_rows: int) -> Iterator[tuple[TableChunk, list[int]]]:
        """The rows held as chunks of ``chunk_rows``, with their positions."""
        for start in range(0, len(self.rows), chunk_rows):
            stop = min(start + chunk_rows, len(self.rows))
            chunk = TableChunk(source, self.rows[start], stop - start,
                               columns={name: values[start:stop] for name, values in self.columns.items()})
            yield chunk, self.rows[start:stop]


@dataclass
class PartitionResult:
    """What a worker sends back: its rows' counters, its tail and its summary."""

    first_row: int
    counters: list[Metric]
    tail: Tail
    summary: BatchSummary
    seconds: float = 0.0


@dataclass
class DaskBatchStats:
    """What the distributed run cost, for the summary line and the benchmark."""

    workers: int = 0
    pieces: int = 0
    plan_seconds: float = 0.0
    partitions_seconds: float = 0.0   # wall time until every partition's result was in
    merge_seconds: float = 0.0        # driver: adding counters and joining tails
    tail_seconds: float = 0.0         # driver: feeding the tail and evaluating
    tail_rows: int = 0


def _piece_chunks(piece: Piece, file_first_row: int, run: BatchRun) -> Iterator[TableChunk]:
    """The piece's chunks as the single process reads them, rows numbered within the file."""
    o = run.options
    if piece.fmt == "parquet" and piece.row_groups is not None:
        from inferwatch.ingest.tables import iter_parquet_chunks

        yield from iter_parquet_chunks(piece.path, chunk_rows=o.chunk_rows, numeric=run.numeric,
                                       columns=run.read_columns(), row_groups=list(piece.row_groups),
                                       first_row=piece.first_row - file_first_row)
        return
    yield from iter_table_chunks(piece.path, fmt=piece.fmt, chunk_rows=o.chunk_rows, numeric=run.numeric,
                                 columns=run.read_columns(), engine=o.engine)


def run_partition(piece: Piece, file_first_row: int, cfg: Config, options: BatchOptions,
                  choice: ColumnChoice) -> PartitionResult:
    """On a worker: one partition through a ``BatchRun`` of its own (never evaluated: drift and
    performance are the driver's, on the joined tails)."""
    began = time.perf_counter()
    # No port is opened here either: the sidecar's warnings about its write endpoints do not apply.
    logging.getLogger("inferwatch.sidecar").setLevel(logging.ERROR)
    run = BatchRun(cfg, options)
    run.choose(choice)
    tail = Tail(run.cfg.window.max_events, run.cfg.performance.max_events if options.label_column else 0,
                options.label_column)
    row = piece.first_row
    columns = run.read_columns()
    for chunk in _piece_chunks(piece, file_first_row, run):
        if chunk.error is not None:
            run.bad_chunk(chunk)
        else:
            rows = list(range(row, row + chunk.rows))
            run.feed(chunk, rows=rows)
            # A column a chunk lacks is held as missing values, so the tail's columns stay aligned.
            tail.add(rows, {name: chunk.values(name) if name in chunk.columns else [None] * chunk.rows
                            for name in columns})
        row += chunk.rows
    tail.trim()
    counters = [f for f in run.families() if f.type in ADDITIVE_TYPES]
    return PartitionResult(piece.first_row, counters, tail, run.summary, time.perf_counter() - began)


def add_counters(into: dict[str, Metric], families: list[Metric]) -> None:
    """Add ``families``' samples into ``into`` (by family, sample name and labels); ``_created``
    samples keep the earliest time."""
    for family in families:
        total = into.get(family.name)
        if total is None:
            total = Metric(family.name, family.documentation, family.type, family.unit)
            into[family.name] = total
        index = {(s.name, tuple(sorted(s.labels.items()))): i for i, s in enumerate(total.samples)}
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            i = index.get(key)
            if i is None:
                index[key] = len(total.samples)
                total.samples.append(s)
            elif s.name.endswith("_created"):
                total.samples[i] = total.samples[i]._replace(value=min(total.samples[i].value, s.value))
            else:
                total.samples[i] = total.samples[i]._replace(value=total.samples[i].value + s.value)


class DaskBatchRun:
    """``inferwatch batch`` with the partitions on the cluster behind ``client`` and the window's
    evaluation on the driver; ``families()``, ``summary`` and ``driver`` (the driver's
    ``BatchRun``, for the report) as a single-process ``BatchRun`` has them."""

    def __init__(self, cfg: Config, options: BatchOptions, client: Any, *, piece_rows: int = PIECE_ROWS,
                 registry: CollectorRegistry | None = None):
        self.client = client
        self.piece_rows = piece_rows
        self.driver = BatchRun(cfg, options, registry)
        self.cfg, self.options = self.driver.cfg, options
        self.stats = DaskBatchStats()
        self._counters: dict[str, Metric] = {}

    @property
    def summary(self) -> BatchSummary:
        return self.driver.summary

    @property
    def version(self) -> str:
        return self.driver.version

    def run(self) -> BatchSummary:
        start = time.monotonic()
        o, driver, client = self.options, self.driver, self.client
        self.stats.workers = len(client.scheduler_info(n_workers=-1)["workers"])
        began = time.perf_counter()
        driver.plan_from_head()
        paths = expand_sources(o.source)
        pieces = plan_pieces(client, paths, o.fmt, self.piece_rows)
        file_first: dict[str, int] = {}   # a file's first row in the table
        for piece in pieces:
            file_first.setdefault(piece.path, piece.first_row)
        self.stats.pieces = len(pieces)
        shipped = client.scatter([self.cfg, o, driver.choice()], broadcast=True)
        self.stats.plan_seconds = time.perf_counter() - began

        began = time.perf_counter()
        futures = client.map(run_partition, pieces, [file_first[p.path] for p in pieces],
                             cfg=shipped[0], options=shipped[1], choice=shipped[2], pure=False)
        tail = Tail(self.cfg.window.max_events, self.cfg.performance.max_events if o.label_column else 0,
                    o.label_column)
        summary = driver.summary
        merge = 0.0
        # In table order, so the tails join in order; each result is released once merged.
        for piece, future in zip(pieces, futures):
            try:
                part: PartitionResult = future.result()
            except BatchError:
                for f in futures:
                    f.cancel()
                raise
            future.release()
            t = time.perf_counter()
            add_counters(self._counters, part.counters)
            tail.extend(part.tail)
            summary.rows += part.summary.rows
            summary.chunks += part.summary.chunks
            summary.labels += part.summary.labels
            summary.bad_chunks += part.summary.bad_chunks
            summary.bad_rows += part.summary.bad_rows
            merge += time.perf_counter() - t
        del futures
        tail.trim()
        self.stats.merge_seconds = merge
        self.stats.partitions_seconds = time.perf_counter() - began - merge

        began = time.perf_counter()
        self.stats.tail_rows = len(tail.rows)
        rows, chunks, labels = summary.rows, summary.chunks, summary.labels
        for chunk, positions in tail.chunks(o.source, o.chunk_rows):
            driver.feed(chunk, rows=positions)
        summary.rows, summary.chunks, summary.labels = rows, chunks, labels   # the tail is not counted twice
        driver.evaluate()
        self.stats.tail_seconds = time.perf_counter() - began
        summary.seconds = time.monotonic() - start
        return summary

    def families(self) -> list[Metric]:
        """The driver's gauges (evaluated on the joined tail) and the partitions' summed counters."""
        out: list[Metric] = []
        for family in self.driver.families():
            if family.type in ADDITIVE_TYPES:
                summed = self._counters.get(family.name)
                if summed is not None:
                    out.append(summed)
            else:
                out.append(family)
        seen = {f.name for f in out}
        out += [f for name, f in self._counters.items() if name not in seen]
        return out

    def caveats(self) -> list[str]:
        """What may differ from a single process on this input (module docstring)."""
        return list(CAVEATS) if self.stats.pieces > 1 else []


def summary_line(stats: DaskBatchStats) -> str:
    return (f"dask: {stats.pieces} partitions on {stats.workers} workers; merging took "
            f"{stats.merge_seconds:.2f} s, the window's {stats.tail_rows:,} rows {stats.tail_seconds:.2f} s "
            f"on the driver")

