"""Segments: configuration, capped label values, batch labelling in the worker, snapshot labels."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from conftest import registry_samples
from inferwatch.config import ConfigError, parse_config
from inferwatch.ingest.events import EventBatch
from inferwatch.exposition.metrics import Metrics
from inferwatch.pipeline.items import PushedBatch
from inferwatch.pipeline.worker import Pipeline
from inferwatch.pipeline.segments import MISSING_SEGMENT, SegmentLabeler
from inferwatch.pipeline.window import Window, WindowStore


def test_segments_config_defaults_and_parsing():
    cfg = parse_config({})
    assert cfg.segments.features == [] and not cfg.segments.enabled
    assert cfg.segments.max_values == 10 and cfg.segments.drift
    cfg = parse_config({"segments": {"features": ["region", "tier"], "max_values": 3}})
    assert cfg.segments.features == ["region", "tier"] and cfg.segments.max_values == 3
    assert parse_config({"segments": {"features": "region, tier"}}).segments.features == ["region", "tier"]


def test_segments_config_errors_name_the_key():
    with pytest.raises(ConfigError) as err:
        parse_config({"segments": {"features": ["region", "region", ""], "max_values": 0}}, "c.yaml")
    problems = "\n".join(err.value.problems)
    assert "c.yaml:segments.max_values: expected an integer from 1 to 1000, got 0" in problems
    assert "c.yaml:segments.features[1]: duplicate segment feature 'region'" in problems
    assert "c.yaml:segments.features[2]: must not be empty" in problems
    with pytest.raises(ConfigError, match=r"c.yaml:segments.features: at most 8"):
        parse_config({"segments": {"features": [f"f{i}" for i in range(9)]}}, "c.yaml")
    with pytest.raises(ConfigError, match=r"c.yaml:segments.colour: unknown key"):
        parse_config({"segments": {"colour": 1}}, "c.yaml")


def test_labeler_caps_first_seen_values_and_counts_overflow_rows():
    registry = CollectorRegistry()
    metrics = Metrics("m", registry, sidecar_process_metrics=False)
    labeler = SegmentLabeler(["region"], 2, metrics.label_values_capped)
    labels = labeler.labels("region", ["eu", "us", "apac", None, "eu", "apac", 0.5, "other"])
    assert labels.tolist() == ["eu", "us", "other", MISSING_SEGMENT, "eu", "other", MISSING_SEGMENT, "other"]
    # Two apac rows overflowed; a literal "other" is not an overflow.
    assert labeler.capped_rows == 2
    assert registry.get_sample_value("inferwatch_label_values_capped_total", {"label": "segment"}) == 2
    assert labeler.values("region") == ["eu", "us"]
    # Readers never admit: a new value is other, and nothing is counted.
    assert labeler.peek_labels("region", ["latam", "us"]).tolist() == ["other", "us"]
    assert labeler.label("region", "eu") == "eu" and labeler.capped_rows == 2
    with pytest.raises(KeyError):
        labeler.labels("colour", ["red"])


def test_a_reference_profile_seeds_the_most_frequent_values_first():
    """Top-K: the training data's most frequent regions get the label values, whatever order the
    traffic shows them in; a rare value seen first does not take a slot."""
    from inferwatch.reference import build_profile

    rng = np.random.default_rng(0)
    regions = rng.choice(["eu", "us", "apac", "latam"], 5000, p=[0.5, 0.3, 0.15, 0.05])
    profile = build_profile({"feature": {"region": list(regions), "x": rng.normal(size=5000)}})
    labeler = SegmentLabeler(["region", "tier"], 2)
    assert labeler.seed_from_profile(profile) == {"region": ["eu", "us"]}   # tier is not in the profile
    assert labeler.labels("region", ["latam", "apac", "us", "eu"]).tolist() == ["other", "other", "us", "eu"]
    assert labeler.capped_rows == 2
    # Slots the reference leaves go to values first seen; a reserved name never takes one.
    roomy = SegmentLabeler(["region"], 6)
    roomy.seed("region", ["eu", "other", "missing", "us"])
    assert roomy.labels("region", ["mars", "eu"]).tolist() == ["mars", "eu"]
    assert roomy.values("region") == ["eu", "us", "mars"]


def test_the_sidecar_seeds_segments_from_its_reference_profile(tmp_path):
    from inferwatch.config import load_config
    from inferwatch.reference import build_profile
    from inferwatch.sidecar import Sidecar

    rng = np.random.default_rng(1)
    path = tmp_path / "reference.json"
    build_profile({"feature": {"region": list(rng.choice(["eu", "us", "apac"], 3000, p=[0.2, 0.7, 0.1])),
                               "x": rng.normal(size=3000)}}).save(path)
    cfg = load_config(None, {"proxy.enabled": False, "reference.path": str(path), "segments.features": "region",
                             "segments.max_values": 2})
    sidecar = Sidecar(cfg)
    assert sidecar.pipeline.segments.values("region") == ["us", "eu"]


def test_labeler_numbers_and_booleans_share_the_window_category_text():
    labeler = SegmentLabeler(["tier"], 5)
    assert labeler.labels("tier", [1, 2.0, True, 3.5]).tolist() == ["1", "2", "true", MISSING_SEGMENT]


def test_column_labels_of_window_snapshots_match_the_worker():
    labeler = SegmentLabeler(["region", "tier"], 2)
    regions = ["eu", "us", "apac", None, "eu"]
    tiers = [1, 2, 3, None, 1]
    expected_regions = labeler.labels("region", regions).tolist()
    expected_tiers = labeler.labels("tier", tiers).tolist()
    w = Window("1", capacity=10, max_age_seconds=1e9)
    w.append(EventBatch(5, features={"region": regions, "tier": tiers}))
    snap = w.snapshot()
    assert labeler.column_labels("region", snap.features["region"]).tolist() == expected_regions
    assert labeler.column_labels("tier", snap.features["tier"]).tolist() == expected_tiers
    groups = labeler.groups("region", labeler.column_labels("region", snap.features["region"]))
    assert {k: v.tolist() for k, v in groups.items()} == {"eu": [0, 4], "us": [1], "other": [2]}


def test_pipeline_labels_batches_before_observers_and_counts_events():
    cfg = parse_config({"model": {"name": "m", "version": "1"}, "segments": {"features": ["region"], "max_values": 2}})
    registry = CollectorRegistry()
    metrics = Metrics("m", registry, sidecar_process_metrics=False)
    windows = WindowStore(capacity=100, max_age_seconds=1e9, max_versions=4)
    pipeline = Pipeline(cfg.model, metrics, windows, queue=cfg.queue, payload=cfg.payload, segments=cfg.segments)
    seen = []
    pipeline.observers.append(lambda version, batch: seen.append(dict(batch.segments)))
    pipeline.process(PushedBatch("1", EventBatch(4, features={"region": ["eu", "us", "apac", "eu"], "x": [1, 2, 3, 4]})))
    pipeline.process(PushedBatch("1", EventBatch(2, features={"x": [1, 2]})))
    assert seen[0]["region"].tolist() == ["eu", "us", "other", "eu"]
    assert seen[1]["region"].tolist() == [MISSING_SEGMENT, MISSING_SEGMENT]

    def count(value):
        return registry.get_sample_value("inferwatch_segment_events_total",
                                         {"model": "m", "model_version": "1", "segment": "region", "value": value})

    assert (count("eu"), count("us"), count("other"), count(MISSING_SEGMENT)) == (2, 1, 1, 2)
    assert np.isclose(sum(c for c in (count("eu"), count("us"), count("other"), count(MISSING_SEGMENT))), 6)


# --- drift per segment value ------------------------------------------------------------------------


def _region_columns(n: int, rng: np.random.Generator, shift_eu: float = 0.0) -> dict[str, list]:
    region = rng.choice(["eu", "us", "apac"], n, p=[0.5, 0.3, 0.2])
    x0 = rng.normal(0.0, 1.0, n) + np.where(region == "eu", shift_eu, 0.0)
    return {"x0": list(x0), "x1": list(rng.normal(0.0, 1.0, n)), "region": list(region)}


def test_segment_drift_finds_the_drifting_slice_only():
    from inferwatch.config import load_config
    from inferwatch.monitors.drift import DriftCollector, DriftEngine
    from inferwatch.reference import build_profile

    rng = np.random.default_rng(5)
    ref = _region_columns(4000, rng)
    profile = build_profile({"feature": {"x0": np.asarray(ref["x0"]), "x1": np.asarray(ref["x1"]),
                                         "region": ref["region"]},
                             "output": {"prediction": rng.random(4000)}})
    cfg = load_config(None, {"model.name": "m", "model.version": "1", "segments.features": "region",
                             "segments.max_values": 2, "drift.min_events": 100})
    labeler = SegmentLabeler.from_config(cfg.segments)
    store = WindowStore(capacity=3000, max_age_seconds=1e9, max_versions=4)
    engine = DriftEngine.from_config(cfg, store, profile=profile, segments=labeler)
    cols = _region_columns(3000, rng, shift_eu=1.5)
    labeler.labels("region", ["eu", "us", *cols["region"]])  # the worker admits values as they arrive
    store.get("1").append(EventBatch(3000, features=cols, outputs={"prediction": list(rng.random(3000))}))
    engine.evaluate_all()
    by_segment = engine.segment_results["1"]
    assert set(by_segment) == {("region", v) for v in ("eu", "us", "other")}  # apac is beyond max_values
    drifted = {value: {c.name for c in r.features if c.drifted} for (_, value), r in by_segment.items()}
    assert drifted == {"eu": {"x0"}, "us": set(), "other": set()}
    # The segment feature is constant within its segment: left out.
    assert all("region" not in {c.name for c in r.features} for r in by_segment.values())
    # Rows per value add up to the window.
    assert sum(r.events for r in by_segment.values()) == 3000
    # The evaluator's numbers for a slice equal an evaluation of that slice alone.
    eu_rows = np.asarray(cols["region"]) == "eu"
    alone = engine.evaluator.evaluate(
        _window_of({k: list(np.asarray(v, dtype=object)[eu_rows]) for k, v in cols.items() if k != "region"}).snapshot(),
        multivariate=False)
    eu = by_segment[("region", "eu")]
    assert {c.name: c.scores for c in eu.features} == {c.name: c.scores for c in alone.features}

    registry = CollectorRegistry()
    registry.register(DriftCollector(engine))
    samples = registry_samples(registry)
    flags = {(s["value"], s["feature"]): v for s, v in samples["inferwatch_segment_feature_drifted"]}
    assert flags[("eu", "x0")] == 1.0 and flags[("us", "x0")] == 0.0
    scores = [(s["value"], s["feature"]) for s, _ in samples["inferwatch_segment_feature_drift_score"]]
    assert sorted(scores) == sorted(flags)  # one series (the decision's method) per feature, not every method
    events = {s["value"]: v for s, v in samples["inferwatch_segment_drift_window_events"]}
    assert sum(events.values()) == 3000
    assert {s["output"] for s, _ in samples["inferwatch_segment_prediction_drift_score"]} == {"prediction"}
    assert "region=eu" in engine.status()["segments"]["1"]


def _window_of(cols: dict[str, list]) -> Window:
    n = len(next(iter(cols.values())))
    w = Window("1", capacity=n, max_age_seconds=1e9)
    w.append(EventBatch(n, features=cols))
    return w


def test_segment_values_below_min_events_are_not_evaluated():
    from inferwatch.config import load_config
    from inferwatch.monitors.drift import DriftEngine
    from inferwatch.reference import build_profile

    rng = np.random.default_rng(6)
    ref = _region_columns(2000, rng)
    profile = build_profile({"feature": {"x0": np.asarray(ref["x0"]), "x1": np.asarray(ref["x1"])}})
    cfg = load_config(None, {"model.version": "1", "segments.features": "region", "drift.min_events": 500})
    labeler = SegmentLabeler.from_config(cfg.segments)
    store = WindowStore(capacity=1000, max_age_seconds=1e9, max_versions=4)
    engine = DriftEngine.from_config(cfg, store, profile=profile, segments=labeler)
    cols = _region_columns(1000, rng)
    labeler.labels("region", cols["region"])
    store.get("1").append(EventBatch(1000, features=cols))
    engine.evaluate_all()
    assert set(engine.segment_results["1"]) == {("region", "eu")}  # ~500 eu rows; us ~300, apac ~200
