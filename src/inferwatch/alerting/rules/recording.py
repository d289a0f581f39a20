"""Recording rules (``level:metric:operations``): what the alerts and dashboards read.

A record name an alert reads is built by a function here (``slo_error_ratio_record``,
``band_share_record``, ``band_increase_record``): one owner per name.
"""

from __future__ import annotations

from typing import Any

from prometheus_client.utils import floatToGoString

from ..promql import BY_MODEL, BY_OUTPUT, fleet_psi_rules, promql_number, rate, select, sum_rate
from ..thresholds import Thresholds
from .genai import genai_records

Rule = dict[str, Any]


def slo_error_ratio_record(window: str) -> str:
    return f"model:inferwatch_latency_slo_errors:ratio_rate{window}"


def band_share_record(window: str, offset: str = "") -> str:
    return f"model_output_band:inferwatch_prediction_band:ratio{window}" + (f"_offset{offset}" if offset else "")


def band_increase_record(window: str) -> str:
    return f"model_output:inferwatch_prediction_band:increase{window}"


def recording_groups(t: Thresholds) -> list[dict[str, Any]]:
    sel = t.selector
    le = floatToGoString(t.slo.latency_seconds)
    requests = "inferwatch_requests_total"
    server_errors = 'code=~"5.."'
    serving: list[Rule] = [
        {"record": "model:inferwatch_requests:rate5m", "expr": sum_rate(sel, requests, "5m")},
        {"record": "model:inferwatch_request_errors:ratio_rate5m",
         "expr": f"{sum_rate(sel, requests, '5m', server_errors)}\n/\n{sum_rate(sel, requests, '5m')}\n"},
        {"record": "model:inferwatch_upstream_errors:ratio_rate5m",
         "expr": f"{sum_rate(sel, 'inferwatch_upstream_errors_total', '5m')}\n/\n{sum_rate(sel, requests, '5m')}\n"},
        {"record": "model_le:inferwatch_request_duration_seconds_bucket:rate5m",
         "expr": sum_rate(sel, "inferwatch_request_duration_seconds_bucket", "5m", by=f"{BY_MODEL}, le")},
    ]
    buckets = "model_le:inferwatch_request_duration_seconds_bucket:rate5m"
    for quantile in ("0.5", "0.95", "0.99"):
        serving.append({"record": "model:inferwatch_request_duration_seconds:histogram_quantile5m",
                        "expr": f"histogram_quantile({quantile}, {buckets})", "labels": {"quantile": quantile}})

    # Bad events of the latency SLO: requests slower than slo.latency_seconds, and requests the
    # model server never answered (502/504, in inferwatch_upstream_errors_total but not in the
    # histogram). `or` adds the two counters' series, which never share a label set.
    slo = []
    for window in t.windows():
        fast = sum_rate(sel, "inferwatch_request_duration_seconds_bucket", window, f'le="{le}"')
        total = (f"sum by ({BY_MODEL}) (\n"
                 f"    {rate(sel, 'inferwatch_request_duration_seconds_count', window)}\n"
                 f"    or\n"
                 f"    {rate(sel, 'inferwatch_upstream_errors_total', window)}\n"
                 f"  )")
        slo.append({"record": slo_error_ratio_record(window), "expr": f"1 - (\n  {fast}\n  /\n  {total}\n)\n"})

    events = [
        {"record": "model:inferwatch_events:rate5m", "expr": sum_rate(sel, "inferwatch_events_total", "5m")},
        {"record": "model_reason:inferwatch_events_dropped:rate5m",
         "expr": sum_rate(sel, "inferwatch_events_dropped_total", "5m", by=f"{BY_MODEL}, reason")},
        {"record": "model_reason:inferwatch_payload_errors:rate5m",
         "expr": sum_rate(sel, "inferwatch_payload_errors_total", "5m", by=f"{BY_MODEL}, reason")},
    ]
    # Rules of a group run in order: each fleet record uses the ones before it.
    fleet = [{"record": record, "expr": expr}
             for record, expr in fleet_psi_rules(t.fleet_drift.range, selector=sel).items()]
    return [
        {"name": "inferwatch-serving.rules", "rules": serving},
        {"name": "inferwatch-slo.rules", "rules": slo},
        {"name": "inferwatch-events.rules", "rules": events},
        {"name": "inferwatch-fleet-drift.rules", "rules": fleet},
        {"name": "inferwatch-outputs.rules", "rules": output_records(t)},
        {"name": "inferwatch-cost.rules", "rules": cost_records(t)},
        {"name": "inferwatch-genai.rules", "rules": genai_records(t)},
    ]


def output_records(t: Thresholds) -> list[Rule]:
    """Band shares over the recent window and over the baseline before it; unreasonable-output rates.

    A band's share is its predictions over all predictions of the output in the range; outputs
    without predictions in the range have no share (no division by zero).
    """
    shift = t.alerts.InferwatchPredictionBandShift
    window, baseline = shift.window, shift.baseline
    bands = select(t.selector, "inferwatch_prediction_band_total")

    def share(range_: str, offset: str = "") -> str:
        before = f" offset {offset}" if offset else ""
        counts = f"sum by ({BY_OUTPUT}, band) (increase({bands}[{range_}]{before}))"
        total = f"sum by ({BY_OUTPUT}) (increase({bands}[{range_}]{before}))"
        return f"{counts}\n/ ignoring (band) group_left ()\n({total} > 0)\n"

    return [
        {"record": band_increase_record(window),
         "expr": f"sum by ({BY_OUTPUT}) (increase({bands}[{window}]))"},
        {"record": band_share_record(window), "expr": share(window)},
        {"record": band_share_record(baseline, window), "expr": share(baseline, window)},
        {"record": "model:inferwatch_predictions:rate5m",
         "expr": sum_rate(t.selector, "inferwatch_predictions_total", "5m")},
        {"record": "model_output_rule:inferwatch_unreasonable_predictions:rate5m",
         "expr": sum_rate(t.selector, "inferwatch_unreasonable_predictions_total", "5m", by=f"{BY_OUTPUT}, rule")},
    ]


def cost_records(t: Thresholds) -> list[Rule]:
    """The estimated cost of inference, in currency units per second (a rate: x 3600 per hour).

    CPU: the model server's measured CPU use (cores busy, from inferwatch_model_process_cpu_seconds_total)
    times the price of a CPU-hour; GPU: each GPU's measured utilization times the price of a GPU-hour.
    An estimate of what the model uses, not a bill: idle reserved capacity, memory, network and a
    GPU shared with other processes (its whole utilization counts) are not told apart.
    """
    sel = t.selector
    cpu_price, gpu_price = (f"({promql_number(price)} / 3600)" for price in (t.cost.cpu_hour_price,
                                                                              t.cost.gpu_hour_price))
    rules: list[Rule] = []
    for window in ("5m", "1h"):
        cpu = sum_rate(sel, "inferwatch_model_process_cpu_seconds_total", window, by="model")
        gpu = f"sum by (model) (avg_over_time({select(sel, 'inferwatch_gpu_utilization_ratio')}[{window}]))"
        record = f"model_resource:inferwatch_inference_cost:rate{window}"
        rules += [
            {"record": record, "expr": f"{cpu} * {cpu_price}", "labels": {"resource": "cpu"}},
            {"record": record, "expr": f"{gpu} * {gpu_price}", "labels": {"resource": "gpu"}},
            {"record": f"model:inferwatch_inference_cost:rate{window}", "expr": f"sum by (model) ({record})"},
        ]
    predictions = sum_rate(sel, "inferwatch_predictions_total", "5m", by="model")
    rules.append({"record": "model:inferwatch_inference_cost_per_prediction:ratio_rate5m",
                  "expr": f"model:inferwatch_inference_cost:rate5m\n/ on (model)\n({predictions} > 0)\n"})
    return rules
