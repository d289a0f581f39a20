import threading

import numpy as np
import pytest

from inferwatch.ingest.events import EventBatch
from inferwatch.ingest.values import INVALID, MISSING, PRESENT, infer_kind, to_numeric
from inferwatch.pipeline.window import Window, WindowStore


def batch(n, start=0, **extra):
    features = {"x": [float(start + i) for i in range(n)], "c": [["a", "b", "c"][i % 3] for i in range(n)]}
    features.update(extra)
    return EventBatch(n=n, features=features, outputs={"score": [0.5] * n},
                      prediction_ids=[f"id{start + i}" for i in range(n)], timestamps=[1000.0 + start + i for i in range(n)])


def test_infer_kind():
    assert infer_kind([None, 1.5]) == "numeric"
    assert infer_kind([None, "a"]) == "categorical"
    assert infer_kind([True]) == "categorical"
    assert infer_kind([None, None]) is None


def test_to_numeric_states():
    values, state = to_numeric([1, None, "7", float("nan"), 2.5, True])
    assert state.tolist() == [PRESENT, MISSING, INVALID, PRESENT, PRESENT, INVALID]
    assert values[0] == 1 and np.isnan(values[1]) and np.isnan(values[2]) and np.isnan(values[3])
    fast_values, fast_state = to_numeric([1.0, 2.0, 3])
    assert fast_values.dtype == np.float64 and not fast_state.any()


def test_ring_buffer_keeps_newest_in_order():
    w = Window("v1", capacity=5, max_age_seconds=1e9, clock=lambda: 2000.0)
    w.append(batch(3, 0))
    w.append(batch(4, 3))
    snap = w.snapshot()
    assert snap.n == 5
    assert snap.features["x"].values.tolist() == [2, 3, 4, 5, 6]
    assert list(snap.prediction_ids) == ["id2", "id3", "id4", "id5", "id6"]
    # a batch larger than the window keeps its newest rows
    w.append(batch(12, 100))
    assert w.snapshot().features["x"].values.tolist() == [107, 108, 109, 110, 111]
    assert w.appended_total == 19


def test_age_bound():
    now = [1000.0]
    w = Window("v1", capacity=100, max_age_seconds=10, clock=lambda: now[0])
    w.append(batch(5, 0))  # timestamps 1000..1004
    now[0] = 1012.5
    assert w.snapshot().features["x"].values.tolist() == [3, 4]
    assert w.live_events() == 2


def test_categorical_codes_missing_and_cap():
    w = Window("v1", capacity=10, max_age_seconds=1e9, max_categories=3, clock=lambda: 2000.0)
    w.append(EventBatch(n=6, features={"c": ["a", "b", None, "c", "d", {"x": 1}]}, timestamps=[1000.0] * 6))
    col = w.snapshot().features["c"]
    assert col.state.tolist() == [PRESENT, PRESENT, MISSING, PRESENT, PRESENT, INVALID]
    assert len(col.categories) == 3 and col.categories[-1] == "other"
    assert col.category_values().tolist() == ["a", "b", None, "other", "other", None]
    assert w.features.columns["c"].categories_capped == 2


def test_new_and_absent_columns_are_explicitly_missing():
    w = Window("v1", capacity=10, max_age_seconds=1e9, clock=lambda: 2000.0)
    w.append(EventBatch(n=2, features={"a": [1.0, 2.0]}, timestamps=[1000.0] * 2))
    w.append(EventBatch(n=2, features={"b": [3.0, 4.0]}, timestamps=[1000.0] * 2))
    snap = w.snapshot()
    assert snap.features["a"].state.tolist() == [PRESENT, PRESENT, MISSING, MISSING]
    assert snap.features["b"].state.tolist() == [MISSING, MISSING, PRESENT, PRESENT]


def test_feature_cap_counts_overflow():
    w = Window("v1", capacity=10, max_age_seconds=1e9, max_features=2, clock=lambda: 2000.0)
    w.append(EventBatch(n=1, features={"a": [1], "b": [2], "c": [3]}, timestamps=[1000.0]))
    assert sorted(w.features.columns) == ["a", "b"]
    assert w.features.columns_capped == 1


def test_declared_kind_wins():
    w = Window("v1", capacity=10, max_age_seconds=1e9, feature_kinds={"zip": "categorical"}, clock=lambda: 2000.0)
    w.append(EventBatch(n=2, features={"zip": [10115, 80331]}, timestamps=[1000.0] * 2))
    assert w.snapshot().features["zip"].category_values().tolist() == ["10115", "80331"]


def test_memory_is_bounded_by_configuration():
    w = Window("v1", capacity=1000, max_age_seconds=1e9, clock=lambda: 2000.0)
    w.append(batch(1000))
    size = w.memory_bytes()
    for i in range(20):
        w.append(batch(1000, 1000 * (i + 1)))
    assert w.memory_bytes() == size


def test_snapshot_is_consistent_during_ingestion():
    w = Window("v1", capacity=1000, max_age_seconds=1e9, clock=lambda: 1e12)
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            n = 50
            w.append(EventBatch(n=n, features={"x": [float(i)] * n, "y": [float(i)] * n}, timestamps=[1e9] * n))
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(200):
            snap = w.snapshot()
            # x and y are written together: a torn snapshot would show them differ
            assert np.array_equal(snap.features.get("x").values, snap.features.get("y").values) if snap.n else True
    finally:
        stop.set()
        thread.join()


def test_store_caps_versions_through_labels():
    store = WindowStore(capacity=10, max_age_seconds=60, max_versions=2)
    assert store.get("v1") is store.get("v1")
    store.get("v2")
    assert sorted(store.windows()) == ["v1", "v2"]
    assert store.snapshot("missing") is None


@pytest.mark.parametrize("n", [0])
def test_empty_batch(n):
    w = Window("v1", capacity=10, max_age_seconds=60)
    assert w.append(EventBatch(n=n)) == 0
    assert w.snapshot().n == 0


def test_reserved_categories_keep_their_codes_after_a_flood_of_new_values():
    store = WindowStore(capacity=100, max_age_seconds=3600, max_versions=2, max_categories=8)
    store.seed_categories({"country": ["DE", "FR", "IT"]}, {})
    window = store.get("v1")
    window.append(EventBatch(20, features={"country": [f"junk{i}" for i in range(20)]}))
    window.append(EventBatch(3, features={"country": ["DE", "FR", "IT"]}))
    snap = window.snapshot()
    col = snap.features["country"]
    decoded = [col.categories[c] for c in col.values[-3:]]
    assert decoded == ["DE", "FR", "IT"]
    assert len(col.categories) <= 8 and col.categories[-1] == "other"


def test_seeding_reaches_windows_and_columns_that_already_exist():
    store = WindowStore(capacity=100, max_age_seconds=3600, max_versions=2, max_categories=4)
    window = store.get("v1")
    window.append(EventBatch(1, features={"country": ["PL"]}))
    store.seed_categories({"country": ["DE", "FR"]}, {"label": ["yes"]})
    window.append(EventBatch(4, features={"country": ["x", "y", "DE", "FR"]}, outputs={"label": ["yes"] * 4}))
    col = window.snapshot().features["country"]
    assert [col.categories[c] for c in col.values[-4:]] == ["other", "other", "DE", "FR"]
    assert window.snapshot().outputs["label"].categories[0] == "yes"
