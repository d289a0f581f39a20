"""The operations team's alerts: the sidecar and model server are up, errors, latency, dropped
events, the inference cost, and the watchdog."""

from __future__ import annotations

import json

from ..promql import model_version_of_instance, promql_number
from ..thresholds import Thresholds
from .genai import GENAI_OPS
from .recording import slo_error_ratio_record
from .spec import AlertGroup, AlertRule, Params, burn_rate_params


def cost_budget_expr(daily_budget: float, model_budgets: dict[str, float]) -> str:
    """The budget alert's expression: each model's daily cost over its own budget (``model_budgets``),
    else ``daily_budget``. The per-model budgets are a vector built in PromQL, one series per model."""
    cost = "model:inferwatch_inference_cost:rate1h * 86400"
    if not model_budgets:
        return f"{cost} > {promql_number(daily_budget)}"
    own = "\n  or ".join(f'label_replace(vector({promql_number(v)}), "model", {json.dumps(m)}, "", "")'
                         for m, v in model_budgets.items())
    return (f"{cost}\n> on (model)\n(\n  {own}\n  or on (model)\n"
            f"  0 * model:inferwatch_inference_cost:rate1h + {promql_number(daily_budget)}\n)\n")


def _cost_budget(t: Thresholds) -> Params:
    a, currency = t.alerts.InferwatchInferenceCostOverBudget, t.cost.currency
    if a.model_budgets:
        own = ", ".join(f"{m} {promql_number(v)}" for m, v in a.model_budgets.items())
        budget = f"the model's daily budget ({own}; else {promql_number(a.daily_budget)} {currency})"
    else:
        budget = f"{promql_number(a.daily_budget)} {currency} per day"
    return {"currency": currency, "budget": budget, "budget_expr": cost_budget_expr(a.daily_budget, a.model_budgets)}


def _burn_rates(t: Thresholds) -> list[Params]:
    return burn_rate_params(t, t.slo.objective, slo_error_ratio_record)


def _versions(t: Thresholds) -> Params:
    return {"versions": model_version_of_instance(t.selector)}


OPS = AlertGroup("inferwatch-ops.alerts", "ops", (
    AlertRule(
        "InferwatchModelServerDown",
        summary="The model server behind an inferwatch sidecar does not answer its health probe.",
        expr=("(\n  inferwatch_upstream_up{${selector}} == 0\n)\n"
              "* on (job, instance, model) group_left (model_version)\n  ${versions}\n"
              "or on (job, instance, model)\n(\n  inferwatch_upstream_up{${selector}} == 0\n)\n"),
        description=("The model server of {{ $labels.model }} version {{ $labels.model_version }} behind "
                     "{{ $labels.instance }} has failed its health probe for ${for} "
                     "(inferwatch_upstream_up = {{ $value }}; threshold: 0 for ${for})."),
        params=_versions,
        # A sidecar that is scraped but reports no probe at all watches no model server.
        if_absent_expr=("or on (job, instance)\n"
                        "(\n  up{${selector}} == 1 unless on (job, instance) inferwatch_upstream_up{${selector}}\n)\n"
                        "* on (job, instance) group_left (model, model_version)\n  ${versions}\n"),
        if_absent_description=("{{ if eq $value 0.0 }}${description}{{ else }}The inferwatch sidecar "
                               "{{ $labels.instance }} of {{ $labels.model }} version {{ $labels.model_version }} "
                               "has reported no inferwatch_upstream_up for ${for} (threshold: absent for ${for}): "
                               "nothing watches its model server. Its proxy is disabled, or its health probe does "
                               "not run.{{ end }}"),
    ),
    AlertRule(
        "InferwatchSidecarDown",
        summary="Prometheus cannot scrape an inferwatch sidecar.",
        expr=("(\n  up{${selector}} == 0\n)\n* on (job, instance) group_left (model, model_version)\n"
              "  ${versions}\nor on (job, instance)\n(\n  up{${selector}} == 0\n)\n"),
        description=("The inferwatch sidecar {{ $labels.instance }} (job {{ $labels.job }}) of {{ $labels.model }} "
                     "version {{ $labels.model_version }} has failed its scrapes for ${for} (up = {{ $value }}; "
                     "threshold: 0 for ${for}): this model is not monitored."),
        params=_versions,
        if_absent_expr="or\nabsent(up{${selector}})\n",
        if_absent_description=("{{ if $labels.instance }}${description}{{ else }}Prometheus has had no scrape "
                               "target matching {${selector}} for ${for} (absent = {{ $value }}): no model is "
                               "monitored.{{ end }}"),
    ),
    AlertRule(
        "InferwatchHighErrorRate",
        summary="Too many requests to a model fail with a server error.",
        expr="model:inferwatch_request_errors:ratio_rate5m > ${threshold}",
        description=("{{ $value | humanizePercentage }} of requests to {{ $labels.model }} version "
                     "{{ $labels.model_version }} were answered 5xx over the last 5m (model server errors and "
                     "502/504 for requests it never answered); threshold: ${threshold:percent} for ${for}."),
    ),
    AlertRule(
        "InferwatchLatencySLOBurnRate",
        summary="A model burns its latency SLO error budget too fast.",
        expr="${long_errors} > (${factor} * ${budget})\nand\n${short_errors} > (${factor} * ${budget})\n",
        description=("{{ $value | humanizePercentage }} of requests to {{ $labels.model }} version "
                     "{{ $labels.model_version }} took longer than ${latency:seconds} (or got no answer) over the "
                     "last ${long_window}, and over ${short_window} too; threshold: ${limit:percent} (${factor}x "
                     "the ${budget:percent} error budget of the ${objective:percent} under ${latency:seconds} "
                     "objective)."),
        params=lambda t: {"budget": 1 - t.slo.objective, "objective": t.slo.objective,
                          "latency": t.slo.latency_seconds},
        each=_burn_rates,
    ),
    AlertRule(
        "InferwatchHighLatencyP99",
        summary="A model's 99th percentile latency is high.",
        expr='model:inferwatch_request_duration_seconds:histogram_quantile5m{quantile="0.99"} > ${threshold_seconds}',
        description=("The p99 latency of {{ $labels.model }} version {{ $labels.model_version }} has been "
                     "{{ $value | humanizeDuration }} over the last 5m; threshold: ${threshold_seconds:seconds} "
                     "for ${for}."),
    ),
    AlertRule(
        "InferwatchEventsDropped",
        summary="The sidecar drops prediction events before they reach the window.",
        expr=("sum by (model, model_version) "
              '(model_reason:inferwatch_events_dropped:rate5m{reason=~"${reasons_matched}"})\n'
              "/\n"
              "sum by (model, model_version) (model:inferwatch_events:rate5m or "
              "model_reason:inferwatch_events_dropped:rate5m)\n"
              "> ${threshold}\n"),
        description=("{{ $value | humanizePercentage }} of the prediction events of {{ $labels.model }} version "
                     "{{ $labels.model_version }} were dropped (${reasons_shown}) over the last 5m; threshold: "
                     "${threshold:percent} for ${for}. Drift and quality figures see only part of the traffic."),
        params=lambda t: {"reasons_matched": "|".join(t.alerts.InferwatchEventsDropped.reasons),
                          "reasons_shown": "/".join(t.alerts.InferwatchEventsDropped.reasons)},
    ),
    AlertRule(
        "InferwatchProxyWorkerRestarts",
        summary="The sidecar's proxy worker processes keep exiting and being started again.",
        expr="increase(inferwatch_proxy_worker_restarts_total{${selector}}[15m]) > ${threshold}\n",
        description=("{{ $value | printf \"%.0f\" }} proxy worker processes of the sidecar for {{ $labels.model }} "
                     "behind {{ $labels.instance }} exited and were started again over the last 15m; threshold: "
                     "${threshold} for ${for}. Requests on a worker's connections fail when it exits; its last "
                     "half second of counts is lost."),
    ),
    AlertRule(
        "InferwatchInferenceCostOverBudget",
        summary="The estimated inference cost of a model is over its daily budget.",
        expr="${budget_expr}",
        description=("At the rate of the last hour, serving {{ $labels.model }} costs an estimated "
                     "{{ $value | printf \"%.2f\" }} ${currency} per day (CPU and GPU use times the configured "
                     "prices); threshold: ${budget} for ${for}. An estimate from measured use, not a bill."),
        params=_cost_budget,
    ),
    AlertRule(
        "InferwatchWatchdog",
        summary="Always firing: proves that the alerting pipeline works end to end.",
        expr="vector(1)",
        description=("This alert always fires (value {{ $value }}; threshold: none). Route it to a "
                     "dead man's switch; when it stops arriving, Prometheus or Alertmanager is broken."),
        severity="none",
    ),
    *GENAI_OPS,
))
