"""`inferwatch batch`: a table through the sidecar's own monitors. The same rows pushed to a running
sidecar give every pushed gauge and counter the same value; --fail-on decides the exit code; a bad
chunk is reported and counted; a configured column the file lacks is one error; a Pushgateway that
is down is one line on stderr."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import admin_url, start_sidecar, wait_for
from inferwatch.batch import PUSHED_FAMILIES, BatchOptions, BatchRun
from inferwatch.config import load_config
from inferwatch.reference import build_profile_from_file

pytestmark = pytest.mark.timeout(300)   # several `inferwatch batch` processes a test: generous on a loaded machine
COLUMNS = ["age", "income", "city", "pred", "score", "label"]


def scored_rows(n: int, *, seed: int, shift: float = 0.0, accuracy: float = 0.9, missing: float = 0.0) -> list[list]:
    """A scored table: two numeric features, a category, the predicted class, its score, the label."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        age = float(rng.normal(40 + shift, 10))
        income = float(rng.lognormal(10, 0.5))
        city = ["paris", "lyon", "nice"][int(rng.integers(0, 3))]
        score = float(1 / (1 + math.exp(-(age - 40 - shift) / 8)))
        pred = int(score > 0.5)
        label = pred if rng.random() < accuracy else 1 - pred
        rows.append([None if rng.random() < missing else age, income, city, pred, score, label])
    return rows


def write_csv(path: Path, rows: list[list]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows([["" if v is None else (repr(v) if isinstance(v, float) else v) for v in row]
                          for row in rows])
    return path


def write_parquet(path: Path, rows: list[list]) -> Path:
    pq.write_table(pa.table({name: [row[i] for row in rows] for i, name in enumerate(COLUMNS)}), path,
                   row_group_size=1000)
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("reference")
    train = write_csv(tmp / "train.csv", scored_rows(6000, seed=1))
    profile = build_profile_from_file(str(train), categorical=["pred"],
                                      prediction_columns={"pred": "prediction", "score": "score"},
                                      label_column="label", sample_size=3000)
    path = tmp / "reference.json"
    profile.save(path)
    return path


SETTINGS = {"model.name": "credit", "model.version": "v1", "segments.features": ["city"],
            "window.max_events": 5000, "performance.min_events": 50}
PREDICTIONS = ["pred=prediction", "score=score"]


def batch_run(reference: Path, source: Path, chunk_rows: int = 1000, **options) -> BatchRun:
    cfg = load_config(None, {**SETTINGS, "reference.path": str(reference), "upstream.url": "http://127.0.0.1:9"})
    run = BatchRun(cfg, BatchOptions(str(source), batch_id="b1", label_column="label", chunk_rows=chunk_rows,
                                     prediction_columns={"pred": "prediction", "score": "score"}, **options))
    run.run()
    return run


def samples(families) -> dict[tuple, float]:
    """{(name, labels without `source`): value} of the pushed families."""
    out = {}
    for family in families:
        if family.name not in PUSHED_FAMILIES:
            continue
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "source"))
            out[(s.name, labels)] = s.value
    return out


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_batch_results_equal_the_sidecars_for_the_same_rows(tmp_path, reference, kind):
    rows = scored_rows(4000, seed=2, shift=6, missing=0.02)
    source = (write_csv if kind == "csv" else write_parquet)(tmp_path / f"scored.{kind}", rows)
    run = batch_run(reference, source)
    from_batch = samples(run.families())

    sidecar = start_sidecar("http://127.0.0.1:9", **SETTINGS, **{
        "proxy.enabled": False, "reference.path": str(reference), "labels.enabled": True,
        "drift.interval_seconds": 0.2, "performance.interval_seconds": 0.2})
    try:
        for start in range(0, len(rows), 1000):   # the batch's chunks, as pushes and label posts
            part = rows[start:start + 1000]
            events = [{"prediction_id": f"b1-{start + i}",
                       "features": {"age": r[0], "income": r[1], "city": r[2]},
                       "prediction": {"prediction": r[3], "score": r[4]}} for i, r in enumerate(part)]
            assert requests.post(admin_url(sidecar, "/v1/events"), json={"events": events}, timeout=10).ok
            labels = [{"prediction_id": f"b1-{start + i}", "label": r[5]} for i, r in enumerate(part)]
            assert requests.post(admin_url(sidecar, "/v1/labels"), json={"labels": labels}, timeout=10).ok
        assert sidecar.pipeline.drain(30)
        drift, performance = sidecar.drift.evaluations, sidecar.performance.evaluations
        assert wait_for(lambda: sidecar.drift.evaluations >= drift + 2
                        and sidecar.performance.evaluations >= performance + 2, 30)
        scraped = requests.get(admin_url(sidecar, "/metrics"), timeout=10).text
    finally:
        sidecar.stop()
    from_sidecar = samples(text_string_to_metric_families(scraped))

    assert len(from_batch) > 200   # drift, guard, outputs, segments, performance all there
    names = {name for name, _ in from_batch}
    for family in ("inferwatch_feature_drift_score", "inferwatch_dataset_drifted", "inferwatch_data_quality_events_total",
                   "inferwatch_prediction_value_bucket", "inferwatch_model_performance", "inferwatch_segment_events_total",
                   "inferwatch_feature_missing_ratio", "inferwatch_confusion_matrix_total"):
        assert family in names, family
    assert set(from_batch) == set(from_sidecar), set(from_batch) ^ set(from_sidecar)
    different = {key: (from_batch[key], from_sidecar[key]) for key in from_batch
                 if not same(from_batch[key], from_sidecar[key])}
    assert not different, different


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inferwatch", "batch", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "inferwatch.yaml"
    path.write_text("model: {name: credit, version: v1}\nupstream: {url: 'http://127.0.0.1:9'}\n"
                    "segments: {features: [city]}\nperformance: {min_events: 50}\n")
    return path


def run_cli(config: Path, reference: Path, source: Path, *extra: str) -> subprocess.CompletedProcess:
    return cli("--config", str(config), "--reference", str(reference), "--input", str(source),
               *[a for p in PREDICTIONS for a in ("--prediction-column", p)], "--label-column", "label", *extra)


def test_fail_on_decides_the_exit_code(tmp_path, config, reference):
    clean = write_csv(tmp_path / "clean.csv", scored_rows(3000, seed=3))
    drifted = write_csv(tmp_path / "drifted.csv", scored_rows(3000, seed=4, shift=15))
    wrong = write_csv(tmp_path / "wrong.csv", scored_rows(3000, seed=5, accuracy=0.4))
    holes = write_csv(tmp_path / "holes.csv", scored_rows(3000, seed=6, missing=0.3))
    every = "drift,data-quality,performance"

    ok = run_cli(config, reference, clean, "--fail-on", every)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "3,000 rows" in ok.stdout and "no dataset drift" in ok.stdout and "FAIL" not in ok.stdout

    out = run_cli(config, reference, drifted, "--fail-on", "drift")
    assert out.returncode == 1 and "FAIL drift: the dataset drifted" in out.stdout and "age" in out.stdout
    assert run_cli(config, reference, drifted).returncode == 0             # nothing named: never fails
    assert run_cli(config, reference, drifted, "--fail-on", "performance").returncode == 0

    out = run_cli(config, reference, wrong, "--fail-on", "performance")
    assert out.returncode == 1 and "FAIL performance: accuracy" in out.stdout, out.stdout
    assert run_cli(config, reference, wrong, "--fail-on", "drift").returncode == 0

    out = run_cli(config, reference, holes, "--fail-on", "data-quality")
    assert out.returncode == 1 and "FAIL data-quality" in out.stdout, out.stdout

    bad = run_cli(config, reference, clean, "--fail-on", "drift,latency")
    assert bad.returncode == 2 and "unknown condition(s) latency" in bad.stderr


def test_a_bad_chunk_is_reported_counted_and_skipped_unless_strict(tmp_path, config, reference):
    rows = scored_rows(3000, seed=7)
    source = tmp_path / "scored.jsonl"
    lines = [json.dumps(dict(zip(COLUMNS, row))) for row in rows]
    lines[1500] = lines[1500][:-5]                      # a truncated line: rows 1001-2000 cannot be parsed
    source.write_text("\n".join(lines) + "\n")
    out = run_cli(config, reference, source, "--chunk-rows", "1000")
    assert out.returncode == 0, out.stderr
    assert f"cannot parse {source} rows 1001-2000" in out.stderr
    assert "2,000 rows in 2 chunks" in out.stdout and "unparsable: 1 chunk(s), 1,000 rows" in out.stdout

    run = batch_run(reference, source)
    dropped = [s.value for f in run.families() for s in f.samples
               if s.name == "inferwatch_events_dropped_total" and s.labels.get("reason") == "unparsable"]
    assert dropped == [1000.0] and run.summary.rows == 2000

    strict = run_cli(config, reference, source, "--chunk-rows", "1000", "--strict")
    assert strict.returncode == 2 and f"cannot parse {source} rows 1001-2000" in strict.stderr
    assert strict.stdout == ""


def test_a_configured_column_missing_from_the_file_is_one_error_naming_both(tmp_path, config, reference):
    rows = [[r[0], r[1], r[3], r[4], r[5]] for r in scored_rows(100, seed=8)]   # no `city`
    source = tmp_path / "no_city.csv"
    with open(source, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["age", "income", "pred", "score", "label"])
        writer.writerows(rows)
    out = run_cli(config, reference, source)
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert f"city (segments.features in {config})" in lines[0] and f"not in {source}" in lines[0]
    out = run_cli(config, reference, source, "--label-column", "truth")
    assert out.returncode == 2 and "truth (--label-column)" in out.stderr and "city" in out.stderr


def test_a_pushgateway_that_is_down_is_one_line_and_does_not_change_the_exit_code(tmp_path, config, reference):
    from conftest import free_ports

    down = f"http://127.0.0.1:{free_ports(1)[0]}"
    clean = write_csv(tmp_path / "clean.csv", scored_rows(2000, seed=9))
    out = run_cli(config, reference, clean, "--pushgateway", down, "--fail-on", "drift")
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip().splitlines() == [l for l in out.stderr.strip().splitlines() if down in l]
    assert len(out.stderr.strip().splitlines()) == 1 and "could not push" in out.stderr
    drifted = write_csv(tmp_path / "drifted.csv", scored_rows(2000, seed=10, shift=15))
    assert run_cli(config, reference, drifted, "--pushgateway", down, "--fail-on", "drift").returncode == 1


def test_globs_are_read_in_order_and_the_report_is_written(tmp_path, config, reference):
    for part in range(3):
        write_csv(tmp_path / f"part-{part}.csv", scored_rows(700, seed=20 + part))
    report = tmp_path / "report.html"
    out = run_cli(config, reference, tmp_path / "part-*.csv", "--report", str(report))
    assert out.returncode == 0, out.stderr
    assert "2,100 rows in 3 chunks" in out.stdout
    html = report.read_text()
    assert html.startswith("<!DOCTYPE html>") or "<html" in html[:200]
    for feature in ("age", "income", "city"):
        assert feature in html


def test_every_family_a_shipped_gauge_alert_reads_is_pushed(tmp_path, reference):
    """The alerts on gauges fire on a pushed batch only if their families are pushed: a family a
    collector gains later must be added to PUSHED_FAMILIES (or this fails). Alerts on rates of
    counters are left out: a pushed counter does not move, so they cannot fire on a batch."""
    import re

    import yaml

    run = batch_run(reference, write_csv(tmp_path / "scored.csv", scored_rows(500, seed=11)), chunk_rows=250)
    present = {family.name for family in run.sidecar.metrics.registry.collect()}
    rules_dir = Path(__file__).resolve().parents[1] / "prometheus" / "rules"
    gauge_alerts, missing = set(), set()
    for path in (rules_dir / "inferwatch-data.yml", rules_dir / "inferwatch-ml.yml"):   # the data's alerts
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                expr = rule.get("expr", "")
                # rates, directly or through a recording rule (`model:...:rate5m`)
                if "alert" not in rule or re.search(r"\b(rate|irate|increase|changes|time)\(|\bmodel:", expr):
                    continue
                gauge_alerts.add(rule["alert"])
                for name in re.findall(r"\binferwatch_[a-z_]+", expr):
                    base = re.sub(r"_(total|count|sum|bucket)$", "", name)
                    family = name if name in present else base
                    if family in present and family not in PUSHED_FAMILIES:
                        missing.add((rule["alert"], family))
    assert {"InferwatchFeatureDrift", "InferwatchDatasetDrift", "InferwatchSchemaChange",
            "InferwatchModelPerformanceDegraded"} <= gauge_alerts
    assert not missing, sorted(missing)
