"""The performance engine: predictions joined to late labels, metrics in the background.

Flow: the worker's observer hook (``observe``) puts every windowed prediction's predicted
value and score in the ``JoinStore``; ``POST /v1/labels`` queues a ``LabelBatch`` that the
worker hands to ``add_labels``, which joins each label to its prediction (outcomes counted in
``inferwatch_labels_total``, delays in ``inferwatch_label_delay_seconds``), adds the pair to the
version's ``LabelledWindow`` and to the cumulative confusion matrix. Every
``performance.interval_seconds`` a background thread computes, per version, the metrics of
``inferwatch.stats.performance`` over the labelled window, label drift against the reference
profile's label (or, with a warm-up reference, the first ``reference.warmup_events`` labels), and (binary classifiers with calibrated scores) CBPE estimates over the
prediction window, which needs no labels at all. ``PerformanceCollector`` publishes the last
results at scrape time; nothing is computed in a request or a scrape.

Shadow challengers (``inferwatch.shadow``) add their answers to the champion's pending entry,
so one label scores both; challenger metrics are ``inferwatch_shadow_performance{challenger}``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .background import BackgroundWorker, EngineCollector
from inferwatch.config import Config
from inferwatch.ingest.events import EventBatch
from inferwatch.ingest.labels import ClassVocabulary, JoinStore, LabelBatch, LabelledSnapshot, LabelledWindow, Pending
from inferwatch.exposition.metrics import Metrics
from inferwatch.reference import CategoricalProfile, ReferenceProfile, build_profile
from inferwatch.pipeline.segments import MISSING
from inferwatch.stats import bin_counts, chi_squared, js_distance, ks_2samp, linf_distance, psi
from inferwatch.stats.performance import CLASSIFICATION_METRICS, ESTIMATED_METRICS, REGRESSION_METRICS
from inferwatch.stats.performance import (
    classification_metrics, confident_error_rate, estimate_binary_performance, log_loss, regression_metrics, roc_auc,
)
from inferwatch.ingest.values import PRESENT, as_number, category_key
from inferwatch.pipeline.window import WindowSnapshot, WindowStore

log = logging.getLogger(__name__)

CHAMPION = ""  # the window key of the served model; challengers use their name


def _class_like(value: Any) -> bool:
    if isinstance(value, (str, bool, int)):
        return True
    return isinstance(value, float) and value.is_integer()


@dataclass
class PerformanceResult:
    events: int
    timestamp: float
    metrics: dict[str, float] = field(default_factory=dict)
    label_drift: dict[str, float] = field(default_factory=dict)
    label_drift_p: dict[str, float] = field(default_factory=dict)


class PerformanceEngine(BackgroundWorker):
    """Owns the join store, the labelled windows, the confusion counts and the last results."""

    thread_name = "inferwatch-performance"

    def __init__(self, cfg: Config, windows: WindowStore, metrics: Metrics, *,
                 reference: Callable[[], ReferenceProfile | None] = lambda: None, clock=time.time):
        self.cfg = cfg
        self.p = cfg.performance
        self.model = cfg.model.name
        self.windows = windows
        self.metrics = metrics
        self.reference = reference
        self.clock = clock
        self.store = JoinStore(cfg.labels.max_pending, cfg.labels.ttl_seconds, clock=clock)
        # Which outputs are the prediction and the score: performance.* when set, else what
        # predictions.outputs declares (a class or value output; the one score output).
        specs = cfg.predictions.outputs
        declared = [n for n, spec in specs.items() if spec is not None and spec.type in ("class", "value")]
        scores = [n for n, spec in specs.items() if spec is not None and spec.type == "score"]
        self.prediction_name = self.p.prediction_output or (declared[0] if declared else "")
        self.score_name = self.p.score_output or (scores[0] if len(scores) == 1 else "")
        self.task: str | None = None if self.p.task == "auto" else self.p.task
        if self.task is None and self.prediction_name in specs and not self.p.prediction_output:
            self.task = "classification" if specs[self.prediction_name].type == "class" else "regression"
        self.classes = ClassVocabulary(self.p.max_classes, self.p.negative_class, self.p.positive_class)
        self.labelled: dict[tuple[str, str], LabelledWindow] = {}  # (version, challenger or CHAMPION)
        self.confusion: dict[tuple[str, str, str], int] = {}  # (version, actual, predicted) -> count
        self.results: dict[tuple[str, str], PerformanceResult] = {}
        self.estimates: dict[str, dict[str, float]] = {}
        self.evaluations = 0
        self.errors = 0
        self._default_version = metrics.version_label(cfg.model.version, cfg.model.version)
        self._capped_seen = 0
        # Label drift without a reference file: the first reference.warmup_events labels (of the
        # champion, every version) become the reference label distribution, as the first events
        # become the drift reference.
        self.label_warmup = cfg.reference.warmup_events
        self._warmup_labels: list[Any] = []
        self.label_reference: ReferenceProfile | None = None
        # Performance per segment value (segments.features): champion rows carry their labels.
        self.segment_features: tuple[str, ...] = tuple(cfg.segments.features)
        self.segment_results: dict[tuple[str, str, str], PerformanceResult] = {}  # (version, segment, value)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- predictions (the worker thread) ----------------------------------------------------

    def prediction_output(self, outputs: dict[str, Any]) -> str | None:
        name = self.prediction_name
        if name:
            return name if name in outputs else None
        if "prediction" in outputs:
            return "prediction"
        return next(iter(outputs), None)

    def extract(self, outputs: dict[str, list[Any]], n: int) -> tuple[list[Any], list[float]]:
        """Per row: the prediction output's value (None when absent) and the score (NaN)."""
        name = self.prediction_output(outputs)
        predicted = outputs[name] if name is not None else [None] * n
        score_col = outputs.get(self.score_name) if self.score_name else None
        scores = [as_number(v) for v in score_col] if score_col is not None else [math.nan] * n
        return predicted, scores

    def observe(self, version: str, batch: EventBatch) -> None:
        """Keep a windowed batch's predictions until their labels come (never raises)."""
        if batch.n == 0:
            return
        try:
            predicted, scores = self.extract(batch.outputs, batch.n)
            segments = None
            if self.segment_features:
                columns = [batch.segments.get(f) for f in self.segment_features]
                columns = [c if c is not None else [MISSING] * batch.n for c in columns]
                segments = list(zip(*columns))
            self.store.put(version, batch.ensure_ids(), batch.ensure_timestamps(), predicted, scores, segments)
        except Exception:  # noqa: BLE001 - fail open
            log.exception("performance: storing predictions failed")
            self._error()

    # --- labels (the worker thread) ------------------------------------------------------------

    def task_of(self, predicted: Any, other: Any) -> str:
        """The configured or resolved task; unresolved, what these two answers look like."""
        if self.task is not None:
            return self.task
        classification = bool(self.score_name) or (_class_like(predicted) and _class_like(other))
        return "classification" if classification else "regression"

    def _resolve_task(self, predicted: Any, label: Any) -> str:
        if self.task is None:
            self.task = self.task_of(predicted, label)
            log.info("performance: task resolved to %s from the first label", self.task)
        return self.task

    def class_of(self, predicted: Any, score: float) -> tuple[int, float]:
        """A prediction as (class code, score). A probability in place of a class is a score
        decided at ``performance.threshold`` (binary)."""
        key = category_key(predicted) if predicted is not None else None
        if key is None and isinstance(predicted, (int, float)) and 0.0 <= predicted <= 1.0:
            score = float(predicted) if math.isnan(score) else score
        if key is None and not math.isnan(score):
            key = self.p.positive_class if score >= self.p.threshold else self.p.negative_class
        if key is None:
            return -1, score
        return self.classes.code(key), score

    def _pair(self, predicted: Any, score: float, label: Any) -> tuple[float, float, float] | None:
        """(predicted, actual, score) as window values, or None when the prediction is unusable."""
        if self._resolve_task(predicted, label) == "classification":
            code, score = self.class_of(predicted, score)
            actual = category_key(label)
            if code < 0 or actual is None:
                return None
            return float(code), float(self.classes.code(actual)), score
        value, actual = as_number(predicted), as_number(label)
        if not (math.isfinite(value) and math.isfinite(actual)):
            return None
        return value, actual, score

    def _window(self, version: str, challenger: str) -> LabelledWindow:
        key = (version, challenger)
        window = self.labelled.get(key)
        if window is None:
            segments = len(self.segment_features) if challenger == CHAMPION else 0
            window = LabelledWindow(self.p.max_events, self.p.max_age_seconds, segments)
            self.labelled = {**self.labelled, key: window}
        return window

    def add_labels(self, batch: LabelBatch) -> dict[str, int]:
        """Join a batch of labels to their predictions; returns the count per outcome."""
        now = self.clock()
        counts: dict[str, int] = {}
        rows: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {}
        segments: dict[str, list[tuple[str, ...]]] = {}  # version -> champion rows' segment labels
        delays: dict[str, list[float]] = {}
        m = self.metrics
        for pid, label, ts in zip(batch.prediction_ids, batch.labels, batch.timestamps):
            outcome, entry, version = self.store.take(pid)
            version = version or self._default_version
            if entry is not None:
                labelled_at = ts if ts is not None else batch.received_at
                delay = max(labelled_at - entry.timestamp, 0.0)
                pair = self._pair(entry.predicted, entry.score, label)
                if pair is None:
                    outcome = "invalid"
                else:
                    rows.setdefault((version, CHAMPION), []).append((*pair, delay))
                    if self.segment_features:
                        segments.setdefault(version, []).append(
                            entry.segments or (MISSING,) * len(self.segment_features))
                    delays.setdefault(version, []).append(delay)
                    if self.task == "classification":
                        key = (version, self.classes.names[int(pair[1])], self.classes.names[int(pair[0])])
                        self.confusion[key] = self.confusion.get(key, 0) + 1
                    self._add_challengers(entry, version, label, delay, rows)
            counts[outcome] = counts.get(outcome, 0) + 1
            m.labels_received.labels(self.model, version, outcome).inc()
        for version, values in delays.items():
            histogram = m.label_delay.labels(self.model, version)
            for delay in values:
                histogram.observe(delay)
        for (version, challenger), values in rows.items():
            arr = np.asarray(values, dtype=np.float64).T
            if challenger == CHAMPION:
                self._collect_label_warmup(arr[1])
            seg = None
            if challenger == CHAMPION and self.segment_features:
                seg = np.empty((len(self.segment_features), len(values)), dtype=object)
                seg[:, :] = list(zip(*segments[version]))
            self._window(version, challenger).append(arr[0], arr[1], arr[2], arr[3], now, seg)
        capped = self.classes.capped
        if capped > self._capped_seen:
            m.label_values_capped.labels("class").inc(capped - self._capped_seen)
            self._capped_seen = capped
        return counts

    def _collect_label_warmup(self, actual: np.ndarray) -> None:
        """Keep labels until ``reference.warmup_events`` are in, then freeze them as the
        reference label distribution (used when the drift reference has no label)."""
        if self.label_reference is not None or not self.label_warmup:
            return
        taken = actual[:self.label_warmup - len(self._warmup_labels)]
        if self.task == "classification":
            names = self.classes.names
            self._warmup_labels += [names[int(code)] for code in taken]
        else:
            self._warmup_labels += taken.tolist()
        if len(self._warmup_labels) >= self.label_warmup:
            kind = "categorical" if self.task == "classification" else "numeric"
            self.label_reference = build_profile({"label": {"label": self._warmup_labels}}, {"label": kind},
                                                 source=f"warmup:{len(self._warmup_labels)} labels")
            self._warmup_labels = []
            log.info("label drift: the first %d labels are the reference label distribution", self.label_warmup)

    def _add_challengers(self, entry: Pending, version: str, label: Any, delay: float,
                         rows: dict[tuple[str, str], list]) -> None:
        for name, (predicted, score) in (entry.challengers or {}).items():
            pair = self._pair(predicted, score, label)
            if pair is not None:
                rows.setdefault((version, name), []).append((*pair, delay))

    # --- evaluation (the background thread) -----------------------------------------------------

    def _feature_count(self, version: str) -> int:
        if self.p.feature_count:
            return self.p.feature_count
        window = self.windows.windows().get(version)
        return len(window.features.columns) if window is not None else 0

    def compute(self, snap: LabelledSnapshot, version: str) -> dict[str, float]:
        """The metrics of one labelled snapshot (pure but for the task and vocabulary)."""
        if self.task == "regression":
            return regression_metrics(snap.actual, snap.predicted, n_features=self._feature_count(version),
                                      mape_min_abs_target=self.p.mape_min_abs_target)
        k = len(self.classes)
        actual, predicted = snap.actual.astype(np.int64), snap.predicted.astype(np.int64)
        out = classification_metrics(actual, predicted, k, positive=self.classes.positive,
                                     negative=self.classes.negative)
        binary = np.isin(actual, (0, 1)) & np.isfinite(snap.score)
        if "precision" in out and binary.any():  # a binary problem with scores
            y, s = actual[binary] == self.classes.positive, snap.score[binary]
            auc = roc_auc(y, s)
            if not math.isnan(auc):
                out["roc_auc"] = auc
            out["log_loss"] = log_loss(y, s)
            out["confident_error_rate"] = confident_error_rate(
                y, s, predicted[binary] == self.classes.positive, self.p.confident_score)
        return out

    def label_drift(self, snap: LabelledSnapshot) -> tuple[dict[str, float], dict[str, float]]:
        """The window's labels against the reference profile's label distribution (or the
        warm-up labels' when the profile has none)."""
        profile = self.reference()
        if profile is None or not profile.label:
            profile = self.label_reference
        if profile is None or not profile.label or snap.n == 0:
            return {}, {}
        ref = next(iter(profile.label.values()))
        if isinstance(ref, CategoricalProfile):
            if self.task != "classification":
                return {}, {}
            index, other = ref.index(), len(ref.categories)
            names = self.classes.names
            codes = np.bincount(snap.actual.astype(np.int64), minlength=len(names))
            cur = np.zeros(ref.n_bins, dtype=np.int64)
            for code, count in enumerate(codes):
                if count:
                    cur[index.get(names[code], other)] += count
            stat, p = chi_squared(ref.bin_counts, cur)
            scores = {"chi2": stat, "linf": linf_distance(ref.bin_counts, cur), "js": js_distance(ref.bin_counts, cur),
                      "psi": psi(ref.bin_counts, cur)}
            return scores, {"chi2": p}
        if self.task != "regression":
            return {}, {}
        cur = bin_counts(snap.actual, ref.edges)
        stat, p = ks_2samp(ref.sample, snap.actual)
        return {"ks": stat, "psi": psi(ref.bin_counts, cur), "js": js_distance(ref.bin_counts, cur)}, {"ks": p}

    def _by_segment(self, snap: LabelledSnapshot, version: str, now: float) -> dict[tuple[str, str, str],
                                                                                  PerformanceResult]:
        """The same metrics per segment value (``missing`` rows left out), each value with at
        least ``min_events`` labelled rows; the events gauge for every value present."""
        out: dict[tuple[str, str, str], PerformanceResult] = {}
        for i, feature in enumerate(self.segment_features):
            labels = snap.segments[i]
            for value in dict.fromkeys(labels.tolist()):
                if value is None or value == MISSING:
                    continue
                rows = np.flatnonzero(labels == value)
                result = PerformanceResult(events=int(rows.size), timestamp=now)
                if rows.size >= self.p.min_events:
                    metrics = self.compute(snap.take(rows), version)
                    result.metrics = {k: v for k, v in metrics.items() if math.isfinite(v)}
                out[(version, feature, str(value))] = result
        return out

    def estimate(self, snapshot: WindowSnapshot) -> dict[str, float]:
        """CBPE over a prediction window: binary classifiers with a calibrated score output."""
        if not self.p.estimation or self.task == "regression" or not self.score_name:
            return {}
        col = snapshot.outputs.get(self.score_name)
        if col is None or col.kind != "numeric":
            return {}
        present = col.state == PRESENT
        decided = None
        name = self.prediction_output(snapshot.outputs)
        if name is not None and name != self.score_name:
            decision = snapshot.outputs[name]
            values = decision.category_values() if decision.kind == "categorical" else \
                np.array([category_key(float(v)) if np.isfinite(v) else None for v in decision.values], dtype=object)
            decided = values == self.p.positive_class
            present &= decision.state == PRESENT
            decided = decided[present]
        scores = col.values[present]
        if scores.size < self.p.min_events:
            return {}
        return estimate_binary_performance(scores, decided, self.p.threshold)

    def evaluate_all(self) -> None:
        now = self.clock()
        self.store.expire()
        results: dict[tuple[str, str], PerformanceResult] = {}
        segment_results: dict[tuple[str, str, str], PerformanceResult] = {}
        for (version, challenger), window in self.labelled.items():
            try:
                snap = window.snapshot(now)
                result = PerformanceResult(events=snap.n, timestamp=now)
                if snap.n >= self.p.min_events:
                    result.metrics = {k: v for k, v in self.compute(snap, version).items() if math.isfinite(v)}
                    if challenger == CHAMPION:
                        result.label_drift, result.label_drift_p = self.label_drift(snap)
                if challenger == CHAMPION and snap.segments is not None:
                    segment_results.update(self._by_segment(snap, version, now))
                results[(version, challenger)] = result
            except Exception:  # noqa: BLE001 - one bad window must not stop the others
                log.exception("performance evaluation of %s/%s failed", version, challenger or "champion")
                self._error()
        estimates: dict[str, dict[str, float]] = {}
        for version, window in self.windows.windows().items():
            try:
                estimates[version] = self.estimate(window.snapshot(now))
            except Exception:  # noqa: BLE001
                log.exception("performance estimation of %s failed", version)
                self._error()
        self.results, self.estimates = results, {v: e for v, e in estimates.items() if e}
        self.segment_results = segment_results
        self.evaluations += 1

    def _error(self) -> None:
        self.errors += 1
        try:
            self.metrics.monitoring_errors.labels(self.model, "performance").inc()
        except Exception:  # noqa: BLE001
            pass

    def _run(self) -> None:
        while not self._stop.wait(self.p.interval_seconds):
            try:
                self.evaluate_all()
            except Exception:  # noqa: BLE001
                log.exception("performance engine failed")
                self._error()

    def status(self) -> dict[str, Any]:
        return {"task": self.task or "auto (no label yet)", "pending": len(self.store),
                "evicted": dict(self.store.evicted), "evaluations": self.evaluations, "errors": self.errors,
                "classes": list(self.classes.names) if self.task == "classification" else None,
                "windows": {f"{v}/{c or 'champion'}": {"events": r.events, "metrics": r.metrics}
                            for (v, c), r in self.results.items()},
                "estimated": self.estimates, "label_reference": self._label_reference_status()}

    def _label_reference_status(self) -> str:
        profile = self.reference()
        if profile is not None and profile.label:
            return "the reference profile's label"
        if self.label_reference is not None:
            return f"the first {self.label_warmup} labels"
        if self.label_warmup:
            return f"warming up: {len(self._warmup_labels)} of {self.label_warmup} labels"
        return "none (no label in the reference; set reference.warmup_events or profile a label column)"


class PerformanceCollector(EngineCollector):
    """Yields the engine's last results at scrape time (nothing is computed here)."""

    def collect(self):
        e = self.engine
        model = e.model
        mv = ["model", "model_version"]
        perf = GaugeMetricFamily("inferwatch_model_performance",
                                 "Model performance over the labelled window, by metric (accuracy, f1, roc_auc, "
                                 "rmse, r2, ...).", labels=[*mv, "metric"])
        shadow = GaugeMetricFamily("inferwatch_shadow_performance",
                                   "A shadow challenger's performance over the same labelled requests as the "
                                   "champion's inferwatch_model_performance, by metric.",
                                   labels=[*mv, "challenger", "metric"])
        events = GaugeMetricFamily("inferwatch_labelled_window_events",
                                   "Labelled predictions in the window performance is computed over.", labels=mv)
        shadow_events = GaugeMetricFamily("inferwatch_shadow_labelled_window_events",
                                          "Labelled predictions of a shadow challenger in its performance window.",
                                          labels=[*mv, "challenger"])
        drift = GaugeMetricFamily("inferwatch_label_drift_score",
                                  "Drift of the labels in the labelled window from the reference label, by method.",
                                  labels=[*mv, "method"])
        drift_p = GaugeMetricFamily("inferwatch_label_drift_p_value",
                                    "p-value of the label drift test (chi2 for classes, ks for values).",
                                    labels=[*mv, "method"])
        last = GaugeMetricFamily("inferwatch_performance_last_evaluation_timestamp_seconds",
                                 "When performance was last computed (Unix time).", labels=mv)
        for (version, challenger), r in e.results.items():
            if challenger == CHAMPION:
                events.add_metric([model, version], r.events)
                last.add_metric([model, version], r.timestamp)
                for metric, value in r.metrics.items():
                    perf.add_metric([model, version, metric], value)
                for method, value in r.label_drift.items():
                    if math.isfinite(value):
                        drift.add_metric([model, version, method], value)
                for method, value in r.label_drift_p.items():
                    if math.isfinite(value):
                        drift_p.add_metric([model, version, method], value)
            else:
                shadow_events.add_metric([model, version, challenger], r.events)
                for metric, value in r.metrics.items():
                    shadow.add_metric([model, version, challenger, metric], value)
        yield from (perf, events, shadow, shadow_events, drift, drift_p, last)
        seg = [*mv, "segment", "value"]
        seg_perf = GaugeMetricFamily("inferwatch_segment_model_performance",
                                     "Model performance over the labelled window within one segment value, by metric.",
                                     labels=[*seg, "metric"])
        seg_events = GaugeMetricFamily("inferwatch_segment_labelled_window_events",
                                       "Labelled predictions of one segment value in the window.", labels=seg)
        for (version, segment, value), r in e.segment_results.items():
            seg_events.add_metric([model, version, segment, value], r.events)
            for metric, v in r.metrics.items():
                seg_perf.add_metric([model, version, segment, value, metric], v)
        yield seg_perf
        yield seg_events
        estimated = GaugeMetricFamily("inferwatch_estimated_performance",
                                      "Performance estimated from calibrated scores without labels (CBPE) over the "
                                      "prediction window, by metric.", labels=[*mv, "metric"])
        for version, values in e.estimates.items():
            for metric, value in values.items():
                estimated.add_metric([model, version, metric], value)
        yield estimated
        confusion = CounterMetricFamily("inferwatch_confusion_matrix",
                                        "Labelled predictions by actual and predicted class since the sidecar "
                                        "started (classes capped by performance.max_classes, then other).",
                                        labels=[*mv, "actual", "predicted"])
        for (version, actual, predicted), count in dict(e.confusion).items():
            confusion.add_metric([model, version, actual, predicted], count)
        yield confusion
        yield GaugeMetricFamily("inferwatch_labels_enabled", "1 when ground truth is accepted on /v1/labels "
                                "(labels.enabled), else 0 (a join store kept for shadow comparisons only).",
                                value=1.0 if e.cfg.labels.enabled else 0.0)
        yield GaugeMetricFamily("inferwatch_label_join_pending", "Predictions waiting for their label in the join "
                                "store.", value=len(e.store))
        yield GaugeMetricFamily("inferwatch_label_join_capacity", "Capacity of the join store (labels.max_pending).",
                                value=e.store.max_pending)
        evicted = CounterMetricFamily("inferwatch_label_join_evictions",
                                      "Predictions dropped from the join store before their label came, by reason "
                                      "(full, expired, replaced by a newer prediction with the same id).", labels=["reason"])
        for reason, count in e.store.evicted.items():
            evicted.add_metric([reason], count)
        yield evicted


__all__ = ["PerformanceEngine", "PerformanceCollector", "CLASSIFICATION_METRICS", "REGRESSION_METRICS",
           "ESTIMATED_METRICS", "CHAMPION"]
