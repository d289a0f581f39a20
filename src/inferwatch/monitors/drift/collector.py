"""The drift metrics, published at scrape time from the engine's last results.

Nothing is computed or changed here: the collector reads the results the engine's thread swapped
in, the reference in use and the bin counters the worker adds to, so a feature or version that is
gone from the results simply stops being exported. docs/drift.md explains the metrics.
"""

from __future__ import annotations

import math
from typing import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..background import EngineCollector
from .engine import DriftEngine
from .results import VersionResult

# inferwatch_feature_statistic{statistic}, current and reference, by column kind.
NUMERIC_STATISTICS = ("mean", "std", "min", "max", "p05", "p25", "p50", "p75", "p95", "missing_ratio")
CATEGORICAL_STATISTICS = ("missing_ratio", "entropy", "cardinality", "unseen_ratio")


class DriftCollector(EngineCollector[DriftEngine]):
    """Yields the engine's last results at scrape time (nothing is computed here)."""

    def collect(self) -> Iterator[Metric]:
        e = self.engine
        model = e.model
        mv = ["model", "model_version"]
        fam = {
            "score": GaugeMetricFamily("inferwatch_feature_drift_score",
                                       "Drift of a feature from its reference, by method.",
                                       labels=[*mv, "feature", "method"]),
            "p": GaugeMetricFamily("inferwatch_feature_drift_p_value",
                                   "p-value of a feature's drift test (ks, chi2), before correction.",
                                   labels=[*mv, "feature", "method"]),
            "drifted": GaugeMetricFamily("inferwatch_feature_drifted",
                                         "1 if the feature drifted by its decision (method: the one that decided), "
                                         "else 0.", labels=[*mv, "feature", "method"]),
            "effect": GaugeMetricFamily("inferwatch_feature_drift_effect",
                                        "Share of a feature's probability mass that moved from the reference (KS D "
                                        "for numbers, total variation for categories): the effect its decision "
                                        "needs to reach drift.min_effect. view: full (the window), recent (its "
                                        "most recent events) or unseen (a categorical column's share of values "
                                        "the reference never held, beyond the expected share).",
                                        labels=[*mv, "feature", "view"]),
            "stat": GaugeMetricFamily("inferwatch_feature_statistic",
                                      "A basic statistic of a feature in the reference and in the current window.",
                                      labels=[*mv, "feature", "statistic", "source"]),
            "pscore": GaugeMetricFamily("inferwatch_prediction_drift_score",
                                        "Drift of a model output from its reference, by method.",
                                        labels=[*mv, "output", "method"]),
            "pp": GaugeMetricFamily("inferwatch_prediction_drift_p_value",
                                    "p-value of a model output's drift test (ks, chi2), before correction.",
                                    labels=[*mv, "output", "method"]),
            "peffect": GaugeMetricFamily("inferwatch_prediction_drift_effect",
                                         "Share of a model output's probability mass that moved from the reference "
                                         "(KS D, total variation), by view (full, recent, unseen).",
                                         labels=[*mv, "output", "view"]),
            "pdrifted": GaugeMetricFamily("inferwatch_prediction_drifted",
                                          "1 if the model output drifted by its decision (method: the one that "
                                          "decided), else 0.", labels=[*mv, "output", "method"]),
            "ratio": GaugeMetricFamily("inferwatch_drifted_features_ratio",
                                       "Share of evaluated features that drifted.", labels=mv),
            "dataset": GaugeMetricFamily("inferwatch_dataset_drifted",
                                         "1 if the inputs as a whole drifted (drift.dataset_drift_share), else 0.",
                                         labels=mv),
            "mv": GaugeMetricFamily("inferwatch_multivariate_drift_score",
                                    "PCA reconstruction error of the window over the reference's (about 1 = no drift).",
                                    labels=[*mv, "method"]),
            "corr": GaugeMetricFamily("inferwatch_correlation_drift_score",
                                      "Largest absolute change of a pairwise feature correlation.", labels=mv),
            "mvdrifted": GaugeMetricFamily("inferwatch_multivariate_drifted",
                                           "1 if a multivariate drift score (method: pca_reconstruction, correlation) "
                                           "exceeds the reference's resampled threshold for the window's size, else 0.",
                                           labels=[*mv, "method"]),
            "duration": GaugeMetricFamily("inferwatch_drift_evaluation_duration_seconds",
                                          "Time the last drift evaluation of the window took.", labels=mv),
            "last": GaugeMetricFamily("inferwatch_drift_last_evaluation_timestamp_seconds",
                                      "When drift was last evaluated (Unix time).", labels=mv),
            "events": GaugeMetricFamily("inferwatch_drift_window_events",
                                        "Events in the window snapshot the last drift evaluation used.", labels=mv),
        }
        profile = e.reference
        ref_stats: dict[str, dict[str, float]] = {}
        if profile is not None:
            for name, col in profile.features.items():
                ref_stats[name] = col.statistics
        for version, r in e.results.items():
            base = [model, version]
            for c in r.features:
                for method, value in c.scores.items():
                    fam["score"].add_metric([*base, c.name, method], value)
                for method, value in c.p_values.items():
                    fam["p"].add_metric([*base, c.name, method], value)
                if c.method:
                    fam["drifted"].add_metric([*base, c.name, c.method], 1.0 if c.drifted else 0.0)
                for evidence in c.evidence:
                    fam["effect"].add_metric([*base, c.name, evidence.view], evidence.effect)
                if e.config.summary_statistics:
                    names = NUMERIC_STATISTICS if c.kind == "numeric" else CATEGORICAL_STATISTICS
                    reference = ref_stats.get(c.name, {})
                    for stat in names:
                        if stat in c.statistics:
                            fam["stat"].add_metric([*base, c.name, stat, "current"], c.statistics[stat])
                        ref_value = 0.0 if stat == "unseen_ratio" else reference.get(stat)
                        if ref_value is not None:
                            fam["stat"].add_metric([*base, c.name, stat, "reference"], ref_value)
            for c in r.outputs:
                for method, value in c.scores.items():
                    fam["pscore"].add_metric([*base, c.name, method], value)
                for method, value in c.p_values.items():
                    fam["pp"].add_metric([*base, c.name, method], value)
                if c.method:
                    fam["pdrifted"].add_metric([*base, c.name, c.method], 1.0 if c.drifted else 0.0)
                for evidence in c.evidence:
                    fam["peffect"].add_metric([*base, c.name, evidence.view], evidence.effect)
            if r.features:
                fam["ratio"].add_metric(base, r.drifted_ratio)
                fam["dataset"].add_metric(base, 1.0 if r.dataset_drifted else 0.0)
            if not math.isnan(r.multivariate):
                fam["mv"].add_metric([*base, "pca_reconstruction"], r.multivariate)
            if not math.isnan(r.correlation):
                fam["corr"].add_metric(base, r.correlation)
            for method, drifted in r.multivariate_drifted.items():
                fam["mvdrifted"].add_metric([*base, method], 1.0 if drifted else 0.0)
            fam["duration"].add_metric(base, r.duration)
            fam["last"].add_metric(base, r.timestamp)
            fam["events"].add_metric(base, r.events)
        yield from fam.values()
        yield from _segment_families(model, e.segment_results)
        info = GaugeMetricFamily("inferwatch_reference_info",
                                 "Always 1; the drift reference in use (type: file or warmup).",
                                 labels=["model", "hash", "type", "source", "rows"])
        if profile is not None:
            info.add_metric([model, profile.hash, e.store.type, profile.source, str(profile.rows)], 1.0)
        yield info
        unseen = GaugeMetricFamily("inferwatch_reference_columns_unseen",
                                   "Reference columns of a kind (feature, output) never seen in traffic after "
                                   "drift.min_events events that brought others: not evaluated (/v1/status says "
                                   "which).", labels=["model", "kind"])
        coverage = e.coverage
        if coverage is not None:
            for kind in ("feature", "output"):
                unseen.add_metric([model, kind], float(coverage.unseen(kind)))
        yield unseen
        if e.store.type == "warmup":
            yield GaugeMetricFamily("inferwatch_reference_warmup_events",
                                    "Production events collected toward the warm-up reference, of "
                                    "reference.warmup_events.", value=e.store.warmup_collected())
        ratio = GaugeMetricFamily("inferwatch_feature_reference_ratio",
                                  "Share of the reference in each bin of a feature (for fleet-wide PSI).",
                                  labels=["model", "feature", "bin"])
        if profile is not None and e.config.bin_counters:
            for name, col in profile.features.items():
                for label, value in zip(col.bin_labels(), col.proportions):
                    ratio.add_metric([model, name, label], float(value))
        yield ratio
        bins = CounterMetricFamily("inferwatch_feature_bin",
                                   "Events per reference bin of a feature since the sidecar started "
                                   "(numeric: quantile bins 0..k of the reference; categorical: top-K + other).",
                                   labels=["model", "model_version", "feature", "bin"])
        for version, counters in e.counters.items():
            for name, label, value in counters.series():
                bins.add_metric([model, version, name, label], value)
        yield bins


def _segment_families(model: str, results: dict[str, dict[tuple[str, str], VersionResult]]) -> Iterator[Metric]:
    """Per-segment drift: the decision's score and flag per feature/output, and the drifted share.

    Only the decision method is published per segment value (not every method): the series are
    segments x values x features, so one per feature keeps them bounded by configuration.
    """
    seg = ["model", "model_version", "segment", "value"]
    score = GaugeMetricFamily("inferwatch_segment_feature_drift_score",
                              "Drift of a feature within one segment value, by the feature's decision method.",
                              labels=[*seg, "feature", "method"])
    drifted = GaugeMetricFamily("inferwatch_segment_feature_drifted",
                                "1 if the feature drifted within the segment value by its decision, else 0.",
                                labels=[*seg, "feature"])
    ratio = GaugeMetricFamily("inferwatch_segment_drifted_features_ratio",
                              "Share of evaluated features that drifted within the segment value.", labels=seg)
    pscore = GaugeMetricFamily("inferwatch_segment_prediction_drift_score",
                               "Drift of a model output within one segment value, by its decision method.",
                               labels=[*seg, "output", "method"])
    events = GaugeMetricFamily("inferwatch_segment_drift_window_events",
                               "Events of the segment value in the window snapshot the last evaluation used.",
                               labels=seg)
    for version, by_segment in results.items():
        for (segment, value), r in by_segment.items():
            base = [model, version, segment, value]
            for c in r.features:
                if c.method and c.method in c.scores:
                    score.add_metric([*base, c.name, c.method], c.scores[c.method])
                    drifted.add_metric([*base, c.name], 1.0 if c.drifted else 0.0)
            for c in r.outputs:
                if c.method and c.method in c.scores:
                    pscore.add_metric([*base, c.name, c.method], c.scores[c.method])
            if r.features:
                ratio.add_metric(base, r.drifted_ratio)
            events.add_metric(base, r.events)
    yield from (score, drifted, ratio, pscore, events)
