"""Reference columns the traffic never brings are said out loud: the log (once), /v1/status and a
gauge, naming the missing and the unexpected columns and how to map them."""

from __future__ import annotations

import logging
import time

import numpy as np
import requests

from inferwatch.config import load_config
from inferwatch.monitors.drift.coverage import ColumnCoverage, find_mismatch
from inferwatch.reference import build_profile
from inferwatch.sidecar import Sidecar


def test_find_mismatch_names_missing_unexpected_and_the_likely_pair():
    m = find_mismatch("output", ["score"], ["prediction"])
    assert m is not None and m.missing == ("score",) and m.unexpected == ("prediction",)
    assert "`--prediction-column score=prediction`" in m.message()
    f = find_mismatch("feature", ["age", "income", "city"], ["age", "income", "town"])
    assert f is not None and f.missing == ("city",) and f.unexpected == ("town",)
    assert "rename the reference column 'city' to 'town'" in f.message()
    assert find_mismatch("feature", ["a", "b"], ["a", "b", "c"]) is None   # extra columns: the guard's job
    assert find_mismatch("output", ["score"], []) is None                  # no outputs at all: push-only features


def test_coverage_waits_for_enough_events_and_logs_once(caplog):
    coverage = ColumnCoverage(["a", "b"], ["score"], min_events=100)
    with caplog.at_level(logging.WARNING, logger="inferwatch.monitors.drift.coverage"):
        coverage.observe(["a", "c"], ["prediction"], 60)
        assert coverage.mismatches() == [] and not caplog.records   # too early to say
        coverage.observe(["a", "c"], ["prediction"], 60)
        coverage.observe(["a", "c"], ["prediction"], 60)
    assert len(caplog.records) == 2   # one line per kind, once
    assert {m.kind for m in coverage.mismatches()} == {"feature", "output"}
    assert coverage.unseen("feature") == 1 and coverage.unseen("output") == 1
    coverage.observe(["a", "b"], ["score"], 1)   # the names agree now: nothing is missing any more
    assert coverage.mismatches() == [] and coverage.unseen("output") == 0


def _reference_with_score_output():
    rng = np.random.default_rng(3)
    n = 2000
    return build_profile({"feature": {"x0": rng.normal(size=n), "x1": rng.normal(size=n),
                                      "city": list(rng.choice(["paris", "rome"], n))},
                          "output": {"score": rng.random(n)}})


def test_a_sidecar_says_which_reference_columns_never_arrive(tmp_path, caplog):
    path = tmp_path / "reference.json"
    _reference_with_score_output().save(path)
    cfg = load_config(None, {"proxy.enabled": False, "admin.port": 0, "admin.listen_address": "127.0.0.1",
                             "model.name": "m", "model.version": "1", "reference.path": str(path),
                             "drift.interval_seconds": 0.2, "drift.min_events": 50})
    sidecar = Sidecar(cfg).start()
    try:
        base = f"http://127.0.0.1:{sidecar.admin_port}"
        rng = np.random.default_rng(4)
        # the payloads call the output `prediction` and the city `town`
        events = [{"features": {"x0": float(rng.normal()), "x1": float(rng.normal()), "town": "rome"},
                   "prediction": float(rng.random())} for _ in range(60)]
        with caplog.at_level(logging.WARNING, logger="inferwatch.monitors.drift.coverage"):
            r = requests.post(base + "/v1/events", json={"events": events}, timeout=5)
            assert r.status_code < 300, r.text
            sidecar.pipeline.drain()
            r = requests.post(base + "/v1/events", json={"events": events}, timeout=5)
            sidecar.pipeline.drain()
        columns = requests.get(base + "/v1/status", timeout=5).json()["drift"]["columns"]
        assert columns["mismatches"]["output"]["missing"] == ["score"]
        assert columns["mismatches"]["output"]["unexpected"] == ["prediction"]
        assert any("--prediction-column score=prediction" in h for h in columns["mismatches"]["output"]["hints"])
        assert columns["mismatches"]["feature"]["missing"] == ["city"]
        assert columns["mismatches"]["feature"]["unexpected"] == ["town"]
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 2, lines   # once each, not once per batch
        assert any("reference outputs never seen in traffic: score" in line and "prediction" in line
                   for line in lines)
        deadline = time.monotonic() + 10
        text = ""
        while time.monotonic() < deadline and 'inferwatch_reference_columns_unseen{' not in text:
            text = requests.get(base + "/metrics", timeout=5).text
            time.sleep(0.05)
        assert 'inferwatch_reference_columns_unseen{kind="output",model="m"} 1.0' in text
        assert 'inferwatch_reference_columns_unseen{kind="feature",model="m"} 1.0' in text
    finally:
        sidecar.stop()
