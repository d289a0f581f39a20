"""Tables in chunks: CSV, JSON lines and Parquet files (a path, a glob or an fsspec URL) read as
chunks of columns, in memory bounded by the chunk size.

``iter_table_chunks(source)`` is the one reader: ``inferwatch profile`` (``reference.readers``)
and ``inferwatch batch`` use it, and a distributed engine can map it over one file or partition
each. Each ``TableChunk`` holds at most ``chunk_rows`` rows of one file as ``{column: values}``:
columns told numeric by ``numeric(name)`` are float64 arrays (missing cells NaN, and marked in
``missing``); the others are lists of values (``None`` for missing).

Two engines give the same chunks: pyarrow's CSV and JSON parsers (C++, the default when pyarrow
is installed) and the standard library's ``csv`` and ``json`` (the fallback). The file is cut
into blocks of whole lines here, and each block is parsed on its own, so a block that does not
parse is one bad chunk (its file and row range), not a lost file, and any block pyarrow reads
differently from the standard library (a type it infers that Python would not, a ragged row, a
literal ``NaN``) is parsed again by the fallback: the fast path never changes a value.
"""

from __future__ import annotations

import bz2
import csv
import glob
import gzip
import io
import json
import lzma
import os
from dataclasses import dataclass, field
from itertools import islice
from typing import IO, Any, Callable, Iterator, Sequence

import numpy as np

from .events import rows_to_columns
from .values import MISSING_TOKENS, to_float_array

FORMATS = ("csv", "jsonl", "parquet")
ENGINES = ("auto", "arrow", "python")
_COMPRESSED: dict[str, Callable[..., Any]] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
# pyarrow's null_values match exactly: the usual spellings of MISSING_TOKENS. Any other spelling
# leaves the column as text, and the block falls back to Python, which lower-cases.
_ARROW_NULLS = sorted({v for t in MISSING_TOKENS for v in (t, t.upper(), t.capitalize())} | {"N/A", "NaN"})


@dataclass
class TableChunk:
    """Rows ``first_row`` .. ``first_row + rows - 1`` (0-based data rows) of ``source``.

    ``error`` is set when the rows could not be parsed (then ``columns`` is empty): the chunk
    says where, and the caller counts it or stops."""

    source: str
    first_row: int
    rows: int
    columns: dict[str, Any] = field(default_factory=dict)
    # numeric columns: True where the cell was missing (null, a missing token), not a number
    missing: dict[str, np.ndarray] = field(default_factory=dict)
    # numeric columns: (row index, text) of cells that were neither missing nor a number
    invalid: dict[str, list[tuple[int, Any]]] = field(default_factory=dict)
    position: int = 0          # bytes of the (decompressed) file read so far, for progress
    size: int = 0              # the file's size on disk (0: unknown)
    error: str | None = None

    def where(self) -> str:
        """``file rows a-b`` (1-based data rows, as a spreadsheet counts them below the header)."""
        return f"{self.source} rows {self.first_row + 1}-{self.first_row + self.rows}"

    def values(self, name: str) -> list[Any]:
        """A column as the JSON values a client would have pushed: numbers, None where missing,
        and the text of cells that were not numbers (the window counts them as invalid)."""
        column = self.columns[name]
        if not isinstance(column, np.ndarray):
            return list(column)
        out: list[Any] = column.tolist()
        missing = self.missing.get(name)
        if missing is not None and missing.any():
            for i in np.flatnonzero(missing).tolist():
                out[i] = None
        for i, text in self.invalid.get(name, ()):
            out[i] = text
        return out


def detect_format(path: str) -> str:
    name = path.lower()
    for suffix in _COMPRESSED:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    return "csv"


def arrow_available() -> bool:
    try:
        import pyarrow.csv  # noqa: F401
        import pyarrow.json  # noqa: F401
    except ImportError:
        return False
    return True


def _is_url(source: str) -> bool:
    return "://" in source


def expand_sources(source: str) -> list[str]:
    """The files of ``source``: a path, a glob (sorted), or an fsspec URL (globs expanded by fsspec)."""
    if _is_url(source):
        fsspec = _fsspec()
        files = fsspec.open_files(source)
        if not files:
            raise FileNotFoundError(f"{source}: no file matches")
        return [f.full_name for f in files]
    if glob.has_magic(source):
        paths = sorted(glob.glob(source))
        if not paths:
            raise FileNotFoundError(f"{source}: no file matches")
        return paths
    if not os.path.exists(source):
        raise FileNotFoundError(f"{source}: no such file")
    return [source]


def _fsspec() -> Any:
    try:
        import fsspec
    except ImportError:
        raise RuntimeError("reading a URL needs fsspec: pip install 'inferwatch[fsspec]' (and the "
                           "filesystem's own package: s3fs, gcsfs, adlfs...)") from None
    return fsspec


def _open_binary(path: str) -> tuple[IO[bytes], int]:
    """A binary stream of the decompressed bytes, and the size on disk (0 when unknown)."""
    if _is_url(path):
        fsspec = _fsspec()
        opened = fsspec.open(path, "rb", compression="infer")
        try:
            size = int(opened.fs.size(opened.path) or 0)
        except Exception:  # noqa: BLE001 - a size is only for the progress line
            size = 0
        return opened.open(), size
    opener = _COMPRESSED.get(os.path.splitext(path.lower())[1])
    size = os.path.getsize(path)
    return (opener(path, "rb") if opener else open(path, "rb")), size


def iter_table_chunks(source: str, *, fmt: str | None = None, chunk_rows: int = 10_000,
                      numeric: Callable[[str], bool] | None = None, columns: Sequence[str] | None = None,
                      engine: str = "auto") -> Iterator[TableChunk]:
    """Chunks of every file of ``source`` in order (see the module's docstring).

    ``columns`` keeps only these columns (Parquet reads no others); ``engine`` is ``arrow``,
    ``python`` or ``auto`` (arrow when pyarrow is installed). A block that fails to parse is
    yielded with ``error`` set; reading goes on with the next block.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown reader engine {engine!r} ({', '.join(ENGINES)})")
    use_arrow = engine == "arrow" or (engine == "auto" and arrow_available())
    keep = set(columns) if columns is not None else None
    is_numeric = numeric or (lambda name: False)
    for path in expand_sources(source):
        kind = fmt or detect_format(path)
        if kind == "parquet":
            yield from _parquet_chunks(path, chunk_rows, is_numeric, columns)
        elif kind in ("csv", "jsonl"):
            yield from _text_chunks(path, kind, chunk_rows, is_numeric, keep, use_arrow)
        else:
            raise ValueError(f"unknown input format {kind!r} ({', '.join(FORMATS)})")


# --- CSV and JSON lines: blocks of whole lines ---------------------------------------------------

def _blocks(stream: IO[bytes], chunk_rows: int, csv_quotes: bool) -> Iterator[tuple[bytes, int]]:
    """(block, lines) of at most ``chunk_rows`` lines; in CSV a block ends only where the quotes
    balance, so a quoted value spanning lines stays in one block (at most twice the lines: a
    stray quote must not pull the whole file into memory)."""
    while True:
        lines = list(islice(stream, chunk_rows))
        if not lines:
            return
        if csv_quotes and b"".join(lines).count(b'"') % 2:
            quotes = b"".join(lines).count(b'"')
            for more in islice(stream, chunk_rows):
                lines.append(more)
                quotes += more.count(b'"')
                if quotes % 2 == 0:
                    break
        yield b"".join(lines), len(lines)


def _text_chunks(path: str, kind: str, chunk_rows: int, numeric: Callable[[str], bool], keep: set[str] | None,
                 use_arrow: bool) -> Iterator[TableChunk]:
    stream, size = _open_binary(path)
    with stream:
        header: list[str] = []
        header_bytes = b""
        if kind == "csv":
            header_bytes = _header_line(stream)
            if not header_bytes.strip():
                return
            header = next(csv.reader([header_bytes.decode("utf-8-sig")]))
            header_bytes = header_bytes.lstrip(b"\xef\xbb\xbf")
        row = 0
        position = len(header_bytes)
        for block, lines in _blocks(stream, chunk_rows, csv_quotes=kind == "csv"):
            position += len(block)
            try:
                if kind == "csv":
                    chunk = _csv_block(header_bytes, header, block, numeric, use_arrow)
                else:
                    chunk = _json_block(block, numeric, use_arrow)
            except (ValueError, csv.Error, UnicodeDecodeError) as exc:
                bad = TableChunk(path, row, lines, position=position, size=size,
                                 error=f"{type(exc).__name__}: {str(exc)[:200]}")
                row += lines
                yield bad
                continue
            chunk.source, chunk.first_row, chunk.position, chunk.size = path, row, position, size
            if keep is not None:
                chunk.columns = {k: v for k, v in chunk.columns.items() if k in keep}
            row += chunk.rows
            if chunk.rows:
                yield chunk


def _header_line(stream: IO[bytes]) -> bytes:
    line = stream.readline()
    while line.count(b'"') % 2:
        more = stream.readline()
        if not more:
            break
        line += more
    return line


def _numeric_column(name: str, values: list[Any], chunk: TableChunk, text: bool) -> np.ndarray:
    """Values to float64, marking missing cells and keeping the text of non-numbers (``text``:
    CSV cells, where missing tokens mean missing)."""
    if text:
        try:  # the usual column, every cell a number's text: one C conversion, only NaN cells looked at
            arr = np.asarray(values, dtype=object).astype(np.float64)
        except (TypeError, ValueError):
            pass
        else:
            missing = np.zeros(len(values), bool)
            for i in np.flatnonzero(np.isnan(arr)).tolist():  # "nan" is a missing token, "-nan" a NaN
                missing[i] = values[i].strip().lower() in MISSING_TOKENS
            chunk.missing[name] = missing
            return arr
        missing = np.fromiter((v is None or v.strip().lower() in MISSING_TOKENS for v in values), bool, len(values))
        cleaned: list[Any] = [None if m else v for v, m in zip(values, missing.tolist())]
    else:
        missing = np.fromiter((v is None for v in values), bool, len(values))
        cleaned = values
    arr = to_float_array(cleaned)
    bad = np.isnan(arr) & ~missing
    if bad.any():
        invalid = [(i, cleaned[i]) for i in np.flatnonzero(bad).tolist()
                   if not (isinstance(cleaned[i], float) or (isinstance(cleaned[i], str) and _is_nan_text(cleaned[i])))]
        if invalid:
            chunk.invalid[name] = invalid
    chunk.missing[name] = missing
    return arr


def _is_nan_text(text: str) -> bool:
    try:
        return float(text) != float(text)
    except ValueError:
        return False


def _csv_block(header_bytes: bytes, header: list[str], block: bytes, numeric: Callable[[str], bool],
               use_arrow: bool) -> TableChunk:
    if use_arrow:
        chunk = _csv_block_arrow(header_bytes, header, block, numeric)
        if chunk is not None:
            return chunk
    return _csv_block_python(header, block, numeric)


def _csv_block_python(header: list[str], block: bytes, numeric: Callable[[str], bool]) -> TableChunk:
    rows = list(csv.reader(io.StringIO(block.decode("utf-8"), newline="")))
    width = len(header)
    rows = [r if len(r) == width else (r + [""] * width)[:width] for r in rows if r]
    chunk = TableChunk("", 0, len(rows))
    columns = list(zip(*rows)) if rows else [() for _ in header]
    for name, values in zip(header, columns):
        if numeric(name):
            chunk.columns[name] = _numeric_column(name, list(values), chunk, text=True)
        else:
            chunk.columns[name] = [None if v.strip().lower() in MISSING_TOKENS else v for v in values]
    return chunk


def _csv_block_arrow(header_bytes: bytes, header: list[str], block: bytes,
                     numeric: Callable[[str], bool]) -> TableChunk | None:
    """The block parsed by pyarrow, or None where it would differ from the standard library."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    if len(set(header)) != len(header) or any(not name for name in header):
        return None  # duplicate or empty names: csv's zip keeps them, arrow renames
    types = {name: pa.string() for name in header if not numeric(name)}
    try:
        table = pacsv.read_csv(
            io.BytesIO(header_bytes + block),
            read_options=pacsv.ReadOptions(use_threads=False, block_size=max(len(block) + len(header_bytes) + 1,
                                                                               1 << 20)),
            parse_options=pacsv.ParseOptions(newlines_in_values=b'"' in block),
            convert_options=pacsv.ConvertOptions(column_types=types, null_values=_ARROW_NULLS,
                                                 strings_can_be_null=False, quoted_strings_can_be_null=False))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None  # ragged rows, bad UTF-8...: the fallback decides
    if table.column_names != header:
        return None
    chunk = TableChunk("", 0, table.num_rows)
    for name, column in zip(header, table.columns):
        if numeric(name):
            if pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_null(column.type):
                chunk.columns[name] = column.to_numpy().astype(np.float64) if not pa.types.is_null(column.type) \
                    else np.full(table.num_rows, np.nan)
                chunk.missing[name] = column.is_null().to_numpy(zero_copy_only=False) \
                    if not pa.types.is_null(column.type) else np.ones(table.num_rows, bool)
                continue
            return None  # text, booleans, dates in a numeric column: Python's reading decides
        # Text: each distinct value made a Python string (and judged a missing token) once, then
        # spread by the dictionary's indices, rather than a string object per cell.
        encoded = pc.dictionary_encode(column.combine_chunks())
        if encoded.null_count:
            return None
        words = [None if w.strip().lower() in MISSING_TOKENS else w for w in encoded.dictionary.to_pylist()]
        lookup = np.empty(len(words), dtype=object)
        lookup[:] = words
        chunk.columns[name] = lookup[encoded.indices.to_numpy(zero_copy_only=False)].tolist()
    return chunk


def _json_block(block: bytes, numeric: Callable[[str], bool], use_arrow: bool) -> TableChunk:
    if use_arrow:
        chunk = _json_block_arrow(block, numeric)
        if chunk is not None:
            return chunk
    return _json_block_python(block, numeric)


def _json_block_python(block: bytes, numeric: Callable[[str], bool]) -> TableChunk:
    records = []
    for line in block.decode("utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        obj = json.loads(line)
        if isinstance(obj, dict) and not (obj.get("sampled") is False and "prediction_id" in obj):
            records.append(flatten_event(obj))  # (an unsampled prediction-log line has no values)
    chunk = TableChunk("", 0, len(records))
    for name, values in rows_to_columns(records).items():
        chunk.columns[name] = _numeric_column(name, values, chunk, text=False) if numeric(name) else values
    return chunk


def _json_block_arrow(block: bytes, numeric: Callable[[str], bool]) -> TableChunk | None:
    import pyarrow as pa
    import pyarrow.json as pajson

    if b"\r" in block or b'"features"' in block or b"NaN" in block or b"Infinity" in block \
            or b'"prediction_id"' in block:
        return None  # push-event and prediction-log shapes are flattened row by row; NaN literals are Python's
    try:
        table = pajson.read_json(io.BytesIO(block), read_options=pajson.ReadOptions(
            use_threads=False, block_size=max(len(block) + 1, 1 << 20)))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    chunk = TableChunk("", 0, table.num_rows)
    for name, column in zip(table.column_names, table.columns):
        kind = column.type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_string(kind)
                or pa.types.is_boolean(kind) or pa.types.is_null(kind)):
            return None  # nested values and timestamps (arrow parses ISO dates): Python decides
        if pa.types.is_floating(kind) and not numeric(name):
            return None  # 1 and 1.5 in one column: arrow makes 1 a float, json keeps an int
        if numeric(name) and (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
            chunk.columns[name] = column.to_numpy().astype(np.float64)
            chunk.missing[name] = column.is_null().to_numpy(zero_copy_only=False)
            continue
        values = column.to_pylist()
        chunk.columns[name] = _numeric_column(name, values, chunk, text=False) if numeric(name) else values
    return chunk


def flatten_event(obj: dict[str, Any]) -> dict[str, Any]:
    """A push event (``{"features": {...}, "prediction": ...}``) as one flat record."""
    if isinstance(obj.get("inputs"), dict) and "prediction_id" in obj:  # a prediction-log line (pipeline/predlog.py)
        row = dict(obj["inputs"])
        row.update(obj["outputs"] if isinstance(obj.get("outputs"), dict) else {})
        return row
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


# --- Parquet ------------------------------------------------------------------------------------

def iter_parquet_chunks(path: str, *, chunk_rows: int, numeric: Callable[[str], bool],
                        columns: Sequence[str] | None, row_groups: list[int], first_row: int) -> Iterator[TableChunk]:
    """Chunks of some row groups of one Parquet file (a distributed engine's partition), rows
    numbered from ``first_row`` (the first group's first row in the file): as ``iter_table_chunks``
    reads them."""
    return _parquet_chunks(path, chunk_rows, numeric, columns, row_groups=row_groups, first_row=first_row)


def _parquet_chunks(path: str, chunk_rows: int, numeric: Callable[[str], bool],
                    columns: Sequence[str] | None, row_groups: list[int] | None = None,
                    first_row: int = 0) -> Iterator[TableChunk]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise RuntimeError("reading Parquet needs pyarrow: pip install 'inferwatch[parquet]'") from None
    stream, size = _open_binary(path) if _is_url(path) else (None, os.path.getsize(path))
    try:
        # Without pre_buffer=False Arrow reads ahead whole row groups and peak RSS grows with the
        # file (465 MB at 100k rows, 1.3 GB at 2M, benchmarks/drift.py); with it, it stays flat.
        pf = pq.ParquetFile(stream if stream is not None else path, pre_buffer=False)
        total = first_row + (pf.metadata.num_rows if row_groups is None
                             else sum(pf.metadata.row_group(i).num_rows for i in row_groups))
        names = pf.schema_arrow.names
        wanted = [n for n in names if columns is None or n in set(columns)]
        row = first_row
        batches = pf.iter_batches(batch_size=chunk_rows, columns=wanted, row_groups=row_groups)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except (OSError, pa.ArrowException) as exc:  # a corrupt page: the rest of this file is lost
                yield TableChunk(path, row, max(total - row, 0), size=size,
                                 error=f"{type(exc).__name__}: {str(exc)[:200]}")
                return
            chunk = TableChunk(path, row, batch.num_rows, size=size,
                               position=int(size * (row + batch.num_rows) / max(total, 1)))
            for name, column in zip(batch.schema.names, batch.columns):
                kind = column.type
                if pa.types.is_integer(kind) or pa.types.is_floating(kind):
                    chunk.columns[name] = column.to_numpy(zero_copy_only=False).astype(np.float64)
                    chunk.missing[name] = column.is_null().to_numpy(zero_copy_only=False)
                elif numeric(name):
                    chunk.columns[name] = _numeric_column(name, column.to_pylist(), chunk, text=False)
                else:
                    chunk.columns[name] = column.to_pylist()
            row += batch.num_rows
            yield chunk
    finally:
        if stream is not None:
            stream.close()
