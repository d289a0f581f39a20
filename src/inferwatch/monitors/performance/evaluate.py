"""What the performance engine publishes, computed from snapshots (no state, no threads).

Over a ``LabelledSnapshot``: the metrics of ``inferwatch.stats.performance`` (classification or
regression), the same per segment value, and label drift against a reference profile's label
(``inferwatch.stats.labels``). Over a prediction window's ``WindowSnapshot``: CBPE estimates of
a binary classifier with calibrated scores, which need no labels at all. Every function reads
its inputs and returns numbers; the engine decides when and over what they run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .window import ClassVocabulary, LabelledSnapshot
from inferwatch.config import PerformanceConfig
from inferwatch.ingest.values import PRESENT, category_key
from inferwatch.pipeline.segments import MISSING_SEGMENT
from inferwatch.pipeline.window import WindowSnapshot
from inferwatch.reference import CategoricalProfile, ReferenceProfile
from inferwatch.stats.labels import class_label_drift, value_label_drift
from inferwatch.stats.performance import (
    classification_metrics, confident_error_rate, estimate_binary_performance, log_loss, regression_metrics, roc_auc,
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


def labelled_metrics(snap: LabelledSnapshot, task: str | None, classes: ClassVocabulary, p: PerformanceConfig,
                     n_features: int) -> dict[str, float]:
    """The finite metrics of one labelled snapshot. Classification: class codes of ``classes``
    (binary figures of its positive class, and with scores ROC-AUC, log loss and the confident
    error rate); regression: values, adjusted R² over ``n_features``."""
    if task == "regression":
        out = regression_metrics(snap.actual, snap.predicted, n_features=n_features,
                                 mape_min_abs_target=p.mape_min_abs_target)
        return _finite(out)
    actual, predicted = snap.actual.astype(np.int64), snap.predicted.astype(np.int64)
    out = classification_metrics(actual, predicted, len(classes), positive=classes.positive,
                                 negative=classes.negative)
    binary = np.isin(actual, (0, 1)) & np.isfinite(snap.score)
    if "precision" in out and binary.any():  # a binary problem with scores
        y, s = actual[binary] == classes.positive, snap.score[binary]
        auc = roc_auc(y, s)
        if not math.isnan(auc):
            out["roc_auc"] = auc
        out["log_loss"] = log_loss(y, s)
        out["confident_error_rate"] = confident_error_rate(
            y, s, predicted[binary] == classes.positive, p.confident_score)
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


def reference_label_drift(snap: LabelledSnapshot, profile: ReferenceProfile, task: str | None,
                          class_names: Sequence[str]) -> Scores:
    """The snapshot's labels against the profile's label column: class labels (counted over
    the reference's categories) against a categorical label, values against a numeric one; a
    label of the other kind than the task, or no label, gives nothing."""
    if not profile.label or snap.n == 0:
        return {}, {}
    ref = next(iter(profile.label.values()))
    if isinstance(ref, CategoricalProfile):
        if task != "classification":
            return {}, {}
        index, other = ref.index(), len(ref.categories)
        codes = np.bincount(snap.actual.astype(np.int64), minlength=len(class_names))
        current = np.zeros(ref.n_bins, dtype=np.int64)
        for code, count in enumerate(codes):
            if count:
                current[index.get(class_names[code], other)] += count
        return class_label_drift(ref.bin_counts, current)
    if task != "regression":
        return {}, {}
    return value_label_drift(ref.sample, ref.edges, ref.bin_counts, snap.actual)


def cbpe_estimate(snapshot: WindowSnapshot, score_name: str, prediction_name: str | None,
                  p: PerformanceConfig) -> dict[str, float]:
    """CBPE over a prediction window from its numeric ``score_name`` output, with the model's
    decision from ``prediction_name`` when that is another output (else the score decided at
    ``performance.threshold``); nothing under ``performance.min_events`` scored rows."""
    col = snapshot.outputs.get(score_name)
    if col is None or col.kind != "numeric":
        return {}
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
        return {}
    return estimate_binary_performance(scores, decided, p.threshold)


__all__ = ["PerformanceResult", "labelled_metrics", "segment_results", "reference_label_drift", "cbpe_estimate"]
