"""What the model answers: class counts, score and value histograms, business bands, unreasonable outputs.

Each model output is a ``class``, a ``score`` or a ``value`` (``predictions.outputs`` in the
configuration; outputs not listed are typed from their first values when ``predictions.auto``,
or by the payload's hint: an Open Inference v2 INT/UINT/BOOL/BYTES tensor is a class, so
MLServer's ``predict`` answering 0/1 as INT64 counts classes, not a value histogram).
The worker calls ``OutputMonitor.observe`` with every windowed batch; each output column is
handled in a few vectorised passes (one ``to_numeric``, one ``searchsorted`` + ``bincount`` for
the histogram, one for the bands, one comparison matrix for the range rules), and the results
are added to cumulative counts. ``OutputCollector`` publishes them at scrape time: histograms
with per-output buckets (client_python's ``Histogram`` fixes one bucket layout per metric), and
counters that replicas can sum.

Bands are half-open, ``min <= value < max``, and the highest band also includes its ``max``
(as numpy's histogram does), so ``{min: 0.9, max: 1.0}`` holds a score of exactly 1. A value in
no band (a gap between bands, or outside all of them) is counted as the band ``unbanded``; NaN,
infinities and non-numbers are in no histogram and no band and are counted by the rules
``non_finite`` / ``not_numeric`` instead.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter as Tally
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
from prometheus_client import Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from inferwatch.config import UNBANDED, OutputSpec, PredictionsConfig
from inferwatch.ingest.events import EventBatch
from inferwatch.exposition.metrics import OTHER
from inferwatch.ingest.values import INVALID, PRESENT, category_key, infer_kind, to_numeric

log = logging.getLogger(__name__)

# Scores: 0.05 steps, so bands at any 0.05 multiple line up with a bucket and quantiles are exact
# to 0.05. Values: a 1-2.5-5 series over eight decades, with 0 (negative values land in le="0").
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
VALUE_BUCKETS = (0.0, *(m * 10.0 ** e for e in range(-2, 6) for m in (1.0, 2.5, 5.0)))


@dataclass
class CompiledOutput:
    """An output's specification in the arrays its batches are computed with."""

    name: str
    kind: str  # class | score | value
    edges: np.ndarray = field(default_factory=lambda: np.empty(0))
    band_names: tuple[str, ...] = ()
    band_min: np.ndarray = field(default_factory=lambda: np.empty(0))
    band_max: np.ndarray = field(default_factory=lambda: np.empty(0))
    expected_shares: dict[str, float] = field(default_factory=dict)
    rule_names: tuple[str, ...] = ()
    rule_min: np.ndarray = field(default_factory=lambda: np.empty(0))
    rule_max: np.ndarray = field(default_factory=lambda: np.empty(0))
    classes: tuple[str, ...] = ()
    max_classes: int = 20

    @classmethod
    def build(cls, name: str, spec: OutputSpec, default_max_classes: int) -> CompiledOutput:
        if spec.type == "class":
            return cls(name, "class", classes=tuple(spec.classes),
                       max_classes=len(spec.classes) if spec.classes else (spec.max_classes or default_max_classes))
        buckets = spec.buckets or (SCORE_BUCKETS if spec.type == "score" else VALUE_BUCKETS)
        bands = sorted(spec.bands, key=lambda b: b.min)
        rules = ["non_finite", "not_numeric"]
        mins, maxs = [], []
        if spec.type == "score" and spec.probability:
            rules.append("outside_probability")
            mins.append(0.0)
            maxs.append(1.0)
        for rule in spec.rules:
            rules.append(rule.name)
            mins.append(rule.min)
            maxs.append(rule.max)
        return cls(
            name, spec.type, edges=np.asarray(buckets, dtype=np.float64),
            band_names=tuple(b.name for b in bands), band_min=np.array([b.min for b in bands]),
            band_max=np.array([b.max for b in bands]),
            expected_shares={b.name: b.expected_share for b in bands if b.expected_share >= 0},
            rule_names=tuple(rules), rule_min=np.array(mins), rule_max=np.array(maxs))

    @property
    def builtin_rules(self) -> tuple[str, ...]:
        return ("unknown_class",) if self.kind == "class" else ("non_finite", "not_numeric")

    def band_labels(self) -> tuple[str, ...]:
        return (*self.band_names, UNBANDED) if self.band_names else ()

    def band_index(self, x: np.ndarray) -> np.ndarray:
        """Band of each finite value: its index in ``band_names``, or ``len(band_names)`` (unbanded)."""
        k = len(self.band_names)
        j = np.searchsorted(self.band_min, x, side="right") - 1
        jc = np.clip(j, 0, k - 1)
        upper = self.band_max[jc]
        inside = (j >= 0) & ((x < upper) | ((jc == k - 1) & (x == upper)))
        return np.where(inside, jc, k)


class OutputState:
    """Cumulative counts of one output of one model version. Guarded by the monitor's lock."""

    def __init__(self, spec: CompiledOutput):
        self.spec = spec
        self.buckets = np.zeros(spec.edges.size + 1, dtype=np.int64)  # non-cumulative, last = +Inf
        self.sum = 0.0
        self.bands = np.zeros(len(spec.band_names) + 1, dtype=np.int64) if spec.band_names else None
        self.rules: dict[str, int] = dict.fromkeys(
            spec.builtin_rules + (() if spec.kind == "class" else spec.rule_names[2:]), 0)
        self.classes: dict[str, int] = dict.fromkeys(spec.classes, 0)
        self.admitted: set[str] = set(spec.classes)

    # --- classes ------------------------------------------------------------------------------
    def add_classes(self, values: list[Any]) -> int:
        """Count classes; returns how many rows became ``other`` because the cap was reached."""
        keys = Tally(v if type(v) is str else (None if v is None else category_key(v)) for v in values)
        # None keys: missing outputs (not predictions) and values that cannot be a class at all
        # (a fraction, an object), which break the rule unknown_class.
        not_a_class = keys.pop(None, 0) - values.count(None)
        tally = {key: count for key, count in keys.items() if key is not None}
        if not_a_class:
            self.rules["unknown_class"] += not_a_class
        spec = self.spec
        overflow = 0
        for key, count in tally.items():
            if key in self.admitted:
                self.classes[key] += count
                continue
            if not spec.classes and len(self.admitted) < spec.max_classes and key != OTHER:
                self.admitted.add(key)
                self.classes[key] = count
                continue
            self.classes[OTHER] = self.classes.get(OTHER, 0) + count
            if spec.classes:
                self.rules["unknown_class"] += count
            elif key != OTHER:
                overflow += count
        return overflow

    # --- scores and values -------------------------------------------------------------------
    def add_numbers(self, values: list[Any]) -> None:
        spec = self.spec
        arr, state = to_numeric(values)
        invalid = int(np.count_nonzero(state == INVALID))
        x = arr[state == PRESENT] if state.any() else arr
        finite = np.isfinite(x)
        non_finite = x.size - int(np.count_nonzero(finite))
        if non_finite:
            x = x[finite]
        self.rules["non_finite"] += non_finite
        self.rules["not_numeric"] += invalid
        if not x.size:
            return
        self.buckets += np.bincount(np.searchsorted(spec.edges, x, side="left"), minlength=self.buckets.size)
        self.sum += float(x.sum())
        if self.bands is not None:
            self.bands += np.bincount(spec.band_index(x), minlength=self.bands.size)
        if spec.rule_min.size:
            broken = (x[None, :] < spec.rule_min[:, None]) | (x[None, :] > spec.rule_max[:, None])
            for name, count in zip(spec.rule_names[2:], broken.sum(axis=1).tolist()):
                self.rules[name] += count


class OutputMonitor:
    """Per model version and output: class counts, histograms, bands and rule counts.

    ``config`` is the ``predictions`` section; ``max_outputs`` the cap on output columns
    (``limits.max_outputs``), beyond which auto-typed outputs are not tracked.
    """

    def __init__(self, model: str, config: PredictionsConfig, *, max_outputs: int, overflow: Counter | None = None,
                 main_version: str | None = None, on_error: Callable[[], None] | None = None):
        self.config = config
        self.model = model
        self.auto = config.auto
        self.max_classes = config.max_classes
        self.max_outputs = max_outputs
        self.specs: dict[str, CompiledOutput] = {
            name: CompiledOutput.build(name, spec, config.max_classes) for name, spec in config.outputs.items()}
        self.states: dict[str, dict[str, OutputState]] = {}
        self.lock = threading.Lock()
        self._overflow = overflow.labels(label="class") if overflow is not None else None
        self.on_error = on_error
        self.errors = 0
        if main_version is not None:  # configured outputs exported at 0 from the start: clean increase()
            with self.lock:
                for name, spec in self.specs.items():
                    self._state(main_version, name, spec)

    def _spec(self, name: str, values: list[Any], hint: str | None = None) -> CompiledOutput | None:
        spec = self.specs.get(name)
        if spec is not None or not self.auto:
            return spec
        if len(self.specs) >= self.max_outputs:  # the window counts capped output columns
            return None
        kind = "categorical" if hint == "class" else infer_kind(values)
        if kind is None:
            return None
        spec = CompiledOutput.build(name, OutputSpec(type="class" if kind == "categorical" else "value"),
                                    self.max_classes)
        self.specs = {**self.specs, name: spec}
        return spec

    def _state(self, version: str, name: str, spec: CompiledOutput) -> OutputState:
        by_output = self.states.get(version)
        if by_output is None:
            by_output = self.states[version] = {}
        state = by_output.get(name)
        if state is None:
            state = by_output[name] = OutputState(spec)
        return state

    def observe(self, version: str, batch: EventBatch) -> None:
        """Count a windowed batch's outputs (the worker thread; never raises)."""
        try:
            self._observe(version, batch)
        except Exception:  # noqa: BLE001 - fail open: counted, the worker goes on
            log.exception("output monitoring failed")
            self.errors += 1
            if self.on_error is not None:
                self.on_error()

    def _observe(self, version: str, batch: EventBatch) -> None:
        overflow = 0
        hints = batch.output_kinds
        for name, values in batch.outputs.items():
            spec = self._spec(name, values, hints.get(name))
            if spec is None:
                continue
            with self.lock:
                state = self._state(version, name, spec)
                if spec.kind == "class":
                    overflow += state.add_classes(values)
                else:
                    state.add_numbers(values)
        if overflow and self._overflow is not None:
            self._overflow.inc(overflow)

    def snapshot(self) -> list[tuple[str, str, CompiledOutput, dict[str, Any]]]:
        """(version, output, spec, copied counts) of every tracked output, for the collector."""
        with self.lock:
            return [(version, name, state.spec,
                     {"buckets": state.buckets.copy(), "sum": state.sum, "rules": dict(state.rules),
                      "classes": dict(state.classes), "bands": None if state.bands is None else state.bands.copy()})
                    for version, by_output in self.states.items() for name, state in by_output.items()]


class OutputCollector:
    """Publishes the monitor's counts at scrape time (nothing is computed here)."""

    def __init__(self, monitor: OutputMonitor):
        self.monitor = monitor

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        model = self.monitor.model
        mvo = ["model", "model_version", "output"]
        classes = CounterMetricFamily(
            "inferwatch_predicted_class", "Predictions by predicted class (the first classes seen or the configured "
            "ones, then other).", labels=[*mvo, "class"])
        scores = HistogramMetricFamily(
            "inferwatch_prediction_score", "Predicted scores of score outputs (NaN/inf excluded).", labels=mvo)
        values = HistogramMetricFamily(
            "inferwatch_prediction_value", "Predicted values of regression (value) outputs (NaN/inf excluded).",
            labels=mvo)
        bands = CounterMetricFamily(
            "inferwatch_prediction_band", "Predictions by configured business band of a score or value "
            "(unbanded: in no band).", labels=[*mvo, "band"])
        expected = GaugeMetricFamily(
            "inferwatch_prediction_band_expected_ratio", "Configured expected share of predictions in a band.",
            labels=["model", "output", "band"])
        rules = CounterMetricFamily(
            "inferwatch_unreasonable_predictions", "Predictions breaking a reasonableness rule (non_finite, "
            "not_numeric, outside_probability, unknown_class or a configured range rule).", labels=[*mvo, "rule"])
        for version, name, spec, counts in self.monitor.snapshot():
            base = [model, version, name]
            if spec.kind == "class":
                for cls, count in counts["classes"].items():
                    classes.add_metric([*base, cls], count)
            else:
                cumulative = np.cumsum(counts["buckets"]).tolist()
                buckets = [(floatToGoString(le), c) for le, c in zip(spec.edges.tolist(), cumulative)]
                buckets.append(("+Inf", cumulative[-1]))
                (scores if spec.kind == "score" else values).add_metric(base, buckets, counts["sum"])
            if counts["bands"] is not None:
                for band, count in zip(spec.band_labels(), counts["bands"].tolist()):
                    bands.add_metric([*base, band], count)
            for rule, count in counts["rules"].items():
                rules.add_metric([*base, rule], count)
        for name, spec in self.monitor.specs.items():
            for band, share in spec.expected_shares.items():
                expected.add_metric([model, name, band], share)
        yield from (classes, scores, values, bands, expected, rules)


__all__ = ["OutputMonitor", "OutputCollector", "CompiledOutput", "SCORE_BUCKETS", "VALUE_BUCKETS"]
