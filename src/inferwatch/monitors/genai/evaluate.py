"""Pure computation of the genai monitor: a ``GenAIRecord`` to the bounded label values and the
numbers its metrics observe. Nothing here keeps state or touches the text beyond the matchers."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from inferwatch.ingest.openai import GenAIRecord

# Finish reasons kept as label values (OpenAI's and vLLM's); anything else is "other", none sent "none".
FINISH_REASONS = frozenset({"stop", "length", "content_filter", "tool_calls", "function_call"})

# Bucket boundaries: the OpenTelemetry GenAI semantic conventions' advice for each metric.
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
# Not in the conventions: a 1-2-5 series from 1 to 5000 tokens a second.
TOKENS_PER_SECOND_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


def finish_reason_label(reason: str | None) -> str:
    if reason is None:
        return "none"
    return reason if reason in FINISH_REASONS else "other"


def time_per_output_token(first: float | None, last: float | None, output_tokens: int | None) -> float | None:
    """(last content chunk - first content chunk) / (output tokens - 1): OTel's time per output
    token, the tokens after the first. None without two tokens and both arrivals."""
    if first is None or last is None or output_tokens is None or output_tokens < 2 or last < first:
        return None
    return (last - first) / (output_tokens - 1)


def tokens_per_second(output_tokens: int | None, duration: float) -> float | None:
    """Output tokens over the whole request's duration (prefill included): what a client gets."""
    if not output_tokens or not duration > 0 or math.isinf(duration):
        return None
    return output_tokens / duration


@dataclass(frozen=True)
class Matcher:
    name: str
    pattern: re.Pattern[str]


def matched(matchers: tuple[Matcher, ...], text: str) -> list[str]:
    """Names of the matchers that find their pattern in a completion (each at most once)."""
    return [m.name for m in matchers if text and m.pattern.search(text)]


@dataclass
class Observation:
    """One record's contribution: every value already a bounded label or a number."""

    operation: str
    streamed: str
    error_type: str
    duration: float
    ttft: float | None = None
    tpot: float | None = None
    tokens_per_second: float | None = None
    tokens: list[tuple[str, str, int]] = field(default_factory=list)  # (token_type, source, count)
    finish_reasons: list[str] = field(default_factory=list)
    responded: bool = False
    matches: list[str] = field(default_factory=list)


def observe(record: GenAIRecord, matchers: tuple[Matcher, ...]) -> Observation:
    ok = record.error_type == ""
    obs = Observation(record.operation, "true" if record.streamed else "false", record.error_type,
                      record.duration_seconds)
    if record.streamed and ok and record.time_to_first_token is not None:
        obs.ttft = record.time_to_first_token
        obs.tpot = time_per_output_token(record.time_to_first_token, record.last_token, record.output_tokens)
    if record.input_tokens is not None:
        obs.tokens.append(("input", "usage", record.input_tokens))
    if record.output_tokens is not None and (record.responded or record.output_source == "usage"):
        obs.tokens.append(("output", record.output_source, record.output_tokens))
    if ok:
        obs.tokens_per_second = tokens_per_second(record.output_tokens, record.duration_seconds)
    if record.responded:
        obs.responded = True
        obs.finish_reasons = [finish_reason_label(r) for r in record.finish_reasons]
        obs.matches = matched(matchers, record.completion_text)
    return obs
