"""The input guard: every check counted exactly, bounded labels and memory, schema changes,
outlier detection quality at the calibrated false-positive rate, quarantine and prediction logs,
the collector and the sidecar wiring."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import requests
from prometheus_client import CollectorRegistry, generate_latest

from conftest import admin_url, sample, scrape, wait_for
from inferwatch.config import Config, ConfigError, load_config
from inferwatch.ingest.events import EventBatch
from inferwatch.monitors.guard import ISSUES, Duplicates, Guard, GuardCollector, Issue
from inferwatch.pipeline.predlog import PredictionLogger
from inferwatch.reference import ReferenceProfile, build_profile
from inferwatch.pipeline.window import Window

CITIES = ["paris", "rome", "oslo"]


def reference(n: int = 5000, d: int = 4, seed: int = 0) -> ReferenceProfile:
    rng = np.random.default_rng(seed)
    cols = {f"x{i}": rng.normal(0.0, 1.0 + i, n) for i in range(d)}
    cols["city"] = list(rng.choice(CITIES, n))
    return build_profile({"feature": cols})


def clean(n: int, d: int = 4, seed: int = 1) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    cols = {f"x{i}": list(np.clip(rng.normal(0.0, 1.0 + i, n), -3.0 * (1 + i), 3.0 * (1 + i))) for i in range(d)}
    cols["city"] = list(rng.choice(CITIES, n))
    return cols


def guard_from(cfg: Config, **kwargs) -> Guard:
    """A guard given its sections the way the sidecar resolves them."""
    return Guard(cfg.guard, model=cfg.model.name, window_capacity=cfg.window.max_events,
                 window_max_age_seconds=cfg.window.max_age_seconds, declared_features=cfg.payload.features,
                 redact=cfg.prediction_log.redact, **kwargs)


def guard_for(profile: ReferenceProfile | None, **overrides) -> Guard:
    return guard_from(load_config(None, {"model.name": "m", **overrides}), reference=lambda: profile)


def totals(guard: Guard, version: str = "1") -> dict[tuple[str, str], int]:
    return {(f, i): c for (v, f, i), c in guard.totals.items() if v == version}


def exported(guard: Guard) -> str:
    registry = CollectorRegistry()
    registry.register(GuardCollector(guard))
    return generate_latest(registry).decode()


# --- the checks -----------------------------------------------------------------------------------


def test_every_issue_is_counted_per_feature():
    guard = guard_for(reference(), **{"guard.outliers": False})
    cols = clean(10)
    cols["x0"][0] = None               # missing
    cols["x1"][1] = float("nan")       # nan
    cols["x2"][2] = float("-inf")      # infinite (not also out of range)
    cols["x3"][3] = "12.5"             # wrong type: a string where a number is expected
    cols["x0"][4] = 1e9                # out of range
    cols["city"][5] = "lima"           # unseen category
    cols["city"][6] = None             # missing
    cols["city"][7] = {"a": 1}         # wrong type
    cols["surprise"] = [None] * 10
    cols["surprise"][8] = 1            # unknown feature (present in one event: `other` until it is frequent)
    batch = EventBatch(10, features=cols)
    guard.observe("1", batch)
    assert totals(guard) == {
        ("x0", "missing"): 1, ("x1", "nan"): 1, ("x2", "infinite"): 1, ("x3", "wrong_type"): 1,
        ("x0", "out_of_range"): 1, ("city", "unseen_category"): 1, ("city", "missing"): 1,
        ("city", "wrong_type"): 1, ("other", "unknown_feature"): 1,
    }
    assert guard.events[("1", "failed")] == 9 and guard.events[("1", "passed")] == 1
    # a NaN or an infinity in a categorical column (pandas' missing value) is nan / infinite, not a wrong type
    cols = clean(4, seed=3)
    cols["city"] = [float("nan"), float("inf"), "rome", [1]]
    guard.observe("1", EventBatch(4, features=cols))
    assert {k: v for k, v in totals(guard).items() if k[0] == "city"} == {
        ("city", "unseen_category"): 1, ("city", "missing"): 1, ("city", "wrong_type"): 2, ("city", "nan"): 1,
        ("city", "infinite"): 1}
    # an absent feature is missing in every event
    cols = clean(5, seed=2)
    del cols["x2"]
    guard.observe("1", EventBatch(5, features=cols))
    assert totals(guard)[("x2", "missing")] == 5


def test_issue_label_values_are_unchanged():
    assert ISSUES == ("missing", "nan", "infinite", "wrong_type", "out_of_range", "unseen_category",
                      "unknown_feature", "duplicate")
    assert [issue.label for issue in Issue] == list(ISSUES) and Issue.UNSEEN_CATEGORY == ISSUES.index("unseen_category")


def test_checks_agree_with_and_without_the_windows_conversion():
    profile = reference()
    cols = clean(200, seed=3)
    cols["x0"][7] = 1e9
    a, b = guard_for(profile), guard_for(profile)
    a.observe("1", EventBatch(200, features=cols))
    batch = EventBatch(200, features=cols)
    Window("1", 1000, 3600).append(batch)   # sets batch.converted
    assert batch.converted and "x0" in batch.converted
    b.observe("1", batch)
    assert a.totals == b.totals and a.outliers == b.outliers


def test_range_tolerance_widens_the_reference_range():
    profile = build_profile({"feature": {"x": np.linspace(0.0, 10.0, 101)}})
    values = [-0.5, 10.5, -1.5, 11.5]
    for tolerance, expected in ((0.0, 4), (0.1, 2), (0.2, 0)):
        guard = guard_for(profile, **{"guard.range_tolerance": tolerance})
        guard.observe("1", EventBatch(4, features={"x": values}))
        assert totals(guard).get(("x", "out_of_range"), 0) == expected, tolerance


def test_unseen_categories_only_when_the_profile_holds_all_of_them():
    rng = np.random.default_rng(4)
    many = build_profile({"feature": {"c": [f"k{i}" for i in rng.integers(0, 50, 2000)]}}, top_k=10)
    guard = guard_for(many)
    guard.observe("1", EventBatch(2, features={"c": ["never", "k1"]}))
    assert ("c", "unseen_category") not in totals(guard)
    assert guard.schema.describe()["categories_checked"] == []


def test_integer_categories_match_their_text():
    profile = build_profile({"feature": {"zone": ["1", "2", "3"] * 10}}, kinds={"zone": "categorical"})
    guard = guard_for(profile)
    guard.observe("1", EventBatch(3, features={"zone": [1, 2, 9]}))
    assert totals(guard) == {("zone", "unseen_category"): 1}


def test_declared_features_are_the_schema_without_a_profile():
    guard = guard_from(load_config(None, {"payload.features": [{"name": "a", "type": "numeric"}, "b"],
                                          "guard.unknown_feature_min_events": 3}))
    guard.observe("1", EventBatch(3, features={"a": [1.0, "x", float("nan")], "c": [1, 2, 3]}))
    assert totals(guard) == {("a", "wrong_type"): 1, ("a", "nan"): 1, ("b", "missing"): 3,
                             ("c", "unknown_feature"): 3}
    assert guard.schema.source == "config"


def test_random_keys_cannot_take_the_unknown_feature_labels():
    """A client sending a new random key in every event: every key stays `other` (and counted), and a
    renamed column arriving after thousands of them still gets a label of its own."""
    capped = []
    profile = reference()
    guard = guard_from(load_config(None, {"guard.max_unknown_features": 3, "guard.unknown_feature_min_events": 10}),
                       reference=lambda: profile, on_capped=lambda: capped.append(1))
    for b in range(40):   # 40 batches of 50 events, each event with its own random key
        cols = clean(50, seed=b)
        for i in range(50):
            cols[f"random_{b}_{i}"] = [None] * i + [1.0] + [None] * (49 - i)
        guard.observe("1", EventBatch(50, features=cols))
    assert {f for (f, issue) in totals(guard) if issue == "unknown_feature"} == {"other"}
    assert totals(guard)[("other", "unknown_feature")] == 2000
    assert guard.unknown.labels == {} and len(capped) == 2000
    assert len(guard.unknown.sketch) <= max(32, 4 * 3)   # the sketch is bounded
    for b in range(5):
        cols = clean(50, seed=100 + b)
        cols["annual_income"] = [1.0] * 50
        cols[f"random_late_{b}"] = [2.0] + [None] * 49
        guard.observe("1", EventBatch(50, features=cols))
    labels = {f for (f, issue) in totals(guard) if issue == "unknown_feature"}
    assert labels == {"other", "annual_income"}
    # present in all 50 events of its first batch: above the minimum at once
    assert totals(guard)[("annual_income", "unknown_feature")] == 250
    assert totals(guard)[("other", "unknown_feature")] == 2005
    assert guard.status()["frequent_unknown_features"][0] == {"feature": "annual_income", "events": 250}


def test_the_most_frequent_unknown_names_get_the_labels():
    guard = guard_for(reference(), **{"guard.max_unknown_features": 1, "guard.unknown_feature_min_events": 5,
                                      "guard.outliers": False, "guard.duplicates": False})
    cols = clean(10)
    cols["sometimes"] = [1.0, None] * 5   # first in the batch, but present in half the events
    cols["often"] = [1.0] * 10
    for _ in range(2):
        guard.observe("1", EventBatch(10, features=cols))
    assert list(guard.unknown.labels) == ["often"]
    assert totals(guard) == {("often", "unknown_feature"): 20, ("other", "unknown_feature"): 10}


def test_unknown_name_sketch_keeps_the_heavy_hitters():
    from inferwatch.monitors.guard import UnknownNames

    names = UnknownNames(8)
    rng = np.random.default_rng(5)
    for step in range(2000):
        names.add(f"noise{rng.integers(1 << 30)}", 1)
        if step % 2 == 0:
            names.add("heavy", 1)
    assert len(names) == 8
    assert names.guaranteed("heavy") > 500 and names.top(1)[0][0] == "heavy"
    assert all(names.guaranteed(n) <= 1 for n in names.entries if n != "heavy")

# --- duplicates --------------------------------------------------------------------------------------


def test_duplicates_within_and_across_batches():
    guard = guard_for(reference(), **{"guard.outliers": False})
    cols = clean(4)
    cols = {k: [v[0], v[1], v[0], v[2]] for k, v in cols.items()}   # row 2 repeats row 0
    guard.observe("1", EventBatch(4, features=cols))
    assert totals(guard)[("_event", "duplicate")] == 1
    guard.observe("1", EventBatch(4, features={k: list(reversed(v)) for k, v in cols.items()}))
    assert totals(guard)[("_event", "duplicate")] == 5
    # the same values in another column order are the same vector
    guard.observe("1", EventBatch(1, features={k: [cols[k][1]] for k in reversed(list(cols))}))
    assert totals(guard)[("_event", "duplicate")] == 6
    different = {k: [v[0]] for k, v in cols.items()}
    different["x0"] = [different["x0"][0] + 1e-9]
    guard.observe("1", EventBatch(1, features=different))
    assert totals(guard)[("_event", "duplicate")] == 6


def test_a_vector_hashes_the_same_on_the_fast_and_the_slow_path():
    guard = guard_for(reference(), **{"guard.outliers": False})
    cols = clean(3)
    guard.observe("1", EventBatch(3, features=cols))   # known categories only: hashed by their codes
    mixed = {k: list(v) for k, v in cols.items()}
    mixed["city"][1] = None                             # a null and an unseen category elsewhere in the batch
    mixed["city"][2] = "lima"
    guard.observe("1", EventBatch(3, features=mixed))
    assert totals(guard)[("_event", "duplicate")] == 1   # row 0 is the same vector as before
    # an unknown feature's value hashes alike whether or not other events of its batch lack it
    extra = {k: [v[0], v[1]] for k, v in clean(2, seed=7).items()}
    extra["u"] = [1.5, 2.5]
    guard.observe("1", EventBatch(2, features=extra))
    again = {k: [v[0], v[0]] for k, v in extra.items()}
    again["u"] = [1.5, None]
    guard.observe("1", EventBatch(2, features=again))
    assert totals(guard)[("_event", "duplicate")] == 2   # the first row again; the second lacks u


def test_duplicate_memory_is_bounded():
    dups = Duplicates(capacity=100)
    first = np.arange(1, 101, dtype=np.uint64)
    assert not dups.check(first).any()
    assert dups.check(first[:10]).all()
    dups.check(np.arange(1000, 1050, dtype=np.uint64))   # evicts the oldest 50
    assert len(dups) == 100
    again = dups.check(first)
    assert not again[:50].any() and again[50:].all()
    assert len(dups) <= 100
    dups.check(np.arange(5000, 5500, dtype=np.uint64))   # a batch larger than the memory
    assert len(dups) == 100


# --- outliers ------------------------------------------------------------------------------------


def test_injected_outliers_are_found_at_the_calibrated_false_positive_rate():
    """1% of events 6 sigma away in 3 features: >= 95% recall at the calibrated FPR (0.1%)."""
    rng = np.random.default_rng(11)
    d, n_ref, n = 10, 10_000, 30_000
    mix = rng.normal(size=(d, d)) / math.sqrt(d) + np.eye(d)
    scale = rng.uniform(0.5, 20.0, d)

    def draw(k: int) -> np.ndarray:
        return (rng.normal(size=(k, d)) @ mix) * scale + 100.0

    ref = draw(n_ref)
    profile = build_profile({"feature": {f"f{j}": ref[:, j] for j in range(d)}})
    sigma = ref.std(axis=0)
    x = draw(n)
    injected = rng.random(n) < 0.01
    for i in np.flatnonzero(injected):
        cols = rng.choice(d, 3, replace=False)
        x[i, cols] += 6.0 * sigma[cols] * rng.choice([-1.0, 1.0], 3)
    guard = guard_for(profile, **{"guard.duplicates": False, "window.max_events": n})
    flagged = np.zeros(n, dtype=bool)
    for start in range(0, n, 500):
        batch = EventBatch(500, features={f"f{j}": x[start:start + 500, j].tolist() for j in range(d)})
        guard.observe("1", batch)
        for i in (batch.annotations or {}):
            flagged[start + i] = True
    recall = flagged[injected].mean()
    fpr = flagged[~injected].mean()
    assert recall >= 0.95, recall
    assert fpr <= 0.003, fpr   # calibrated for 0.001 on the reference; binomial slack
    assert guard.outliers["1"] == flagged.sum()


def test_outliers_name_their_top_features_and_fill_the_histogram():
    profile = reference()
    guard = guard_for(profile, **{"guard.top_features": 2})
    cols = clean(50)
    cols["x2"][3] = 40.0   # ~13 sigma (std 3)
    cols["x3"][3] = -30.0  # ~7.5 sigma (std 4)
    batch = EventBatch(50, features=cols)
    guard.observe("1", batch)
    note = batch.annotations[3]["outlier"]
    assert note["score"] > 1.0
    assert [f["feature"] for f in note["top_features"]] == ["x2", "x3"]
    assert note["top_features"][0]["value"] == 40.0 and note["top_features"][0]["robust_z"] > 10
    text = exported(guard)
    assert sample(text, "inferwatch_outlier_score_count") == 50
    assert sample(text, "inferwatch_outliers_total") >= 1
    assert sample(text, "inferwatch_outlier_score_bucket", le="1.0") <= 49
    assert sample(text, "inferwatch_outlier_threshold") == pytest.approx(profile.outlier.threshold(0.001))


def test_a_version_1_profile_still_works_with_a_chi_squared_threshold():
    data = reference().to_dict()
    data["version"] = 1
    data.pop("outlier")
    for col in data["features"].values():
        col["statistics"].pop("mad", None)
    from inferwatch.reference import content_hash
    data["hash"] = content_hash(data)
    old = ReferenceProfile.from_dict(data)
    assert old.version == 1 and old.outlier is None
    guard = guard_for(old)
    assert guard.schema.outlier is None   # prepared lazily on the first batch
    cols = clean(20)
    cols["x1"][0] = 50.0
    batch = EventBatch(20, features=cols)
    guard.observe("1", batch)
    described = guard.status()["schema"]["outliers"]
    assert described["calibrated_on_reference"] is False
    assert 0 in batch.annotations


def test_profile_format_2_round_trips(tmp_path):
    profile = reference()
    path = tmp_path / "ref.json"
    profile.save(path)
    loaded = ReferenceProfile.load(path)
    assert json.loads(path.read_text())["version"] >= 2  # the outlier section came in version 2
    assert loaded.outlier_features == ["x0", "x1", "x2", "x3"]
    assert loaded.outlier.threshold(0.001) == profile.outlier.threshold(0.001)
    assert loaded.features["x1"].statistics["mad"] == pytest.approx(profile.features["x1"].statistics["mad"])


# --- logs --------------------------------------------------------------------------------------------


def test_quarantine_log_has_reasons_and_outlier_features(tmp_path):
    path = tmp_path / "quarantine.jsonl"
    guard = guard_for(reference(), **{"guard.quarantine.path": str(path)})
    cols = clean(10)
    cols["x0"][1] = None
    cols["city"][2] = "lima"
    cols["x2"][5] = 60.0
    guard.observe("1", EventBatch(10, features=cols, prediction_ids=[f"p{i}" for i in range(10)]))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    by_id = {line["prediction_id"]: line for line in lines}
    assert set(by_id) == {"p1", "p2", "p5"}
    assert by_id["p1"]["reasons"] == [{"feature": "x0", "issue": "missing"}]
    assert by_id["p2"]["reasons"] == [{"feature": "city", "issue": "unseen_category"}]
    assert by_id["p5"]["outlier"]["top_features"][0]["feature"] == "x2"
    assert by_id["p5"]["features"]["x2"] == 60.0
    text = exported(guard)
    assert sample(text, "inferwatch_quarantine_log_lines_total") == 3


def test_quarantine_log_rotates(tmp_path):
    path = tmp_path / "q.jsonl"
    guard = guard_for(reference(), **{"guard.quarantine.path": str(path), "guard.quarantine.max_bytes": 2000,
                                      "guard.quarantine.backup_count": 2})
    for seed in range(20):
        cols = clean(10, seed=seed)
        cols["x0"] = [None] * 10
        guard.observe("1", EventBatch(10, features=cols))
    assert (tmp_path / "q.jsonl.1").exists() and (tmp_path / "q.jsonl.2").exists()
    assert not (tmp_path / "q.jsonl.3").exists()
    assert path.stat().st_size <= 2000


def test_outliers_reach_the_prediction_log(tmp_path):
    logger = PredictionLogger(load_config(None, {"prediction_log.path": str(tmp_path / "p.jsonl")}).prediction_log)
    logger.log_batch(model="m", model_version="1", endpoint="push", status=None, latency_seconds=None,
                     prediction_ids=["a", "b"], timestamps=[1.0, 2.0], features={}, outputs={},
                     row_extra={1: {"outlier": {"score": 3.5, "top_features": []}, "ignored": 1}})
    logger.close()
    a, b = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert "outlier" not in a and b["outlier"] == {"score": 3.5, "top_features": []} and "ignored" not in b


# --- failures, configuration, the sidecar ---------------------------------------------------------------


def test_a_failing_check_is_counted_and_never_raises():
    errors = []
    guard = guard_from(load_config(None, {}), reference=lambda: 1 / 0, on_error=lambda: errors.append(1))
    guard.observe("1", EventBatch(1, features={"a": [1]}))
    assert errors == [1] and guard.errors == 1


@pytest.mark.parametrize("key, value, message", [
    ("guard.outlier_fpr", 0.2, "guard.outlier_fpr: expected a number between 0 and 0.05"),
    ("guard.schema_change_share", 0.3, "guard.schema_change_share"),
    ("guard.max_unknown_features", 0, "guard.max_unknown_features: must be greater than 0"),
    ("guard.unknown_feature_min_events", 0, "guard.unknown_feature_min_events: must be greater than 0"),
    ("guard.range_tolerance", -1.0, "guard.range_tolerance: must be 0 or more"),
    ("guard.schema_min_events", 500, "guard.schema_min_events: must not exceed"),
])
def test_configuration_errors_name_the_key(key, value, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, {key: value})
    assert any(message in p for p in err.value.problems), err.value.problems


def test_the_sidecar_guards_pushed_events(upstream, sidecar_factory, tmp_path):
    profile = reference()
    path = tmp_path / "ref.json"
    profile.save(path)
    sidecar = sidecar_factory(upstream.url, **{
        "reference.path": str(path), "drift.interval_seconds": 0.2,
        "prediction_log.path": str(tmp_path / "predictions.jsonl"), "prediction_log.redact": ["x3"],
        "guard.quarantine.path": str(tmp_path / "quarantine.jsonl")})
    cols = clean(30)
    events = [{"prediction_id": f"e{i}", "features": {k: v[i] for k, v in cols.items()}, "prediction": 0.5}
              for i in range(30)]
    events[0]["features"]["x0"] = None
    events[1]["features"]["x3"] = 99.0
    events[2]["features"]["renamed"] = 1.0
    assert requests.post(admin_url(sidecar, "/v1/events"), json={"events": events}, timeout=5).ok
    sidecar.pipeline.drain()
    text = scrape(sidecar)
    assert sample(text, "inferwatch_data_quality_issues_total", feature="x0", issue="missing") == 1
    assert sample(text, "inferwatch_data_quality_issues_total", feature="other", issue="unknown_feature") == 1
    assert sample(text, "inferwatch_label_values_capped_total", label="unknown_feature") == 1
    assert sample(text, "inferwatch_outliers_total") >= 1
    assert sample(text, "inferwatch_data_quality_events_total", result="passed") >= 26
    status = requests.get(admin_url(sidecar, "/v1/status"), timeout=5).json()
    assert status["guard"]["schema"]["source"] == "profile"
    assert status["guard"]["frequent_unknown_features"] == [{"feature": "renamed", "events": 1}]
    assert wait_for(lambda: "1" in sidecar.guard.states)
    sidecar.predlog.close()
    sidecar.guard.close()
    # the outlier's line in the prediction log names x3, whose value is redacted there and in quarantine
    logged = {line["prediction_id"]: line for line in map(json.loads, (tmp_path / "predictions.jsonl").open())}
    assert len(logged) == 30 and "outlier" not in logged["e5"]
    note = logged["e1"]["outlier"]
    assert note["score"] > 1 and note["top_features"][0] == {"feature": "x3", "value": "[REDACTED]",
                                                             "robust_z": note["top_features"][0]["robust_z"]}
    quarantined = {line["prediction_id"]: line for line in map(json.loads, (tmp_path / "quarantine.jsonl").open())}
    assert {"e0", "e1", "e2"} <= set(quarantined)
    assert quarantined["e1"]["features"]["x3"] == "[REDACTED]" and quarantined["e1"]["outlier"] == note
    assert quarantined["e2"]["reasons"] == [{"feature": "renamed", "issue": "unknown_feature"}]
