"""`inferwatch profile --engine dask`: the profile of a two-worker LocalCluster equals one process's."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inferwatch.reference import ReferenceProfile, build_profile_from_file
from inferwatch.reference.dask_engine import dask_client, profile_with_dask
from profile_equality import assert_same_profile

pytestmark = pytest.mark.timeout(300)   # generous: worker processes on a loaded machine
OPTIONS = dict(prediction_columns={"score": "prediction"}, label_column="label", sample_size=1500, bins=10)


def _table(rows: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    x = rng.normal(3.0, 1.5, rows)
    x[rng.random(rows) < 0.05] = np.nan
    score = rng.random(rows)
    return {
        "x": x,
        "n": rng.integers(0, 7, rows),  # integers and ties
        "city": [None if r < 0.03 else c for r, c in zip(rng.random(rows), rng.choice(["oslo", "rome", "lima"], rows))],
        "score": score,
        "label": (score + rng.normal(0, 0.3, rows) > 0.5).astype(int),
    }


@pytest.fixture(scope="module")
def parquet_files(tmp_path_factory):
    """Three Parquet files of small row groups, and the same rows in one file."""
    d = tmp_path_factory.mktemp("pq")
    parts = [pa.table(_table(rows, seed)) for rows, seed in ((2500, 1), (1700, 2), (3100, 3))]
    for i, t in enumerate(parts):
        pq.write_table(t, d / f"part-{i}.parquet", row_group_size=600)
    pq.write_table(pa.concat_tables(parts), d / "all.parquet", row_group_size=5000)
    return d


def _write_csv(path, table: dict) -> None:
    names = list(table)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        for row in zip(*(table[n] for n in names)):
            w.writerow(["" if v is None or (isinstance(v, float) and np.isnan(v)) else v for v in row])


def test_parquet_glob_on_two_workers_equals_one_process(dask_cluster_client, parquet_files):
    single = build_profile_from_file(str(parquet_files / "all.parquet"), chunk_rows=1000, **OPTIONS)
    distributed, run = profile_with_dask(dask_cluster_client, str(parquet_files / "part-*.parquet"), chunk_rows=400,
                                         piece_rows=1000, **OPTIONS)
    assert run.workers == 2 and run.pieces > 4  # row groups spread over both workers
    assert distributed.rows == 7300 and single.calibration is not None
    assert_same_profile(distributed, single)


def test_csv_files_on_two_workers_equal_one_process(dask_cluster_client, tmp_path):
    tables = [_table(rows, seed) for rows, seed in ((1200, 4), (900, 5), (1600, 6))]
    for i, t in enumerate(tables):
        _write_csv(tmp_path / f"day-{i}.csv", t)
    _write_csv(tmp_path / "all.csv", {k: np.concatenate([np.asarray(t[k], dtype=object) for t in tables]).tolist()
                                      for k in tables[0]})
    single = build_profile_from_file(str(tmp_path / "all.csv"), categorical=["n"], **OPTIONS)
    distributed, run = profile_with_dask(dask_cluster_client, str(tmp_path / "day-*.csv"), categorical=["n"], **OPTIONS)
    assert run.pieces == 3
    assert_same_profile(distributed, single)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_scheduler_fails_fast_naming_its_address(tmp_path, parquet_files):
    address = f"tcp://127.0.0.1:{_closed_port()}"
    # The command gives up after --connect-timeout (Dask's own default is to retry for 30 s); the
    # subprocess timeout only guards against a hang, generous for a loaded machine.
    out = subprocess.run([sys.executable, "-m", "inferwatch", "profile", "-i", str(parquet_files / "all.parquet"),
                          "-o", str(tmp_path / "ref.json"), "--engine", "dask", "--scheduler", address,
                          "--connect-timeout", "3"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert f"cannot reach the Dask scheduler at {address} within 3 s" in out.stderr
    assert not (tmp_path / "ref.json").exists()


def test_the_cli_profiles_on_a_given_scheduler(dask_cluster_client, parquet_files, tmp_path):
    out = tmp_path / "ref.json"
    done = subprocess.run([sys.executable, "-m", "inferwatch", "profile", "-i", str(parquet_files / "part-*.parquet"),
                           "-o", str(out), "--engine", "dask", "--scheduler", dask_cluster_client.scheduler.address,
                           "--prediction-column", "score=prediction", "--label-column", "label",
                           "--sample-size", "1500"], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, done.stderr
    single = build_profile_from_file(str(parquet_files / "all.parquet"), **OPTIONS)
    assert_same_profile(ReferenceProfile.load(str(out)), single)


def test_without_a_scheduler_a_local_cluster_is_started_and_stopped(parquet_files):
    with dask_client(None, workers=1) as c:
        profile, run = profile_with_dask(c, str(parquet_files / "part-0.parquet"), **OPTIONS)
        cluster = c.cluster
    assert run.workers == 1 and profile.rows == 2500
    assert cluster.status.name == "closed"
