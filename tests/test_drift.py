"""The drift engine: evaluation against scipy and the stats library, decisions, counters, metrics."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import requests
from prometheus_client import CollectorRegistry
from scipy import stats as sps

from conftest import registry_samples
from inferwatch.config import ConfigError, load_config, parse_config
from inferwatch.monitors.drift import BinCounters, DriftCollector, DriftEngine, Evaluator, PreparedReference
from inferwatch.alerting.promql import fleet_psi_expr, fleet_psi_rules
from inferwatch.ingest.events import EventBatch
from inferwatch.reference import ReferenceStore, build_profile
from inferwatch.sidecar import Sidecar
from inferwatch.stats import bin_counts, compare_samples, js_distance, psi
from inferwatch.stats.vectorised import pca_drift_score_standardised
from inferwatch.pipeline.window import Window, WindowStore

CITIES = ["paris", "rome", "oslo", "lima"]


def _columns(n: int, rng: np.random.Generator, shift: float = 0.0, d: int = 3) -> dict[str, list]:
    cols = {f"x{i}": list(rng.normal(shift if i == 0 else 0.0, 1.0, n)) for i in range(d)}
    cols["city"] = list(rng.choice(CITIES, n, p=[0.4, 0.3, 0.2, 0.1]))
    return cols


def _reference(n: int = 5000, seed: int = 0, d: int = 3):
    rng = np.random.default_rng(seed)
    cols = _columns(n, rng, d=d)
    out = {"prediction": list(rng.random(n))}
    return build_profile({"feature": {k: np.asarray(v) if k != "city" else v for k, v in cols.items()},
                          "output": {k: np.asarray(v) for k, v in out.items()}})


def _window(cols: dict[str, list], outputs: dict[str, list] | None = None, version: str = "1") -> Window:
    n = len(next(iter(cols.values())))
    w = Window(version, capacity=max(n, 1), max_age_seconds=1e9)
    w.append(EventBatch(n, features=cols, outputs=outputs or {}))
    return w


def _drift_cfg(**drift) -> dict:
    return parse_config({"drift": drift}).drift


# --- the evaluator ------------------------------------------------------------------------------------


def test_identical_data_has_no_drift_and_a_shift_is_found():
    profile = _reference()
    ev = Evaluator(PreparedReference.build(profile), _drift_cfg())
    rng = np.random.default_rng(10)
    same = ev.evaluate(_window(_columns(800, rng)).snapshot())
    assert [c.name for c in same.features] == ["x0", "x1", "x2", "city"]
    assert not any(c.drifted for c in same.features) and not same.dataset_drifted
    assert same.drifted_ratio == 0.0
    assert 0.8 < same.multivariate < 1.3 and same.correlation < 0.15
    shifted = ev.evaluate(_window(_columns(800, rng, shift=0.5)).snapshot())
    flags = {c.name: c.drifted for c in shifted.features}
    assert flags == {"x0": True, "x1": False, "x2": False, "city": False}
    assert shifted.dataset_drifted and shifted.drifted_ratio == 0.25
    x0 = shifted.features[0]
    assert x0.method == "ks" and x0.p_values["ks"] < 1e-6
    assert set(x0.scores) == {"ks", "psi", "js", "hellinger", "kl", "wasserstein"}
    # tv: chi2's effect; unseen: the new-values test of a format 4 profile (issue 19)
    assert set(shifted.features[3].scores) == {"chi2", "linf", "js", "psi", "tv", "unseen"}


def test_the_scores_are_the_library_functions_on_the_window():
    profile = _reference()
    ev = Evaluator(PreparedReference.build(profile), _drift_cfg())
    rng = np.random.default_rng(11)
    cols = _columns(1500, rng, shift=0.3)
    cols["x1"][:100] = [None] * 100  # missing values: a different present count, the per-group path
    result = ev.evaluate(_window(cols).snapshot())
    for c in result.features[:2]:
        ref = profile.features[c.name]
        values = np.array([v for v in cols[c.name] if v is not None], dtype=float)
        cur = bin_counts(values, ref.edges)
        assert c.scores["psi"] == pytest.approx(psi(ref.bin_counts, cur), rel=1e-10)
        assert c.scores["js"] == pytest.approx(js_distance(ref.bin_counts, cur), rel=1e-10)
        cmp = compare_samples(ref.sample, values, method="fast", reference_std=ref.statistics["std"])
        assert c.scores["ks"] == cmp.ks_statistic and c.scores["wasserstein"] == pytest.approx(
            cmp.wasserstein_normalized, rel=1e-10)
        assert c.p_values["ks"] == pytest.approx(sps.ks_2samp(ref.sample, values).pvalue, abs=0.015)
        assert c.statistics["mean"] == pytest.approx(values.mean())
        assert c.statistics["p50"] == pytest.approx(np.median(values))
    assert result.features[1].statistics["missing_ratio"] == pytest.approx(100 / 1500)
    assert result.features[0].method == "ks"  # issue 19: the test at every size (was wasserstein above 1000)


def test_method_by_window_size_overrides_and_thresholds():
    profile = _reference()
    cfg = _drift_cfg(sample_test_max_events=500, features={"x1": {"method": "psi", "threshold": 0.01},
                                                          "x2": {"enabled": False}}, thresholds={"js": 0.5},
                     methods=["psi"])
    ev = Evaluator(PreparedReference.build(profile), cfg)
    rng = np.random.default_rng(12)
    small = ev.evaluate(_window(_columns(400, rng)).snapshot())
    by = {c.name: c for c in small.features}
    assert (by["x0"].method, by["city"].method) == ("ks", "chi2")
    assert (by["x1"].method, by["x1"].threshold) == ("psi", 0.01) and by["x1"].drifted  # tiny threshold
    assert by["x2"].method == "" and "x2" not in {c.name for c in small.features if c.method}
    assert set(by["x2"].scores) == {"psi"}  # narrowed list
    assert set(by["x0"].scores) == {"psi", "ks"}  # + the decision's method
    large = ev.evaluate(_window(_columns(2000, rng)).snapshot())
    by = {c.name: c for c in large.features}
    # Issue 19: one rule at every window size (a distance decided above sample_test_max_events before).
    assert (by["x0"].method, by["city"].method, by["city"].threshold) == ("ks", "chi2", 0.01)
    # + the decision's method, its effect and the new-values test (always: they decide)
    assert set(by["city"].scores) == {"psi", "chi2", "tv", "unseen"}


@pytest.mark.parametrize("correction", ["bonferroni", "bh", "none"])
def test_multiple_testing_correction(correction):
    profile = _reference(d=30)
    ev = Evaluator(PreparedReference.build(profile), _drift_cfg(correction=correction, alpha=0.05))
    rng = np.random.default_rng(13)
    false_alarms = 0
    for _ in range(10):
        result = ev.evaluate(_window(_columns(300, rng, d=30)).snapshot())
        false_alarms += sum(c.drifted for c in result.features)
    if correction == "none":
        assert false_alarms >= 3  # ~5% of 310 tests
    else:
        assert false_alarms <= 2


def test_dataset_drift_share():
    profile = _reference()
    rng = np.random.default_rng(14)
    window = _window(_columns(800, rng, shift=1.0))
    any_one = Evaluator(PreparedReference.build(profile), _drift_cfg()).evaluate(window.snapshot())
    half = Evaluator(PreparedReference.build(profile), _drift_cfg(dataset_drift_share=0.5)).evaluate(window.snapshot())
    assert any_one.dataset_drifted and not half.dataset_drifted


def test_pca_complement_equals_the_model():
    profile = _reference(d=6)
    prepared = PreparedReference.build(profile)
    assert prepared.pca_complement is not None  # independent features: k > d/2
    rng = np.random.default_rng(15)
    x = rng.normal(size=(500, 6)) * np.array([1, 1, 1, 1, 1, 1.5])
    z = (x - profile.pca.mean) / profile.pca.scale
    score = pca_drift_score_standardised(profile.pca, z, prepared.pca_complement)
    assert score == pytest.approx(profile.pca.drift_score(x), rel=1e-9)


def test_small_windows_are_not_evaluated():
    profile = _reference()
    ev = Evaluator(PreparedReference.build(profile), _drift_cfg(min_events=100))
    result = ev.evaluate(_window(_columns(50, np.random.default_rng(16))).snapshot())
    assert result.features == [] and math.isnan(result.drifted_ratio)


# --- bin counters and the fleet PSI -------------------------------------------------------------------


def test_bin_counters_match_the_window_binning():
    profile = _reference()
    prepared = PreparedReference.build(profile)
    counters = BinCounters(prepared)
    rng = np.random.default_rng(17)
    cols = _columns(3000, rng, shift=0.4)
    cols["x1"][5] = None
    cols["x1"][6] = "oops"
    cols["city"][7] = None
    cols["city"][8] = "berlin"  # never seen: other
    for start in range(0, 3000, 1):  # one-row batches, as the proxy sends them...
        if start == 40:
            break
        counters.add({k: v[start:start + 1] for k, v in cols.items()}, 1)
    counters.add({k: v[40:] for k, v in cols.items()}, 2960)  # ...and one large batch
    for name in ("x0", "x1", "x2"):
        values = np.array([v if isinstance(v, float) else np.nan for v in cols[name]])
        assert np.array_equal(counters.column_counts(name), bin_counts(values, profile.features[name].edges))
    city = counters.column_counts("city")
    assert city.tolist() == [sum(v == c for v in cols["city"]) for c in profile.features["city"].categories] + [1]
    # The sidecar's own PSI over the same events equals PSI of the cumulative counts.
    ev = Evaluator(prepared, _drift_cfg())
    result = ev.evaluate(_window({k: v for k, v in cols.items()}).snapshot())
    x0 = next(c for c in result.features if c.name == "x0")
    assert x0.scores["psi"] == pytest.approx(psi(profile.features["x0"].bin_counts, counters.column_counts("x0")),
                                             rel=1e-12)


def test_fleet_psi_rules_are_well_formed():
    rules = fleet_psi_rules("30m", eps=1e-4)
    assert list(rules)[-1] == "model_version_feature:inferwatch_feature_psi:30m"
    assert all(":" in name and "[30m]" not in name for name in rules)
    expr = fleet_psi_expr("30m")
    assert "model_version_feature_bin:" not in expr and "increase(inferwatch_feature_bin_total[30m])" in expr
    assert "> 0" in rules["model_version_feature_bin:inferwatch_feature_bin_ratio:smoothed30m"]


# --- the engine, the collector and the sidecar ----------------------------------------------------------


_scrape = registry_samples


def test_collector_drops_label_sets_that_are_gone():
    profile = _reference()
    cfg = load_config(None, {"model.name": "m", "model.version": "1"})
    store = WindowStore(capacity=1000, max_age_seconds=1e9, max_versions=4)
    engine = DriftEngine.from_config(cfg, store, profile=profile)
    registry = CollectorRegistry()
    registry.register(DriftCollector(engine))
    rng = np.random.default_rng(18)
    store.get("1").append(EventBatch(500, features=_columns(500, rng), outputs={"prediction": list(rng.random(500))}))
    engine.evaluate_all()
    got = _scrape(registry)
    features = {s[0]["feature"] for s in got["inferwatch_feature_drifted"]}
    assert features == {"x0", "x1", "x2", "city"}
    # the decision names the method that made it: at 500 events the exact tests (auto defaults)
    decided_by = {s[0]["feature"]: s[0]["method"] for s in got["inferwatch_feature_drifted"]}
    assert decided_by == {"x0": "ks", "x1": "ks", "x2": "ks", "city": "chi2"}
    assert {s[0]["method"] for s in got["inferwatch_prediction_drifted"]} == {"ks"}
    assert {s[0]["output"] for s in got["inferwatch_prediction_drift_score"]} == {"prediction"}
    assert got["inferwatch_reference_info"][0][0]["hash"] == profile.hash
    assert {s[0]["model_version"] for s in got["inferwatch_feature_bin_total"]} == {"1"}  # at 0 from the start
    # x2 stops arriving and is overwritten in the window: its series go, the others stay.
    cols = _columns(1000, rng)
    del cols["x2"]
    store.get("1").append(EventBatch(1000, features=cols))
    engine.evaluate_all()
    got = _scrape(registry)
    assert {s[0]["feature"] for s in got["inferwatch_feature_drifted"]} == {"x0", "x1", "city"}
    assert not any(s[0]["feature"] == "x2" for s in got["inferwatch_feature_drift_score"])
    assert "inferwatch_prediction_drift_score" not in got


def test_reference_store_warmup_and_hand_out(tmp_path):
    """The store freezes the main version's first warmup_events events, once, and reports them."""
    windows = WindowStore(capacity=1000, max_age_seconds=1e9, max_versions=2)
    store = ReferenceStore(parse_config({"reference": {"warmup_events": 300}}).reference, main_version="1",
                           main_window=lambda: windows.windows().get("1"))
    assert store.type == "warmup" and store.current() is None and store.try_warmup() is None
    rng = np.random.default_rng(20)
    windows.get("2").append(EventBatch(300, features=_columns(300, rng)))  # not the main version
    windows.get("1").append(EventBatch(200, features=_columns(200, rng)))
    assert store.try_warmup() is None
    assert store.status() == {"type": "warmup", "ready": False, "warmup_events": 300, "warmup_collected": 200}
    windows.get("1").append(EventBatch(400, features=_columns(400, rng, shift=3.0)))
    profile = store.try_warmup()
    assert profile is not None and store.current() is profile and store.try_warmup() is profile
    assert profile.rows == 300 and profile.source == "warmup:1:300 events"
    # The first 300 events (200 at 0, 100 at 3), not all 600 (mean 2).
    assert profile.features["x0"].statistics["mean"] == pytest.approx(1.0, abs=0.3)
    status = store.status()
    assert status["ready"] and status["hash"] == profile.hash and status["warmup_collected"] == 300
    path = tmp_path / "reference.json"
    profile.save(path)
    from_file = ReferenceStore(parse_config({"reference": {"path": str(path)}}).reference)
    assert from_file.type == "file" and from_file.current().hash == profile.hash
    assert "warmup_events" not in from_file.status()
    assert ReferenceStore(parse_config({}).reference).status() == {"type": "none", "ready": False}


def test_sidecar_warmup_reference_end_to_end(tmp_path):
    cfg = load_config(None, {"proxy.enabled": False, "admin.port": 0, "admin.listen_address": "127.0.0.1",
                             "model.name": "m", "model.version": "1", "reference.warmup_events": 300,
                             "drift.interval_seconds": 0.1})
    sidecar = Sidecar(cfg).start()
    try:
        rng = np.random.default_rng(19)
        base = f"http://127.0.0.1:{sidecar.admin_port}"
        status = requests.get(base + "/v1/status", timeout=5).json()["drift"]
        assert status["reference"] == {"type": "warmup", "ready": False, "warmup_events": 300, "warmup_collected": 0}
        sidecar.pipeline.submit_batch("1", EventBatch(300, features=_columns(300, rng),
                                                      outputs={"prediction": list(rng.random(300))}))
        sidecar.pipeline.drain()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sidecar.drift.reference is None:
            time.sleep(0.05)
        sidecar.pipeline.submit_batch("1", EventBatch(700, features=_columns(700, rng, shift=2.0),
                                                      outputs={"prediction": list(rng.random(700))}))
        sidecar.pipeline.drain()
        while time.monotonic() < deadline and not (sidecar.drift.results.get("1") and
                                                   sidecar.drift.results["1"].events == 1000):
            time.sleep(0.05)
        got = _scrape(sidecar.metrics.registry)
        info = got["inferwatch_reference_info"][0][0]
        assert info["type"] == "warmup" and info["rows"] == "300"
        drifted = {s[0]["feature"]: s[1] for s in got["inferwatch_feature_drifted"]}
        assert drifted == {"x0": 1.0, "x1": 0.0, "x2": 0.0, "city": 0.0}
        assert got["inferwatch_dataset_drifted"][0][1] == 1.0
        assert got["inferwatch_drift_window_events"][0][1] == 1000
        x0_bins = sum(v for labels, v in got["inferwatch_feature_bin_total"] if labels["feature"] == "x0")
        assert x0_bins == 700  # counting starts once the reference exists
        status = requests.get(base + "/v1/status", timeout=5).json()["drift"]
        assert status["reference"]["ready"] and status["versions"]["1"]["drifted_features"] == ["x0"]
    finally:
        sidecar.stop()


def test_sidecar_loads_a_reference_file(tmp_path):
    profile = _reference()
    path = tmp_path / "reference.json"
    profile.save(path)
    from inferwatch.cli import build_parser, _overrides

    args = build_parser().parse_args(["run", "--reference", str(path), "--drift-interval", "5"])
    cfg = load_config(None, {**_overrides(args), "proxy.enabled": False, "admin.port": 0})
    assert cfg.reference.path == str(path) and cfg.drift.interval_seconds == 5.0
    sidecar = Sidecar(cfg)
    assert sidecar.drift.reference.hash == profile.hash and sidecar.drift.reference_type == "file"


def test_drift_config_problems():
    with pytest.raises(ConfigError) as err:
        parse_config({"reference": {"path": "/nonexistent.json", "warmup_events": 10},
                      "drift": {"numeric_method": "nope", "dataset_drift_share": 2, "interval_seconds": 0}})
    text = str(err.value)
    for expected in ("reference.warmup_events: set either", "reference.path: file not found",
                     "drift.numeric_method: unknown method 'nope'", "drift.dataset_drift_share",
                     "drift.interval_seconds: must be greater than 0"):
        assert expected in text, expected
    with pytest.raises(ConfigError, match="must not exceed window.max_events"):
        parse_config({"reference": {"warmup_events": 20000}})


def test_reference_categories_survive_a_flood_of_unseen_values():
    """More distinct values than the window's vocabulary holds, before any reference category:
    the reference's categories keep their codes, so the feature is not reported as all-new."""
    profile = _reference()
    cfg = load_config(None, {"model.name": "m", "model.version": "1", "drift.min_events": 10})
    windows = WindowStore(capacity=3000, max_age_seconds=1e9, max_versions=2, max_categories=16)
    engine = DriftEngine.from_config(cfg, windows, profile=profile)
    window = windows.get("1")
    rng = np.random.default_rng(8)
    window.append(EventBatch(40, features={"city": [f"new{i}" for i in range(40)]}))
    window.append(EventBatch(2000, features=_columns(2000, rng)))
    result = engine.evaluator.evaluate(window.snapshot())
    city = next(c for c in result.features if c.name == "city")
    assert city.scores["js"] < 0.2, city.scores   # 2% unseen values, not 100%
