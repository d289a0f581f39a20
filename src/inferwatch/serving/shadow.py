"""Shadow challengers: sampled proxied requests mirrored to other model servers and compared.

Two halves, on the two sides of the monitoring queue:

- ``ShadowMirror`` runs on the proxy's event loop. After the champion's response is built,
  ``offer`` samples the request (``shadow.sample_rate``) and puts a copy on each challenger's
  bounded ``asyncio.Queue`` with ``put_nowait`` — a full queue (``shadow.max_queue`` copies, or
  ``shadow.max_queue_bytes`` of request bodies) skips the copy and counts it, so the champion's
  response is never delayed or failed by a challenger, and a burst of large payloads cannot
  fill memory. ``shadow.concurrency``
  tasks per challenger send the copies with their own pooled session and timeout, count status
  codes and round trips, and queue the answer for the worker as an ``Exchange`` with
  ``challenger`` set.
- ``ShadowComparator`` runs in the worker, which decodes the answer with the champion's codec.
  The champion's answer to the same request is already in the performance engine's join store
  (it was queued first), so each row is compared there: class agreement (regression: within
  ``shadow.agreement_tolerance``) and the absolute score difference; the challenger's answer is
  attached to the champion's pending entry, so when the label arrives it scores both
  (``inferwatch_shadow_performance{challenger}`` beside ``inferwatch_model_performance``). Shadow
  answers are written to the prediction log under the champion's prediction id with a
  ``challenger`` field.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import aiohttp
from yarl import URL

from inferwatch.config import ChallengerConfig, ModelConfig, ShadowConfig
from inferwatch.ingest.events import EventBatch
from inferwatch.exposition.metrics import Metrics
from inferwatch.ingest.values import as_number
from inferwatch.pipeline.items import Exchange
from inferwatch.pipeline.predlog import PredictionLogger

log = logging.getLogger(__name__)

SHADOW_HEADER = "X-Inferwatch-Shadow"


@dataclass
class MirroredRequest:
    method: str
    path_qs: str
    headers: Any
    body: bytes
    prediction_id: str
    model_version: str
    endpoint: str
    request_content_type: str | None
    request_content_encoding: str | None


class ShadowMirror:
    """The proxy side (event loop thread only), configured by the ``shadow`` section."""

    def __init__(self, model: ModelConfig, config: ShadowConfig, metrics: Metrics, submit: Callable[[Exchange], bool],
                 rng: Callable[[], float] = random.random):
        self.config = config
        self.metrics = metrics
        self.submit = submit
        self.rng = rng
        self.model = model.name
        self.version = metrics.version_label(model.version, model.version)  # the champion's
        self.session: aiohttp.ClientSession | None = None
        self.queues: dict[str, asyncio.Queue] = {}
        self._tasks: list[asyncio.Task] = []
        self._dropped = {ch.name: metrics.shadow_dropped.labels(self.model, self.version, ch.name, "queue_full")
                         for ch in config.challengers}
        self._dropped_bytes = {ch.name: metrics.shadow_dropped.labels(self.model, self.version, ch.name,
                                                                      "queue_bytes")
                               for ch in config.challengers}
        self.queued_bytes = {ch.name: 0 for ch in config.challengers}  # bodies waiting, per challenger

    async def startup(self) -> None:
        s = self.config
        connector = aiohttp.TCPConnector(limit=s.concurrency * len(s.challengers), ttl_dns_cache=300)
        self.session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=s.timeout_seconds),
            auto_decompress=False, skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
            cookie_jar=aiohttp.DummyCookieJar())   # no cookie of one copy's answer rides on the next copy
        loop = asyncio.get_running_loop()
        for ch in s.challengers:
            q: asyncio.Queue = asyncio.Queue(maxsize=s.max_queue)
            self.queues[ch.name] = q
            self.metrics.shadow_queue.labels(self.model, self.version, ch.name).set_function(q.qsize)
            self._tasks += [loop.create_task(self._worker(ch, q)) for _ in range(s.concurrency)]

    async def cleanup(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.session is not None:
            await self.session.close()

    def offer(self, request: MirroredRequest) -> None:
        """Queue a copy for each challenger when sampled (the request path: never blocks)."""
        rate = self.config.sample_rate
        if rate <= 0.0 or (rate < 1.0 and self.rng() >= rate):
            return
        size = len(request.body)
        for name, q in self.queues.items():
            if self.queued_bytes[name] + size > self.config.max_queue_bytes:
                self._dropped_bytes[name].inc()
                continue
            try:
                q.put_nowait(request)
            except asyncio.QueueFull:
                self._dropped[name].inc()
            else:
                self.queued_bytes[name] += size

    async def send(self, ch: ChallengerConfig, req: MirroredRequest) -> None:
        url = URL(ch.url.rstrip("/") + req.path_qs, encoded=True)  # the target as the client sent it
        headers = dict(req.headers)
        headers[SHADOW_HEADER] = ch.name
        start = time.perf_counter()
        status, body, response_type, response_encoding = 0, None, None, None
        if self.session is None:
            raise RuntimeError("the shadow mirror has not started: no client session yet")
        try:
            async with self.session.request(req.method, url, headers=headers, data=req.body or None,
                                            allow_redirects=False) as resp:
                body = await resp.read()
                status = resp.status
                response_type = resp.headers.get("Content-Type")
                response_encoding = resp.headers.get("Content-Encoding")
            code = str(status)
        except asyncio.TimeoutError:
            code = "timeout"
        except aiohttp.ClientConnectorError:
            code = "connection"
        except aiohttp.ClientError:
            code = "error"
        latency = time.perf_counter() - start
        m = self.metrics
        m.shadow_requests.labels(self.model, req.model_version, ch.name, code).inc()
        m.shadow_duration.labels(self.model, req.model_version, ch.name).observe(latency)
        if status:
            exchange = Exchange(
                model_version=req.model_version, endpoint=req.endpoint, status=status,
                prediction_id=req.prediction_id, timestamp=time.time(), latency_seconds=latency,
                request_body=req.body, response_body=body, request_content_type=req.request_content_type,
                response_content_type=response_type, request_content_encoding=req.request_content_encoding,
                response_content_encoding=response_encoding, source="shadow", challenger=ch.name)
            if not self.submit(exchange):
                m.shadow_dropped.labels(self.model, req.model_version, ch.name, "monitoring_queue_full").inc()

    async def _worker(self, ch: ChallengerConfig, q: asyncio.Queue) -> None:
        while True:
            req = await q.get()
            self.queued_bytes[ch.name] -= len(req.body)
            try:
                await self.send(ch, req)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a challenger must never take the proxy down
                log.exception("shadow request to %s failed", ch.name)
                self.metrics.monitoring_errors.labels(self.model, "shadow").inc()


class _Agreement:
    """Agreement over the last ``size`` comparisons, as a running count."""

    def __init__(self, size: int):
        self.recent: deque[bool] = deque(maxlen=size)
        self.agreed = 0

    def add(self, agree: bool) -> float:
        if len(self.recent) == self.recent.maxlen and self.recent[0]:
            self.agreed -= 1
        self.recent.append(agree)
        self.agreed += agree
        return self.agreed / len(self.recent)


class ShadowComparator:
    """The worker side: compares a decoded challenger answer with the champion's (``Pipeline.shadow_sink``)."""

    def __init__(self, model: str, config: ShadowConfig, metrics: Metrics, engine,
                 predlog: PredictionLogger | None = None):
        self.config = config
        self.metrics = metrics
        self.engine = engine  # the PerformanceEngine: its join store holds the champion's answers
        self.predlog = predlog
        self.model = model
        self.tolerance = config.agreement_tolerance
        self._agreement = {ch.name: _Agreement(config.agreement_window) for ch in config.challengers}

    def compare(self, champion: tuple[Any, float], challenger: tuple[Any, float]) -> tuple[bool, float]:
        """(agree, |score or value difference|, NaN when there is none) of two answers."""
        (a, sa), (b, sb) = champion, challenger
        if self.engine.task_of(a, b) == "classification":
            (ca, sa), (cb, sb) = self.engine.class_of(a, sa), self.engine.class_of(b, sb)
            return ca == cb and ca >= 0, abs(sa - sb)
        va, vb = as_number(a), as_number(b)
        diff = abs(va - vb)
        return diff <= self.tolerance, diff

    def __call__(self, item: Exchange, batch: EventBatch | None) -> None:
        name, m, version = item.challenger, self.metrics, item.model_version
        comparisons = m.shadow_comparisons
        if batch is None or batch.n == 0:
            comparisons.labels(self.model, version, name, "undecodable").inc()
            return
        predicted, scores = self.engine.extract(batch.outputs, batch.n)
        agreement = self._agreement.setdefault(name, _Agreement(self.config.agreement_window))
        outcomes = {"agree": 0, "disagree": 0, "unmatched": 0}
        differences: list[float] = []
        ratio = None
        for pid, pred, score in zip(batch.ensure_ids(), predicted, scores):
            champion = self.engine.store.attach_challenger(pid, name, pred, score)
            if champion is None:
                outcomes["unmatched"] += 1
                continue
            agree, diff = self.compare((champion.predicted, champion.score), (pred, score))
            outcomes["agree" if agree else "disagree"] += 1
            ratio = agreement.add(agree)
            if not math.isnan(diff):
                differences.append(diff)
        for outcome, count in outcomes.items():
            if count:
                comparisons.labels(self.model, version, name, outcome).inc(count)
        if ratio is not None:
            m.shadow_agreement.labels(self.model, version, name).set(ratio)
        histogram = m.shadow_difference.labels(self.model, version, name)
        for diff in differences:
            histogram.observe(diff)
        if self.predlog is not None and self.predlog.enabled:
            self.predlog.log_batch(
                model=self.model, model_version=item.model_version, endpoint=item.endpoint, status=item.status,
                latency_seconds=item.latency_seconds, prediction_ids=batch.ensure_ids(),
                timestamps=batch.ensure_timestamps(), features={}, outputs=batch.outputs,
                extra={"challenger": name})


__all__ = ["ShadowMirror", "ShadowComparator", "MirroredRequest", "SHADOW_HEADER"]
