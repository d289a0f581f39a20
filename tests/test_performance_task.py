"""performance.task: auto: deciding classification or regression from the evidence, and saying why."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import requests

from conftest import admin_url, wait_for
from inferwatch.ingest.ground_truth import LabelBatch
from inferwatch.monitors.performance.task import MIN_EVIDENCE, choose, from_profile, from_values
from inferwatch.reference import build_profile
from test_performance import feed, make_engine

# --------------------------------------------------------------------------- the evidence, pure


def prices(rng, n):
    """Whole-dollar house prices: integers, nearly all distinct."""
    return rng.integers(80_000, 900_000, n).tolist()


def test_whole_numbers_with_many_distinct_values_are_a_regression():
    rng = np.random.default_rng(1)
    choice = from_values(prices(rng, 300), prices(rng, 20), max_classes=20)
    assert choice.task == "regression" and not choice.weak
    assert "distinct whole numbers" in choice.reason and "performance.max_classes (20)" in choice.reason
    # Ages: whole numbers in a dense small range, more of them than classes are tracked.
    ages = rng.integers(18, 90, 1000).tolist()
    assert from_values(ages, ages[:50], max_classes=20).task == "regression"


@pytest.mark.parametrize("labels", [[0, 1], [0, 1, 2], ["cat", "dog", "bird"], [True, False], [1, 2, 3, 4, 5]])
def test_zero_one_and_small_label_sets_are_classes(labels):
    rng = np.random.default_rng(2)
    values = rng.choice(np.array(labels, dtype=object), 200).tolist()
    choice = from_values(values[:150], values[150:], max_classes=20)
    assert choice.task == "classification" and not choice.weak, choice


def test_fractions_are_values_unless_probabilities_beside_zero_one_labels():
    assert from_values([1.5, 2.25, 3.0], [2, 3, 4], 20).task == "regression"
    probabilities = from_values([0.2, 0.9] * 20, [0, 1] * 20, 20)
    assert probabilities.task == "classification" and not probabilities.weak
    assert from_values([0.2, 0.9], [0.3, 0.7], 20).task == "regression"


def test_few_values_are_weak_evidence_read_by_their_size():
    small = from_values([1, 0, 2], [1], 20)
    assert small.task == "classification" and small.weak
    few_prices = from_values([120_000, 350_000], [125_000], 20)
    assert few_prices.task == "regression" and few_prices.weak
    assert "weak evidence" in few_prices.describe() and "performance.task" in few_prices.describe()
    assert from_values([None], [], 20) is None


def test_the_reference_profile_and_the_order_of_the_evidence():
    rng = np.random.default_rng(3)
    numeric = build_profile({"feature": {}, "label": {"price": prices(rng, 2000)}})
    assert from_profile(numeric.label["price"], "label", 20).task == "regression"
    binary = build_profile({"feature": {}, "label": {"y": rng.integers(0, 2, 2000).tolist()}})
    assert from_profile(binary.label["y"], "label", 20).task == "classification"
    text = build_profile({"feature": {}, "label": {"y": ["a", "b"] * 100}})
    assert from_profile(text.label["y"], "label", 20).reason == "the reference profile's label 'y' is categorical"
    weak, strong = from_values([1], [1], 20), from_values(prices(rng, 100), [], 20)
    assert choose([None, weak, strong]) is strong and choose([weak, None]) is weak and choose([None]) is None


# --------------------------------------------------------------------------- the engine


def test_whole_dollar_prices_resolve_to_regression_not_classification():
    """The report: every prediction off by thousands read as classes scored accuracy 0.91."""
    rng = np.random.default_rng(4)
    n = 300
    truth = np.array(prices(rng, n))
    pred = truth + rng.choice([-3000, 3000], n)
    engine, windows, _ = make_engine()
    ids = [f"h{i}" for i in range(n)]
    feed(engine, windows, {"prediction": pred.tolist()}, ids)
    engine.add_labels(LabelBatch(ids, truth.tolist(), [None] * n))
    engine.evaluate_all()
    assert engine.task == "regression"
    got = engine.results[("1", "")].metrics
    assert "accuracy" not in got and got["mae"] == pytest.approx(3000.0)
    status = engine.status()
    assert status["task"] == "regression"
    assert status["task_reason"].startswith("auto: regression because") and "distinct whole numbers" in \
        status["task_reason"] and "weak" not in status["task_reason"]


def test_zero_one_predictions_resolve_to_classification():
    rng = np.random.default_rng(5)
    n = 100
    y = rng.integers(0, 2, n)
    engine, windows, _ = make_engine()
    ids = [f"b{i}" for i in range(n)]
    feed(engine, windows, {"prediction": y.tolist()}, ids)
    engine.add_labels(LabelBatch(ids, y.tolist(), [None] * n))
    engine.evaluate_all()
    assert engine.task == "classification" and engine.results[("1", "")].metrics["accuracy"] == 1.0
    assert "each seen" in engine.status()["task_reason"]


def test_the_reference_label_decides_before_the_first_few_values():
    """One labelled prediction is no evidence; the reference profile's label is."""
    rng = np.random.default_rng(6)
    reference = build_profile({"feature": {}, "label": {"price": prices(rng, 2000)}})
    engine, windows, _ = make_engine(reference=reference)
    feed(engine, windows, {"prediction": [200_000]}, ["a"])
    engine.add_labels(LabelBatch(["a"], [203_000], [None]))
    assert engine.task == "regression"
    assert "the reference profile's label 'price'" in engine.status()["task_reason"]


def test_weak_evidence_is_said_once_in_the_log_and_the_status(caplog):
    engine, windows, _ = make_engine()
    feed(engine, windows, {"prediction": [1, 2, 1]}, ["a", "b", "c"])
    with caplog.at_level(logging.INFO, logger="inferwatch.monitors.performance.engine"):
        engine.add_labels(LabelBatch(["a"], [1], [None]))
        engine.add_labels(LabelBatch(["b", "c"], [2, 2], [None, None]))
    assert engine.task == "classification"
    reason = engine.status()["task_reason"]
    assert "weak evidence" in reason and "performance.task" in reason and "predictions.outputs" in reason
    said = [r for r in caplog.records if "performance: task" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING and reason in said[0].getMessage()


def test_a_configured_task_or_output_type_is_the_reason():
    engine, _, _ = make_engine(task="regression")
    assert engine.status()["task_reason"] == "performance.task"
    assert make_engine()[0].status()["task_reason"] is None   # no label yet


def test_status_over_sockets_says_which_task_and_why(sidecar_factory):
    """Pushed whole-dollar predictions and their labels: /v1/status says regression, and why."""
    rng = np.random.default_rng(7)
    sidecar = sidecar_factory("http://127.0.0.1:9", **{"proxy.enabled": False, "labels.enabled": True})
    truth = prices(rng, MIN_EVIDENCE * 2)
    events = [{"prediction_id": f"e{i}", "features": {"x": i}, "prediction": v + 5000} for i, v in enumerate(truth)]
    assert requests.post(admin_url(sidecar, "/v1/events"), json={"events": events}, timeout=5).json()["accepted"] \
        == len(truth)
    labels = [{"prediction_id": f"e{i}", "label": v} for i, v in enumerate(truth)]
    assert requests.post(admin_url(sidecar, "/v1/labels"), json=labels, timeout=5).status_code == 202

    def performance():
        status = requests.get(admin_url(sidecar, "/v1/status"), timeout=5).json()["performance"]
        return status if status["task_reason"] else None

    status = wait_for(performance, 10)
    assert status and status["task"] == "regression"
    assert "distinct whole numbers" in status["task_reason"]
