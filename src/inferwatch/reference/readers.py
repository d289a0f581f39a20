"""Reading training data files into a reference profile: CSV, JSON lines and Parquet, in chunks.

``iter_file_chunks`` reads CSV, JSON lines (push events are flattened) and Parquet (with
pyarrow) as chunks of ``{column: values}``, decompressing .gz/.bz2/.xz; ``build_profile_from_file``
infers the column kinds from the first rows and streams the chunks through a ``ProfileBuilder``
(twice when the file exceeds the sample), for ``inferwatch profile``.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

import numpy as np

from inferwatch.ingest.events import rows_to_columns
from inferwatch.ingest.values import MISSING_TOKENS, Kind, infer_text_kind, to_float_array
from .builder import DEFAULT_BINS, DEFAULT_SAMPLE_SIZE, DEFAULT_TOP_K, ProfileBuilder, count_rows
from .format import ReferenceProfile, Role


def detect_format(path: str) -> str:
    name = path.lower()
    for suffix in (".gz", ".bz2", ".xz"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if name.endswith(".parquet") or name.endswith(".pq"):
        return "parquet"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    return "csv"


def _open_text(path: str) -> IO[str]:
    """A text stream, decompressing .gz, .bz2 and .xz (the suffixes ``detect_format`` strips)."""
    import bz2
    import gzip
    import lzma

    openers: dict[str, Callable[..., IO[str]]] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
    opener = openers.get(Path(path.lower()).suffix)
    if opener is not None:
        return opener(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


class _Progress:
    """A one-line progress report on a terminal (stderr), at most a few times a second."""

    def __init__(self, label: str, total_bytes: int, enabled: bool | None = None):
        self.label = label
        self.total = total_bytes
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.last = 0.0
        self.start = time.monotonic()

    def update(self, rows: int, done_bytes: int, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < 0.25:
            return
        self.last = now
        pct = f" {100.0 * done_bytes / self.total:5.1f}%" if self.total else ""
        rate = rows / max(now - self.start, 1e-9)
        sys.stderr.write(f"\r{self.label}:{pct} {rows:,} rows ({rate:,.0f} rows/s)   ")
        sys.stderr.flush()

    def done(self, rows: int) -> None:
        if self.enabled:
            self.update(rows, self.total, force=True)
            sys.stderr.write("\n")
            sys.stderr.flush()


def _parse_numeric_strings(values: list[str]) -> np.ndarray:
    arr = np.array(values, dtype=object)
    try:
        return arr.astype(np.float64)
    except (TypeError, ValueError):
        return to_float_array([None if isinstance(v, str) and v.strip().lower() in MISSING_TOKENS else v
                               for v in values])


def iter_file_chunks(path: str, *, fmt: str | None = None, chunk_rows: int = 10_000,
                     numeric: Callable[[str], bool] | None = None,
                     progress: _Progress | None = None) -> Iterator[dict[str, Any]]:
    """Chunks of at most ``chunk_rows`` rows as ``{column: values}``.

    CSV values are strings (numeric columns, as told by ``numeric(name)``, are parsed to
    float64 with missing tokens as NaN); JSON lines values are JSON values (an object with a
    ``features`` object is flattened with its ``prediction``/``outputs`` and ``label``, the
    shape of push events); Parquet columns come through pyarrow.
    """
    fmt = fmt or detect_format(path)
    if fmt == "parquet":
        yield from _iter_parquet(path, chunk_rows, progress)
        return
    with _open_text(path) as f:
        raw = getattr(f, "buffer", None)

        def position() -> int:
            try:
                return raw.tell() if raw is not None else 0
            except (OSError, ValueError):
                return 0

        rows = 0
        if fmt == "csv":
            reader = csv.reader(f)
            try:
                header = next(reader)
            except StopIteration:
                return
            width = len(header)
            while True:
                block = [r for _, r in zip(range(chunk_rows), reader)]
                if not block:
                    break
                block = [r if len(r) == width else (r + [""] * width)[:width] for r in block]
                cols = list(zip(*block))
                chunk: dict[str, Any] = {}
                for name, values in zip(header, cols):
                    if numeric is not None and numeric(name):
                        chunk[name] = _parse_numeric_strings(list(values))
                    else:
                        chunk[name] = [None if v.strip().lower() in MISSING_TOKENS else v for v in values]
                rows += len(block)
                if progress:
                    progress.update(rows, position())
                yield chunk
        elif fmt == "jsonl":
            while True:
                lines = [line for _, line in zip(range(chunk_rows), f)]
                if not lines:
                    break
                records = []
                for line in lines:
                    line = line.strip()
                    if not line:
                        continue
                    obj = json.loads(line)
                    if isinstance(obj, dict):
                        records.append(_flatten_event(obj))
                if records:
                    rows += len(records)
                    if progress:
                        progress.update(rows, position())
                    yield rows_to_columns(records)
        else:
            raise ValueError(f"unknown input format {fmt!r} (csv, jsonl, parquet)")


def _flatten_event(obj: dict[str, Any]) -> dict[str, Any]:
    """A push event (``{"features": {...}, "prediction": ...}``) as one flat record."""
    if not isinstance(obj.get("features"), dict):
        return obj
    row = dict(obj["features"])
    prediction = obj.get("prediction", obj.get("outputs"))
    if isinstance(prediction, dict):
        row.update(prediction)
    elif isinstance(prediction, list):
        row.update({f"prediction_{i}": v for i, v in enumerate(prediction)})
    elif prediction is not None:
        row["prediction"] = prediction
    if "label" in obj:
        row["label"] = obj["label"]
    return row


def _iter_parquet(path: str, chunk_rows: int, progress: _Progress | None) -> Iterator[dict[str, Any]]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise RuntimeError("reading Parquet needs pyarrow: pip install 'inferwatch[parquet]'") from None
    # Without pre_buffer=False Arrow reads ahead whole row groups and peak RSS grows with the
    # file (465 MB at 100k rows, 1.3 GB at 2M, benchmarks/drift.py); with it, it stays flat.
    pf = pq.ParquetFile(path, pre_buffer=False)
    total = pf.metadata.num_rows or 1
    rows = 0
    for batch in pf.iter_batches(batch_size=chunk_rows):
        chunk: dict[str, Any] = {}
        for name, column in zip(batch.schema.names, batch.columns):
            if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
                chunk[name] = column.to_numpy(zero_copy_only=False).astype(np.float64)
            else:
                chunk[name] = column.to_pylist()
        rows += batch.num_rows
        if progress:
            progress.update(rows, int(progress.total * rows / total))
        yield chunk


def _header(path: str, fmt: str, sample_rows: int) -> tuple[list[str], dict[str, list[Any]]]:
    """Column names (file order) and the first rows' values, for type inference."""
    first = next(iter_file_chunks(path, fmt=fmt, chunk_rows=sample_rows), {})
    return list(first), first


def build_profile_from_file(path: str, *, fmt: str | None = None, features: list[str] | None = None,
                            categorical: Iterable[str] = (), numeric: Iterable[str] = (),
                            prediction_columns: dict[str, str] | None = None, label_column: str | None = None,
                            sample_size: int = DEFAULT_SAMPLE_SIZE, bins: int = DEFAULT_BINS,
                            top_k: int = DEFAULT_TOP_K, chunk_rows: int = 20_000, seed: int = 0,
                            progress: bool | None = None) -> ReferenceProfile:
    """Profile a CSV / JSON lines / Parquet file in chunks (two reads when it exceeds the sample).

    ``prediction_columns`` maps an input column to the output name it has in the window (the
    codecs name a scalar prediction ``prediction``). Columns named neither as features, outputs
    nor label are features unless ``features`` lists the features explicitly.
    """
    fmt = fmt or detect_format(path)
    prediction_columns = dict(prediction_columns or {})
    categorical, numeric = set(categorical), set(numeric)
    names, head = _header(path, fmt, 2000)
    if not names:
        raise ValueError(f"{path}: no rows")
    missing = [c for c in [*(features or []), *prediction_columns, *([label_column] if label_column else [])]
               if c not in names]
    if missing:
        raise ValueError(f"{path}: no column(s) {', '.join(missing)} (columns: {', '.join(names[:20])}"
                         f"{' ...' if len(names) > 20 else ''})")
    taken = set(prediction_columns) | ({label_column} if label_column else set())
    feature_names = list(features) if features else [n for n in names if n not in taken]

    def kind(name: str) -> Kind:
        if name in categorical:
            return "categorical"
        if name in numeric:
            return "numeric"
        return infer_text_kind(head.get(name, []))

    kinds = {n: kind(n) for n in [*feature_names, *prediction_columns, *([label_column] if label_column else [])]}
    spec: dict[Role, dict[str, Kind]] = {
        "feature": {n: kinds[n] for n in feature_names},
        "output": {prediction_columns[c]: kinds[c] for c in prediction_columns},
        "label": {label_column: kinds[label_column]} if label_column else {},
    }
    rename = {c: out for c, out in prediction_columns.items()}
    is_numeric = lambda name: kinds.get(name) == "numeric"  # noqa: E731
    builder = ProfileBuilder(spec, sample_size=sample_size, bins=bins, top_k=top_k, seed=seed)
    size = os.path.getsize(path) if os.path.exists(path) else 0

    def chunks(label: str) -> Iterator[dict[str, Any]]:
        bar = _Progress(label, size, progress)
        rows = 0
        for chunk in iter_file_chunks(path, fmt=fmt, chunk_rows=chunk_rows, numeric=is_numeric, progress=bar):
            rows += count_rows(chunk)
            yield {rename.get(k, k): v for k, v in chunk.items() if k in kinds}
        bar.done(rows)

    for chunk in chunks(f"profiling {os.path.basename(path)}"):
        builder.observe(chunk)
    builder.freeze()
    if builder.needs_second_pass:
        for chunk in chunks("counting bins"):
            builder.count_bins(chunk)
    return builder.build(source=os.path.basename(path))
