"""`inferwatch batch` for real: two batches pushed to a Debian prometheus-pushgateway on loopback,
scraped by a real Prometheus with the shipped `pushgateway` scrape job; the shipped drift and
performance alerts' expressions, unchanged, are true for the bad batch and false for the clean one."""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest
from stack_helpers import REPO, RULES_DIR, Prometheus, Pushgateway, load_yaml, wait_until

from inferwatch.reference import build_profile_from_file


def write_table(path, n: int, seed: int, shift: float = 0.0, accuracy: float = 0.95):
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["age", "income", "city", "score", "pred", "label"])
        for _ in range(n):
            age = float(rng.normal(40 + shift, 10))
            score = 1 / (1 + np.exp(-(age - 40) / 8))
            pred = int(score > 0.5)
            writer.writerow([repr(age), repr(float(rng.lognormal(10, 0.5))),
                             ["paris", "lyon", "nice"][int(rng.integers(0, 3))], repr(score), pred,
                             pred if rng.random() < accuracy else 1 - pred])
    return path


def alert_expression(name: str, rules: str = "inferwatch-data.yml", containing: str = "") -> str:
    for group in load_yaml(RULES_DIR / rules)["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == name and containing in rule["expr"]:
                return rule["expr"]
    raise AssertionError(f"{name} is not in the shipped rules")


@pytest.fixture
def stack(tmp_path):
    gateway = Pushgateway(tmp_path)
    shipped = next(job for job in load_yaml(REPO / "prometheus" / "prometheus.yml")["scrape_configs"]
                   if job["job_name"] == "pushgateway")
    scrape = {**shipped, "static_configs": [{"targets": [gateway.url.split("//")[1]]}]}
    prometheus = Prometheus(tmp_path, [scrape])
    yield gateway, prometheus
    prometheus.stop()
    gateway.stop()


def test_shipped_drift_alerts_are_true_for_a_drifted_batch_and_false_for_a_clean_one(tmp_path, stack):
    gateway, prometheus = stack
    train = write_table(tmp_path / "train.csv", 5000, seed=1)
    build_profile_from_file(str(train), features=["age", "income", "city"],
                            prediction_columns={"score": "score"}).save(tmp_path / "reference.json")
    config = tmp_path / "inferwatch.yaml"
    config.write_text("model: {name: credit, version: v3}\nupstream: {url: 'http://127.0.0.1:9'}\n")
    for batch, shift, accuracy in (("nightly-clean", 0.0, 0.95), ("nightly-drifted", 15.0, 0.5)):
        table = write_table(tmp_path / f"{batch}.csv", 3000, seed=len(batch), shift=shift, accuracy=accuracy)
        out = subprocess.run([sys.executable, "-m", "inferwatch", "batch", "--config", str(config),
                              "--reference", str(tmp_path / "reference.json"), "--input", str(table),
                              "--prediction-column", "score", "--prediction-column", "pred=prediction",
                              "--label-column", "label", "--batch-id", batch, "--pushgateway", gateway.url],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and out.stderr == "", out.stdout + out.stderr

    # the groups are scraped with their own labels: job, instance (the batch id), model, version
    seen = wait_until(lambda: len(prometheus.query("inferwatch_dataset_drifted")) == 2
                      and prometheus.query("inferwatch_dataset_drifted"), 30)
    assert seen, prometheus.log_text()
    assert {(r["metric"]["job"], r["metric"]["instance"], r["metric"]["model"], r["metric"]["model_version"])
            for r in seen} == {("inferwatch-batch", "nightly-clean", "credit", "v3"),
                               ("inferwatch-batch", "nightly-drifted", "credit", "v3")}

    for alert in ("InferwatchFeatureDrift", "InferwatchDatasetDrift"):
        firing = prometheus.query(alert_expression(alert))
        assert {r["metric"]["instance"] for r in firing} == {"nightly-drifted"}, (alert, firing)
    features = {r["metric"]["feature"] for r in prometheus.query(alert_expression("InferwatchFeatureDrift"))}
    assert "age" in features and "city" not in features
    degraded = prometheus.query(alert_expression("InferwatchModelPerformanceDegraded", "inferwatch-ml.yml",
                                                 'metric="accuracy"'))
    assert {r["metric"]["instance"] for r in degraded} == {"nightly-drifted"}, degraded
    # nothing that describes a running process was pushed: no staleness alert on yesterday's batch
    assert prometheus.query("inferwatch_drift_last_evaluation_timestamp_seconds") == []
