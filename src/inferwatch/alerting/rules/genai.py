"""Generative models behind the sidecar (OpenAI-compatible routes): their recording rules, and
their alerts, which join the teams' groups (``ops``: the time-to-first-token SLO and errors;
``ml``: truncations and output matches such as refusals).

Drift of the prompts and completions needs no alert of its own: the genai monitor feeds them to the
windows as features (``prompt_tokens``, ``messages``, ``system_prompt`` ...) and outputs
(``completion_tokens``, ``finish_reason`` ...), so ``InferwatchFeatureDrift`` (data) and
``InferwatchPredictionDrift`` (ml) fire on them with the feature or output named.
"""

from __future__ import annotations

from typing import Any

from prometheus_client.utils import floatToGoString

from ..promql import BY_MODEL, sum_rate
from ..thresholds import Thresholds
from .spec import AlertRule, Params, burn_rate_params

REQUESTS = "inferwatch_genai_requests_total"
TIME_TO_FIRST_TOKEN = "inferwatch_genai_server_time_to_first_token_seconds"
FINISH_REASONS = "inferwatch_genai_finish_reasons_total"
OUTPUT_MATCHES = "inferwatch_genai_output_matches_total"
RESPONSES = "inferwatch_genai_responses_total"
TRUNCATED = 'finish_reason="length"'

ERRORS_RECORD = "model:inferwatch_genai_request_errors:ratio_rate5m"
TRUNCATIONS_RECORD = "model:inferwatch_genai_truncations:ratio_rate5m"
FINISHED_RECORD = "model:inferwatch_genai_finish_reasons:increase5m"
MATCHES_RECORD = "model_matcher:inferwatch_genai_output_matches:ratio_rate5m"
RESPONSES_RECORD = "model:inferwatch_genai_responses:increase5m"


def ttft_slo_errors_record(window: str) -> str:
    return f"model:inferwatch_genai_time_to_first_token_slo_errors:ratio_rate{window}"


def burn_windows(t: Thresholds) -> list[str]:
    """The windows the burn-rate alerts read (``slo.burn_rate_alerts``), shortest first."""
    return [w for w in t.windows() if any(w in (b.long_window, b.short_window) for b in t.slo.burn_rate_alerts)]


def error_types_matcher(t: Thresholds) -> str:
    """``error_type`` of a failed request that counts: not "" (success), not an ignored type."""
    ignored = t.alerts.InferwatchGenerativeErrorRate.ignored_error_types
    return f'error_type!~"{"|".join(["", *ignored])}"' if ignored else 'error_type!=""'


def genai_records(t: Thresholds) -> list[dict[str, Any]]:
    sel = t.selector
    le = floatToGoString(t.genai_slo.time_to_first_token_seconds)
    rules: list[dict[str, Any]] = [
        {"record": "model:inferwatch_genai_requests:rate5m", "expr": sum_rate(sel, REQUESTS, "5m")},
        {"record": ERRORS_RECORD,
         "expr": f"{sum_rate(sel, REQUESTS, '5m', error_types_matcher(t))}\n/\n{sum_rate(sel, REQUESTS, '5m')}\n"},
    ]
    # Bad events of the TTFT SLO: streamed answers whose first token came later than the objective's
    # bound (a stream that broke before its first token has no TTFT: the error rate counts it).
    for window in burn_windows(t):
        fast = sum_rate(sel, f"{TIME_TO_FIRST_TOKEN}_bucket", window, f'le="{le}"')
        total = sum_rate(sel, f"{TIME_TO_FIRST_TOKEN}_count", window)
        rules.append({"record": ttft_slo_errors_record(window), "expr": f"1 - (\n  {fast}\n  /\n  {total}\n)\n"})
    finished = f"sum by ({BY_MODEL}) (increase({FINISH_REASONS}{{{sel}}}[5m]))"
    rules += [
        {"record": TRUNCATIONS_RECORD,
         "expr": f"{sum_rate(sel, FINISH_REASONS, '5m', TRUNCATED)}\n/\n"
                 f"{sum_rate(sel, FINISH_REASONS, '5m')}\n"},
        {"record": FINISHED_RECORD, "expr": finished},
        {"record": MATCHES_RECORD,
         "expr": f"{sum_rate(sel, OUTPUT_MATCHES, '5m', by=f'{BY_MODEL}, matcher')}\n"
                 f"/ ignoring (matcher) group_left ()\n({sum_rate(sel, RESPONSES, '5m')} > 0)\n"},
        {"record": RESPONSES_RECORD, "expr": f"sum by ({BY_MODEL}) (increase({RESPONSES}{{{sel}}}[5m]))"},
    ]
    return rules


def _ttft_burn_rates(t: Thresholds) -> list[Params]:
    """The latency SLO's burn rates, against the TTFT objective's budget."""
    return burn_rate_params(t, t.genai_slo.objective, ttft_slo_errors_record)


GENAI_OPS = (
    AlertRule(
        "InferwatchTimeToFirstTokenSLOBurnRate",
        summary="A generative model burns its time-to-first-token SLO error budget too fast.",
        expr="${long_errors} > (${factor} * ${budget})\nand\n${short_errors} > (${factor} * ${budget})\n",
        description=("{{ $value | humanizePercentage }} of the streamed answers of {{ $labels.model }} version "
                     "{{ $labels.model_version }} sent their first token later than ${ttft:seconds} over the last "
                     "${long_window}, and over ${short_window} too; threshold: ${limit:percent} (${factor}x the "
                     "${budget:percent} error budget of the ${objective:percent} under ${ttft:seconds} objective)."),
        params=lambda t: {"budget": 1 - t.genai_slo.objective, "objective": t.genai_slo.objective,
                          "ttft": t.genai_slo.time_to_first_token_seconds},
        each=_ttft_burn_rates,
    ),
    AlertRule(
        "InferwatchGenerativeErrorRate",
        summary="Too many requests to a generative model fail.",
        expr=f"{ERRORS_RECORD} > ${{threshold}}",
        description=("{{ $value | humanizePercentage }} of the OpenAI-compatible requests to {{ $labels.model }} "
                     "version {{ $labels.model_version }} failed over the last 5m (server errors, timeouts and "
                     "streams broken before their end; inferwatch_genai_requests_total by error_type says which; "
                     "${ignored} not counted); threshold: ${threshold:percent} for ${for}."),
        params=lambda t: {"ignored": ", ".join(t.alerts.InferwatchGenerativeErrorRate.ignored_error_types)
                          or "every error type"},
    ),
)

GENAI_ML = (
    AlertRule(
        "InferwatchGenerativeTruncationSpike",
        summary="Many answers of a generative model are cut at their token limit.",
        expr=(f"{TRUNCATIONS_RECORD} > ${{threshold}}\nand on (model, model_version)\n"
              f"{FINISHED_RECORD} >= ${{min_responses}}\n"),
        description=("{{ $value | humanizePercentage }} of the answers of {{ $labels.model }} version "
                     "{{ $labels.model_version }} over the last 5m ended with finish_reason length (cut at "
                     "max_tokens); threshold: ${threshold:percent} with at least ${min_responses} answers, for "
                     "${for}. Users get unfinished answers: longer prompts or answers, a changed system prompt, "
                     "or a max_tokens set too low."),
    ),
    AlertRule(
        "InferwatchGenerativeOutputMatchSpike",
        summary="Many answers of a generative model match an output matcher (refusals, a leaked pattern).",
        expr=(f"{MATCHES_RECORD} > ${{threshold}}\nand on (model, model_version)\n"
              f"{RESPONSES_RECORD} >= ${{min_responses}}\n"),
        description=("{{ $value | humanizePercentage }} of the answers of {{ $labels.model }} version "
                     "{{ $labels.model_version }} over the last 5m matched the output matcher "
                     "{{ $labels.matcher }} (genai.output_matchers); threshold: ${threshold:percent} with at least "
                     "${min_responses} answers, for ${for}."),
    ),
)
