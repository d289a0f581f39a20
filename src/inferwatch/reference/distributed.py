"""Profiling in partitions, for any engine: the plan, the pieces and the two passes over a piece.

A distributed profile is the single-process one cut into pieces (docs/reference-profile.md,
"Profiles on a cluster"): ``readers.plan_columns`` decides the columns and kinds once, on the
driver, from the first rows (the function ``build_profile_from_file`` plans with);
``plan_pieces`` cuts the input into pieces that know the position of their first row (a whole
CSV or JSON lines file, or a run of Parquet row groups); ``observe_piece`` turns a piece into a builder state on a worker, the
driver merges the states and freezes the bins, and ``count_piece`` counts a piece's bins in the
second pass. Everything here is plain functions of picklable values, so Dask, Spark or Ray can
ship them; ``dask_engine`` is the Dask driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np

from .builder import BinEdges, ProfileBuilder, count_rows, merge_bin_counts
from .readers import ColumnPlan, iter_file_chunks

PIECE_ROWS = 250_000  # Parquet row groups are grouped into pieces of about this many rows


@dataclass(frozen=True)
class Piece:
    """Rows ``first_row ..`` of the whole input: a file, or some row groups of a Parquet file."""

    path: str
    fmt: str
    first_row: int
    row_groups: tuple[int, ...] | None = None  # Parquet only; None: the whole file
    rows: int | None = None  # when known before reading (Parquet footers)


def parquet_pieces(path: str, first_row: int, piece_rows: int = PIECE_ROWS) -> list[Piece]:
    """Runs of whole row groups of about ``piece_rows`` rows, numbered from the footer alone."""
    meta = _parquet_file(path).metadata
    pieces: list[Piece] = []
    groups: list[int] = []
    start = rows = 0
    for i in range(meta.num_row_groups):
        if groups and rows + meta.row_group(i).num_rows > piece_rows:
            pieces.append(Piece(path, "parquet", first_row + start, tuple(groups), rows))
            start, groups, rows = start + rows, [], 0
        groups.append(i)
        rows += meta.row_group(i).num_rows
    if groups:
        pieces.append(Piece(path, "parquet", first_row + start, tuple(groups), rows))
    return pieces


def _parquet_file(path: str) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise RuntimeError("reading Parquet needs pyarrow: pip install 'inferwatch[parquet]'") from None
    if "://" in path:  # object storage, through fsspec (as ingest.tables opens it)
        import fsspec

        return pq.ParquetFile(fsspec.open(path, "rb").open(), pre_buffer=False)
    # Without pre_buffer=False Arrow reads ahead whole row groups (see ingest.tables).
    return pq.ParquetFile(path, pre_buffer=False)


def count_file_rows(path: str, fmt: str) -> int:
    """The rows of one file (for the first row numbers of the files after it)."""
    return sum(count_rows(chunk) for chunk in iter_file_chunks(path, fmt=fmt, chunk_rows=50_000))


def read_piece(piece: Piece, plan: ColumnPlan, chunk_rows: int) -> Iterator[Any]:
    """The piece's chunks as the single-process reader gives them (``frame_columns`` of each)."""
    if piece.fmt != "parquet" or piece.row_groups is None:
        yield from iter_file_chunks(piece.path, fmt=piece.fmt, chunk_rows=chunk_rows, numeric=plan.is_numeric)
        return
    pf = _parquet_file(piece.path)
    wanted = [n for n in pf.schema_arrow.names if plan.input_kind(n) is not None]
    yield from pf.iter_batches(batch_size=chunk_rows, row_groups=list(piece.row_groups), columns=wanted)


def frame_columns(frame: Any) -> dict[str, Any]:
    """``{column: values}`` of what an engine hands a partition function: a pyarrow Table or
    RecordBatch (numbers to float64, the rest to Python values, as ``ingest.tables`` reads
    Parquet), a pandas DataFrame (Spark's ``mapInPandas``, Ray's ``batch_format="pandas"``) or
    a mapping of arrays (Ray's ``batch_format="numpy"``)."""
    if hasattr(frame, "schema") and hasattr(frame, "num_rows"):
        import pyarrow as pa

        columns: dict[str, Any] = {}
        for name, column in zip(frame.schema.names, frame.columns):
            if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
                columns[name] = column.to_numpy(zero_copy_only=False).astype(np.float64)
            else:
                columns[name] = column.to_pylist()  # a numeric one: to float64 in the builder, alike
        return columns
    if hasattr(frame, "columns") and hasattr(frame, "to_numpy"):  # pandas: NaN and None are both missing
        return {str(name): frame[name].to_numpy() for name in frame.columns}
    return dict(frame)


def observe_frames(plan: ColumnPlan, frames: Iterable[Any], row_offset: int) -> ProfileBuilder:
    """Pass 1 of one partition: its builder state, its rows numbered from ``row_offset`` (the
    position of its first row in the whole input gives the single-process sample; any ids
    disjoint from the other partitions' give another uniform sample)."""
    builder = plan.builder()
    offset: int | None = row_offset
    for frame in frames:
        builder.observe(plan.select(frame_columns(frame)), row_offset=offset)
        offset = None  # the next frames follow on
    return builder


def count_frames(plan: ColumnPlan, edges: BinEdges, frames: Iterable[Any]) -> dict[tuple[str, str], np.ndarray]:
    """Pass 2 of one partition: its bin counts under the merged state's fixed edges."""
    return merge_bin_counts(edges.count(plan.select(frame_columns(frame))) for frame in frames)


def observe_piece(piece: Piece, plan: ColumnPlan, chunk_rows: int = 20_000) -> ProfileBuilder:
    """Pass 1 on a worker: the piece's builder state, its rows numbered from ``piece.first_row``."""
    return observe_frames(plan, read_piece(piece, plan, chunk_rows), piece.first_row)


def count_piece(piece: Piece, plan: ColumnPlan, edges: BinEdges,
                chunk_rows: int = 20_000) -> dict[tuple[str, str], np.ndarray]:
    """Pass 2 on a worker: the piece's bin counts under the merged state's fixed edges."""
    return count_frames(plan, edges, read_piece(piece, plan, chunk_rows))
