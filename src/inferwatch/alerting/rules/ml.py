"""The ML team's alerts: the model's outputs drifting, its quality on labelled predictions
(performance, labels that stopped coming, a shadow challenger that disagrees), business band
shares and unreasonable predictions."""

from __future__ import annotations

from ..promql import select
from ..thresholds import Thresholds
from .genai import GENAI_ML
from .recording import band_increase_record, band_share_record
from .spec import AlertGroup, AlertRule, Params


def _bounds(t: Thresholds) -> list[Params]:
    """One rule per bounded metric, so each description names its own bound."""
    a = t.alerts.InferwatchModelPerformanceDegraded
    return ([{"metric": m, "op": "<", "bound": v, "where": "below its floor"} for m, v in a.floors.items()] +
            [{"metric": m, "op": ">", "bound": v, "where": "above its ceiling"} for m, v in a.ceilings.items()])


def _band_records(t: Thresholds) -> Params:
    a = t.alerts.InferwatchPredictionBandShift
    expected = select(t.selector, "inferwatch_prediction_band_expected_ratio")
    return {"recent": band_share_record(a.window), "before": band_share_record(a.baseline, a.window),
            "counted": band_increase_record(a.window), "expected": f"max by (model, output, band) ({expected})"}


ML = AlertGroup("inferwatch-ml.alerts", "ml", (
    AlertRule(
        "InferwatchPredictionDrift",
        summary="The predictions of a model have drifted from its reference.",
        expr='inferwatch_prediction_drift_score{${selector}, method="${method}"} > ${threshold_score}',
        description=("Output {{ $labels.output }} of {{ $labels.model }} version {{ $labels.model_version }} "
                     "(sidecar {{ $labels.instance }}) has drifted from its reference: {{ $labels.method }} = "
                     "{{ printf \"%.3g\" $value }}; threshold: ${method} > ${threshold_score} for ${for}."),
    ),
    # Only windows with enough labelled predictions count (a handful of labels is noise, not a
    # degradation).
    AlertRule(
        "InferwatchModelPerformanceDegraded",
        summary="The performance of a model on labelled predictions is out of its agreed bounds.",
        expr=('inferwatch_model_performance{${selector}, metric="${metric}"} ${op} ${bound}\n'
              "and on (job, instance, model, model_version)\n"
              "inferwatch_labelled_window_events{${selector}} >= ${min_events}\n"),
        description=("${metric} of {{ $labels.model }} version {{ $labels.model_version }} (sidecar "
                     "{{ $labels.instance }}) is {{ printf \"%.3g\" $value }} over its labelled window, ${where}; "
                     "threshold: ${metric} ${op} ${bound} with at least ${min_events} labelled predictions, "
                     "for ${for}."),
        each=_bounds,
        item_labels=("metric",),
    ),
    # Only sidecars that accept labels and have served the version for the whole window (labels
    # lag predictions, so a young sidecar has none matched yet).
    AlertRule(
        "InferwatchLabelsNotArriving",
        summary="A model makes predictions but no ground truth is joined to them.",
        expr=("sum by (job, instance, model, model_version) "
              "(increase(inferwatch_predictions_total{${selector}}[${window}])) > 0\n"
              "and on (job, instance)\n"
              "inferwatch_labels_enabled{${selector}} == 1\n"
              "and on (job, instance, model, model_version)\n"
              "time() - inferwatch_model_start_timestamp_seconds{${selector}} > ${window:in_seconds}\n"
              "unless on (job, instance, model, model_version)\n"
              "sum by (job, instance, model, model_version) "
              '(increase(inferwatch_labels_total{${selector}, outcome="matched"}[${window}])) > 0\n'),
        description=("{{ $labels.model }} version {{ $labels.model_version }} (sidecar {{ $labels.instance }}) "
                     "made {{ printf \"%.0f\" $value }} predictions in the last ${window} and no label was "
                     "matched to any of them (inferwatch_labels_total, outcome matched); threshold: no match in "
                     "${window}, for ${for}. Performance figures are frozen and performance alerts blind."),
    ),
    AlertRule(
        "InferwatchShadowDisagreement",
        summary="A shadow challenger disagrees with the champion model more than agreed.",
        expr=('sum by (${by}) (rate(inferwatch_shadow_comparisons_total{${selector}, outcome="disagree"}[${window}]))\n'
              "/ on (${by})\n"
              "sum by (${by}) "
              '(rate(inferwatch_shadow_comparisons_total{${selector}, outcome=~"agree|disagree"}[${window}]))\n'
              "> ${threshold}\n"
              "and on (${by})\n"
              "sum by (${by}) "
              '(increase(inferwatch_shadow_comparisons_total{${selector}, outcome=~"agree|disagree"}[${window}])) '
              ">= ${min_comparisons}\n"),
        description=("Challenger {{ $labels.challenger }} of {{ $labels.model }} version "
                     "{{ $labels.model_version }} (sidecar {{ $labels.instance }}) disagreed with the champion on "
                     "{{ $value | humanizePercentage }} of the requests compared over the last ${window}; "
                     "threshold: ${threshold:percent} with at least ${min_comparisons} comparisons, for ${for}. "
                     "Check before promoting it."),
        params=lambda t: {"by": "job, instance, model, model_version, challenger"},
    ),
    # A band's recent share against its configured expected share, or else against its share
    # over the baseline before; only outputs with enough predictions for a share to mean something.
    AlertRule(
        "InferwatchPredictionBandShift",
        summary="The share of a model's predictions in a business band has shifted.",
        expr=("label_replace(\n"
              "  abs(${recent} - on (model, output, band) group_left () ${expected}) > ${threshold}\n"
              "  and on (model, model_version, output)\n  ${counted} >= ${min_predictions}\n"
              ', "compared_with", "expected_share", "", "")\n'
              "or\n"
              "label_replace(\n"
              "  abs(${recent} - ${before}) > ${threshold}\n"
              "  unless on (model, output, band) ${expected}\n"
              "  and on (model, model_version, output)\n  ${counted} >= ${min_predictions}\n"
              ', "compared_with", "previous_${baseline}", "", "")\n'),
        description=("The share of band {{ $labels.band }} of output {{ $labels.output }} of {{ $labels.model }} "
                     "version {{ $labels.model_version }} over the last ${window} differs from "
                     "{{ if eq $labels.compared_with \"expected_share\" }}the configured expected share"
                     "{{ else }}its share over the ${baseline} before{{ end }} by "
                     "{{ $value | humanizePercentage }} (absolute); threshold: ${threshold:percent} with at least "
                     "${min_predictions} predictions in ${window}, for ${for}."),
        params=_band_records,
    ),
    AlertRule(
        "InferwatchUnreasonablePredictions",
        summary="A model gives unreasonable predictions.",
        expr=("model_output_rule:inferwatch_unreasonable_predictions:rate5m\n"
              "/ on (model, model_version) group_left ()\n"
              "(model:inferwatch_predictions:rate5m > 0)\n"
              "> ${threshold}\n"),
        description=("{{ $value | humanizePercentage }} of the predictions of {{ $labels.model }} version "
                     "{{ $labels.model_version }} broke the rule {{ $labels.rule }} on output "
                     "{{ $labels.output }} over the last 5m; threshold: ${threshold:percent} for ${for}."),
    ),
    *GENAI_ML,
))
