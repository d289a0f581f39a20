"""Reading training data files into a reference profile: CSV, JSON lines and Parquet, in chunks.

``iter_file_chunks`` reads CSV, JSON lines (push events are flattened) and Parquet (with
pyarrow) as chunks of ``{column: values}``, decompressing .gz/.bz2/.xz; ``build_profile_from_file``
infers the column kinds from the first rows and streams the chunks through a ``ProfileBuilder``
(twice when the file exceeds the sample), for ``inferwatch profile``.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from inferwatch.ingest.tables import expand_sources, iter_table_chunks
from inferwatch.ingest.values import Kind, infer_text_kind
from .builder import DEFAULT_BINS, DEFAULT_SAMPLE_SIZE, DEFAULT_TOP_K, ProfileBuilder, count_rows
from .format import ReferenceProfile, Role

_HEAD_ROWS = 2000  # rows the column kinds are inferred from


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


def iter_file_chunks(path: str, *, fmt: str | None = None, chunk_rows: int = 10_000,
                     numeric: Callable[[str], bool] | None = None, progress: _Progress | None = None,
                     engine: str = "auto") -> Iterator[dict[str, Any]]:
    """Chunks of at most ``chunk_rows`` rows as ``{column: values}`` (``ingest.tables``: a path, a
    glob or an fsspec URL; pyarrow's parsers when installed, else the standard library's).

    Columns told numeric by ``numeric(name)`` are float64 with missing cells as NaN; CSV values
    are otherwise strings; JSON lines values are JSON values (an object with a ``features``
    object is flattened with its ``prediction``/``outputs`` and ``label``, the shape of push
    events); Parquet number columns are float64. A chunk that does not parse is an error here
    (a reference is built from all of its rows or not at all).
    """
    rows = 0
    earlier_files, source, size = 0, "", 0  # bytes of the files of a glob already read, for progress
    for chunk in iter_table_chunks(path, fmt=fmt, chunk_rows=chunk_rows, numeric=numeric, engine=engine):
        if chunk.error is not None:
            raise ValueError(f"{chunk.where()}: cannot parse: {chunk.error}")
        if chunk.source != source:
            earlier_files, source, size = earlier_files + size, chunk.source, chunk.size
        rows += chunk.rows
        if progress:
            progress.update(rows, earlier_files + min(chunk.position, chunk.size or chunk.position))
        yield chunk.columns


def _header(path: str, fmt: str | None, sample_rows: int, engine: str = "auto") -> tuple[list[str], dict[str, list[Any]]]:
    """Column names (file order) and the first rows' values, for type inference."""
    first = next(iter_file_chunks(path, fmt=fmt, chunk_rows=sample_rows, engine=engine), {})
    return list(first), first


@dataclass(frozen=True)
class ColumnPlan:
    """The builder's columns and settings, and how a file's columns map onto them."""

    spec: dict[Role, dict[str, Kind]]
    rename: dict[str, str] = field(default_factory=dict)  # input column -> output name
    sample_size: int = DEFAULT_SAMPLE_SIZE
    bins: int = DEFAULT_BINS
    top_k: int = DEFAULT_TOP_K
    seed: int = 0

    def builder(self) -> ProfileBuilder:
        return ProfileBuilder(self.spec, sample_size=self.sample_size, bins=self.bins, top_k=self.top_k,
                              seed=self.seed)

    def input_kind(self, column: str) -> Kind | None:
        """The kind of an input column, or None when the profile leaves it out."""
        if column in self.rename:
            return self.spec.get("output", {}).get(self.rename[column])
        return self.spec.get("feature", {}).get(column) or self.spec.get("label", {}).get(column)

    def is_numeric(self, column: str) -> bool:
        return self.input_kind(column) == "numeric"

    def select(self, chunk: dict[str, Any]) -> dict[str, Any]:
        """A file's chunk as the builder sees it: planned columns only, outputs renamed."""
        return {self.rename.get(k, k): v for k, v in chunk.items() if self.input_kind(k) is not None}


def plan_columns(path: str, *, fmt: str | None = None, features: list[str] | None = None,
                 categorical: Iterable[str] = (), numeric: Iterable[str] = (),
                 prediction_columns: dict[str, str] | None = None, label_column: str | None = None,
                 sample_size: int = DEFAULT_SAMPLE_SIZE, bins: int = DEFAULT_BINS, top_k: int = DEFAULT_TOP_K,
                 seed: int = 0, engine: str = "auto") -> ColumnPlan:
    """The profile's columns and kinds from the first rows of ``path``, for one process
    (``build_profile_from_file``) and for the engines that profile in pieces (``distributed``).

    ``prediction_columns`` maps an input column to the output name it has in the window (the
    codecs name a scalar prediction ``prediction``). Columns named neither as features, outputs
    nor label are features unless ``features`` lists the features explicitly.
    """
    prediction_columns = dict(prediction_columns or {})
    categorical, numeric = set(categorical), set(numeric)
    names, head = _header(path, fmt, _HEAD_ROWS, engine)
    if not names:
        raise ValueError(f"{path}: no rows")
    label = [label_column] if label_column else []
    missing = [c for c in [*(features or []), *prediction_columns, *label] if c not in names]
    if missing:
        raise ValueError(f"{path}: no column(s) {', '.join(missing)} (columns: {', '.join(names[:20])}"
                         f"{' ...' if len(names) > 20 else ''})")
    taken = set(prediction_columns) | set(label)
    feature_names = list(features) if features else [n for n in names if n not in taken]

    def kind(name: str) -> Kind:
        if name in categorical:
            return "categorical"
        if name in numeric:
            return "numeric"
        return infer_text_kind(head.get(name, []))

    spec: dict[Role, dict[str, Kind]] = {
        "feature": {n: kind(n) for n in feature_names},
        "output": {prediction_columns[c]: kind(c) for c in prediction_columns},
        "label": {label_column: kind(label_column)} if label_column else {},
    }
    return ColumnPlan(spec, prediction_columns, sample_size, bins, top_k, seed)


def build_profile_from_file(path: str, *, fmt: str | None = None, features: list[str] | None = None,
                            categorical: Iterable[str] = (), numeric: Iterable[str] = (),
                            prediction_columns: dict[str, str] | None = None, label_column: str | None = None,
                            sample_size: int = DEFAULT_SAMPLE_SIZE, bins: int = DEFAULT_BINS,
                            top_k: int = DEFAULT_TOP_K, chunk_rows: int = 20_000, seed: int = 0,
                            progress: bool | None = None, engine: str = "auto") -> ReferenceProfile:
    """Profile a CSV / JSON lines / Parquet file in chunks (two reads when it exceeds the sample).

    ``prediction_columns`` maps an input column to the output name it has in the window (the
    codecs name a scalar prediction ``prediction``). Columns named neither as features, outputs
    nor label are features unless ``features`` lists the features explicitly.
    """
    plan = plan_columns(path, fmt=fmt, features=features, categorical=categorical, numeric=numeric,
                        prediction_columns=prediction_columns, label_column=label_column, sample_size=sample_size,
                        bins=bins, top_k=top_k, seed=seed, engine=engine)
    builder = plan.builder()
    files = expand_sources(path)
    size = sum(os.path.getsize(f) for f in files if os.path.exists(f))

    def chunks(label: str) -> Iterator[dict[str, Any]]:
        bar = _Progress(label, size, progress)
        rows = 0
        for chunk in iter_file_chunks(path, fmt=fmt, chunk_rows=chunk_rows, numeric=plan.is_numeric, progress=bar,
                                      engine=engine):
            rows += count_rows(chunk)
            yield plan.select(chunk)
        bar.done(rows)

    for chunk in chunks(f"profiling {os.path.basename(path)}"):
        builder.observe(chunk)
    builder.freeze()
    if builder.needs_second_pass:
        for chunk in chunks("counting bins"):
            builder.count_bins(chunk)
    return builder.build(source=os.path.basename(path))
