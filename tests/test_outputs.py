"""Model outputs: classes, score/value histograms, business bands, unreasonable-output rules."""

from __future__ import annotations

import math
import shutil
import subprocess

import numpy as np
import pytest
import requests
from prometheus_client import CollectorRegistry

from conftest import registry_samples
from inferwatch.config import ConfigError, load_config, parse_config
from inferwatch.ingest.events import EventBatch
from inferwatch.exposition.metrics import Metrics
from inferwatch.monitors.outputs import SCORE_BUCKETS, VALUE_BUCKETS, CompiledOutput, OutputCollector, OutputMonitor
from inferwatch.sidecar import Sidecar

LOAN_BANDS = [
    {"name": "refer_to_human", "max": 0.6},
    {"name": "high_rate", "min": 0.6, "max": 0.7},
    {"name": "mid_rate", "min": 0.71, "max": 0.9},
    {"name": "low_rate", "min": 0.9},
]


def _cfg(outputs: dict, **predictions) -> object:
    return parse_config({"model": {"name": "m", "version": "1"},
                         "predictions": {"outputs": outputs, **predictions}})


def _monitor(outputs: dict, **predictions) -> tuple[OutputMonitor, CollectorRegistry]:
    registry = CollectorRegistry()
    metrics = Metrics("m", registry, sidecar_process_metrics=False)
    cfg = _cfg(outputs, **predictions)
    monitor = OutputMonitor(cfg.model.name, cfg.predictions, max_outputs=cfg.limits.max_outputs,
                            overflow=metrics.label_values_capped, main_version="1")
    registry.register(OutputCollector(monitor))
    return monitor, registry


_samples = registry_samples


def _by(samples: list, key: str) -> dict[str, float]:
    return {labels[key]: value for labels, value in samples}


# --- configuration ------------------------------------------------------------------------------------


def test_the_seed_loan_bands_parse_and_their_gap_is_unbanded():
    spec = CompiledOutput.build("score", _cfg({"score": {"type": "score", "bands": LOAN_BANDS}})
                                .predictions.outputs["score"], 20)
    x = np.array([-0.1, 0.0, 0.59, 0.6, 0.69, 0.7, 0.705, 0.71, 0.89, 0.9, 0.95, 1.0, 7.0])
    names = [*spec.band_labels()]
    got = [names[i] for i in spec.band_index(x)]
    assert got == ["refer_to_human", "refer_to_human", "refer_to_human", "high_rate", "high_rate", "unbanded",
                   "unbanded", "mid_rate", "mid_rate", "low_rate", "low_rate", "low_rate", "low_rate"]


def test_the_highest_band_includes_its_max_and_others_do_not():
    spec = CompiledOutput.build("s", _cfg({"s": {"type": "score", "bands": [
        {"name": "low", "min": 0, "max": 0.5}, {"name": "high", "min": 0.5, "max": 1}]}}).predictions.outputs["s"], 20)
    names = [*spec.band_labels()]
    assert [names[i] for i in spec.band_index(np.array([0.0, 0.5, 1.0, 1.0001, -1e-9]))] == \
        ["low", "high", "high", "unbanded", "unbanded"]


def test_band_and_rule_configuration_errors_name_the_key():
    bad = {
        "score": {"type": "score", "bands": [{"name": "a", "max": 0.6}, {"name": "b", "min": 0.5, "max": 0.8},
                                              {"name": "unbanded", "min": 0.9}, {"name": "c", "min": 2, "max": 1},
                                              {"name": "d", "min": 0.8, "max": 0.85, "expected_share": 1.5}],
                  "buckets": [0.5, 0.2]},
        "label": {"type": "class", "bands": [{"name": "x"}], "classes": ["a", "a"]},
        "price": {"type": "value", "rules": [{"name": "non_finite", "min": 0}, {"name": "bad name", "max": 1}]},
        "what": {"type": "probability"},
    }
    with pytest.raises(ConfigError) as err:
        parse_config({"predictions": {"outputs": bad}}, "c.yaml")
    problems = "\n".join(err.value.problems)
    for expected in (
        "c.yaml:predictions.outputs.score.bands: a [-inf, 0.6) and b [0.5, 0.8) overlap",
        "c.yaml:predictions.outputs.score.bands[2].name: 'unbanded' is reserved",
        "c.yaml:predictions.outputs.score.bands[3]: min (2) must be less than max (1)",
        "c.yaml:predictions.outputs.score.bands[4].expected_share: expected a share from 0 to 1, got 1.5",
        "c.yaml:predictions.outputs.score.buckets: bucket bounds must be strictly increasing",
        "c.yaml:predictions.outputs.label.bands: only for score and value outputs",
        "c.yaml:predictions.outputs.label.classes: classes must be distinct",
        "c.yaml:predictions.outputs.price.rules[0].name: 'non_finite' is a built-in rule",
        "c.yaml:predictions.outputs.price.rules[1].name: expected a name of letters",
        "c.yaml:predictions.outputs.what.type: expected one of class, score, value, got 'probability'",
    ):
        assert expected in problems, expected
    with pytest.raises(ConfigError, match="add up to 1.2, more than 1"):
        parse_config({"predictions": {"outputs": {"s": {"type": "score", "bands": [
            {"name": "a", "max": 0.5, "expected_share": 0.6}, {"name": "b", "min": 0.5, "expected_share": 0.6}]}}}})


def test_yaml_infinities_and_the_example_file_parse():
    cfg = load_config("examples/inferwatch.yaml")
    assert cfg.predictions.outputs["score"].type == "score"
    assert [b.name for b in cfg.predictions.outputs["score"].bands] == \
        ["refer_to_human", "high_rate", "mid_rate", "low_rate"]


# --- computation ----------------------------------------------------------------------------------------


def test_score_histogram_bands_and_rules_match_a_direct_count():
    rng = np.random.default_rng(0)
    x = rng.random(5000)
    values = list(x) + [math.nan, math.inf, -0.2, 1.5, "high", None, True]
    monitor, registry = _monitor({"score": {"type": "score", "bands": LOAN_BANDS}})
    monitor.observe("1", EventBatch(len(values), outputs={"score": values}))
    got = _samples(registry)
    finite = np.array([v for v in values if isinstance(v, float) and math.isfinite(v)])
    buckets = {labels["le"]: v for labels, v in got["inferwatch_prediction_score_bucket"]}
    for le in SCORE_BUCKETS:
        assert buckets[str(le) if le != 1.0 else "1.0"] == np.count_nonzero(finite <= le)
    assert buckets["+Inf"] == finite.size == got["inferwatch_prediction_score_count"][0][1]
    assert got["inferwatch_prediction_score_sum"][0][1] == pytest.approx(finite.sum())
    bands = _by(got["inferwatch_prediction_band_total"], "band")
    assert bands["refer_to_human"] == np.count_nonzero(finite < 0.6)
    assert bands["high_rate"] == np.count_nonzero((finite >= 0.6) & (finite < 0.7))
    assert bands["unbanded"] == np.count_nonzero((finite >= 0.7) & (finite < 0.71))
    assert bands["mid_rate"] == np.count_nonzero((finite >= 0.71) & (finite < 0.9))
    assert bands["low_rate"] == np.count_nonzero(finite >= 0.9)
    assert sum(bands.values()) == finite.size
    rules = _by(got["inferwatch_unreasonable_predictions_total"], "rule")
    # "high" and a bool among numbers are not numbers; NaN and inf are non-finite and in no band.
    assert rules == {"non_finite": 2, "not_numeric": 2, "outside_probability": 2}


def test_value_rules_catch_negative_prices_and_nan():
    monitor, registry = _monitor({"price": {"type": "value", "rules": [{"name": "negative_price", "min": 0}],
                                            "buckets": [0, 100, 1000]}})
    monitor.observe("1", EventBatch(6, outputs={"price": [12.0, -3.0, 250.0, float("nan"), 5000.0, -0.5]}))
    got = _samples(registry)
    assert _by(got["inferwatch_unreasonable_predictions_total"], "rule") == \
        {"non_finite": 1, "not_numeric": 0, "negative_price": 2}
    assert _by(got["inferwatch_prediction_value_bucket"], "le") == {"0.0": 2, "100.0": 3, "1000.0": 4, "+Inf": 5}
    assert "inferwatch_prediction_score_bucket" not in got


def test_score_buckets_are_configurable_and_raw_scores_may_leave_zero_one():
    monitor, registry = _monitor({"logit": {"type": "score", "probability": False, "buckets": [-2, 0, 2]},
                                  "p": {"type": "score", "buckets": [0.5, 0.9]}})
    monitor.observe("1", EventBatch(5, outputs={"logit": [-3.0, -1.0, 0.0, 1.5, 4.0],
                                                 "p": [0.1, 0.5, 0.7, 0.95, 1.2]}))
    got = _samples(registry)
    buckets = {(labels["output"], labels["le"]): v for labels, v in got["inferwatch_prediction_score_bucket"]}
    assert {le: v for (out, le), v in buckets.items() if out == "logit"} == \
        {"-2.0": 1, "0.0": 3, "2.0": 4, "+Inf": 5}
    assert {le: v for (out, le), v in buckets.items() if out == "p"} == {"0.5": 2, "0.9": 3, "+Inf": 5}
    rules = {(labels["output"], labels["rule"]): v for labels, v in got["inferwatch_unreasonable_predictions_total"]}
    assert ("logit", "outside_probability") not in rules and rules[("p", "outside_probability")] == 1


def test_classes_are_capped_with_overflow_counted():
    registry = CollectorRegistry()
    metrics = Metrics("m", registry, sidecar_process_metrics=False)
    cfg = _cfg({"label": {"type": "class", "max_classes": 2}})
    monitor = OutputMonitor(cfg.model.name, cfg.predictions, max_outputs=cfg.limits.max_outputs,
                            overflow=metrics.label_values_capped, main_version="1")
    registry.register(OutputCollector(monitor))
    monitor.observe("1", EventBatch(8, outputs={"label": ["cat", "dog", "cat", "fox", None, "owl", 0.5, "other"]}))
    got = _samples(registry)
    assert _by(got["inferwatch_predicted_class_total"], "class") == {"cat": 2, "dog": 1, "other": 3}
    assert registry.get_sample_value("inferwatch_label_values_capped_total", {"label": "class"}) == 2
    assert _by(got["inferwatch_unreasonable_predictions_total"], "rule") == {"unknown_class": 1}  # 0.5


def test_configured_classes_count_strangers_as_unknown():
    monitor, registry = _monitor({"label": {"type": "class", "classes": [0, 1]}})
    monitor.observe("1", EventBatch(5, outputs={"label": [0, 1, 1, 2, 1.0]}))
    got = _samples(registry)
    assert _by(got["inferwatch_predicted_class_total"], "class") == {"0": 1, "1": 3, "other": 1}
    assert _by(got["inferwatch_unreasonable_predictions_total"], "rule") == {"unknown_class": 1}


def test_auto_types_unlisted_outputs_and_exports_configured_ones_at_zero():
    monitor, registry = _monitor({"score": {"type": "score", "bands": LOAN_BANDS[:2]}})
    got = _samples(registry)  # before any traffic: the configured output's counters at 0
    assert set(_by(got["inferwatch_prediction_band_total"], "band")) == {"refer_to_human", "high_rate", "unbanded"}
    assert all(v == 0 for _, v in got["inferwatch_unreasonable_predictions_total"])
    monitor.observe("2", EventBatch(3, outputs={"kind": ["a", "b", "a"], "amount": [1.0, 2.0, 3.0]}))
    got = _samples(registry)
    assert _by([s for s in got["inferwatch_predicted_class_total"]], "class") == {"a": 2, "b": 1}
    assert {labels["output"] for labels, _ in got["inferwatch_prediction_value_count"]} == {"amount"}
    monitor_off, registry_off = _monitor({}, auto=False)
    monitor_off.observe("1", EventBatch(1, outputs={"kind": ["a"]}))
    assert "inferwatch_predicted_class_total" not in _samples(registry_off)


def test_expected_shares_are_exported():
    bands = [{"name": "low", "max": 0.5, "expected_share": 0.7}, {"name": "high", "min": 0.5, "expected_share": 0.3}]
    _, registry = _monitor({"score": {"type": "score", "bands": bands}})
    got = _samples(registry)
    assert _by(got["inferwatch_prediction_band_expected_ratio"], "band") == {"low": 0.7, "high": 0.3}


def test_a_failing_batch_is_counted_not_raised():
    errors = []
    cfg = _cfg({"s": {"type": "score"}})
    monitor = OutputMonitor(cfg.model.name, cfg.predictions, max_outputs=cfg.limits.max_outputs,
                            on_error=lambda: errors.append(1))
    monitor._observe = lambda version, batch: 1 / 0
    monitor.observe("1", EventBatch(1, outputs={"s": [0.5]}))
    assert errors == [1] and monitor.errors == 1


def test_values_buckets_are_increasing_and_cover_zero():
    assert list(VALUE_BUCKETS) == sorted(set(VALUE_BUCKETS)) and VALUE_BUCKETS[0] == 0.0
    assert SCORE_BUCKETS[0] == 0.05 and SCORE_BUCKETS[-1] == 1.0 and len(SCORE_BUCKETS) == 20


def test_sidecar_publishes_outputs_from_pushed_events_and_promtool_accepts_them():
    cfg = load_config(None, {"proxy.enabled": False, "admin.port": 0, "admin.listen_address": "127.0.0.1",
                             "model.name": "loan", "model.version": "1"})
    cfg.predictions = _cfg({"score": {"type": "score", "bands": LOAN_BANDS},
                            "decision": {"type": "class"}}).predictions
    sidecar = Sidecar(cfg).start()
    try:
        events = [{"features": {"income": 10}, "prediction": {"score": s, "decision": "approve" if s > 0.6 else "refer"}}
                  for s in (0.1, 0.65, 0.705, 0.8, 0.95, -1.0)]
        r = requests.post(f"http://127.0.0.1:{sidecar.admin_port}/v1/events", json={"events": events}, timeout=5)
        assert r.status_code in (200, 202), r.text
        sidecar.pipeline.drain()
        text = requests.get(f"http://127.0.0.1:{sidecar.admin_port}/metrics", timeout=5).text
        got = _samples(sidecar.metrics.registry)
        bands = _by([s for s in got["inferwatch_prediction_band_total"] if s[0]["model_version"] == "1"], "band")
        assert bands == {"refer_to_human": 2, "high_rate": 1, "unbanded": 1, "mid_rate": 1, "low_rate": 1}
        assert _by(got["inferwatch_predicted_class_total"], "class") == {"approve": 4, "refer": 2}
        assert _by(got["inferwatch_unreasonable_predictions_total"], "rule")["outside_probability"] == 1
        promtool = shutil.which("promtool")
        assert promtool, "promtool is not installed"
        result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True,
                                timeout=30)
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        sidecar.stop()
