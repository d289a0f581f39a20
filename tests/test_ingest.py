"""Push mode parsing for POST /v1/events."""

from __future__ import annotations

import gzip
import json
import math
import time

import pytest

from inferwatch.ingest.events import PayloadError
from inferwatch.ingest.push import parse_events, parse_timestamp

MB = 1024 * 1024


def j(obj) -> bytes:
    return json.dumps(obj).encode()


def parse(body, content_type="application/json", **kwargs):
    kwargs.setdefault("max_bytes", 16 * MB)
    return parse_events(body, content_type, **kwargs)


def test_events_wrapper_full_event():
    body = j({"events": [{"prediction_id": "p1", "timestamp": 1700000000.5, "model_version": "v2",
                          "features": {"age": 31, "city": "SF"}, "prediction": 0.93}]})
    batches, rejections = parse(body)
    assert rejections == []
    assert len(batches) == 1
    batch = batches[0]
    assert batch.n == 1
    assert batch.source == "push"
    assert batch.model_version == "v2"
    assert batch.prediction_ids == ["p1"]
    assert batch.timestamps == [1700000000.5]
    assert batch.features == {"age": [31], "city": ["SF"]}
    assert batch.outputs == {"prediction": [0.93]}


def test_bare_list_and_defaults():
    before = time.time()
    batches, rejections = parse(j([{"features": {"a": 1}}, {"features": {"a": 2}}]), default_version="v7")
    assert rejections == []
    (batch,) = batches
    assert batch.n == 2
    assert batch.model_version == "v7"
    assert len(set(batch.prediction_ids)) == 2 and all(isinstance(i, str) and i for i in batch.prediction_ids)
    assert all(before <= t <= time.time() for t in batch.timestamps)
    assert batch.outputs == {}


def test_one_batch_per_model_version():
    events = [
        {"features": {"a": 1}, "model_version": "v1"},
        {"features": {"a": 2}, "model_version": "v2"},
        {"features": {"a": 3}, "model_version": "v1"},
        {"features": {"a": 4}},
    ]
    batches, _ = parse(j({"events": events}))
    by_version = {b.model_version: b for b in batches}
    assert set(by_version) == {"v1", "v2", None}
    assert by_version["v1"].features == {"a": [1, 3]}
    assert by_version["v2"].n == 1
    assert by_version[None].features == {"a": [4]}


def test_prediction_shapes():
    events = [
        {"prediction_id": "s", "features": {"x": 1}, "prediction": 1},
        {"prediction_id": "l", "features": {"x": 2}, "prediction": [0.2, 0.8]},
        {"prediction_id": "o", "features": {"x": 3}, "prediction": {"label": "cat", "score": 0.7}},
        {"prediction_id": "n", "features": {"x": 4}},
    ]
    (batch,), rejections = parse(j(events))
    assert rejections == []
    assert batch.prediction_ids == ["s", "l", "o", "n"]
    assert batch.outputs == {
        "prediction": [1, None, None, None],
        "prediction_0": [None, 0.2, None, None],
        "prediction_1": [None, 0.8, None, None],
        "label": [None, None, "cat", None],
        "score": [None, None, 0.7, None],
    }


def test_ragged_features_fill_none():
    (batch,), _ = parse(j([{"features": {"a": 1}}, {"features": {"b": "x"}}]))
    assert batch.features == {"a": [1, None], "b": [None, "x"]}


def test_rejections_name_the_field():
    events = [
        {"features": {"a": 1}},  # ok
        "not an event",
        {"prediction": 1},
        {"features": [1, 2]},
        {"features": {"a": 1}, "timestamp": "yesterday"},
        {"features": {"a": 1}, "prediction_id": 12},
        {"features": {"a": 1}, "model_version": 3},
        {"features": {"a": 1}, "timestamp": 1700000000000},
        {"features": {"a": 1}, "timestamp": True},
        {"features": {"a": 2}},  # ok
    ]
    batches, rejections = parse(j({"events": events}))
    assert sum(b.n for b in batches) == 2
    by_index = {r["index"]: r["reason"] for r in rejections}
    assert sorted(by_index) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert "object" in by_index[1]
    assert "features" in by_index[2]
    assert "features" in by_index[3]
    assert "timestamp" in by_index[4]
    assert "prediction_id" in by_index[5]
    assert "model_version" in by_index[6]
    assert "milliseconds" in by_index[7]
    assert "timestamp" in by_index[8]


def test_rfc3339_timestamps():
    events = [
        {"features": {"a": 1}, "timestamp": "2023-11-14T22:13:20Z"},
        {"features": {"a": 1}, "timestamp": "2023-11-14T23:13:20.25+01:00"},
        {"features": {"a": 1}, "timestamp": "2023-11-14 22:13:20.123456789z"},
    ]
    (batch,), rejections = parse(j(events))
    assert rejections == []
    assert batch.timestamps[0] == 1700000000.0
    assert batch.timestamps[1] == pytest.approx(1700000000.25)
    assert batch.timestamps[2] == pytest.approx(1700000000.123456789)


def test_parse_timestamp_errors():
    for bad in ("2023-11-14T22:13:20", "2023-13-01T00:00:00Z", "", float("nan"), -1, [1], None):
        with pytest.raises(ValueError):
            parse_timestamp(bad)
    assert parse_timestamp(0) == 0.0


def test_json_lines():
    body = b'{"features": {"a": 1}, "prediction": 1}\n\n{"features": {"a": 2}}\n{not json}\n[1]\n'
    (batch,), rejections = parse(body, "application/x-ndjson")
    assert batch.n == 2
    assert batch.features == {"a": [1, 2]}
    assert [r["index"] for r in rejections] == [2, 3]
    assert rejections[0]["line"] == 4 and "invalid JSON" in rejections[0]["reason"]
    assert rejections[1]["line"] == 5


def test_json_lines_without_ndjson_content_type():
    body = b'{"features": {"a": 1}}\n{"features": {"a": 2}}\n'
    (batch,), rejections = parse(body, None)
    assert batch.n == 2 and rejections == []


def test_single_event_object():
    (batch,), _ = parse(j({"features": {"a": 1}, "prediction": 0}))
    assert batch.n == 1


def test_nan_and_infinity():
    (batch,), _ = parse(b'[{"features": {"a": NaN, "b": Infinity}, "prediction": -Infinity}]')
    assert math.isnan(batch.features["a"][0])
    assert batch.features["b"] == [math.inf]
    assert batch.outputs == {"prediction": [-math.inf]}


def test_empty_events():
    assert parse(j({"events": []})) == ([], [])
    assert parse(b"", "application/x-ndjson") == ([], [])


def test_gzip_body():
    body = gzip.compress(j({"events": [{"features": {"a": 1}}]}))
    (batch,), _ = parse(body, content_encoding="gzip")
    assert batch.n == 1


@pytest.mark.parametrize(
    "body,content_type,expected",
    [
        (b"{nope", "application/json", "invalid_json"),
        (b'{"events": [1, 2', None, "invalid_json"),
        (b'{"a": "\xff"}', "application/json", "not_utf8"),
        (b"{}", "multipart/form-data; boundary=x", "unsupported_content_type"),
        (b"{}", "application/x-protobuf", "unsupported_content_type"),
        (b'{"events": {"a": 1}}', "application/json", "invalid_event"),
        (b'{"rows": []}', "application/json", "invalid_event"),
        (b"42", "application/json", "invalid_event"),
    ],
)
def test_whole_body_errors(body, content_type, expected):
    with pytest.raises(PayloadError) as exc:
        parse(body, content_type)
    assert exc.value.reason == expected


def test_too_large():
    body = b"[" + b" " * (20 * MB) + b"]"
    with pytest.raises(PayloadError) as exc:
        parse(body)
    assert exc.value.reason == "too_large"
    with pytest.raises(PayloadError) as exc:
        parse(gzip.compress(body), content_encoding="gzip", max_bytes=MB)
    assert exc.value.reason == "too_large"


def test_content_type_with_charset():
    (batch,), _ = parse(j([{"features": {"a": 1}}]), "application/json; charset=utf-8")
    assert batch.n == 1
    (batch,), _ = parse(b'{"features": {"a": 1}}\n', "application/x-ndjson; charset=utf-8")
    assert batch.n == 1


def test_many_events():
    events = [
        {"prediction_id": f"id-{i}", "features": {"x": i, "y": i * 0.5}, "prediction": i % 2} for i in range(5000)
    ]
    (batch,), rejections = parse(j({"events": events}))
    assert batch.n == 5000 and rejections == []
    assert batch.prediction_ids[4999] == "id-4999"
    assert batch.outputs["prediction"][:4] == [0, 1, 0, 1]


# --- the uniform-body fast path gives what the per-event path gives ---------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402

import inferwatch.ingest.push as ingest_module  # noqa: E402

_value = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
                   st.text(max_size=5), st.lists(st.integers(), max_size=2))
_event = st.fixed_dictionaries(
    {"features": st.one_of(st.dictionaries(st.sampled_from(["a", "b", "c"]), _value, max_size=3), _value)},
    optional={
        "prediction_id": st.one_of(st.text(max_size=3), st.integers(), st.none()),
        "timestamp": st.one_of(st.floats(allow_nan=True), st.integers(-5, 2 * 10**11), st.booleans(),
                               st.just("2024-05-01T12:00:00Z"), st.none()),
        "model_version": st.one_of(st.sampled_from(["", "v1", "v2"]), st.none(), st.integers()),
        "prediction": _value,
    },
)


def _both_paths(body: bytes) -> tuple:
    fast = parse_events(body, "application/json", max_bytes=1 << 20, default_version="d")
    with pytest.MonkeyPatch.context() as m:
        m.setattr(ingest_module, "_uniform_batch", lambda *a: None)
        slow = parse_events(body, "application/json", max_bytes=1 << 20, default_version="d")
    return fast, slow


def _comparable(result: tuple) -> tuple:
    batches, rejections = result
    # Generated ids and "now" timestamps differ between two parses; compare their presence.
    return ([(b.n, b.model_version, b.source, json.dumps(b.features, sort_keys=True), json.dumps(b.outputs),
              [len(i) for i in b.prediction_ids], b.timestamps) for b in batches], rejections)


@settings(max_examples=300, deadline=None)
@given(events=st.lists(_event, min_size=1, max_size=6), uniform_keys=st.booleans())
def test_fast_path_matches_per_event_path(events, uniform_keys):
    if uniform_keys:  # the fast path's case: every event has the first one's fields
        keys = events[0].keys()
        events = [{k: e.get(k, events[0][k]) for k in keys} for e in events]
    for e in events:  # fixed timestamps: both parses must not stamp "now" differently
        e.setdefault("timestamp", 1.7e9)
        if e["timestamp"] is None:
            e["timestamp"] = 1.7e9
    body = json.dumps({"events": events}).encode()
    fast, slow = _both_paths(body)
    assert _comparable(fast) == _comparable(slow)


def test_fast_path_takes_a_uniform_body(monkeypatch):
    events = [{"prediction_id": f"p{i}", "timestamp": 1.7e9 + i, "features": {"a": i, "b": "x"},
               "prediction": 0.5} for i in range(50)]
    calls = []
    real = ingest_module._uniform_batch
    monkeypatch.setattr(ingest_module, "_uniform_batch", lambda *a: calls.append(1) or real(*a))
    batches, rejections = parse_events(json.dumps(events).encode(), "application/json", max_bytes=1 << 20)
    assert calls and not rejections
    assert batches[0].features == {"a": list(range(50)), "b": ["x"] * 50}
    assert batches[0].outputs == {"prediction": [0.5] * 50}
    assert batches[0].prediction_ids == [f"p{i}" for i in range(50)]
