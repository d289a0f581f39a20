"""The performance engine: the join of predictions to late labels, and its background thread.

The worker thread calls ``observe`` (predictions into the ``JoinStore``) and ``add_labels``
(labels joined, pairs into the version's ``LabelledWindow`` and the confusion counts); every
``performance.interval_seconds`` the engine's thread runs ``evaluate_all`` (``evaluate``'s pure
functions over snapshots) and swaps in the results the collector reads.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from functools import partial
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np

from ..background import BackgroundWorker
from .evaluate import (
    Estimate, PerformanceResult, cbpe_estimate, labelled_metrics, reference_label_drift, score_calibration,
    segment_results,
)
from .joins import JoinStore, Pending
from .task import Task, TaskChoice, choose as choose_task, from_output_type, from_profile, from_values
from .window import ClassVocabulary, LabelledSnapshot, LabelledWindow, class_id
from inferwatch.config import LabelsConfig, OutputSpec, PerformanceConfig
from inferwatch.exposition.metrics import Metrics
from inferwatch.ingest.events import EventBatch
from inferwatch.ingest.ground_truth import LabelBatch
from inferwatch.ingest.values import as_number, category_key
from inferwatch.pipeline.segments import MISSING_SEGMENT
from inferwatch.pipeline.window import WindowSnapshot, WindowStore
from inferwatch.reference import ReferenceProfile, build_profile

log = logging.getLogger(__name__)

CHAMPION = ""  # the window key of the served model; challengers use their name

Row = tuple[float, float, float, float]  # predicted, actual, score, delay
Row3 = tuple[float, float, float]  # predicted, actual, score


def _class_like(value: Any) -> bool:
    if isinstance(value, (str, bool, int)):
        return True
    return isinstance(value, float) and value.is_integer()


class PerformanceEngine(BackgroundWorker):
    """Owns the join store, the labelled windows, the confusion counts and the last results.

    ``outputs`` are ``predictions.outputs`` (which output is the prediction, which the score, and
    so the task, when ``performance.*`` does not say); ``segment_features`` are
    ``segments.features``; ``label_warmup`` is ``reference.warmup_events``; ``reference``
    returns the drift reference profile (or None) whenever label drift is computed.
    """

    thread_name = "inferwatch-performance"

    def __init__(self, labels: LabelsConfig, performance: PerformanceConfig, windows: WindowStore,
                 metrics: Metrics, *, model: str, model_version: str,
                 outputs: Mapping[str, OutputSpec | None] | None = None, segment_features: Sequence[str] = (),
                 label_warmup: int = 0, reference: Callable[[], ReferenceProfile | None] = lambda: None,
                 clock: Callable[[], float] = time.time):
        self.p = performance
        self.labels_enabled = labels.enabled
        self.model = model
        self.windows = windows
        self.metrics = metrics
        self.reference = reference
        self.clock = clock
        self.store = JoinStore(labels.max_pending, labels.ttl_seconds, clock=clock)
        # Which outputs are the prediction and the score: performance.* when set, else what
        # predictions.outputs declares (a class or value output; the one score output).
        specs = outputs or {}
        declared = [n for n, spec in specs.items() if spec is not None and spec.type in ("class", "value")]
        scores = [n for n, spec in specs.items() if spec is not None and spec.type == "score"]
        self.prediction_name = self.p.prediction_output or (declared[0] if declared else "")
        self.score_name = self.p.score_output or (scores[0] if len(scores) == 1 else "")
        # The task: performance.task, else the configured outputs, else (on the first matched
        # label) the evidence of the reference profile and the values seen (``task``).
        self.task: str | None = None if self.p.task == "auto" else self.p.task
        self.task_reason = "performance.task" if self.task else ""
        self._output_hints: dict[str, str] = {}  # output -> "class", from the payload's declared types
        prediction_spec = specs.get(self.prediction_name)
        if self.task is None:
            configured = choose_task([
                from_output_type(self.prediction_name, prediction_spec.type) if prediction_spec else None,
                TaskChoice("classification", f"a score output ({self.score_name}) sits beside the prediction")
                if self.score_name else None])
            if configured is not None:
                self._set_task(configured)
        self.classes = ClassVocabulary(self.p.max_classes, self.p.negative_class, self.p.positive_class)
        self.labelled: dict[tuple[str, str], LabelledWindow] = {}  # (version, challenger or CHAMPION)
        self.confusion: dict[tuple[str, str, str], int] = {}  # (version, actual, predicted) -> count
        self.results: dict[tuple[str, str], PerformanceResult] = {}
        self.estimates: dict[str, Estimate] = {}
        self.evaluations = 0
        self.errors = 0
        self.on_error = lambda: self.metrics.monitoring_errors.labels(self.model, "performance").inc()
        self._default_version = metrics.version_label(model_version, model_version)
        self._capped_seen = 0
        # Label drift without a reference file: the first reference.warmup_events labels (of the
        # champion, every version) become the reference label distribution, as the first events
        # become the drift reference.
        self.label_warmup = label_warmup
        self._warmup_labels: list[Any] = []
        self.label_reference: ReferenceProfile | None = None
        # Performance per segment value (segments.features): champion rows carry their labels.
        self.segment_features: tuple[str, ...] = tuple(segment_features)
        self.segment_results: dict[tuple[str, str, str], PerformanceResult] = {}  # (version, segment, value)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- predictions (the worker thread) ----------------------------------------------------

    def prediction_output(self, outputs: Mapping[str, Any]) -> str | None:
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
                segments = list(zip(*(c if c is not None else [MISSING_SEGMENT] * batch.n for c in columns)))
            self.store.put(version, batch.ensure_ids(), batch.ensure_timestamps(), predicted, scores, segments)
            name = self.prediction_output(batch.outputs) if batch.output_kinds and self.task is None else None
            if name is not None and name in batch.output_kinds:  # the server's declared type (OIP v2 datatype)
                self._output_hints[name] = batch.output_kinds[name]
        except Exception:  # noqa: BLE001 - fail open
            log.exception("performance: storing predictions failed")
            self.count_error()

    # --- labels (the worker thread) ------------------------------------------------------------

    def task_of(self, predicted: Any, other: Any) -> str:
        """The configured or resolved task; unresolved, what these two answers look like."""
        if self.task is not None:
            return self.task
        classification = bool(self.score_name) or (_class_like(predicted) and _class_like(other))
        return "classification" if classification else "regression"

    def _set_task(self, choice: TaskChoice) -> None:
        self.task, self.task_reason = choice.task, choice.describe()
        # Once: the task is decided once per process.
        (log.warning if choice.weak else log.info)("performance: task %s", self.task_reason)

    def _resolve_task(self, version: str, labels: Sequence[Any]) -> None:
        """Decide ``task: auto`` on the first matched label, from the strongest evidence there
        is: the reference profile's label and prediction output, then the prediction window's
        values of the prediction output and this batch's labels."""
        max_classes = self.p.max_classes
        candidates: list[TaskChoice | None] = []
        for hinted, kind in self._output_hints.items():  # INT/UINT/BOOL/BYTES tensors: the server says classes
            if from_output_type(hinted, kind) is not None:
                candidates.append(TaskChoice("classification", f"the model server declares {hinted} an integer, "
                                                               f"boolean or bytes tensor"))
        profile = self.reference()
        if profile is not None:
            if profile.label:
                candidates.append(from_profile(next(iter(profile.label.values())), "label", max_classes))
            name = self.prediction_output(profile.outputs)
            if name is not None:
                candidates.append(from_profile(profile.outputs[name], "prediction output", max_classes))
        candidates.append(from_values(self._window_predictions(version), labels, max_classes))
        choice = choose_task(candidates)
        if choice is not None:
            self._set_task(choice)

    def _window_predictions(self, version: str) -> list[Any]:
        """The prediction output's present values in ``version``'s prediction window."""
        window = self.windows.windows().get(version)
        if window is None:
            return []
        outputs = window.snapshot().outputs
        name = self.prediction_output(outputs)
        if name is None:
            return []
        col = outputs[name]
        values = col.values if col.kind == "numeric" else col.category_values()
        return values[col.present].tolist()

    def _task_from_pair(self, predicted: Any, label: Any) -> str:
        if self.task is None:  # no evidence before this pair (e.g. no window): the pair alone
            task: Task = "classification" if self.task_of(predicted, label) == "classification" else "regression"
            self._set_task(TaskChoice(task, "the first prediction and label", weak=True))
        return self.task or "regression"

    def class_key(self, predicted: Any, score: float) -> tuple[str | None, float]:
        """A prediction as (class, score); the class is None when there is none. A probability
        in place of a class is a score decided at ``performance.threshold`` (binary)."""
        key = category_key(predicted) if predicted is not None else None
        if key is None and isinstance(predicted, (int, float)) and 0.0 <= predicted <= 1.0:
            score = float(predicted) if math.isnan(score) else score
        if key is None and not math.isnan(score):
            key = self.p.positive_class if score >= self.p.threshold else self.p.negative_class
        return key, score

    def class_of(self, predicted: Any, score: float) -> tuple[int, float]:
        """A prediction as (``class_id``, score): equal ids are the same real class, whatever
        the cap on exported classes; -1 when there is no class."""
        key, score = self.class_key(predicted, score)
        return (class_id(key) if key is not None else -1), score

    def _pair(self, predicted: Any, score: float, label: Any) -> tuple[Row3, tuple[str, str] | None] | None:
        """(predicted, actual, score) as window values, with a classification's (actual,
        predicted) classes; None when the prediction or the label is unusable."""
        if self._task_from_pair(predicted, label) == "classification":
            key, score = self.class_key(predicted, score)
            actual_class = category_key(label)
            if key is None or actual_class is None:
                return None
            return (float(class_id(key)), float(class_id(actual_class)), score), (actual_class, key)
        value, actual = as_number(predicted), as_number(label)
        if not (math.isfinite(value) and math.isfinite(actual)):
            return None
        return (value, actual, score), None

    def _window(self, version: str, challenger: str) -> LabelledWindow:
        key = (version, challenger)
        window = self.labelled.get(key)
        if window is None:
            segments = len(self.segment_features) if challenger == CHAMPION else 0
            window = LabelledWindow(self.p.max_events, self.p.max_age_seconds, segments)
            self.labelled = {**self.labelled, key: window}  # a new dict: the evaluator iterates the old one
        return window

    def add_labels(self, batch: LabelBatch) -> dict[str, int]:
        """Join a batch of labels to their predictions; returns the count per outcome."""
        now = self.clock()
        counts: dict[str, int] = {}
        rows: dict[tuple[str, str], list[Row]] = {}
        segments: dict[str, list[tuple[str, ...]]] = {}  # version -> champion rows' segment labels
        delays: dict[str, list[float]] = {}
        warmup: list[Any] = []  # the champion's labels (classes or values), for the warm-up reference
        m = self.metrics
        for pid, label, ts in zip(batch.prediction_ids, batch.labels, batch.timestamps):
            outcome, entry, version = self.store.take(pid)
            version = version or self._default_version
            if entry is not None:
                if self.task is None:
                    try:
                        self._resolve_task(version, batch.labels)
                    except Exception:  # noqa: BLE001 - fail open: the pair decides instead
                        log.exception("performance: deciding the task failed")
                        self.count_error()
                labelled_at = ts if ts is not None else batch.received_at
                delay = max(labelled_at - entry.timestamp, 0.0)
                pair = self._pair(entry.predicted, entry.score, label)
                if pair is None:
                    outcome = "invalid"
                else:
                    values, classes = pair
                    rows.setdefault((version, CHAMPION), []).append((*values, delay))
                    if self.segment_features:
                        segments.setdefault(version, []).append(
                            entry.segments or (MISSING_SEGMENT,) * len(self.segment_features))
                    delays.setdefault(version, []).append(delay)
                    if classes is not None:  # the cap names the cell only; the hit was decided above
                        key = (version, self.classes.label(classes[0]), self.classes.label(classes[1]))
                        self.confusion[key] = self.confusion.get(key, 0) + 1
                    warmup.append(classes[0] if classes is not None else values[1])
                    self._add_challengers(entry, version, label, delay, rows)
            counts[outcome] = counts.get(outcome, 0) + 1
            m.labels_received.labels(self.model, version, outcome).inc()
        for version, version_delays in delays.items():
            histogram = m.label_delay.labels(self.model, version)
            for delay in version_delays:
                histogram.observe(delay)
        for (version, challenger), window_rows in rows.items():
            arr = np.asarray(window_rows, dtype=np.float64).T
            seg = None
            if challenger == CHAMPION and self.segment_features:
                seg = np.empty((len(self.segment_features), len(window_rows)), dtype=object)
                seg[:, :] = list(zip(*segments[version]))
            self._window(version, challenger).append(arr[0], arr[1], arr[2], arr[3], now, seg)
        self._collect_label_warmup(warmup)
        capped = self.classes.capped
        if capped > self._capped_seen:
            m.label_values_capped.labels("class").inc(capped - self._capped_seen)
            self._capped_seen = capped
        return counts

    def _collect_label_warmup(self, actual: list[Any]) -> None:
        """Keep labels (classes or values) until ``reference.warmup_events`` are in, then freeze
        them as the reference label distribution (used when the drift reference has no label)."""
        if self.label_reference is not None or not self.label_warmup or not actual:
            return
        self._warmup_labels += actual[:self.label_warmup - len(self._warmup_labels)]
        if len(self._warmup_labels) >= self.label_warmup:
            kind: Literal["categorical", "numeric"] = "categorical" if self.task == "classification" else "numeric"
            self.label_reference = build_profile({"label": {"label": self._warmup_labels}}, {"label": kind},
                                                 source=f"warmup:{len(self._warmup_labels)} labels")
            self._warmup_labels = []
            log.info("label drift: the first %d labels are the reference label distribution", self.label_warmup)

    def _add_challengers(self, entry: Pending, version: str, label: Any, delay: float,
                         rows: dict[tuple[str, str], list[Row]]) -> None:
        for name, (predicted, score) in (entry.challengers or {}).items():
            pair = self._pair(predicted, score, label)
            if pair is not None:
                rows.setdefault((version, name), []).append((*pair[0], delay))

    # --- evaluation (the background thread) -----------------------------------------------------

    def _feature_count(self, version: str) -> int:
        if self.p.feature_count:
            return self.p.feature_count
        window = self.windows.windows().get(version)
        return len(window.features.columns) if window is not None else 0

    def compute(self, snap: LabelledSnapshot, version: str) -> dict[str, float]:
        """The finite metrics of one labelled snapshot of ``version``."""
        return labelled_metrics(snap, self.task, self.p, self._feature_count(version))

    def label_drift(self, snap: LabelledSnapshot) -> tuple[dict[str, float], dict[str, float]]:
        """The window's labels against the reference profile's label distribution (or the
        warm-up labels' when the profile has none)."""
        profile = self.reference()
        if profile is None or not profile.label:
            profile = self.label_reference
        if profile is None:
            return {}, {}
        return reference_label_drift(snap, profile, self.task)

    def evaluate_all(self) -> None:
        now = self.clock()
        self.store.expire()
        results: dict[tuple[str, str], PerformanceResult] = {}
        by_segment: dict[tuple[str, str, str], PerformanceResult] = {}
        for (version, challenger), labelled in self.labelled.items():
            try:
                snap = labelled.snapshot(now)
                result = PerformanceResult(events=snap.n, timestamp=now)
                if snap.n >= self.p.min_events:
                    result.metrics = self.compute(snap, version)
                    if challenger == CHAMPION:
                        result.label_drift, result.label_drift_p = self.label_drift(snap)
                if challenger == CHAMPION and snap.segments is not None:
                    metrics = partial(self.compute, version=version)
                    for (feature, value), r in segment_results(
                            snap, snap.segments, self.segment_features, self.p.min_events, now, metrics).items():
                        by_segment[(version, feature, value)] = r
                results[(version, challenger)] = result
            except Exception:  # noqa: BLE001 - one bad window must not stop the others
                log.exception("performance evaluation of %s/%s failed", version, challenger or "champion")
                self.count_error()
        estimates: dict[str, Estimate] = {}
        for version, window in self.windows.windows().items():
            try:
                estimates[version] = self.estimate(window.snapshot(now))
            except Exception:  # noqa: BLE001
                log.exception("performance estimation of %s failed", version)
                self.count_error()
        self.results, self.estimates = results, {v: e for v, e in estimates.items() if e}
        self.segment_results = by_segment
        self.evaluations += 1

    def estimate(self, snapshot: WindowSnapshot) -> Estimate:
        """CBPE over a prediction window: binary classifiers with a score output, calibrated by
        the reference profile's map when it has one."""
        if not self.p.estimation or self.task == "regression" or not self.score_name:
            return Estimate()
        return cbpe_estimate(snapshot, self.score_name, self.prediction_output(snapshot.outputs), self.p,
                             self.reference())

    def _run(self) -> None:
        while not self._stop.wait(self.p.interval_seconds):
            try:
                self.evaluate_all()
            except Exception:  # noqa: BLE001
                log.exception("performance engine failed")
                self.count_error()

    def status(self) -> dict[str, Any]:
        return {"task": self.task or "auto (no label yet)", "task_reason": self.task_reason or None,
                "pending": len(self.store),
                "evicted": dict(self.store.evicted), "evaluations": self.evaluations, "errors": self.errors,
                "classes": list(self.classes.names) if self.task == "classification" else None,
                "windows": {f"{v}/{c or 'champion'}": {"events": r.events, "metrics": r.metrics}
                            for (v, c), r in self.results.items()},
                "estimated": self.estimates, "label_reference": self._label_reference_status(),
                "estimated_standard_error": {v: e.standard_errors for v, e in self.estimates.items()},
                "estimate_calibration": self._estimate_calibration_status()}

    def _estimate_calibration_status(self) -> str:
        if not self.p.estimation or self.task == "regression" or not self.score_name:
            return "no estimation (needs performance.estimation and a score output of a binary classifier)"
        return score_calibration(self.reference(), self.score_name, self.p)[1]

    def _label_reference_status(self) -> str:
        profile = self.reference()
        if profile is not None and profile.label:
            return "the reference profile's label"
        if self.label_reference is not None:
            return f"the first {self.label_warmup} labels"
        if self.label_warmup:
            return f"warming up: {len(self._warmup_labels)} of {self.label_warmup} labels"
        return "none (no label in the reference; set reference.warmup_events or profile a label column)"


__all__ = ["PerformanceEngine", "CHAMPION"]
