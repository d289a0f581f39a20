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
from .evaluate import PerformanceResult, cbpe_estimate, labelled_metrics, reference_label_drift, segment_results
from .joins import JoinStore, Pending
from .window import ClassVocabulary, LabelledSnapshot, LabelledWindow
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
        self.task: str | None = None if self.p.task == "auto" else self.p.task
        prediction_spec = specs.get(self.prediction_name)
        if self.task is None and prediction_spec is not None and not self.p.prediction_output:
            self.task = "classification" if prediction_spec.type == "class" else "regression"
        self.classes = ClassVocabulary(self.p.max_classes, self.p.negative_class, self.p.positive_class)
        self.labelled: dict[tuple[str, str], LabelledWindow] = {}  # (version, challenger or CHAMPION)
        self.confusion: dict[tuple[str, str, str], int] = {}  # (version, actual, predicted) -> count
        self.results: dict[tuple[str, str], PerformanceResult] = {}
        self.estimates: dict[str, dict[str, float]] = {}
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
            actual_class = category_key(label)
            if code < 0 or actual_class is None:
                return None
            return float(code), float(self.classes.code(actual_class)), score
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
            self.labelled = {**self.labelled, key: window}  # a new dict: the evaluator iterates the old one
        return window

    def add_labels(self, batch: LabelBatch) -> dict[str, int]:
        """Join a batch of labels to their predictions; returns the count per outcome."""
        now = self.clock()
        counts: dict[str, int] = {}
        rows: dict[tuple[str, str], list[Row]] = {}
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
                            entry.segments or (MISSING_SEGMENT,) * len(self.segment_features))
                    delays.setdefault(version, []).append(delay)
                    if self.task == "classification":
                        key = (version, self.classes.names[int(pair[1])], self.classes.names[int(pair[0])])
                        self.confusion[key] = self.confusion.get(key, 0) + 1
                    self._add_challengers(entry, version, label, delay, rows)
            counts[outcome] = counts.get(outcome, 0) + 1
            m.labels_received.labels(self.model, version, outcome).inc()
        for version, version_delays in delays.items():
            histogram = m.label_delay.labels(self.model, version)
            for delay in version_delays:
                histogram.observe(delay)
        for (version, challenger), window_rows in rows.items():
            arr = np.asarray(window_rows, dtype=np.float64).T
            if challenger == CHAMPION:
                self._collect_label_warmup(arr[1])
            seg = None
            if challenger == CHAMPION and self.segment_features:
                seg = np.empty((len(self.segment_features), len(window_rows)), dtype=object)
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
                rows.setdefault((version, name), []).append((*pair, delay))

    # --- evaluation (the background thread) -----------------------------------------------------

    def _feature_count(self, version: str) -> int:
        if self.p.feature_count:
            return self.p.feature_count
        window = self.windows.windows().get(version)
        return len(window.features.columns) if window is not None else 0

    def compute(self, snap: LabelledSnapshot, version: str) -> dict[str, float]:
        """The finite metrics of one labelled snapshot of ``version``."""
        return labelled_metrics(snap, self.task, self.classes, self.p, self._feature_count(version))

    def label_drift(self, snap: LabelledSnapshot) -> tuple[dict[str, float], dict[str, float]]:
        """The window's labels against the reference profile's label distribution (or the
        warm-up labels' when the profile has none)."""
        profile = self.reference()
        if profile is None or not profile.label:
            profile = self.label_reference
        if profile is None:
            return {}, {}
        return reference_label_drift(snap, profile, self.task, self.classes.names)

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
        estimates: dict[str, dict[str, float]] = {}
        for version, window in self.windows.windows().items():
            try:
                estimates[version] = self.estimate(window.snapshot(now))
            except Exception:  # noqa: BLE001
                log.exception("performance estimation of %s failed", version)
                self.count_error()
        self.results, self.estimates = results, {v: e for v, e in estimates.items() if e}
        self.segment_results = by_segment
        self.evaluations += 1

    def estimate(self, snapshot: WindowSnapshot) -> dict[str, float]:
        """CBPE over a prediction window: binary classifiers with a calibrated score output."""
        if not self.p.estimation or self.task == "regression" or not self.score_name:
            return {}
        return cbpe_estimate(snapshot, self.score_name, self.prediction_output(snapshot.outputs), self.p)

    def _run(self) -> None:
        while not self._stop.wait(self.p.interval_seconds):
            try:
                self.evaluate_all()
            except Exception:  # noqa: BLE001
                log.exception("performance engine failed")
                self.count_error()

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


__all__ = ["PerformanceEngine", "CHAMPION"]
