"""The input guard's window ratios and schema changes: kept as running sums over the flag ring and
published as batches are observed (or events age out), so what a scrape reads does not depend on
when, or whether, anyone scraped before."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import sample, wait_for
from inferwatch.config import GuardConfig
from inferwatch.ingest.events import EventBatch
from inferwatch.monitors.guard import ISSUES, BatchCheck, Guard, Issue, Schema, VersionState, evaluate
from test_guard import clean, exported, guard_for, reference


def ratios(text: str, name: str) -> dict[str, float]:
    return {s.labels["feature"]: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == name}


def test_window_ratios_and_failed_share():
    guard = guard_for(reference(), **{"window.max_events": 100})
    cols = clean(100)
    for i in range(10):
        cols["x1"][i] = None
    for i in range(10, 15):
        cols["x2"][i] = 1e9
    guard.observe("1", EventBatch(100, features=cols))
    text = exported(guard)
    assert ratios(text, "inferwatch_feature_missing_ratio")["x1"] == pytest.approx(0.10)
    assert ratios(text, "inferwatch_feature_out_of_range_ratio")["x2"] == pytest.approx(0.05)
    assert sample(text, "inferwatch_data_quality_failed_events_ratio") >= 0.15
    # the window holds 100 events: a clean batch of 100 replaces them
    guard.clock = lambda: 1e12   # later: the first batch is also older than the window's max age
    guard.observe("1", EventBatch(100, features=clean(100, seed=9)))
    text = exported(guard)
    assert ratios(text, "inferwatch_feature_missing_ratio")["x1"] == 0.0


def test_a_renamed_column_is_a_schema_change_with_before_and_after():
    guard = guard_for(reference(), **{"guard.schema_window_events": 50, "guard.schema_min_events": 20})
    for seed in range(3):
        guard.observe("1", EventBatch(20, features=clean(20, seed=seed)))
    assert guard.status()["versions"]["1"]["schema"]["changes"] == []
    for seed in range(3, 7):
        cols = clean(20, seed=seed)
        cols["x_zero"] = cols.pop("x0")
        guard.observe("1", EventBatch(20, features=cols))
    text = exported(guard)
    changed = {(s.labels["feature"], s.labels["change"]): s.value for f in text_string_to_metric_families(text)
               for s in f.samples if s.name == "inferwatch_schema_changed"}
    assert changed[("x0", "missing")] == 1.0 and changed[("x_zero", "added")] == 1.0
    assert changed[("x1", "missing")] == 0.0
    view = guard.status()["versions"]["1"]["schema"]
    assert view["before"] == ["x0", "x1", "x2", "x3", "city"]
    assert view["after"] == ["x1", "x2", "x3", "city", "x_zero"]
    assert view["possible_rename"] == {"from": "x0", "to": "x_zero"}
    # a few events with the old name do not clear it: "nearly all" recent events
    guard.observe("1", EventBatch(1, features=clean(1, seed=50)))
    assert {c["feature"] for c in guard.status()["versions"]["1"]["schema"]["changes"]} == {"x0", "x_zero"}


def schema_gauges(guard: Guard) -> dict[tuple[str, str], float]:
    return {(s.labels["feature"], s.labels["change"]): s.value for f in text_string_to_metric_families(exported(guard))
            for s in f.samples if s.name == "inferwatch_schema_changed"}


def test_random_keys_in_every_event_are_no_schema_change():
    guard = guard_for(reference(), **{"guard.schema_window_events": 100, "guard.schema_min_events": 20})
    for b in range(10):
        cols = clean(20, seed=b)
        for i in range(20):
            cols[f"k{b}_{i}"] = [None] * i + [1.0] + [None] * (19 - i)
        guard.observe("1", EventBatch(20, features=cols))
    assert guard.status()["versions"]["1"]["schema"]["changes"] == []
    assert set(schema_gauges(guard).values()) == {0.0}


def test_a_new_feature_without_a_label_of_its_own_is_an_added_other():
    guard = guard_for(reference(), **{"guard.max_unknown_features": 1, "guard.unknown_feature_min_events": 1,
                                      "guard.schema_window_events": 100, "guard.schema_min_events": 20})
    cols = clean(20, seed=1)
    cols["extra"] = [1.0] * 10 + [None] * 10   # takes the only label, and is in half the events: no change
    guard.observe("1", EventBatch(20, features=cols))
    for b in range(5):
        cols = clean(20, seed=10 + b)
        cols["annual_income"] = cols.pop("x0")
        guard.observe("1", EventBatch(20, features=cols))
    changes = guard.status()["versions"]["1"]["schema"]["changes"]
    assert [(c["feature"], c["change"], c.get("label")) for c in changes] == [
        ("annual_income", "added", "other"), ("x0", "missing", None)]
    gauges = schema_gauges(guard)
    assert gauges[("other", "added")] == 1.0 and gauges[("extra", "added")] == 0.0
    assert ("annual_income", "added") not in gauges   # no label of its own: bounded series


def test_no_schema_change_below_the_minimum_events():
    guard = guard_for(reference(), **{"guard.schema_min_events": 20})
    cols = clean(5)
    del cols["x0"]
    guard.observe("1", EventBatch(5, features=cols))
    assert guard.status()["versions"]["1"]["schema"]["changes"] == []


def engine_state(guard: Guard) -> list:
    """Everything a scrape could change: counters, and per version the ring, its sums, the schema
    evidence and the published values (by identity: nothing republished)."""
    out: list = [dict(guard.totals), dict(guard.events), dict(guard.outliers), guard.current]
    for version, state in sorted(guard.states.items()):
        out.append((version, state.flags.tobytes(), state.rows.tobytes(), state.stamps.tobytes(),
                    state.live.tobytes(), state.head, state.size, state.live_events, state.live_missing.tolist(),
                    state.live_out_of_range.tolist(), state.live_failed, state.live_outliers,
                    state.recent_missing.tolist(), dict(state.recent_unknown), dict(state.since),
                    dict(state.current), id(state.published)))
    return out


def test_what_is_detected_does_not_depend_on_when_anyone_scrapes():
    """The same batches at the same times: scraped after every batch, or never until the end, the
    guard detects the same schema change since the same time (the batch that showed it), and
    scrapes without new events read the same values and change nothing."""
    now = [1000.0]
    often, never = (guard_for(reference(), **{"guard.schema_window_events": 50, "guard.schema_min_events": 20})
                    for _ in range(2))
    for guard in (often, never):
        guard.clock = lambda: now[0]
    for seed in range(8):
        now[0] = 1000.0 + 10.0 * seed
        cols = clean(20, seed=seed)
        if seed >= 3:
            cols["x_zero"] = cols.pop("x0")
        for guard in (often, never):
            guard.observe("1", EventBatch(20, features=cols))
        exported(often)
        often.status()
    now[0] += 600.0   # read long after the last batch
    changes = never.status()["versions"]["1"]["schema"]["changes"]
    assert changes == often.status()["versions"]["1"]["schema"]["changes"]
    # detected with the 6th batch: x0 absent from all of the last 50 events, x_zero in all of the last batches
    assert {(c["feature"], c["change"]): c["since"] for c in changes} == {("x0", "missing"): 1050.0,
                                                                          ("x_zero", "added"): 1050.0}
    assert exported(often) == exported(never)
    before = engine_state(never)
    first = exported(never)
    now[0] += 5000.0   # later than the window's max age: only the engine's own step ages events out
    assert exported(never) == first and never.status() == never.status()
    assert engine_state(never) == before


def test_the_periodic_step_ages_events_out_of_the_window_ratios():
    now = [1000.0]
    guard = guard_for(reference(), **{"window.max_age_seconds": 60.0})
    guard.clock = lambda: now[0]
    cols = clean(10)
    cols["x1"][0] = None
    guard.observe("1", EventBatch(10, features=cols))
    now[0] = 1030.0
    guard.observe("1", EventBatch(10, features=clean(10, seed=2)))
    assert ratios(exported(guard), "inferwatch_feature_missing_ratio")["x1"] == pytest.approx(0.05)
    now[0] = 1065.0   # the first batch is older than 60 s
    guard.expire()
    assert ratios(exported(guard), "inferwatch_feature_missing_ratio")["x1"] == 0.0
    assert guard.status()["versions"]["1"]["window"]["events"] == 10
    now[0] = 2000.0   # with the guard's thread running, no call is needed
    guard.start()
    try:
        assert wait_for(lambda: guard.status()["versions"]["1"]["window"]["events"] == 0, timeout=5)
    finally:
        guard.close()
    assert "inferwatch_feature_missing_ratio{" not in exported(guard)


def test_running_sums_equal_a_scan_of_the_ring():
    """The ratios' running sums and the schema window's missing counts, after random batches (some
    larger than the ring, some with old timestamps) and expiries, equal a full scan of the ring."""
    rng = np.random.default_rng(8)
    f, capacity, max_age = 3, 50, 100.0
    state = VersionState(["a", "b", "c"], capacity, max_age, GuardConfig(schema_window_events=20, schema_min_events=5))
    now = 0.0
    for _ in range(300):
        now += float(rng.uniform(0.0, 30.0))
        n = int(rng.choice([1, 3, 17, 49, 50, 51, 120]))
        flags = rng.integers(0, 4, size=(f, n)).astype(np.uint8)
        counts = np.zeros((f, len(ISSUES)), np.int64)
        counts[:, Issue.MISSING] = np.count_nonzero(flags & 1, axis=1)
        counts[:, Issue.OUT_OF_RANGE] = np.count_nonzero(flags & 2, axis=1)
        check = BatchCheck(n, counts, rng.random(n) < 0.3, flags, outlier=rng.random(n) < 0.1)
        stamps = list(now - rng.choice([0.0, 50.0, 150.0], n, p=[0.7, 0.2, 0.1]))
        state.record(check, stamps, now, {}, ())
        if rng.random() < 0.3:
            now += float(rng.uniform(0.0, 60.0))
            state.expire(now, ())
        live = state.stamps >= now - max_age
        assert state.live_events == np.count_nonzero(live)
        assert state.live_missing.tolist() == np.count_nonzero(state.flags[:, live] & 1, axis=1).tolist()
        assert state.live_out_of_range.tolist() == np.count_nonzero(state.flags[:, live] & 2, axis=1).tolist()
        assert state.live_failed == np.count_nonzero(state.rows[live] & 1)
        assert state.live_outliers == np.count_nonzero(state.rows[live] & 2)
        recent = (state.head - 1 - np.arange(min(state.size, 20))) % capacity
        assert state.recent_missing.tolist() == np.count_nonzero(state.flags[:, recent] & 1, axis=1).tolist()


def test_the_flags_are_the_per_event_missing_and_out_of_range_counts():
    """The ring's running sums add a whole batch by its counts: the flags must sum to them."""
    cols = clean(12)
    cols["x0"][0] = None
    cols["x1"][1] = "wrong"
    cols["x2"][2] = 1e9
    cols["x3"][3] = float("nan")
    cols["city"][4] = None
    cols["city"][5] = "lima"
    del cols["x3"]
    check = evaluate(Schema.from_profile(reference(), GuardConfig()), EventBatch(12, features=cols))
    assert np.count_nonzero(check.flags & 1, axis=1).tolist() == check.counts[:, Issue.MISSING].tolist()
    assert np.count_nonzero(check.flags & 2, axis=1).tolist() == check.counts[:, Issue.OUT_OF_RANGE].tolist()
    assert check.counts[:, Issue.MISSING].tolist() == [1, 0, 0, 12, 1]
    assert check.counts[:, Issue.OUT_OF_RANGE].tolist() == [0, 0, 1, 0, 0]
