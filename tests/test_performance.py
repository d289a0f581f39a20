"""Ground truth: label parsing, the join store, the performance engine and /v1/labels over sockets."""

from __future__ import annotations

import math
import subprocess
import time

import numpy as np
import pytest
import requests
from prometheus_client import CollectorRegistry, generate_latest
from sklearn import metrics as skm

from conftest import admin_url, proxy_url, sample, scrape, wait_for
from inferwatch.config import parse_config
from inferwatch.ingest.events import EventBatch, PayloadError
from inferwatch.ingest.ground_truth import LabelBatch, parse_labels
from inferwatch.exposition.metrics import Metrics
from inferwatch.monitors.performance import JoinStore, LabelledWindow, PerformanceCollector, PerformanceEngine
from inferwatch.reference import build_profile
from inferwatch.pipeline.window import WindowStore


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------- parsing


def test_parse_labels_says_what_and_where():
    batch, rejected = parse_labels(b'{"labels": [{"prediction_id": "a", "label": 1}, '
                                   b'{"prediction_id": "", "label": 1}, {"prediction_id": "c"}, '
                                   b'{"prediction_id": "d", "label": {"x": 1}}, 7, '
                                   b'{"prediction_id": "e", "label": "yes", "timestamp": "today"}, '
                                   b'{"prediction_id": "f", "label": 0, "extra": 1}, '
                                   b'{"prediction_id": 42, "label": false, "timestamp": 5}]}', 100)
    assert batch.prediction_ids == ["a", "42"] and batch.labels == [1, False] and batch.timestamps == [None, 5.0]
    assert [(r["index"], r["field"]) for r in rejected] == [
        (1, "prediction_id"), (2, "label"), (3, "label"), (4, ""), (5, "timestamp"), (6, "extra")]
    assert parse_labels(b'[{"prediction_id": "a", "label": 2.5}]', 10)[0].labels == [2.5]
    for body, reason, where in ((b"{", "invalid_json", "body"), (b'{"x": 1}', "missing_field", "body.labels"),
                                (b'[' + b",".join([b'{"prediction_id": "a", "label": 1}'] * 3) + b']',
                                 "too_large", "body.labels")):
        with pytest.raises(PayloadError) as err:
            parse_labels(body, 2)
        assert err.value.reason == reason and err.value.detail.startswith(where)


# --------------------------------------------------------------------------- the join store


def test_join_store_outcomes_ttl_and_capacity():
    clock = Clock()
    store = JoinStore(max_pending=3, ttl_seconds=100, clock=clock)
    store.put("1", ["a", "b"], [clock.now] * 2, [1, 0], [math.nan] * 2)
    outcome, entry, version = store.take("a")
    assert outcome == "matched" and entry.predicted == 1 and version == "1"
    assert store.take("a")[0] == "duplicate"
    assert store.take("zzz") == ("unknown_id", None, None)
    clock.now += 101
    assert store.take("b")[:2] == ("expired", None) and store.evicted == {"full": 0, "expired": 1, "replaced": 0}
    store.put("1", ["c", "d", "e", "f", "g"], [clock.now] * 5, [0] * 5, [0.1] * 5)
    assert len(store) == 3 and store.evicted["full"] == 2
    assert store.take("c")[0] == "expired" and store.take("g")[0] == "matched"
    # Tombstones are bounded too: the store never remembers more ids than max_pending.
    assert len(store._done) <= 3
    # A repeated id (a client retrying with its id): the newer prediction waits, the older is counted.
    store.put("2", ["g"], [clock.now], [1], [0.9])
    store.put("3", ["g"], [clock.now], [0], [0.2])
    assert store.evicted["replaced"] == 1 and len(store) == 3
    outcome, entry, version = store.take("g")
    assert (outcome, entry.predicted, version) == ("matched", 0, "3")


def test_join_store_memory_stays_within_the_documented_600_bytes_per_slot():
    """docs/configuration.md: at most max_pending x 600 B, with 34-character ids, when the store
    is full of waiting predictions and remembers as many ids already labelled."""
    import tracemalloc

    n = 20_000
    store = JoinStore(max_pending=n, ttl_seconds=1e9)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for first in (0, n):   # n predictions labelled (remembered ids), then n waiting
            ids = [f"{i:032x}-0" for i in range(first, first + n)]
            store.put("v1", ids, [1e9] * n, ["approve"] * n, [0.7] * n, [("north",)] * n)
            del ids
            if first == 0:
                for i in range(n):
                    assert store.take(f"{i:032x}-0")[0] == "matched"   # the label's own id string
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(store) == n and len(store._done) == n
    assert used < 600 * n, used / n


def test_labelled_window_is_a_bounded_ring_with_age():
    w = LabelledWindow(capacity=4, max_age_seconds=10)
    w.append(np.arange(3.0), np.arange(3.0), np.full(3, np.nan), np.zeros(3), labelled_at=100)
    w.append(np.arange(3.0, 6.0), np.arange(3.0, 6.0), np.full(3, np.nan), np.zeros(3), labelled_at=105)
    snap = w.snapshot(now=106)
    assert snap.predicted.tolist() == [2.0, 3.0, 4.0, 5.0]  # oldest first, capacity 4
    assert w.snapshot(now=112).actual.tolist() == [3.0, 4.0, 5.0]  # the first batch aged out
    assert w.appended_total == 6 and w.live_events(now=112) == 3


# --------------------------------------------------------------------------- the engine


def engine_for(cfg, windows, metrics, **kwargs) -> PerformanceEngine:
    """The engine as sidecar.py builds it from a parsed configuration."""
    return PerformanceEngine(cfg.labels, cfg.performance, windows, metrics, model=cfg.model.name,
                             model_version=cfg.model.version, outputs=cfg.predictions.outputs,
                             segment_features=cfg.segments.features, label_warmup=cfg.reference.warmup_events,
                             **kwargs)


def make_engine(clock=None, reference=None, segments=(), warmup_events=0, **perf):
    cfg = parse_config({"model": {"name": "m", "version": "1"}, "labels": {"enabled": True},
                        "reference": {"warmup_events": warmup_events},
                        "segments": {"features": list(segments)}, "performance": {"min_events": 5, **perf}})
    metrics = Metrics("m", CollectorRegistry(), sidecar_process_metrics=False)
    windows = WindowStore(capacity=cfg.window.max_events, max_age_seconds=1e9, max_versions=4)
    engine = engine_for(cfg, windows, metrics, reference=lambda: reference, clock=clock or time.time)
    metrics.registry.register(PerformanceCollector(engine))
    return engine, windows, metrics


def feed(engine, windows, outputs: dict, ids: list[str], features: dict | None = None, version: str = "1",
         segments: dict | None = None):
    n = len(ids)
    batch = EventBatch(n=n, features=features or {"x": list(range(n))}, outputs=outputs, prediction_ids=ids,
                       timestamps=[time.time() - 60] * n, segments=segments or {})
    windows.get(version).append(batch)
    engine.observe(version, batch)


def scrape_registry(metrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_binary_classification_matches_sklearn_and_exports_everything():
    rng = np.random.default_rng(3)
    n = 400
    score = rng.random(n)
    y = (rng.random(n) < score).astype(int)
    engine, windows, metrics = make_engine(score_output="probability")
    ids = [f"p{i}" for i in range(n)]
    feed(engine, windows, {"prediction": [int(s >= 0.5) for s in score], "probability": score.tolist()}, ids)
    labels = LabelBatch(ids + ["nope", "p0"], [int(v) for v in y] + [1, 1], [None] * (n + 2))
    counts = engine.add_labels(labels)
    assert counts == {"matched": n, "unknown_id": 1, "duplicate": 1}
    engine.evaluate_all()
    got = engine.results[("1", "")].metrics
    pred = (score >= 0.5).astype(int)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert got["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert got["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert got["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert got["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y, score))
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, score))
    # confident (probability of the chosen class >= 0.9, the default) and wrong
    confidence = np.where(pred == 1, score, 1 - score)
    assert got["confident_error_rate"] == pytest.approx(np.mean((confidence >= 0.9) & (pred != y)))
    text = scrape_registry(metrics)
    assert sample(text, "inferwatch_model_performance", metric="roc_auc", model_version="1") == \
        pytest.approx(got["roc_auc"])
    assert sample(text, "inferwatch_labelled_window_events") == n
    assert sample(text, "inferwatch_labels_total", outcome="matched") == n
    assert sample(text, "inferwatch_labels_total", outcome="unknown_id") == 1
    assert sample(text, "inferwatch_label_delay_seconds_count") == n
    assert sample(text, "inferwatch_label_delay_seconds_bucket", le="10.0") == 0  # predictions a minute old
    cm = skm.confusion_matrix(y, pred)
    for a in (0, 1):
        for p in (0, 1):
            assert sample(text, "inferwatch_confusion_matrix_total", actual=str(a), predicted=str(p)) == cm[a, p]
    # CBPE over the prediction window (no labels needed): close to the realised metrics.
    assert engine.estimates["1"]["accuracy"] == pytest.approx(got["accuracy"], abs=0.06)
    assert sample(text, "inferwatch_estimated_performance", metric="f1") == pytest.approx(
        engine.estimates["1"]["f1"])


def test_multiclass_with_capped_classes():
    engine, windows, metrics = make_engine(max_classes=4, negative_class="cat", positive_class="dog")
    truth = ["cat", "dog", "bird", "fish", "emu", "cat", "dog", "bird"] * 5
    pred = ["cat", "dog", "bird", "cat", "emu", "dog", "dog", "fish"] * 5
    ids = [str(i) for i in range(len(truth))]
    feed(engine, windows, {"prediction": pred}, ids)
    engine.add_labels(LabelBatch(ids, truth, [None] * len(ids)))
    engine.evaluate_all()
    assert engine.classes.names == ["cat", "dog", "bird", "fish", "other"]
    got = engine.results[("1", "")].metrics   # the real classes decide, the cap names the exports only
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(truth, pred))
    assert got["f1_macro"] == pytest.approx(skm.f1_score(truth, pred, average="macro"))
    assert "precision" not in got and "roc_auc" not in got  # not a binary problem
    text = scrape_registry(metrics)
    assert sample(text, "inferwatch_confusion_matrix_total", actual="other", predicted="other") == 5
    assert sample(text, "inferwatch_label_values_capped_total", label="class") == 10  # every emu, predicted or actual


@pytest.mark.parametrize("case", ["every_prediction_wrong", "every_prediction_right", "a_mix"])
def test_classes_beyond_the_cap_are_compared_as_themselves(case):
    """40 classes, max_classes 20: two different classes beyond the cap both export as `other`,
    but a prediction of c{k} for the truth c{k+1} is still wrong (scikit-learn: accuracy 0.0;
    comparing the capped labels gave 0.525)."""
    rng = np.random.default_rng(16)
    n = 400
    truth_k = np.arange(n) % 40
    pred_k = {"every_prediction_wrong": (truth_k + 39) % 40, "every_prediction_right": truth_k,
              "a_mix": np.where(rng.random(n) < 0.6, truth_k, rng.integers(0, 40, n))}[case]
    truth, pred = [f"c{k}" for k in truth_k], [f"c{k}" for k in pred_k]
    engine, windows, metrics = make_engine(task="classification", max_classes=20)
    ids = [f"q{i}" for i in range(n)]
    feed(engine, windows, {"prediction": pred}, ids)
    engine.add_labels(LabelBatch(ids, truth, [None] * n))
    engine.evaluate_all()
    got = engine.results[("1", "")].metrics
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(truth, pred))
    for name in ("precision", "recall", "f1"):
        want = getattr(skm, f"{name}_score")(truth, pred, average="macro", zero_division=0)
        assert got[f"{name}_macro"] == pytest.approx(want), name
    if case != "a_mix":
        assert got["accuracy"] == (1.0 if case == "every_prediction_right" else 0.0)
    # The cap still bounds what is exported: 20 tracked classes, then `other`.
    assert len(engine.classes) == 21 and engine.classes.names[-1] == "other"
    cells = [(a, p) for (_, a, p) in engine.confusion]
    assert {a for a, _ in cells} | {p for _, p in cells} <= set(engine.classes.names)
    assert sample(scrape_registry(metrics), "inferwatch_confusion_matrix_total", actual="other",
                  predicted="other") > 0
    # A shadow comparison asks the same question: two classes beyond the cap do not agree.
    assert engine.class_of("c38", math.nan)[0] != engine.class_of("c39", math.nan)[0]
    assert engine.class_of("c39", math.nan)[0] == engine.class_of("c39", 0.2)[0] >= 0


def test_a_multiclass_window_holding_two_classes_gets_no_positive_class_figures():
    """Classes cat/dog/bird with the default positive class "1": a window in which only cat and
    dog occur is not a binary problem; precision/recall/F1 "of class 1" would be a false 0."""
    engine, windows, _ = make_engine(task="classification")
    ids = [str(i) for i in range(20)]
    feed(engine, windows, {"prediction": ["cat", "dog"] * 10}, ids)
    engine.add_labels(LabelBatch(ids, ["cat", "dog"] * 10, [None] * 20))
    engine.evaluate_all()
    got = engine.results[("1", "")].metrics
    assert got["accuracy"] == 1.0 and got["f1_macro"] == 1.0
    assert not {"precision", "recall", "f1", "roc_auc", "confident_error_rate"} & set(got)


def test_probability_prediction_is_decided_at_the_threshold():
    engine, windows, _ = make_engine(task="classification", threshold=0.7)
    ids = [str(i) for i in range(10)]
    feed(engine, windows, {"prediction": [0.65, 0.8] * 5}, ids)
    engine.add_labels(LabelBatch(ids, [0, 1] * 5, [None] * 10))
    engine.evaluate_all()
    got = engine.results[("1", "")].metrics
    assert got["accuracy"] == 1.0 and got["roc_auc"] == 1.0  # the probability was kept as the score


def test_regression_matches_sklearn_and_label_drift_against_the_reference():
    rng = np.random.default_rng(5)
    n = 300
    x = rng.normal(size=(n, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + rng.normal(0, 0.3, n) + 5
    pred = y + rng.normal(0, 0.5, n)
    reference = build_profile({"feature": {}, "label": {"target": rng.normal(5, 1, 2000).tolist()}})
    engine, windows, metrics = make_engine(reference=reference)
    ids = [f"r{i}" for i in range(n)]
    feed(engine, windows, {"prediction": pred.tolist()}, ids,
         features={f"x{j}": x[:, j].tolist() for j in range(3)})
    engine.add_labels(LabelBatch(ids, y.tolist(), [None] * n))
    engine.evaluate_all()
    assert engine.task == "regression"
    got = engine.results[("1", "")].metrics
    r2 = skm.r2_score(y, pred)
    assert got["rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(y, pred)))
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, pred))
    assert got["mape"] == pytest.approx(skm.mean_absolute_percentage_error(y, pred))
    assert got["r2"] == pytest.approx(r2)
    assert got["adjusted_r2"] == pytest.approx(1 - (1 - r2) * (n - 1) / (n - 3 - 1))  # 3 features seen
    result = engine.results[("1", "")]
    assert set(result.label_drift) == {"ks", "psi", "js"} and result.label_drift_p["ks"] < 0.05  # y is wider
    text = scrape_registry(metrics)
    assert sample(text, "inferwatch_label_drift_score", method="ks") == pytest.approx(result.label_drift["ks"])


def test_categorical_label_drift_and_min_events():
    reference = build_profile({"feature": {}, "label": {"y": ["a"] * 900 + ["b"] * 100}})
    engine, windows, metrics = make_engine(reference=reference, min_events=50, task="classification",
                                           negative_class="a", positive_class="b")
    ids = [str(i) for i in range(40)]
    feed(engine, windows, {"prediction": ["a", "b"] * 20}, ids)
    engine.add_labels(LabelBatch(ids, ["a", "b"] * 20, [None] * 40))
    engine.evaluate_all()
    assert engine.results[("1", "")].metrics == {}  # 40 < min_events: nothing published
    assert sample(scrape_registry(metrics), "inferwatch_labelled_window_events") == 40
    ids = [str(i) for i in range(40, 100)]
    feed(engine, windows, {"prediction": ["b"] * 60}, ids)
    engine.add_labels(LabelBatch(ids, ["b"] * 60, [None] * 60))
    engine.evaluate_all()
    result = engine.results[("1", "")]
    assert result.metrics["accuracy"] == 1.0
    assert result.label_drift_p["chi2"] < 1e-6 and result.label_drift["linf"] == pytest.approx(0.8 - 0.1)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_label_drift_against_the_first_labels_with_a_warm_up_reference(task):
    """No reference file: the first reference.warmup_events labels are the reference label
    distribution; a later change of the base rate (or of the target's level) is label drift."""
    rng = np.random.default_rng(9)
    engine, windows, metrics = make_engine(warmup_events=300, task=task, max_events=300, min_events=50)

    def send(prefix, labels):
        ids = [f"{prefix}{i}" for i in range(len(labels))]
        feed(engine, windows, {"prediction": labels}, ids)
        engine.add_labels(LabelBatch(ids, labels, [None] * len(labels)))
        engine.evaluate_all()
        return engine.results[("1", "")]

    def draw(n, level):
        return (rng.random(n) < level).astype(int).tolist() if task == "classification" else \
            rng.normal(level * 10, 1.0, n).tolist()

    assert send("a", draw(200, 0.3)).label_drift == {}   # 200 of 300 warm-up labels
    assert engine.status()["label_reference"] == "warming up: 200 of 300 labels"
    steady = send("b", draw(200, 0.3))   # the reference is frozen at 300; the window holds the same population
    assert engine.status()["label_reference"] == "the first 300 labels"
    method = "chi2" if task == "classification" else "ks"
    assert steady.label_drift_p[method] > 0.01
    shifted = send("c", draw(300, 0.7))   # the window is now only the new population
    assert shifted.label_drift_p[method] < 1e-6
    assert sample(scrape_registry(metrics), "inferwatch_label_drift_score", method=method) == \
        pytest.approx(shifted.label_drift[method])


def test_expired_predictions_are_counted_and_labels_say_so():
    clock = Clock()
    engine, windows, metrics = make_engine(clock=clock)
    engine.store.ttl_seconds = 10
    feed(engine, windows, {"prediction": [1, 0]}, ["a", "b"])
    clock.now += 11
    assert engine.add_labels(LabelBatch(["a"], [1], [None])) == {"expired": 1}
    engine.evaluate_all()
    text = scrape_registry(metrics)
    assert sample(text, "inferwatch_label_join_evictions_total", reason="expired") == 2
    assert sample(text, "inferwatch_label_join_pending") == 0


def test_performance_by_segment_value():
    """The model is fine in EU and failing in APAC: one query."""
    engine, windows, metrics = make_engine(segments=["region"], task="classification")
    region = ["EU"] * 20 + ["APAC"] * 20 + ["missing"] * 3
    truth = [1, 0] * 10 + [1, 0] * 10 + [1, 1, 1]
    pred = [1, 0] * 10 + [0, 1] * 10 + [1, 1, 1]
    ids = [f"s{i}" for i in range(len(truth))]
    feed(engine, windows, {"prediction": pred}, ids, segments={"region": np.array(region, dtype=object)})
    engine.add_labels(LabelBatch(ids, truth, [None] * len(ids)))
    engine.evaluate_all()
    text = scrape_registry(metrics)
    perf = "inferwatch_segment_model_performance"
    assert sample(text, perf, segment="region", value="EU", metric="accuracy") == 1.0
    assert sample(text, perf, segment="region", value="APAC", metric="accuracy") == 0.0
    assert sample(text, "inferwatch_segment_labelled_window_events", value="APAC") == 20
    assert 'value="missing"' not in text  # rows without the feature are in the overall metrics only
    assert sample(text, "inferwatch_model_performance", metric="accuracy") == pytest.approx(23 / 43)


# --------------------------------------------------------------------------- over sockets


def test_labels_endpoint_end_to_end(upstream, sidecar_factory):
    sidecar = sidecar_factory(upstream.url, **{"labels.enabled": True, "performance.interval_seconds": 0.1,
                                               "performance.min_events": 4, "performance.task": "classification"})
    for i in range(8):
        r = requests.post(proxy_url(sidecar, "/v1/models/m:predict"), json={"instances": [[i, 1]]},
                          headers={"X-Prediction-ID": f"req{i}"}, timeout=5)
        assert r.headers["X-Prediction-ID"] == f"req{i}"
    # The upstream answers 0.25 (class 0); labels alternate, so half are right.
    labels = [{"prediction_id": f"req{i}", "label": i % 2, "timestamp": time.time()} for i in range(8)]
    r = requests.post(admin_url(sidecar, "/v1/labels"), json={"labels": labels + [{"prediction_id": "x"}]},
                      timeout=5)
    assert r.status_code == 202 and r.json()["accepted"] == 8
    assert r.json()["rejected"] == [{"index": 8, "field": "label", "reason": "label: required (a string, number "
                                                                            "or boolean)"}]
    text = wait_for(lambda: next((t for t in [scrape(sidecar)] if 'metric="accuracy"' in t), None), 10)
    assert text, "no performance published"
    assert sample(text, "inferwatch_model_performance", metric="accuracy") == 0.5
    assert sample(text, "inferwatch_labels_total", outcome="matched") == 8
    assert sample(text, "inferwatch_labels_total", outcome="invalid") == 1
    promtool = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert promtool.returncode == 0, promtool.stdout + promtool.stderr
    bad = requests.post(admin_url(sidecar, "/v1/labels"), data=b"{nope", timeout=5)
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_json" and "body" in bad.json()["detail"]
    none_valid = requests.post(admin_url(sidecar, "/v1/labels"), json=[{"label": 1}], timeout=5)
    assert none_valid.status_code == 400 and none_valid.json()["rejected"][0]["field"] == "prediction_id"
    status = requests.get(admin_url(sidecar, "/v1/status"), timeout=5).json()["performance"]
    assert status["task"] == "classification" and status["windows"]["1/champion"]["events"] == 8


def test_labels_disabled_and_auth(upstream, sidecar_factory):
    off = sidecar_factory(upstream.url)
    r = requests.post(admin_url(off, "/v1/labels"), json=[], timeout=5)
    assert r.status_code == 404 and r.json()["error"] == "labels_disabled"
    guarded = sidecar_factory(upstream.url, **{"labels.enabled": True, "admin.write_auth": {"bearer_token": "s3"}})
    assert requests.post(admin_url(guarded, "/v1/labels"), json=[], timeout=5).status_code == 401
    ok = requests.post(admin_url(guarded, "/v1/labels"), json=[{"prediction_id": "a", "label": 1}],
                       headers={"Authorization": "Bearer s3"}, timeout=5)
    assert ok.status_code == 202
    guarded.pipeline.drain()
    assert sample(scrape(guarded), "inferwatch_labels_total", outcome="unknown_id") == 1


def test_pushed_predictions_with_segments_end_to_end(sidecar_factory):
    sidecar = sidecar_factory("http://127.0.0.1:9", **{
        "proxy.enabled": False, "labels.enabled": True, "segments.features": ["region"],
        "performance.interval_seconds": 0.1, "performance.min_events": 2, "performance.task": "classification"})
    events = [{"prediction_id": f"e{i}", "features": {"region": "EU" if i < 4 else "APAC", "x": i},
               "prediction": i % 2} for i in range(8)]
    assert requests.post(admin_url(sidecar, "/v1/events"), json={"events": events}, timeout=5).json()["accepted"] == 8
    labels = [{"prediction_id": f"e{i}", "label": i % 2 if i < 4 else 1 - i % 2} for i in range(8)]
    assert requests.post(admin_url(sidecar, "/v1/labels"), json=labels, timeout=5).status_code == 202

    def published():
        t = scrape(sidecar)
        return t if 'value="APAC"' in t and "inferwatch_segment_model_performance{" in t else None

    text = wait_for(published, 10)
    assert text
    assert sample(text, "inferwatch_segment_model_performance", value="EU", metric="accuracy") == 1.0
    assert sample(text, "inferwatch_segment_model_performance", value="APAC", metric="accuracy") == 0.0


def test_performance_config_errors_name_the_key():
    from inferwatch.config import ConfigError

    with pytest.raises(ConfigError) as err:
        parse_config({"performance": {"threshold": 1.5, "confident_score": 0.5, "positive_class": "yes",
                                      "negative_class": "yes", "feature_count": -1, "mape_min_abs_target": -1}},
                     "p.yaml")
    assert set(err.value.problems) == {
        "p.yaml:performance.threshold: expected a number from 0 to 1, got 1.5",
        "p.yaml:performance.confident_score: expected a probability above 0.5 and at most 1, got 0.5",
        "p.yaml:performance.negative_class: must differ from performance.positive_class ('yes')",
        "p.yaml:performance.feature_count: must be 0 (the features seen) or more, got -1",
        "p.yaml:performance.mape_min_abs_target: expected a number >= 0, got -1.0",
    }


def test_outputs_declared_in_predictions_config_are_used():
    cfg = parse_config({"labels": {"enabled": True}, "predictions": {"outputs": {
        "label": {"type": "class"}, "proba": {"type": "score"}}}})
    engine = engine_for(cfg, WindowStore(capacity=10, max_age_seconds=60, max_versions=2),
                        Metrics("m", CollectorRegistry(), sidecar_process_metrics=False))
    assert (engine.prediction_name, engine.score_name, engine.task) == ("label", "proba", "classification")
    assert engine.extract({"proba": [0.8], "label": ["1"]}, 1) == (["1"], [0.8])
    cfg = parse_config({"labels": {"enabled": True}, "predictions": {"outputs": {"price": {"type": "value"}}},
                        "performance": {"score_output": "other"}})
    engine = engine_for(cfg, WindowStore(capacity=10, max_age_seconds=60, max_versions=2),
                        Metrics("m", CollectorRegistry(), sidecar_process_metrics=False))
    assert (engine.prediction_name, engine.score_name, engine.task) == ("price", "other", "regression")
