"""Capped slots (model versions, window columns) go to the schema first and then by frequency:
junk that arrived first cannot keep them from a real version or feature that arrives later."""

from __future__ import annotations

import requests
from prometheus_client import CollectorRegistry

from conftest import admin_url, sample, scrape, wait_for
from inferwatch.exposition.metrics import OTHER, Metrics
from inferwatch.ingest.events import EventBatch
from inferwatch.pipeline.window import Window
from inferwatch.stats.heavy_hitters import FrequentSlots


def push(sidecar, events) -> None:
    r = requests.post(admin_url(sidecar, "/v1/events"), json={"events": events}, timeout=10)
    assert r.status_code == 200 and r.json()["accepted"] == len(events), r.text


# --- model_version -----------------------------------------------------------------------------


def test_seven_junk_versions_do_not_keep_the_real_one_out():
    metrics = Metrics("m", CollectorRegistry(), max_model_versions=8, reserved_versions=["1"],
                      sidecar_process_metrics=False)
    for junk in range(7):
        for _ in range(3):
            label = metrics.version_label(f"junk{junk}", "1")
            metrics.events.labels("m", label, "push").inc()
    assert len(metrics.model_versions) == 8
    labels = [metrics.version_label("v2", "1") for _ in range(20)]
    assert labels[0] == OTHER          # not at once: a value seen once takes no slot from another
    assert labels[-1] == "v2"          # a few events later it holds one
    assert metrics.version_label("1", "1") == "1"          # the configured version never loses its slot
    capped = metrics.label_values_capped.labels("model_version")._value.get()
    assert capped == labels.count(OTHER) > 0
    assert metrics.label_values_reclaimed.labels("model_version")._value.get() == 1
    # the version that lost its slot lost its series with it: memory stays bounded by the cap
    series = {s.labels["model_version"] for f in metrics.events.collect() for s in f.samples}
    assert len(series) == 6 and "v2" not in series


def test_a_junk_flood_never_takes_a_live_versions_slot():
    metrics = Metrics("m", CollectorRegistry(), max_model_versions=4, reserved_versions=["1"],
                      sidecar_process_metrics=False)
    for step in range(5000):
        if step % 10 == 0:
            assert metrics.version_label("canary", "1") == "canary" or step == 0
        metrics.version_label(f"junk{step}", "1")    # a new value each time
    assert "canary" in metrics.model_versions.slots
    assert metrics.label_values_reclaimed.labels("model_version")._value.get() == 0


def test_sidecar_gives_the_real_version_its_window_after_junk_versions(upstream, sidecar_factory):
    """The attack over real sockets: seven junk versions pushed first filled every slot for good."""
    sidecar = sidecar_factory(upstream.url)
    push(sidecar, [{"model_version": "1", "features": {"a": 1.0}, "prediction": 0.5}])
    for junk in range(7):
        push(sidecar, [{"model_version": f"junk{junk}", "features": {"a": 1.0}, "prediction": 0.5}])
    for i in range(10):
        push(sidecar, [{"prediction_id": f"real{i}", "model_version": "v2", "features": {"a": float(i)},
                        "prediction": 0.5}])
    sidecar.pipeline.drain()
    snapshot = wait_for(lambda: sidecar.windows.snapshot("v2"), 5)
    assert snapshot is not None and snapshot.n >= 5   # its later events are windowed (monitored)
    assert set(snapshot.prediction_ids) <= {f"real{i}" for i in range(10)}
    text = scrape(sidecar)
    assert sample(text, "inferwatch_events_total", model_version="v2") == snapshot.n
    assert sample(text, "inferwatch_label_values_reclaimed_total", label="model_version") == 1
    assert sample(text, "inferwatch_events_total", model_version="1") == 1
    assert len(sidecar.windows.windows()) <= 9    # eight slots and `other`: the reclaimed one went


# --- feature columns ---------------------------------------------------------------------------


def test_one_event_with_300_names_does_not_keep_a_later_feature_out():
    window = Window("1", capacity=100, max_age_seconds=1e9, max_features=256, clock=lambda: 2000.0)
    window.append(EventBatch(1, features={f"junk{i}": [1.0] for i in range(300)}, timestamps=[1000.0]))
    assert len(window.features.columns) == 256 and window.features.columns_capped == 44
    for i in range(10):
        window.append(EventBatch(1, features={"income": [float(i)]}, timestamps=[1000.0]))
    assert "income" in window.features.columns and window.features.columns_reclaimed == 1
    values = window.snapshot().features["income"]
    assert values.values[values.present].tolist() == [float(i) for i in range(10)][-int(values.present.sum()):]
    assert values.present.sum() >= 5


def test_schema_features_keep_their_columns_from_the_first_event():
    window = Window("1", capacity=100, max_age_seconds=1e9, max_features=4, reserved_features=["income"],
                    clock=lambda: 2000.0)
    window.append(EventBatch(1, features={f"junk{i}": [1.0] for i in range(10)}, timestamps=[1000.0]))
    assert len(window.features.columns) == 3   # one column kept for the schema
    window.append(EventBatch(1, features={"income": [5.0]}, timestamps=[1000.0]))
    column = window.snapshot().features["income"]
    assert column.values[column.present].tolist() == [5.0]


def test_frequent_features_keep_their_columns_under_a_flood_of_new_names():
    window = Window("1", capacity=50, max_age_seconds=1e9, max_features=3, clock=lambda: 2000.0)
    for i in range(3000):
        window.append(EventBatch(1, features={"a": [1.0], "b": [2.0], f"noise{i}": [3.0]}, timestamps=[1000.0]))
    assert {"a", "b"} <= set(window.features.columns)
    column = window.snapshot().features["a"]
    assert column.present.all()


def test_sidecar_monitors_a_configured_feature_after_junk_names(upstream, sidecar_factory):
    sidecar = sidecar_factory(upstream.url, **{"payload.features": ["income"], "limits.max_features": 8})
    push(sidecar, [{"features": {f"junk{i}": 1.0 for i in range(300)}, "prediction": 0.5}])
    push(sidecar, [{"features": {"income": 42.0}, "prediction": 0.5}])
    sidecar.pipeline.drain()
    column = sidecar.windows.snapshot("1").features["income"]
    assert column.values[column.present].tolist() == [42.0]


def test_sidecar_monitors_a_later_feature_after_an_event_with_300_names(upstream, sidecar_factory):
    """No schema configured: the junk names took every column first; the real one takes one back."""
    sidecar = sidecar_factory(upstream.url, **{"limits.max_features": 16})
    push(sidecar, [{"features": {f"junk{i}": 1.0 for i in range(300)}, "prediction": 0.5}])
    for i in range(10):
        push(sidecar, [{"features": {"income": float(i)}, "prediction": 0.5}])
    sidecar.pipeline.drain()
    column = sidecar.windows.snapshot("1").features["income"]
    assert column.present.sum() >= 5 and column.values[column.present].tolist()[-1] == 9.0
    text = scrape(sidecar)
    assert sample(text, "inferwatch_label_values_reclaimed_total", label="feature") == 1
    assert sample(text, "inferwatch_label_values_capped_total", label="feature") >= 300 - 16


# --- the slots themselves ----------------------------------------------------------------------


def test_two_values_arriving_equally_often_do_not_swap_slots():
    slots = FrequentSlots(2, reserved=["main"], halve_every=64)
    swaps = 0
    for _ in range(2000):
        for value in ("a", "b"):
            swaps += slots.admit(value)[1] is not None
    assert swaps == 0 and list(slots.held) == ["a"]


def test_a_holder_that_stopped_arriving_is_reclaimed():
    slots = FrequentSlots(2, reserved=["main"], halve_every=16)
    for _ in range(1000):
        slots.admit("old")
    admitted = [slots.admit("new")[0] for _ in range(200)]
    assert admitted[-1] and not admitted[0]
    assert list(slots.held) == ["new"] and slots.reclaimed == 1
