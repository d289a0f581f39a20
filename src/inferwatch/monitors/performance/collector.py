"""The performance metrics, published at scrape time from the engine's last results.

Nothing is computed or changed here: the collector reads what the engine's thread swapped in
(results, segment results, estimates) and what the worker counts (confusion matrix, join store),
so a scrape costs the same whatever the windows hold.
"""

from __future__ import annotations

import math
from typing import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..background import EngineCollector
from .engine import CHAMPION, PerformanceEngine


class PerformanceCollector(EngineCollector):
    """Yields the engine's last results at scrape time (nothing is computed here)."""

    def collect(self) -> Iterator[Metric]:
        e: PerformanceEngine = self.engine
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
        for (version, segment, segment_value), r in e.segment_results.items():
            seg_events.add_metric([model, version, segment, segment_value], r.events)
            for metric, value in r.metrics.items():
                seg_perf.add_metric([model, version, segment, segment_value, metric], value)
        yield seg_perf
        yield seg_events
        estimated = GaugeMetricFamily("inferwatch_estimated_performance",
                                      "Performance estimated from the scores without labels (CBPE; scores "
                                      "calibrated on the reference profile when it has a calibration map) over "
                                      "the prediction window, by metric.", labels=[*mv, "metric"])
        estimated_se = GaugeMetricFamily("inferwatch_estimated_performance_standard_error",
                                         "Standard error of inferwatch_estimated_performance: the spread of the "
                                         "realised metric around the estimate if the calibrated scores are right.",
                                         labels=[*mv, "metric"])
        for version, values in e.estimates.items():
            for metric, value in values.items():
                estimated.add_metric([model, version, metric], value)
            for metric, value in values.standard_errors.items():
                estimated_se.add_metric([model, version, metric], value)
        yield estimated
        yield estimated_se
        confusion = CounterMetricFamily("inferwatch_confusion_matrix",
                                        "Labelled predictions by actual and predicted class since the sidecar "
                                        "started (classes capped by performance.max_classes, then other).",
                                        labels=[*mv, "actual", "predicted"])
        for (version, actual, predicted), count in dict(e.confusion).items():
            confusion.add_metric([model, version, actual, predicted], count)
        yield confusion
        yield GaugeMetricFamily("inferwatch_labels_enabled", "1 when ground truth is accepted on /v1/labels "
                                "(labels.enabled), else 0 (a join store kept for shadow comparisons only).",
                                value=1.0 if e.labels_enabled else 0.0)
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


__all__ = ["PerformanceCollector"]
