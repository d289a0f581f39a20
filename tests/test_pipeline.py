"""The hand-off queue between the serving path and the worker."""

from __future__ import annotations

import queue
import threading

import pytest

from inferwatch.pipeline.handoff import HandoffQueue


def test_put_is_bounded_and_refusal_is_queue_full():
    q = HandoffQueue(maxsize=3)
    for i in range(3):
        q.put_nowait(i)
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    assert q.qsize() == 3 and q.unfinished_tasks == 3


def test_take_all_returns_everything_in_order_up_to_the_limit():
    q = HandoffQueue(maxsize=100)
    for i in range(10):
        q.put_nowait(i)
    assert q.take_all(limit=4) == [0, 1, 2, 3]
    assert q.unfinished_tasks == 10  # four in hand, six queued
    for _ in range(4):
        q.done()
    assert q.take_all() == [4, 5, 6, 7, 8, 9]


def test_take_all_waits_for_a_producer():
    q = HandoffQueue(maxsize=10, poll_seconds=0.001)
    timer = threading.Timer(0.05, q.put_nowait, args=("late",))
    timer.start()
    assert q.take_all() == ["late"]
    timer.join()


def test_the_stop_marker_is_never_refused():
    q = HandoffQueue(maxsize=1)
    q.put_nowait("x")
    q.put_always("stop")
    assert q.take_all() == ["x", "stop"]


def test_bytes_are_bounded_too_and_freed_when_taken():
    q = HandoffQueue(maxsize=100, max_bytes=1000)
    q.put_nowait("a", 600)
    q.put_nowait("b", 400)
    with pytest.raises(queue.Full):   # the count allows it, the bytes do not
        q.put_nowait("c", 1)
    q.put_nowait("sizeless")          # items without a size only count
    assert q.queued_bytes == 1000 and q.qsize() == 3
    assert q.take_all() == ["a", "b", "sizeless"]
    assert q.queued_bytes == 0
    q.put_nowait("d", 1000)           # exactly the bound fits
    with pytest.raises(queue.Full):
        q.put_nowait("e", 1001)       # larger than the whole bound: refused, never held
    assert q.queued_bytes == 1000


def test_concurrent_producers_keep_the_byte_count_exact():
    q = HandoffQueue(maxsize=1_000_000, max_bytes=10**12)

    def produce():
        for _ in range(20_000):
            q.put_nowait("x", 3)

    threads = [threading.Thread(target=produce) for _ in range(4)]
    for t in threads:
        t.start()
    taken = 0
    while any(t.is_alive() for t in threads) or q.qsize():
        if q.qsize():
            taken += len(q.take_all(limit=5000))
    for t in threads:
        t.join()
    taken += len(q.take_all()) if q.qsize() else 0
    assert taken == 80_000 and q.queued_bytes == 0


# --- the worker windows consecutive exchanges as one batch --------------------------------------


def _pipeline(tmp_path, name):
    from prometheus_client import CollectorRegistry

    from inferwatch.config import parse_config
    from inferwatch.exposition.metrics import Metrics
    from inferwatch.pipeline.worker import Pipeline
    from inferwatch.pipeline.predlog import PredictionLogger
    from inferwatch.pipeline.window import WindowStore

    cfg = parse_config({"model": {"name": "m", "version": "1"},
                        "prediction_log": {"path": str(tmp_path / f"{name}.jsonl"), "sample_rate": 1.0}})
    registry = CollectorRegistry()
    metrics = Metrics("m", registry, sidecar_process_metrics=False)
    pipeline = Pipeline(cfg.model, metrics, WindowStore(capacity=1000, max_age_seconds=1e9, max_versions=4),
                        PredictionLogger(cfg.prediction_log), queue=cfg.queue, payload=cfg.payload,
                        segments=cfg.segments)
    seen = []
    pipeline.observers.append(lambda version, batch: seen.append((version, batch.n)))
    return pipeline, registry, seen


def _exchanges():
    import json

    from inferwatch.pipeline.items import Exchange

    def ex(i, rows, status=200, endpoint="/v1/models/{model}:predict", version="1", body=None):
        request = body if body is not None else json.dumps({"instances": rows}).encode()
        response = json.dumps({"predictions": [0.1 * (i + k) for k in range(len(rows))]}).encode()
        return Exchange(model_version=version, endpoint=endpoint, status=status, prediction_id=f"p{i}",
                        timestamp=1000.0 + i, latency_seconds=0.001 * (i + 1), request_body=request,
                        response_body=response, request_content_type="application/json",
                        response_content_type="application/json")

    from inferwatch.ingest.ground_truth import LabelBatch

    return [
        ex(0, [{"a": 1.0, "b": "x"}, {"a": 2.0, "b": "y"}]),
        ex(1, [{"a": 3.0, "b": "z"}], endpoint="/predict"),
        ex(2, [], body=b"{not json"),                       # undecodable: counted, nothing windowed
        ex(3, [{"a": 4.0, "b": "x"}], status=503),          # refused: checked, not windowed
        ex(4, [{"a": 5.0}]),                                # other columns: a batch of its own
        LabelBatch(["p0-0"], [1], [None]),                  # labels end the merge
        ex(5, [{"a": 6.0}, {"a": 7.0}]),
        ex(6, [{"a": 8.0}], version="2"),                   # another version
    ]


def test_coalesced_exchanges_window_and_log_exactly_as_one_by_one(tmp_path):
    import json

    merged, merged_registry, merged_seen = _pipeline(tmp_path, "merged")
    single, single_registry, single_seen = _pipeline(tmp_path, "single")
    items = _exchanges()
    for item in items:
        merged.queue.put_nowait(item)
    assert merged.process_all(merged.queue.take_all()) is True
    assert merged.queue.unfinished_tasks == 0 and merged.processed == len(items)
    for item in items:
        single.process(item)
    assert single.processed == len(items)
    # fewer, larger batches reached the observers: [0, 1] together, then 4 and 5 apart (labels between)
    assert merged_seen == [("1", 3), ("1", 1), ("1", 2), ("2", 1)]
    assert single_seen == [("1", 2), ("1", 1), ("1", 1), ("1", 2), ("2", 1)]
    for version in ("1", "2"):
        a, b = merged.windows.snapshot(version), single.windows.snapshot(version)
        assert a.n == b.n and list(a.prediction_ids) == list(b.prediction_ids)
        for name in b.features:
            assert a.features[name].values.tolist() == b.features[name].values.tolist()
            assert a.features[name].state.tolist() == b.features[name].state.tolist()
        assert a.outputs["prediction"].values.tolist() == b.outputs["prediction"].values.tolist()
    for sample in ("inferwatch_events_total", "inferwatch_predictions_total"):
        for version in ("1", "2"):
            labels = {"model": "m", "model_version": version}
            if sample == "inferwatch_events_total":
                labels["source"] = "proxy"
            assert merged_registry.get_sample_value(sample, labels) == single_registry.get_sample_value(sample, labels)
    merged.predlog.close()
    single.predlog.close()

    def lines(name):
        return [json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]

    # each row keeps its own exchange's endpoint, status and latency in the prediction log
    assert lines("merged") == lines("single")
    by_id = {line["prediction_id"]: line for line in lines("merged")}
    assert by_id["p1"]["endpoint"] == "/predict" and by_id["p0-1"]["latency_seconds"] == 0.001


def test_a_failing_batch_is_counted_and_its_items_are_still_done(tmp_path):
    pipeline, registry, _ = _pipeline(tmp_path, "boom")

    def boom(version, batch):
        raise RuntimeError("observer bug")

    pipeline.observers.insert(0, boom)
    for item in _exchanges()[:2]:
        pipeline.queue.put_nowait(item)
    assert pipeline.process_all(pipeline.queue.take_all()) is True
    assert pipeline.queue.unfinished_tasks == 0
    assert registry.get_sample_value("inferwatch_monitoring_errors_total", {"model": "m", "stage": "worker"}) == 1
    pipeline.predlog.close()
