"""Reference profiles: the streaming builder, the file readers, the format and `inferwatch profile`."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from inferwatch.cli import main
from inferwatch.reference import (
    FORMAT_VERSION, CategoricalProfile, NumericProfile, ProfileBuilder, ReferenceProfile, build_profile,
    build_profile_from_file, iter_file_chunks,
)
from inferwatch.ingest.values import infer_text_kind as infer_kind
from inferwatch.stats import bin_counts, correlation_matrix


def _data(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(10, 2, n)
    y = 0.8 * x + rng.normal(0, 1, n)
    y[rng.random(n) < 0.1] = np.nan
    city = rng.choice(["paris", "rome", "oslo", "lima", "kyiv"], n, p=[0.4, 0.3, 0.15, 0.1, 0.05])
    score = rng.random(n)
    label = (rng.random(n) < 0.3).astype(int)
    return {"x": x, "y": y, "city": city, "score": score, "label": label}


def _write_csv(path, data: dict[str, np.ndarray]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(data))
        for row in zip(*data.values()):
            w.writerow(["" if isinstance(v, float) and math.isnan(v) else v for v in row])


def test_two_pass_csv_profile_is_exact_where_it_can_be(tmp_path):
    data = _data(5000)
    path = tmp_path / "train.csv"
    _write_csv(path, data)
    profile = build_profile_from_file(str(path), prediction_columns={"score": "prediction"}, label_column="label",
                                      categorical=["label"], sample_size=1000, chunk_rows=700)
    assert profile.rows == 5000
    assert set(profile.features) == {"x", "y", "city"} and set(profile.outputs) == {"prediction"}
    assert set(profile.label) == {"label"}
    x, y = profile.features["x"], profile.features["y"]
    assert isinstance(x, NumericProfile) and x.sample.size == 1000 and np.all(np.diff(x.sample) >= 0)
    # Moments, extremes and missing counts are exact over every row (streamed), not from the sample.
    present = data["y"][~np.isnan(data["y"])]
    assert y.count == present.size and y.missing == 5000 - present.size
    assert y.statistics["mean"] == pytest.approx(present.mean(), rel=1e-12)
    assert y.statistics["std"] == pytest.approx(present.std(), rel=1e-10)
    assert (y.statistics["min"], y.statistics["max"]) == (present.min(), present.max())
    assert y.statistics["missing_ratio"] == pytest.approx(1 - present.size / 5000)
    # Edges come from the sample; the counts in them from a second pass over every row.
    assert np.array_equal(x.bin_counts, bin_counts(data["x"], x.edges))
    assert np.array_equal(y.bin_counts, bin_counts(present, y.edges))
    assert x.n_bins == 10 and x.edges.size == 9
    city = profile.features["city"]
    assert isinstance(city, CategoricalProfile)
    assert city.categories == ["paris", "rome", "oslo", "lima", "kyiv"]
    assert city.bin_counts.tolist() == [int((data["city"] == c).sum()) for c in city.categories] + [0]
    assert city.cardinality == 5 and not city.cardinality_estimated
    assert profile.label["label"].categories == ["0", "1"]
    assert profile.correlation_features == ["x", "y"]
    assert profile.correlation[0, 1] == pytest.approx(np.corrcoef(data["x"][~np.isnan(data["y"])], present)[0, 1],
                                                      abs=0.05)
    assert profile.pca is not None and profile.pca_features == ["x", "y"]


def test_small_inputs_are_profiled_exactly_in_one_pass():
    data = _data(800)
    profile = build_profile({"feature": {"x": data["x"], "city": list(data["city"])}})
    x = profile.features["x"]
    assert x.sample.size == 800
    assert np.array_equal(x.bin_counts, bin_counts(data["x"], x.edges))
    assert x.statistics["p50"] == pytest.approx(np.median(data["x"]))


def test_top_k_other_and_estimated_cardinality():
    rng = np.random.default_rng(1)
    n = 60_000
    values = np.where(rng.random(n) < 0.5, rng.choice(["a", "b", "c"], n), [f"id{i}" for i in range(n)])
    builder = ProfileBuilder({"feature": {"v": "categorical"}}, top_k=3, sample_size=100)
    for start in range(0, n, 7000):
        builder.observe({"v": list(values[start:start + 7000])})
    col = builder.build().features["v"]
    assert col.categories == sorted(col.categories, key=lambda c: -col.bin_counts[col.categories.index(c)])
    assert set(col.categories) == {"a", "b", "c"}
    assert col.bin_counts.sum() == n and col.bin_counts[-1] == int((~np.isin(values, ["a", "b", "c"])).sum())
    true = len(set(values))
    assert col.cardinality_estimated and abs(col.cardinality - true) / true < 0.06


def test_jsonl_push_events_and_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    path = tmp_path / "events.jsonl"
    with open(path, "w") as f:
        for i in range(300):
            f.write(json.dumps({"prediction_id": f"p{i}", "features": {"amount": float(rng.gamma(2)),
                                                                      "country": str(rng.choice(["DE", "FR"])),
                                                                      "flag": bool(i % 2)},
                                "prediction": float(rng.random())}) + "\n")
    profile = build_profile_from_file(str(path), features=["amount", "country", "flag"],
                                      prediction_columns={"prediction": "prediction"})
    assert profile.features["amount"].kind == "numeric"
    assert profile.features["country"].kind == "categorical"
    assert profile.features["flag"].categories == ["false", "true"]  # as the window spells booleans
    out = tmp_path / "reference.json"
    digest = profile.save(out)
    loaded = ReferenceProfile.load(out)
    assert loaded.hash == digest == profile.hash
    assert np.array_equal(loaded.features["amount"].sample, profile.features["amount"].sample)
    assert loaded.to_dict()["hash"] == digest  # a reload re-serialises to the same content


def test_the_hash_detects_edits_and_the_version_is_checked(tmp_path):
    profile = build_profile({"feature": {"x": np.arange(100.0)}})
    path = tmp_path / "r.json"
    profile.save(path)
    data = json.loads(path.read_text())
    assert data["format"] == "inferwatch-reference-profile" and data["version"] == FORMAT_VERSION
    data["features"]["x"]["bin_counts"][0] += 1
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="hash mismatch"):
        ReferenceProfile.load(path)
    data["version"] = 99
    with pytest.raises(ValueError, match="unsupported reference profile version"):
        ReferenceProfile.from_dict(data, verify=False)


def test_infer_kind():
    assert infer_kind(["1.5", "", "2"]) == "numeric"
    assert infer_kind([1, None, 2.5]) == "numeric"
    assert infer_kind(["a", "1"]) == "categorical"
    assert infer_kind([True, False]) == "categorical"


def test_parquet_is_read_through_pyarrow(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    data = _data(3000)
    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({k: (list(v) if v.dtype.kind == "U" else v) for k, v in data.items()}), path,
                   row_group_size=1000)
    profile = build_profile_from_file(str(path), sample_size=500, chunk_rows=800)
    assert profile.rows == 3000
    assert np.array_equal(profile.features["x"].bin_counts, bin_counts(data["x"], profile.features["x"].edges))
    assert profile.features["city"].kind == "categorical"


def test_cli_profile(tmp_path, capsys):
    data = _data(2000)
    src = tmp_path / "train.csv"
    _write_csv(src, data)
    out = tmp_path / "reference.json"
    assert main(["profile", "--input", str(src), "--output", str(out), "--prediction-column", "score=prediction",
                 "--label-column", "label", "--categorical", "label", "--sample-size", "500"]) == 0
    said = capsys.readouterr().out
    assert "2000 rows" in said and "hash sha256:" in said
    profile = ReferenceProfile.load(out)
    assert set(profile.outputs) == {"prediction"} and profile.settings["sample_size"] == 500
    assert main(["profile", "--input", str(src), "--output", str(out), "--label-column", "nope"]) == 1
    assert "no column(s) nope" in capsys.readouterr().err


def test_correlation_of_the_sample_matches_numpy():
    data = _data(3000)
    profile = build_profile({"feature": {"x": data["x"], "y": data["y"]}}, sample_size=3000)
    expected = correlation_matrix(np.column_stack([data["x"], data["y"]]))
    assert np.allclose(profile.correlation, expected, equal_nan=True)


@pytest.mark.parametrize("suffix, opener", [(".gz", "gzip"), (".bz2", "bz2"), (".xz", "lzma")])
def test_compressed_csv_inputs_are_read(tmp_path, suffix, opener):
    import importlib

    path = tmp_path / f"data.csv{suffix}"
    with importlib.import_module(opener).open(path, "wt", encoding="utf-8") as f:
        f.write("a,b\n1,x\n2,y\n")
    for engine in ("arrow", "python"):
        chunks = list(iter_file_chunks(str(path), numeric=lambda name: name == "a", engine=engine))
        assert len(chunks) == 1 and chunks[0]["a"].tolist() == [1.0, 2.0] and chunks[0]["b"] == ["x", "y"]


def test_progress_is_reported_on_a_terminal_only(tmp_path, capsys):
    path = tmp_path / "train.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["x", "c"])
        writer.writerows([[i * 0.5, "abc"[i % 3]] for i in range(5000)])
    build_profile_from_file(str(path), chunk_rows=500, sample_size=1000, progress=True)
    lines = capsys.readouterr().err.split("\n")
    # one line per pass (the file is larger than the sample: two reads), each ending at 100% and every row
    finished = [line.rsplit("\r", 1)[-1] for line in lines if line]
    assert len(finished) == 2, lines
    assert all("100.0%" in line and "5,000 rows" in line and "rows/s" in line for line in finished), finished
    build_profile_from_file(str(path), chunk_rows=500, sample_size=1000, progress=False)
    assert capsys.readouterr().err == ""
    build_profile_from_file(str(path), chunk_rows=500, sample_size=1000)   # stderr is not a terminal here
    assert capsys.readouterr().err == ""
