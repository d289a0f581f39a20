"""What the performance engine publishes, computed from snapshots (no state, no threads).

Over a ``LabelledSnapshot``: the metrics of ``inferwatch.stats.performance`` (classification or
regression), the same per segment value, and label drift against a reference profile's label
(``inferwatch.stats.labels``). Over a prediction window's ``WindowSnapshot``: CBPE estimates of
a binary classifier from its scores, which need no labels at all, with a standard error each;
the scores are first mapped by the reference profile's calibration map when it has one. Every function reads
its inputs and returns numbers; the engine decides when and over what they run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .window import LabelledSnapshot, class_id
from inferwatch.config import PerformanceConfig
from inferwatch.ingest.values import PRESENT, category_key
from inferwatch.pipeline.segments import MISSING_SEGMENT
from inferwatch.pipeline.window import WindowSnapshot
from inferwatch.reference import CategoricalProfile, ReferenceProfile
from inferwatch.stats.calibration import CalibrationMap
from inferwatch.stats.labels import class_label_drift, value_label_drift
from inferwatch.stats.performance import (
    classification_metrics, confident_error_rate, estimate_binary_performance, estimate_standard_errors, log_loss,
    regression_metrics, roc_auc,
)

Scores = tuple[dict[str, float], dict[str, float]]  # (score by method, p-value by method)


@dataclass
class PerformanceResult:
    """One labelled window's last evaluation (what the collector publishes)."""

    events: int
    timestamp: float
    metrics: dict[str, float] = field(default_factory=dict)
    label_drift: dict[str, float] = field(default_factory=dict)
    label_drift_p: dict[str, float] = field(default_factory=dict)


def labelled_metrics(snap: LabelledSnapshot, task: str | None, p: PerformanceConfig,
                     n_features: int) -> dict[str, float]:
    """The finite metrics of one labelled snapshot. Classification: ``class_id``s, coded densely
    over the classes present so a hit is a real class equal to itself, never two classes that
    share a capped label (binary figures of ``performance.positive_class``, and with scores
    ROC-AUC, log loss and the confident error rate); regression: values, adjusted R² over
    ``n_features``."""
    if task == "regression":
        out = regression_metrics(snap.actual, snap.predicted, n_features=n_features,
                                 mape_min_abs_target=p.mape_min_abs_target)
        return _finite(out)
    n = snap.n
    ids = np.concatenate([snap.actual, snap.predicted,
                          [float(class_id(p.negative_class)), float(class_id(p.positive_class))]])
    classes, codes = np.unique(ids, return_inverse=True)
    actual, predicted = codes[:n], codes[n:2 * n]
    negative, positive = int(codes[2 * n]), int(codes[2 * n + 1])
    out = classification_metrics(actual, predicted, classes.size, positive=positive, negative=negative)
    binary = np.isin(actual, (negative, positive)) & np.isfinite(snap.score)
    if "precision" in out and binary.any():  # a binary problem with scores
        y, s = actual[binary] == positive, snap.score[binary]
        auc = roc_auc(y, s)
        if not math.isnan(auc):
            out["roc_auc"] = auc
        out["log_loss"] = log_loss(y, s)
        out["confident_error_rate"] = confident_error_rate(
            y, s, predicted[binary] == positive, p.confident_score)
    return _finite(out)


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {name: value for name, value in metrics.items() if math.isfinite(value)}


def segment_results(snap: LabelledSnapshot, segments: np.ndarray, features: Sequence[str], min_events: int,
                    now: float, metrics: Callable[[LabelledSnapshot], dict[str, float]],
                    ) -> dict[tuple[str, str], PerformanceResult]:
    """``metrics`` per (segment feature, value) over the rows of that value (``missing`` rows
    left out), each value with at least ``min_events`` labelled rows; the event count for every
    value present. ``segments`` holds the rows' values, one row per feature."""
    out: dict[tuple[str, str], PerformanceResult] = {}
    for i, feature in enumerate(features):
        labels = segments[i]
        for value in dict.fromkeys(labels.tolist()):
            if value is None or value == MISSING_SEGMENT:
                continue
            rows = np.flatnonzero(labels == value)
            result = PerformanceResult(events=int(rows.size), timestamp=now)
            if rows.size >= min_events:
                result.metrics = metrics(snap.take(rows))
            out[(feature, str(value))] = result
    return out


def reference_label_drift(snap: LabelledSnapshot, profile: ReferenceProfile, task: str | None) -> Scores:
    """The snapshot's labels against the profile's label column: classes (counted over the
    reference's categories, matched by ``class_id``) against a categorical label, values against
    a numeric one; a label of the other kind than the task, or no label, gives nothing."""
    if not profile.label or snap.n == 0:
        return {}, {}
    ref = next(iter(profile.label.values()))
    if isinstance(ref, CategoricalProfile):
        if task != "classification":
            return {}, {}
        index, other = {float(class_id(c)): i for i, c in enumerate(ref.categories)}, len(ref.categories)
        ids, counts = np.unique(snap.actual, return_counts=True)
        current = np.zeros(ref.n_bins, dtype=np.int64)
        for key, count in zip(ids.tolist(), counts.tolist()):
            current[index.get(key, other)] += count
        return class_label_drift(ref.bin_counts, current)
    if task != "regression":
        return {}, {}
    return value_label_drift(ref.sample, ref.edges, ref.bin_counts, snap.actual)


class Estimate(dict[str, float]):
    """CBPE estimates by metric (what ``/v1/status`` shows), carrying the standard error of each
    (``estimate_standard_errors``) and whether the scores were calibrated first."""

    def __init__(self, values: dict[str, float] | None = None, standard_errors: dict[str, float] | None = None,
                 calibrated: bool = False):
        super().__init__(values or {})
        self.standard_errors = dict(standard_errors or {})
        self.calibrated = calibrated


def score_calibration(profile: ReferenceProfile | None, score_name: str,
                      p: PerformanceConfig) -> tuple[CalibrationMap | None, str]:
    """The reference profile's calibration map for ``score_name``, and one line saying which
    map the estimates use or why they are uncalibrated (for ``/v1/status``)."""
    hint = ("profile the reference with --label-column and --prediction-column so the scores can be calibrated; "
            "until then estimates trust the scores as probabilities")
    if profile is None:
        return None, f"uncalibrated: no reference profile yet ({hint})"
    section = profile.calibration
    if section is None:
        return None, f"uncalibrated: the reference profile (format version {profile.version}) has no " \
                     f"calibration section ({hint})"
    fitted = section.maps.get(score_name)
    if fitted is None:
        return None, f"uncalibrated: the reference profile has no calibration for output {score_name!r} " \
                     f"(calibrated: {', '.join(section.maps) or 'none'})"
    if section.positive_class != p.positive_class:
        return None, f"uncalibrated: the reference calibrated {score_name!r} for positive class " \
                     f"{section.positive_class!r} but performance.positive_class is {p.positive_class!r}"
    return fitted, f"calibrated: {fitted.method} map of {score_name!r} fitted on {fitted.rows} reference rows " \
                   f"(label {section.label!r}, positive class {section.positive_class!r})"


def cbpe_estimate(snapshot: WindowSnapshot, score_name: str, prediction_name: str | None,
                  p: PerformanceConfig, profile: ReferenceProfile | None = None) -> Estimate:
    """CBPE over a prediction window from its numeric ``score_name`` output, with the model's
    decision from ``prediction_name`` when that is another output (else the raw score decided at
    ``performance.threshold``). The probability of each row is the score mapped by the
    profile's calibration map (``score_calibration``), or the score itself without one;
    nothing under ``performance.min_events`` scored rows."""
    col = snapshot.outputs.get(score_name)
    if col is None or col.kind != "numeric":
        return Estimate()
    present = col.state == PRESENT
    decided = None
    if prediction_name is not None and prediction_name != score_name:
        decision = snapshot.outputs[prediction_name]
        values = decision.category_values() if decision.kind == "categorical" else \
            np.array([category_key(float(v)) if np.isfinite(v) else None for v in decision.values], dtype=object)
        positive = values == p.positive_class
        present &= decision.state == PRESENT
        decided = positive[present]
    scores = col.values[present]
    if scores.size < p.min_events:
        return Estimate()
    fitted, _ = score_calibration(profile, score_name, p)
    probability = fitted.apply(scores) if fitted is not None else scores
    if decided is None:
        decided = scores >= p.threshold  # the model's decision is on its own score, not the calibrated one
    estimates = estimate_binary_performance(scores, decided, p.threshold, probability=probability)
    errors = estimate_standard_errors(scores, probability, decided,
                                      reference_rows=fitted.rows if fitted is not None else None) if estimates else {}
    return Estimate(estimates, {m: e for m, e in errors.items() if m in estimates}, calibrated=fitted is not None)


__all__ = ["PerformanceResult", "labelled_metrics", "segment_results", "reference_label_drift", "cbpe_estimate",
           "Estimate", "score_calibration"]
