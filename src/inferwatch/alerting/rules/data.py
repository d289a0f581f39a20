"""The data team's alerts: drift of the inputs, undecodable payloads, the drift engine's
freshness, and the input guard (data quality, schema changes, outlier spikes)."""

from __future__ import annotations

from .spec import AlertGroup, AlertRule

DATA = AlertGroup("inferwatch-data.alerts", "data", (
    # The sidecar decides per feature (its method, threshold and multiple-testing correction:
    # inferwatch_feature_drifted); the alert also wants an effect worth acting on, and shows it.
    AlertRule(
        "InferwatchFeatureDrift",
        summary="An input feature of a model has drifted from its reference.",
        expr=('inferwatch_feature_drift_score{${selector}, method="${method}"} >= ${min_score}\n'
              "and on (job, instance, model, model_version, feature)\n"
              "inferwatch_feature_drifted{${selector}} == 1\n"),
        description=("Feature {{ $labels.feature }} of {{ $labels.model }} version {{ $labels.model_version }} "
                     "(sidecar {{ $labels.instance }}) has drifted from its reference: {{ $labels.method }} = "
                     "{{ printf \"%.3g\" $value }}; threshold: the sidecar's drift decision "
                     "(inferwatch_feature_drifted = 1) and ${method} >= ${min_score}, for ${for}."),
    ),
    AlertRule(
        "InferwatchDatasetDrift",
        summary="The inputs of a model as a whole have drifted from its reference.",
        expr=("inferwatch_drifted_features_ratio{${selector}}\n"
              "and on (job, instance, model, model_version)\n"
              "inferwatch_dataset_drifted{${selector}} == 1\n"),
        description=("{{ $value | humanizePercentage }} of the features of {{ $labels.model }} version "
                     "{{ $labels.model_version }} (sidecar {{ $labels.instance }}) have drifted from the "
                     "reference, and the sidecar decided that the dataset drifted; threshold: "
                     "inferwatch_dataset_drifted = 1 for ${for}. Predictions are made on a population "
                     "the model was not trained on."),
    ),
    # How the features move together (issue 19): the sidecar decides each multivariate score
    # against the threshold its reference profile resampled for a window of this size; the
    # value shown is the score itself (inferwatch_correlation_drift_score has no method label).
    AlertRule(
        "InferwatchMultivariateDrift",
        summary="How the inputs of a model vary together has changed from its reference.",
        expr=("(\n"
              '  label_replace(inferwatch_correlation_drift_score{${selector}}, "method", "correlation", "", "")\n'
              "  or\n"
              '  inferwatch_multivariate_drift_score{${selector}, method="pca_reconstruction"}\n'
              ")\n"
              "and on (job, instance, model, model_version, method)\n"
              "inferwatch_multivariate_drifted{${selector}} == 1\n"),
        description=("The inputs of {{ $labels.model }} version {{ $labels.model_version }} (sidecar "
                     "{{ $labels.instance }}) no longer vary together as in the reference: {{ $labels.method }} "
                     "= {{ printf \"%.3g\" $value }}; threshold: the sidecar's multivariate decision "
                     "(inferwatch_multivariate_drifted = 1: the score is above the threshold the reference "
                     "profile resampled for a window of this size), for ${for}. Each feature may look unchanged "
                     "on its own while their relations, which the model relies on, have moved."),
    ),
    # Bodies that could not be decoded, as a share of the requests (proxy mode); a push-only
    # sidecar has no requests, so there it is the share of events and failed bodies.
    AlertRule(
        "InferwatchPayloadErrors",
        summary="Request or event payloads of a model cannot be decoded.",
        expr=("sum by (model, model_version) (model_reason:inferwatch_payload_errors:rate5m)\n"
              "/ on (model, model_version)\n"
              "(\n"
              "  model:inferwatch_requests:rate5m\n"
              "  or\n"
              "  sum by (model, model_version) (model:inferwatch_events:rate5m or "
              "model_reason:inferwatch_payload_errors:rate5m)\n"
              ")\n"
              "> ${threshold}\n"),
        description=("{{ $value | humanizePercentage }} of the payloads of {{ $labels.model }} version "
                     "{{ $labels.model_version }} could not be decoded over the last 5m "
                     "(inferwatch_payload_errors_total by reason); threshold: ${threshold:percent} for ${for}. "
                     "Requests were still forwarded, but their rows are missing from drift and quality figures."),
    ),
    AlertRule(
        "InferwatchDriftEvaluationStale",
        summary="The drift of a model has not been evaluated recently.",
        expr="time() - inferwatch_drift_last_evaluation_timestamp_seconds{${selector}} > ${threshold_seconds}",
        description=("The sidecar {{ $labels.instance }} last evaluated the drift of {{ $labels.model }} "
                     "version {{ $labels.model_version }} {{ $value | humanizeDuration }} ago; threshold: "
                     "${threshold_seconds:duration} for ${for}. Drift figures and alerts of this model are out "
                     "of date."),
    ),
    # The input guard (monitors/guard): data quality, schema changes, outlier spikes.
    AlertRule(
        "InferwatchDataQualityIssues",
        summary="Many input events of a model fail data quality checks.",
        expr=("sum by (model, model_version) "
              '(rate(inferwatch_data_quality_events_total{${selector}, result="failed"}[5m]))\n'
              "/ on (model, model_version)\n"
              "sum by (model, model_version) (rate(inferwatch_data_quality_events_total{${selector}}[5m]))\n"
              "> ${threshold}\n"),
        description=("{{ $value | humanizePercentage }} of the events of {{ $labels.model }} version "
                     "{{ $labels.model_version }} had at least one data quality issue over the last 5m "
                     "(missing, NaN, infinite, wrong type, out of range, unseen category, unknown feature or "
                     "duplicate: inferwatch_data_quality_issues_total says which feature and issue); threshold: "
                     "${threshold:percent} for ${for}. The model is predicting on bad inputs."),
    ),
    AlertRule(
        "InferwatchSchemaChange",
        summary="The input schema of a model has changed (a feature went missing or a new one appeared).",
        expr="inferwatch_schema_changed{${selector}} == 1",
        description=("Feature {{ $labels.feature }} of {{ $labels.model }} version {{ $labels.model_version }} "
                     "(sidecar {{ $labels.instance }}) is {{ if eq $labels.change \"missing\" }}missing from"
                     "{{ else }}new (not in the reference schema) in{{ end }} nearly all recent events "
                     "(inferwatch_schema_changed{change=\"{{ $labels.change }}\"} = {{ $value }}); threshold: "
                     "the sidecar's guard.schema_change_share of its last guard.schema_window_events events, for "
                     "${for}. A renamed, dropped or added column upstream; /v1/status on the sidecar shows the "
                     "schema before and after."),
    ),
    AlertRule(
        "InferwatchOutlierSpike",
        summary="A wave of anomalous input events: possible adversarial traffic, route to a human.",
        expr=("sum by (model, model_version) (rate(inferwatch_outliers_total{${selector}}[5m]))\n"
              "/ on (model, model_version)\n"
              "sum by (model, model_version) (rate(inferwatch_outlier_score_count{${selector}}[5m]))\n"
              "> ${threshold}\n"),
        description=("{{ $value | humanizePercentage }} of the events of {{ $labels.model }} version "
                     "{{ $labels.model_version }} were outliers against the reference over the last 5m "
                     "(the outlier threshold is calibrated for guard.outlier_fpr, 0.1% by default); threshold: "
                     "${threshold:percent} for ${for}. Possible adversarial traffic (probing, evasion, a "
                     "scraper) or an extreme real event: route to a human, and do not act on or retrain with "
                     "these events automatically. The quarantine log names the features that made each event "
                     "odd."),
    ),
))
