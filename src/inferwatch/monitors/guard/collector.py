"""Publishes the guard's counters, window ratios, schema changes and outlier histogram.

Scrape time only reads: the counters are copied under the engine's lock, and the ratios and
schema changes are the values each version's state last published (``state.py``).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from inferwatch.exposition.metrics import OTHER

from ..background import EngineCollector
from .engine import SCORE_BUCKETS, Guard


class GuardCollector(EngineCollector):
    engine: Guard

    def __init__(self, guard: Guard):
        super().__init__(guard)

    def collect(self) -> Iterator[Metric]:
        g = self.engine
        model = g.model
        mv = ["model", "model_version"]
        issues = CounterMetricFamily(
            "inferwatch_data_quality_issues",
            "Data quality issues found in windowed events, by feature and issue (missing, nan, infinite, wrong_type, "
            "out_of_range, unseen_category, unknown_feature, duplicate).", labels=[*mv, "feature", "issue"])
        events = CounterMetricFamily(
            "inferwatch_data_quality_events",
            "Events checked by the input guard, by result (passed, or failed: at least one issue).",
            labels=[*mv, "result"])
        missing = GaugeMetricFamily("inferwatch_feature_missing_ratio",
                                    "Share of the window's events in which the feature is missing (absent or null).",
                                    labels=[*mv, "feature"])
        oor = GaugeMetricFamily("inferwatch_feature_out_of_range_ratio",
                                "Share of the window's events with the feature outside the reference range "
                                "(widened by guard.range_tolerance).", labels=[*mv, "feature"])
        failed = GaugeMetricFamily("inferwatch_data_quality_failed_events_ratio",
                                   "Share of the window's events with at least one data quality issue.", labels=mv)
        changed = GaugeMetricFamily(
            "inferwatch_schema_changed",
            "1 if a schema feature is missing from (change=missing), or a new feature is present in (change=added), "
            "nearly all recent events, else 0.", labels=[*mv, "feature", "change"])
        outliers = CounterMetricFamily("inferwatch_outliers",
                                       "Events whose outlier score exceeded the threshold calibrated on the reference.",
                                       labels=mv)
        ratio = GaugeMetricFamily("inferwatch_outlier_ratio", "Share of the window's events that are outliers.",
                                  labels=mv)
        score = HistogramMetricFamily(
            "inferwatch_outlier_score",
            "Per-event outlier score: Mahalanobis distance over the calibrated threshold (above 1 = outlier).",
            labels=mv)
        threshold = GaugeMetricFamily(
            "inferwatch_outlier_threshold",
            "The squared Mahalanobis distance an event must exceed to be an outlier (calibrated on the reference "
            "for guard.outlier_fpr).", labels=["model"])
        totals, counts, n_out, hists = g.counters()
        for (version, feature, issue), value in sorted(totals.items()):
            issues.add_metric([model, version, feature, issue], value)
        for (version, result), value in sorted(counts.items()):
            events.add_metric([model, version, result], value)
        current = g.current
        schema = current.schema
        labelled = current.unknown.labelled
        for version, state in current.states.items():
            base = [model, version]
            published = state.published
            if published.events:
                for name, value in zip(schema.names, published.missing.tolist()):
                    missing.add_metric([*base, name], value)
                for name in schema.numeric:
                    oor.add_metric([*base, name], float(published.out_of_range[schema.index[name]]))
                failed.add_metric(base, published.failed)
                if schema.outlier is not None:
                    ratio.add_metric(base, published.outliers)
            on = {(c.get("label", c["feature"]), c["change"]) for c in published.changes}
            for name in schema.names:
                changed.add_metric([*base, name, "missing"], 1.0 if (name, "missing") in on else 0.0)
            for name in [*labelled, OTHER]:  # other: a new feature without a label of its own
                changed.add_metric([*base, name, "added"], 1.0 if (name, "added") in on else 0.0)
        for version, (buckets, total) in sorted(hists.items()):
            cumulative = np.cumsum(buckets)
            score.add_metric([model, version],
                             [*((repr(b), float(c)) for b, c in zip(SCORE_BUCKETS, cumulative[:-1])),
                              ("+Inf", float(cumulative[-1]))], total)
            outliers.add_metric([model, version], n_out.get(version, 0))
        if schema.outlier is not None:
            threshold.add_metric([model], schema.threshold)
        yield from (issues, events, missing, oor, failed, changed, outliers, ratio, score, threshold)
        if g.quarantine is not None:
            lines = CounterMetricFamily("inferwatch_quarantine_log_lines", "Lines written to the quarantine log.")
            lines.add_metric([], g.quarantine.written)
            yield lines
            errors = CounterMetricFamily("inferwatch_quarantine_log_errors",
                                         "Quarantine log lines lost to write or encoding errors.")
            errors.add_metric([], g.quarantine.errors)
            yield errors
