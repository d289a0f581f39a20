"""The genai monitor's state: counters and histograms by label set, added to by the worker
(``observe``) and read by the collector at scrape time (``snapshot``). One lock; no thread."""

from __future__ import annotations

import logging
import re
import threading
from bisect import bisect_left
from typing import Callable

from prometheus_client import Counter

from inferwatch.config import GenAIConfig
from inferwatch.exposition.metrics import LabelCap
from inferwatch.ingest.openai import GenAIRecord
from .evaluate import (DURATION_BUCKETS, TOKEN_BUCKETS, TOKENS_PER_SECOND_BUCKETS, TPOT_BUCKETS, TTFT_BUCKETS,
                       Matcher, observe)

log = logging.getLogger(__name__)


class BucketCounts:
    """One histogram series: counts per bucket (not cumulative), their sum and count."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # le: a value equal to a bound is in its bucket
        self.sum += value

    def copy(self) -> "BucketCounts":
        other = BucketCounts(self.bounds)
        other.counts, other.sum = list(self.counts), self.sum
        return other


# Histogram name -> its buckets; counter names. Series keys are label tuples (model_version first).
HISTOGRAMS = {"duration": DURATION_BUCKETS, "ttft": TTFT_BUCKETS, "tpot": TPOT_BUCKETS, "tokens": TOKEN_BUCKETS,
              "tps": TOKENS_PER_SECOND_BUCKETS}
COUNTERS = ("requests", "tokens", "finish", "matches", "responses")


class GenAIMonitor:
    def __init__(self, model: str, config: GenAIConfig, *, overflow: Counter | None = None,
                 on_error: Callable[[], None] | None = None):
        self.model = model
        self.matchers = tuple(Matcher(m.name, re.compile(m.pattern)) for m in config.output_matchers)
        self.request_models = LabelCap("request_model", config.max_request_models, overflow)
        self.on_error = on_error
        self._lock = threading.Lock()
        self.histograms: dict[str, dict[tuple[str, ...], BucketCounts]] = {name: {} for name in HISTOGRAMS}
        self.counters: dict[str, dict[tuple[str, ...], float]] = {name: {} for name in COUNTERS}

    def observe(self, version: str, record: GenAIRecord) -> None:
        """The worker's sink for every OpenAI-compatible exchange; never raises."""
        try:
            self._observe(version, record)
        except Exception:  # noqa: BLE001 - monitoring fails open: counted, the worker goes on
            log.exception("genai monitor failed on a record")
            if self.on_error is not None:
                self.on_error()

    def _observe(self, version: str, record: GenAIRecord) -> None:
        obs = observe(record, self.matchers)
        model = self.request_models(record.request_model)
        op = (version, obs.operation, model)
        with self._lock:
            self._add("requests", (*op, obs.streamed, obs.error_type))
            self._hist("duration", (*op, obs.streamed), obs.duration)
            if obs.ttft is not None:
                self._hist("ttft", op, obs.ttft)
            if obs.tpot is not None:
                self._hist("tpot", op, obs.tpot)
            if obs.tokens_per_second is not None:
                self._hist("tps", op, obs.tokens_per_second)
            for token_type, source, count in obs.tokens:
                self._hist("tokens", (*op, token_type, source), count)
                self._add("tokens", (*op, token_type, source), count)
            if obs.responded:
                self._add("responses", (version, model))
                for reason in obs.finish_reasons:
                    self._add("finish", (version, model, reason))
                for name in obs.matches:
                    self._add("matches", (version, name))

    def _add(self, counter: str, key: tuple[str, ...], amount: float = 1.0) -> None:
        series = self.counters[counter]
        series[key] = series.get(key, 0.0) + amount

    def _hist(self, name: str, key: tuple[str, ...], value: float) -> None:
        series = self.histograms[name].get(key)
        if series is None:
            series = self.histograms[name][key] = BucketCounts(HISTOGRAMS[name])
        series.observe(value)

    def forget_version(self, version: str) -> None:
        """A version lost its label slot: its series go with it."""
        with self._lock:
            for name, hist in self.histograms.items():
                self.histograms[name] = {k: v for k, v in hist.items() if k[0] != version}
            for name, counts in self.counters.items():
                self.counters[name] = {k: v for k, v in counts.items() if k[0] != version}

    def snapshot(self) -> tuple[dict[str, dict[tuple[str, ...], BucketCounts]], dict[str, dict[tuple[str, ...], float]]]:
        with self._lock:
            return ({name: {k: v.copy() for k, v in series.items()} for name, series in self.histograms.items()},
                    {name: dict(series) for name, series in self.counters.items()})
