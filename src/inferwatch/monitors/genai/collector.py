"""The genai metrics, published at scrape time from the monitor's counts (nothing computed here).

Names follow the OpenTelemetry GenAI semantic conventions where one exists (docs/metrics.md): the
families are always yielded, empty until an OpenAI-compatible exchange was seen."""

from __future__ import annotations

from typing import Iterator

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from .monitor import GenAIMonitor

_MV = ["model", "model_version"]
_OP = [*_MV, "operation", "request_model"]
# key in the monitor -> (family name, help, labels after `model`)
_HISTOGRAMS = {
    "duration": ("inferwatch_genai_server_request_duration_seconds",
                 "Duration of OpenAI-compatible requests through the proxy, to the answer's last byte "
                 "(OTel gen_ai.server.request.duration).", [*_OP, "streamed"]),
    "ttft": ("inferwatch_genai_server_time_to_first_token_seconds",
             "Streamed answers: from the proxy's start to the first chunk carrying generated content "
             "(OTel gen_ai.server.time_to_first_token).", _OP),
    "tpot": ("inferwatch_genai_server_time_per_output_token_seconds",
             "Streamed answers: (last content chunk - first content chunk) / (output tokens - 1) "
             "(OTel gen_ai.server.time_per_output_token).", _OP),
    "tokens": ("inferwatch_genai_client_token_usage_tokens",
               "Tokens per request by type (input, output) and source (usage: the server's usage object; counted: "
               "content chunks of a stream without usage) (OTel gen_ai.client.token.usage).",
               [*_OP, "token_type", "source"]),
    "tps": ("inferwatch_genai_output_tokens_per_second",
            "Output tokens per second of request duration (prefill included), successful requests.", _OP),
}
_COUNTERS = {
    "requests": ("inferwatch_genai_requests", "OpenAI-compatible requests seen by the proxy, by operation, "
                 "requested model, streamed and error type (\"\" = success).", [*_OP, "streamed", "error_type"]),
    "tokens": ("inferwatch_genai_tokens", "Tokens by type and source, as in inferwatch_genai_client_token_usage_tokens.",
               [*_OP, "token_type", "source"]),
    "finish": ("inferwatch_genai_finish_reasons", "Choices by finish reason (none: the answer ended without one).",
               [*_MV, "request_model", "finish_reason"]),
    "matches": ("inferwatch_genai_output_matches", "Responses whose completion matched a genai.output_matchers "
                "pattern (at most once per response and matcher).", [*_MV, "matcher"]),
    "responses": ("inferwatch_genai_responses", "Chat and completion answers decoded (the denominator of match and "
                  "truncation rates).", [*_MV, "request_model"]),
}


class GenAICollector:
    def __init__(self, monitor: GenAIMonitor):
        self.monitor = monitor

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        model = self.monitor.model
        histograms, counters = self.monitor.snapshot()
        for key, (name, doc, labels) in _HISTOGRAMS.items():
            family = HistogramMetricFamily(name, doc, labels=labels)
            for series, counts in sorted(histograms[key].items()):
                cumulative, buckets = 0, []
                for bound, count in zip([*map(floatToGoString, counts.bounds), "+Inf"], counts.counts):
                    cumulative += count
                    buckets.append((bound, cumulative))
                family.add_metric([model, *series], buckets, counts.sum)
            yield family
        for key, (name, doc, labels) in _COUNTERS.items():
            counter = CounterMetricFamily(name, doc, labels=labels)
            for series, value in sorted(counters[key].items()):
                counter.add_metric([model, *series], value)
            yield counter
