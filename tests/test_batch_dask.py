"""`inferwatch batch --engine dask`: partitions monitored on a two-worker LocalCluster, the window
evaluated on the driver. Every pushed gauge and counter equals the single process's on the same
rows, except what docs/configuration.md names (a duplicate across partitions is not flagged);
--fail-on gives the same exit codes; an unreachable scheduler fails fast naming its address."""

from __future__ import annotations

import dataclasses
import json
import math
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from inferwatch.batch import BatchError, BatchOptions, BatchRun
from inferwatch.batch_dask import DaskBatchRun
from inferwatch.config import load_config
from inferwatch.reference import build_profile_from_file
from test_batch import PREDICTIONS, SETTINGS, samples, same, scored_rows, write_csv, write_parquet

pytestmark = pytest.mark.timeout(300)   # generous: worker processes on a loaded machine
# 12 000 rows in partitions of 2 000 or 4 000 against a window of 5 000 rows and a labelled window
# of 3 000: the window the driver evaluates is joined from the tails of two or three partitions.
CONFIG = {**SETTINGS, "upstream.url": "http://127.0.0.1:9", "performance.max_events": 3000}
COLUMNS = {"pred": "prediction", "score": "score"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("reference")
    train = write_csv(tmp / "train.csv", scored_rows(6000, seed=1))
    profile = build_profile_from_file(str(train), categorical=["pred"], prediction_columns=COLUMNS,
                                      label_column="label", sample_size=3000)
    profile.save(tmp / "reference.json")
    return tmp / "reference.json"


def options(source: Path | str) -> BatchOptions:
    return BatchOptions(str(source), batch_id="b1", label_column="label", chunk_rows=1000,
                        prediction_columns=dict(COLUMNS))


def both(reference: Path, source: Path | str, client, piece_rows: int, **settings) -> tuple[dict, dict, DaskBatchRun]:
    """The pushed samples of a single-process run and of a distributed one on the same input."""
    cfg = load_config(None, {**CONFIG, "reference.path": str(reference), **settings})
    single = BatchRun(cfg, options(source))
    single.run()
    spread = DaskBatchRun(cfg, options(source), client, piece_rows=piece_rows)
    spread.run()
    assert spread.summary.rows == single.summary.rows and spread.summary.labels == single.summary.labels
    return samples(single.families()), samples(spread.families()), spread


def differences(a: dict, b: dict) -> dict:
    """Samples that differ, but for the documented rounding: a histogram's ``_sum`` is a float sum
    the partitions add up in another order (equal to 1e-12 relative)."""
    assert set(a) == set(b), set(a) ^ set(b)
    return {key: (a[key], b[key]) for key in a if not same(a[key], b[key])
            and not (key[0].endswith("_sum") and math.isclose(a[key], b[key], rel_tol=1e-12))}


def test_every_pushed_sample_equals_the_single_process_on_parquet_partitions(tmp_path, reference, dask_cluster_client):
    source = write_parquet(tmp_path / "scored.parquet", scored_rows(12_000, seed=2, shift=6, missing=0.02))
    single, spread, run = both(reference, source, dask_cluster_client, piece_rows=2000)
    assert run.stats.pieces == 6 and run.stats.workers == 2
    assert len(single) > 200   # drift, guard, outputs, segments, performance all there
    names = {name for name, _ in single}
    for family in ("inferwatch_feature_drift_score", "inferwatch_dataset_drifted", "inferwatch_data_quality_events_total",
                   "inferwatch_prediction_value_bucket", "inferwatch_model_performance", "inferwatch_segment_events_total",
                   "inferwatch_feature_missing_ratio", "inferwatch_feature_bin_total", "inferwatch_window_events",
                   "inferwatch_labelled_window_events"):
        assert family in names, family
    assert not differences(single, spread)
    # The drifted window was judged on the last 5 000 rows, as one process judges it.
    assert [v for (n, _), v in spread.items() if n == "inferwatch_drift_window_events"] == [5000]
    assert [v for (n, _), v in spread.items() if n == "inferwatch_dataset_drifted"] == [1]


def test_every_pushed_sample_equals_the_single_process_on_a_glob_of_csv_files(tmp_path, reference, dask_cluster_client):
    rows = scored_rows(12_000, seed=3, missing=0.02)
    for i, start in enumerate((0, 3000, 7000)):   # files of 3 000, 4 000 and 5 000 rows
        write_csv(tmp_path / f"part-{i}.csv", rows[start:start + (3000, 4000, 5000)[i]])
    single, spread, run = both(reference, tmp_path / "part-*.csv", dask_cluster_client, piece_rows=2000)
    assert run.stats.pieces == 3   # a text file is one partition
    assert not differences(single, spread)


def test_a_duplicate_across_partitions_is_the_one_documented_difference(tmp_path, reference, dask_cluster_client):
    rows = scored_rows(12_000, seed=4)
    rows[2500] = list(rows[1900])   # partition 2 repeats a row of partition 1 (within the duplicate memory)
    source = write_parquet(tmp_path / "scored.parquet", rows)
    single, spread, run = both(reference, source, dask_cluster_client, piece_rows=2000)
    assert "duplicates across partitions are not flagged" in run.caveats()
    duplicate = {key: v for key, v in single.items() if ("issue", "duplicate") in key[1]}
    assert list(duplicate.values()) == [1] and not set(duplicate) & set(spread)   # the one process flags it
    diff = differences({k: v for k, v in single.items() if k not in duplicate}, spread)
    # a failed event counted as such by the one process, passed by the partitions: nothing else moves
    assert {dict(key[1])["result"]: one - many for key, (one, many) in diff.items()
            if key[0] == "inferwatch_data_quality_events_total"} == {"failed": 1, "passed": -1}, diff
    assert all(key[0] == "inferwatch_data_quality_events_total" for key in diff), diff


def test_a_label_cap_overflowing_is_split_differently_with_the_same_totals(tmp_path, reference, dask_cluster_client):
    rows = scored_rows(12_000, seed=5)
    for i in range(0, 2000, 50):
        rows[i][2] = "rome"    # partition 1 meets rome first: the one process gives it the last segment slot
    for i in range(6000, 8000, 50):
        rows[i][2] = "oslo"    # partition 4 never meets rome: its worker gives oslo that slot
    source = write_parquet(tmp_path / "scored.parquet", rows)
    cfg = {"segments.max_values": 4}   # the reference's paris, lyon and nice, then one first-come value
    single, spread, run = both(reference, source, dask_cluster_client, piece_rows=2000, **cfg)
    assert "first-come label caps are per partition once a cap overflows" in run.caveats()

    def events(samples: dict) -> dict[str, float]:
        return {dict(key[1])["value"]: v for key, v in samples.items() if key[0] == "inferwatch_segment_events_total"}

    one, many = events(single), events(spread)
    assert (one["rome"], one["other"], many["rome"], many["oslo"]) == (40, 40, 40, 40)
    assert "oslo" not in one and "other" not in many
    assert sum(one.values()) == sum(many.values()) == 12_000
    # Only series of the capped segment label differ (and the count of capped values).
    a = {k: v for k, v in single.items() if ("segment", "city") not in k[1] and k[0] != "inferwatch_label_values_capped_total"}
    b = {k: v for k, v in spread.items() if ("segment", "city") not in k[1] and k[0] != "inferwatch_label_values_capped_total"}
    assert not differences(a, b)


def test_a_bad_chunk_on_a_worker_is_counted_as_in_one_process_and_stops_a_strict_run(tmp_path, reference,
                                                                                     dask_cluster_client):
    rows = scored_rows(4000, seed=6)
    lines = [json.dumps(dict(zip(["age", "income", "city", "pred", "score", "label"], row))) for row in rows]
    lines[3500] = lines[3500][:-5]                      # a truncated line: rows 1001-2000 of part-1 cannot be parsed
    (tmp_path / "part-0.jsonl").write_text("\n".join(lines[:2500]) + "\n")
    (tmp_path / "part-1.jsonl").write_text("\n".join(lines[2500:]) + "\n")
    single, spread, run = both(reference, tmp_path / "part-*.jsonl", dask_cluster_client, piece_rows=2000)
    assert not differences(single, spread)
    assert [c.split(": ")[0] for c in run.summary.bad_chunks] == [f"{tmp_path / 'part-1.jsonl'} rows 1001-1500"]
    assert run.summary.bad_rows == 500 and run.summary.rows == 3500

    cfg = load_config(None, {**CONFIG, "reference.path": str(reference)})
    strict = DaskBatchRun(cfg, dataclasses.replace(options(tmp_path / "part-*.jsonl"), strict=True),
                          dask_cluster_client)
    with pytest.raises(BatchError, match=f"cannot parse {tmp_path / 'part-1.jsonl'} rows 1001-1500"):
        strict.run()


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inferwatch", "batch", *args], capture_output=True, text=True,
                          timeout=180)


def test_fail_on_gives_the_same_exit_codes(tmp_path, reference, dask_cluster_client):
    config = tmp_path / "inferwatch.yaml"
    config.write_text("model: {name: credit, version: v1}\nupstream: {url: 'http://127.0.0.1:9'}\n"
                      "segments: {features: [city]}\nperformance: {min_events: 50}\n")
    for name, shift in (("clean", 0.0), ("drifted", 15.0)):
        rows = scored_rows(3000, seed=5, shift=shift)
        for i in range(3):
            write_csv(tmp_path / f"{name}-{i}.csv", rows[1000 * i:1000 * (i + 1)])

    def run(name: str, *extra: str) -> subprocess.CompletedProcess:
        return cli("--config", str(config), "--reference", str(reference), "--input", str(tmp_path / f"{name}-*.csv"),
                   *[a for p in PREDICTIONS for a in ("--prediction-column", p)], "--label-column", "label",
                   "--fail-on", "drift,data-quality,performance", *extra)

    for name, expected in (("clean", 0), ("drifted", 1)):
        local = run(name)
        spread = run(name, "--engine", "dask", "--scheduler", dask_cluster_client.scheduler.address)
        assert local.returncode == spread.returncode == expected, (local.stdout, spread.stdout, spread.stderr)
        fails = [line for line in local.stdout.splitlines() if line.startswith("FAIL")]
        assert fails == [line for line in spread.stdout.splitlines() if line.startswith("FAIL")]
        assert "dask: 3 partitions on 2 workers" in spread.stdout
        assert "not merged exactly: duplicates across partitions" in spread.stdout


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_scheduler_fails_fast_naming_its_address(tmp_path, reference):
    source = write_csv(tmp_path / "scored.csv", scored_rows(100, seed=6))
    address = f"tcp://127.0.0.1:{_closed_port()}"
    out = cli("--reference", str(reference), "--input", str(source), "--engine", "dask", "--scheduler", address,
              "--connect-timeout", "3")
    assert out.returncode == 2
    assert f"cannot reach the Dask scheduler at {address} within 3 s" in out.stderr
