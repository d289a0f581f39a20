"""The table reader (ingest/tables.py): pyarrow's parsers and the standard library's give the same
chunks and the same reference profiles; a bad block is one bad chunk with its file and rows;
globs and fsspec URLs; memory bounded by the chunk."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inferwatch.ingest import tables
from inferwatch.ingest.tables import TableChunk, iter_table_chunks
from inferwatch.reference import build_profile_from_file


def _messy_rows(n: int, seed: int = 0) -> list[list[str]]:
    """CSV cells a real export has: missing tokens in several spellings, NaN, padded numbers,
    numbers as categories, quoted commas and newlines, text in a numeric column."""
    rng = np.random.default_rng(seed)
    missing = ["", "NA", "n/a", "null", "None", "nan", " NaN ", "NULL"]
    rows = []
    for i in range(n):
        x = f"{rng.normal(50, 10):.6f}" if rng.random() > 0.05 else missing[i % len(missing)]
        y = str(int(rng.integers(0, 1000))) if rng.random() > 0.02 else " 17 "
        z = f"{rng.exponential(3):.3e}" if i % 997 else "abc"   # text in a numeric column: one block falls back
        city = ["Paris", "Lyon", "New York, NY", 'say "hi"', "Nice\nSud", ""][int(rng.integers(0, 6))]
        code = str(int(rng.integers(0, 5)))            # numbers that are categories
        rows.append([x, y, z, city, code, ["yes", "no", "NA"][i % 3]])
    return rows


def _write_csv(path, rows, header=("x", "y", "z", "city", "code", "flag")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _same_profile(path, **kwargs):
    fast = build_profile_from_file(str(path), engine="arrow", **kwargs).to_dict()
    slow = build_profile_from_file(str(path), engine="python", **kwargs).to_dict()
    for profile in (fast, slow):
        profile.pop("created_at", None)
        profile.pop("created", None)
    assert json.dumps(fast, sort_keys=True) == json.dumps(slow, sort_keys=True)
    return fast


def test_csv_profiles_are_identical_with_either_reader(tmp_path):
    path = tmp_path / "train.csv"
    _write_csv(path, _messy_rows(6000))
    profile = _same_profile(path, categorical=["code"], chunk_rows=700, sample_size=2000)
    assert profile["features"]["x"]["type"] == "numeric" and profile["features"]["city"]["type"] == "categorical"


def test_the_fast_path_is_taken_on_clean_blocks(tmp_path, monkeypatch):
    """Not every block may fall back, or the speed is the old reader's."""
    path = tmp_path / "clean.csv"
    _write_csv(path, [[f"{i * 0.5}", str(i), "1e3", "Paris", "1", "yes"] for i in range(3000)])
    python_blocks = []
    original = tables._csv_block_python
    monkeypatch.setattr(tables, "_csv_block_python", lambda *a: python_blocks.append(1) or original(*a))
    chunks = list(iter_table_chunks(str(path), chunk_rows=1000, numeric=lambda n: n in ("x", "y", "z")))
    assert [c.rows for c in chunks] == [1000, 1000, 1000] and not python_blocks
    assert chunks[2].columns["x"][-1] == 2999 * 0.5 and chunks[0].columns["city"][0] == "Paris"


def test_jsonl_profiles_are_identical_with_either_reader(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "events.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(5000):
            if i < 2500:   # flat records, ints and floats, nulls, absent keys
                record = {"a": float(rng.normal()), "b": int(rng.integers(0, 9)), "c": ["u", "v", None][i % 3]}
                if i % 7:
                    record["d"] = i % 2 == 0
                f.write(json.dumps(record) + "\n")
            else:          # push events: flattened by the fallback
                f.write(json.dumps({"features": {"a": float(rng.normal(1)), "b": 3, "c": "u", "d": True},
                                    "prediction": 0.5}) + "\n")
            if i == 100:
                f.write("\n")
    _same_profile(path, chunk_rows=600, sample_size=1000)


def test_parquet_and_csv_of_the_same_numbers_profile_alike(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=4000)
    pq.write_table(pa.table({"x": x, "c": [["p", "q"][i % 2] for i in range(4000)]}), tmp_path / "t.parquet",
                   row_group_size=1000)
    _write_csv(tmp_path / "t.csv", [[repr(float(v)), ["p", "q"][i % 2]] for i, v in enumerate(x)], header=("x", "c"))
    a = build_profile_from_file(str(tmp_path / "t.parquet"), chunk_rows=512).to_dict()
    b = build_profile_from_file(str(tmp_path / "t.csv"), chunk_rows=512).to_dict()
    assert a["features"] == b["features"]


def test_a_bad_block_is_one_chunk_with_its_file_and_rows(tmp_path):
    path = tmp_path / "bad.jsonl"
    lines = [json.dumps({"a": i}) for i in range(30)]
    lines[14] = '{"a": 14'                               # cut off: rows 11-20 cannot be parsed
    path.write_text("\n".join(lines) + "\n")
    for engine in ("arrow", "python"):
        chunks = list(iter_table_chunks(str(path), chunk_rows=10, engine=engine))
        assert [(c.first_row, c.rows, c.error is not None) for c in chunks] == [(0, 10, False), (10, 10, True),
                                                                                  (20, 10, False)]
        assert chunks[1].where() == f"{path} rows 11-20" and "JSONDecodeError" in (chunks[1].error or "")
    csv_path = tmp_path / "bad.csv"
    csv_path.write_bytes(b"a,b\n1,x\n2,\xff\xfe\n3,z\n")   # not UTF-8
    chunks = list(iter_table_chunks(str(csv_path), chunk_rows=1))
    assert [c.error is not None for c in chunks] == [False, True, False]
    with pytest.raises(ValueError, match=r"bad.csv rows 1-3: cannot parse: UnicodeDecodeError"):
        build_profile_from_file(str(csv_path), chunk_rows=1)


def test_globs_and_fsspec_urls(tmp_path):
    for part in range(3):
        _write_csv(tmp_path / f"part-{part}.csv", [[str(part * 10 + i), "1", "2", "c", "0", "yes"] for i in range(10)])
    local = [c.columns["x"].tolist() for c in iter_table_chunks(str(tmp_path / "part-*.csv"),
                                                                  numeric=lambda n: n == "x")]
    assert local == [[float(p * 10 + i) for i in range(10)] for p in range(3)]
    url = [c.columns["x"].tolist() for c in iter_table_chunks(f"file://{tmp_path}/part-*.csv",
                                                                numeric=lambda n: n == "x")]
    assert url == local
    memory = fsspec.filesystem("memory")
    memory.pipe("/tables/t.parquet", _parquet_bytes())
    chunks = list(iter_table_chunks("memory://tables/t.parquet", chunk_rows=4))
    assert [c.rows for c in chunks] == [4, 4, 2] and chunks[0].source == "memory:///tables/t.parquet"
    assert chunks[2].missing["v"].tolist() == [False, True]


def _parquet_bytes() -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"v": [float(i) for i in range(9)] + [None]}), sink)
    return sink.getvalue().to_pybytes()


def test_chunk_values_are_what_a_client_would_push(tmp_path):
    path = tmp_path / "v.csv"
    path.write_text("x\n1.5\nNA\nabc\n")
    for engine in ("arrow", "python"):
        chunk = next(iter_table_chunks(str(path), numeric=lambda n: True, engine=engine))
        assert chunk.values("x") == [1.5, None, "abc"]
    assert TableChunk("f", 0, 1, columns={"c": ["a"]}).values("c") == ["a"]


def test_peak_memory_is_bounded_by_the_chunk_not_the_file(tmp_path):
    """Reading a file 8x larger adds (almost) nothing to the peak: measured in a fresh process."""
    script = (
        "import resource, sys\n"
        "from inferwatch.ingest.tables import iter_table_chunks\n"
        "rows = 0\n"
        "for c in iter_table_chunks(sys.argv[1], chunk_rows=5000, numeric=lambda n: n != 'c'):\n"
        "    rows += c.rows\n"
        "print(rows, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    peaks = {}
    for rows in (20_000, 160_000):
        path = tmp_path / f"big{rows}.csv"
        with open(path, "w") as f:
            f.write("a,b,c,d\n")
            for i in range(rows):
                f.write(f"{i},{i * 0.25},cat{i % 7},{i % 13}\n")
        out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert out.returncode == 0, out.stderr
        count, peak_kb = map(int, out.stdout.split())
        assert count == rows
        peaks[rows] = peak_kb
    # 140k more rows (~3 MB of text, far more as Python objects) must not show up in the peak
    assert peaks[160_000] - peaks[20_000] < 20_000, peaks


def test_both_readers_agree_on_nan_spellings_padding_and_missing_text(tmp_path):
    """The fast paths (one C conversion of an all-number column, text spread from its dictionary)
    keep the slow paths' answers: `nan` is a missing token, `-nan` a NaN, padded numbers parse."""
    path = tmp_path / "f.csv"
    path.write_text("x,c\n1.5,a\n 2 ,b\nnan,NA\n-nan, a\n1e3,a\ninf,\n")
    seen = []
    for engine in ("arrow", "python"):
        chunk = next(iter_table_chunks(str(path), numeric=lambda n: n == "x", engine=engine))
        assert chunk.missing["x"].tolist() == [False, False, True, False, False, False]
        assert chunk.columns["c"] == ["a", "b", None, " a", "a", None] and not chunk.invalid
        seen.append(repr(chunk.values("x")))
    assert seen[0] == seen[1] == repr([1.5, 2.0, None, float("nan"), 1000.0, float("inf")])
