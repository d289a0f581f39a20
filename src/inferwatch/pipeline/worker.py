"""The bounded queue between the serving path and monitoring, and the worker that drains it.

The request path only calls ``submit_*`` (a non-blocking put); decoding, windowing and the
prediction log happen here, in one background thread. A full queue drops the item and counts
it; an exception while processing an item is counted and the worker goes on.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from inferwatch.ingest.codecs import decode_exchange
from inferwatch.ingest.grpc_v2 import decode_grpc_exchange, is_grpc
from inferwatch.config import ModelConfig, PayloadConfig, QueueConfig, SegmentsConfig
from inferwatch.ingest.events import EventBatch, PayloadError
from inferwatch.ingest.ground_truth import LabelBatch
from inferwatch.ingest.sse import is_event_stream, split_events
from inferwatch.exposition.metrics import Metrics
from .genai import GenAIDecoding
from .handoff import HandoffQueue, QueueClosed
from .items import CELL_BYTES, LABEL_BYTES, Exchange, PushedBatch, exchange_bytes
from .predlog import PredictionLogger
from .segments import SegmentLabeler
from .window import WindowStore

log = logging.getLogger(__name__)


_STOP = object()


@dataclass
class DrainResult:
    """What a shutdown could not process: acknowledged events and labels, counted and logged."""

    events_lost: int = 0
    labels_lost: int = 0
    unmonitored: int = 0  # of events_lost: proxied exchanges answered after the queue closed
    seconds: float = 0.0

# After a drain timed out, how long the worker may take to finish the item in hand.
ABANDON_GRACE_SECONDS = 2.0


class Pipeline:
    """The monitoring queue and its worker thread, configured by the sections it reads: the model
    (name, and the version labels are counted under), the queue's bounds, how payloads are decoded
    and which features are segments."""

    def __init__(self, model: ModelConfig, metrics: Metrics, windows: WindowStore,
                 predlog: PredictionLogger | None = None, *, queue: QueueConfig, payload: PayloadConfig,
                 segments: SegmentsConfig):
        self.metrics = metrics
        self.windows = windows
        self.predlog = predlog
        self.payload_config = payload
        self.queue = HandoffQueue(queue.max_items, queue.max_bytes)
        self.model = model.name
        self.default_version = model.version
        self._thread: threading.Thread | None = None
        self._abandon = threading.Event()
        self._left_over: list = []  # taken from the queue but not processed when a drain timed out
        self.unmonitored_after_close = 0  # proxied exchanges answered after the queue closed
        self.processed = 0
        self._counters: dict[tuple[str, str], tuple] = {}
        # Callables (version, batch) run after each window append, in order (the drift engine's bin
        # counters, the input guard); they never raise, and may annotate rows for the prediction log.
        self.observers: list[Callable[[str, EventBatch], None]] = []
        # Segment labels of every windowed batch, in batch.segments before the observers run.
        self.segments = SegmentLabeler.from_config(segments, metrics.label_values_capped)
        # The performance engine's join, when enabled.
        self.label_sink: Callable[[LabelBatch], Any] | None = None
        # Shadow comparisons, when configured.
        self.shadow_sink: Callable[[Exchange, EventBatch | None], None] | None = None
        # OpenAI-compatible exchanges (genai.enabled): decoded by their own codec, records to the genai monitor.
        self.genai: GenAIDecoding | None = None

    @property
    def running(self) -> bool:
        """The worker thread was started and not stopped."""
        return self._thread is not None

    # --- the request side: never blocks, never raises --------------------------------------

    def _count_drop(self, version: str, reason: str, n: int = 1) -> None:
        try:
            self.metrics.events_dropped.labels(self.model, version, reason).inc(n)
        except Exception:  # noqa: BLE001 - counting must not break serving
            pass

    @property
    def accepting(self) -> bool:
        """False once shutdown began: push endpoints answer 503 instead of acknowledging."""
        return not self.queue.closed

    def submit_exchange(self, exchange: Exchange) -> bool:
        try:
            self.queue.put_nowait(exchange, exchange_bytes(exchange))
            return True
        except QueueClosed:
            # The client has its answer: an exchange refused by a closed queue was served but not
            # monitored, so the shutdown reports it among what it lost.
            self.unmonitored_after_close += 1
            self._count_drop(exchange.model_version, "shutdown")
            return False
        except queue.Full:
            # Rows are unknown before decoding: a dropped exchange counts as one event.
            self._count_drop(exchange.model_version, "queue_full")
            return False

    def submit_shadow(self, exchange: Exchange) -> bool:
        """A challenger's answer; when the queue is full the caller counts it (not as a champion event)."""
        try:
            self.queue.put_nowait(exchange, exchange_bytes(exchange))
            return True
        except (queue.Full, QueueClosed):
            return False

    def submit_labels(self, batch: LabelBatch) -> bool:
        """Labels go through the same queue as predictions, so a label sent right after its
        prediction is joined after that prediction was stored."""
        try:
            self.queue.put_nowait(batch, LABEL_BYTES * batch.n)
            return True
        except (queue.Full, QueueClosed):
            self.metrics.labels_received.labels(
                self.model, self.metrics.version_label(self.default_version, self.default_version),
                "dropped").inc(batch.n)
            return False

    def forget_version(self, version: str) -> None:
        """A version lost its label slot (``LabelCap.on_reclaim``): its cached counters go with its series."""
        self._counters = {key: c for key, c in self._counters.items() if key[0] != version}

    def submit_batch(self, model_version: str, batch: EventBatch) -> bool:
        try:
            self.queue.put_nowait(PushedBatch(model_version, batch),
                                  CELL_BYTES * batch.n * (1 + len(batch.features) + len(batch.outputs)))
            return True
        except QueueClosed:
            self._count_drop(model_version, "shutdown", batch.n)
            return False
        except queue.Full:
            self._count_drop(model_version, "queue_full", batch.n)
            return False

    # --- the worker -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="inferwatch-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the worker once it reached what is queued now; the queue stays open (tests use
        this to hold items in it). A shutdown uses ``shutdown()``."""
        if self._thread is None:
            return
        self.queue.put_always(_STOP)
        self._thread.join(timeout)
        self._thread = None

    def shutdown(self, timeout: float) -> DrainResult:
        """Close the queue, process everything it holds for at most ``timeout`` seconds, stop the
        worker. What could not be processed in time was acknowledged to its sender: it is counted
        (``inferwatch_events_dropped_total{reason="drain_timeout"}``) and returned."""
        start = time.monotonic()
        self.queue.close()
        left: list = []
        thread = self._thread
        if thread is not None:
            self.queue.put_always(_STOP)  # after everything acknowledged: the worker reaches it last
            thread.join(max(timeout, 0.0))
            if thread.is_alive():
                self._abandon.set()  # the worker returns after the item in hand
                thread.join(ABANDON_GRACE_SECONDS)
            left = self._left_over
            self._left_over = []
            self._thread = None
        if thread is not None and thread.is_alive():  # stuck in an item: what it holds is lost too
            left.extend([None] * self.queue._in_hand)
        result = self._count_lost(left + self.queue.discard())
        result.unmonitored = self.unmonitored_after_close  # already counted as dropped (shutdown)
        result.events_lost += result.unmonitored
        result.seconds = time.monotonic() - start
        return result

    def _count_lost(self, items: list) -> DrainResult:
        result = DrainResult()
        version = self.metrics.version_label(self.default_version, self.default_version)
        for item in items:
            if isinstance(item, PushedBatch):
                result.events_lost += item.batch.n
                self._count_drop(item.model_version, "drain_timeout", item.batch.n)
            elif isinstance(item, LabelBatch):
                result.labels_lost += item.n
                self.metrics.labels_received.labels(self.model, version, "dropped").inc(item.n)
            elif isinstance(item, Exchange) and not item.challenger:
                result.events_lost += 1  # rows are unknown before decoding: one exchange, one event
                self._count_drop(item.model_version, "drain_timeout")
            elif item is None:  # in the hands of a stuck worker
                result.events_lost += 1
                self._count_drop(version, "drain_timeout")
        return result

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is processed (tests and benchmarks)."""
        deadline = time.monotonic() + timeout
        while self.queue.unfinished_tasks and time.monotonic() < deadline:
            self.queue.wake()
            time.sleep(0.002)
        return not self.queue.unfinished_tasks

    def _run(self) -> None:
        while not self._abandon.is_set():
            if not self.process_all(self.queue.take_all()):
                return

    def process_all(self, items: list) -> bool:
        """Process what the worker took from the queue, in order; False at the stop marker.

        Consecutive proxied exchanges of one model version with the same columns are windowed
        as one batch: the window, the guard and the output histograms cost a fixed ~100 us per
        call whatever its rows, which at a few rows per request held the GIL as long as the
        proxy's own loop did (py-spy, wrk at 16 connections). Anything else (labels, pushed
        batches, shadow answers) first ingests what is pending, so labels still follow their
        predictions. An item is marked done only once ingested, so ``drain()`` stays exact.
        """
        pending: list[tuple[str, EventBatch, Exchange]] = []
        try:
            for index, item in enumerate(items):
                if item is _STOP:
                    return False
                if self._abandon.is_set():  # the shutdown's drain timed out: the rest is counted lost
                    self._left_over = [i for i in items[index:] if i is not _STOP]
                    for _ in self._left_over:
                        self.queue.done()
                    return False
                if isinstance(item, Exchange) and not item.challenger:
                    ready = self._guarded(self._prepare, item)
                    if ready is None:
                        self.queue.done()
                        continue
                    if pending and not _mergeable(pending[-1], ready):
                        self._ingest_pending(pending)
                    pending.append(ready)
                    continue
                self._ingest_pending(pending)
                self._guarded(self.process, item)
                self.queue.done()
            return True
        finally:
            self._ingest_pending(pending)

    def _guarded(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception:  # noqa: BLE001 - fail open: count and go on
            log.exception("monitoring failed on a queued item")
            self.metrics.monitoring_errors.labels(self.model, "worker").inc()
            return None

    def _ingest_pending(self, pending: list[tuple[str, EventBatch, Exchange]]) -> None:
        if not pending:
            return
        version, first, exchange = pending[0]
        batch = first if len(pending) == 1 else merge_batches([b for _, b, _ in pending])
        self._guarded(self._ingest, version, batch, source=exchange.source,
                      exchanges=[(e, b.n) for _, b, e in pending])
        for _ in pending:
            self.queue.done()
        self.processed += len(pending)
        pending.clear()

    def process(self, item: Exchange | PushedBatch | LabelBatch) -> None:
        if isinstance(item, LabelBatch):
            if self.label_sink is not None:
                self.label_sink(item)
            self.processed += 1
            return
        if isinstance(item, PushedBatch):
            self._ingest(item.model_version, item.batch, source=item.batch.source or "push")
            self.processed += 1
            return
        if item.challenger:
            self._shadow(item)
            self.processed += 1
            return
        ready = self._prepare(item)
        if ready is not None:
            version, batch, _ = ready
            self._ingest(version, batch, source=item.source, exchanges=[(item, batch.n)])
            self.processed += 1

    def _prepare(self, item: Exchange) -> tuple[str, EventBatch, Exchange] | None:
        """Decode an exchange and count its payload problems: (version, batch, exchange) to
        window, or None when there is nothing to window (counted as processed)."""
        version = item.model_version
        answered = 200 <= item.status < 300
        try:
            batch = self._decode(item, answered)
        except PayloadError as exc:
            self.metrics.payload_errors.labels(self.model, version, exc.reason).inc()
            if answered:
                self._count_drop(version, "undecodable")
            self.processed += 1
            return None
        for reason in batch.errors:
            self.metrics.payload_errors.labels(self.model, version, reason).inc()
        if not answered or batch.n == 0:  # no prediction was made: the payload was checked, nothing is windowed
            self.processed += 1
            return None
        if batch.model_version:  # a v2 response names its version: trust it, capped
            version = self.metrics.version_label(batch.model_version, version)
        batch.ensure_ids(item.prediction_id)
        batch.ensure_timestamps(item.timestamp)
        return version, batch, item

    def _label_segments(self, version: str, batch: EventBatch) -> None:
        """Segment label values of a batch (``batch.segments``) and their event counts."""
        for feature in self.segments.features:
            values = batch.features.get(feature)
            labels = self.segments.labels(feature, values if values is not None else [None] * batch.n)
            batch.segments[feature] = labels
            distinct, counts = np.unique(labels.astype(str), return_counts=True)
            for value, count in zip(distinct.tolist(), counts.tolist()):
                self.metrics.segment_events.labels(self.model, version, feature, value).inc(count)

    def _decode(self, item: Exchange, answered: bool) -> EventBatch:
        payload = self.payload_config
        if is_grpc(item.request_content_type):  # ModelInfer messages from the gRPC port
            return decode_grpc_exchange(item.request_body, item.response_body if answered else None,
                                        feature_names=payload.feature_names or None,
                                        max_bytes=payload.max_decode_bytes)
        if self.genai is not None and not item.challenger:
            genai = self.genai.decode(item, answered)
            if genai is not None:
                return genai
        response = item.response_body if answered else None
        if response is not None and is_event_stream(item.response_content_type):
            # Server-sent events, split here (never on the request path); no codec reads them
            # as one JSON body, so the request's features are decoded alone.
            item.response_events = split_events(response)
            response = None
        elif response is not None and item.response_truncated:
            self.metrics.payload_errors.labels(self.model, item.model_version, "response_truncated").inc()
            response = None
        return decode_exchange(
            item.request_body,
            response,
            request_content_type=item.request_content_type,
            response_content_type=item.response_content_type,
            request_content_encoding=item.request_content_encoding,
            response_content_encoding=item.response_content_encoding,
            codec=payload.codec,
            feature_names=payload.feature_names or None,
            input_path=payload.input_path,
            output_path=payload.output_path,
            max_bytes=payload.max_decode_bytes,
        )

    def _shadow(self, item: Exchange) -> None:
        """A challenger's answer: decoded with the champion's codec and handed to the comparator
        (None when it cannot be compared); never windowed as the champion's."""
        if self.shadow_sink is None:
            return
        batch = None
        if 200 <= item.status < 300:
            try:
                batch = self._decode(item, True)
            except PayloadError:
                batch = None
            if batch is not None:
                batch.ensure_ids(item.prediction_id)
                batch.ensure_timestamps(item.timestamp)
        self.shadow_sink(item, batch)

    def _ingest(self, version: str, batch: EventBatch, *, source: str,
                exchanges: list[tuple[Exchange, int]] | None = None) -> None:
        """Window a batch and run the observers; ``exchanges``: the proxied exchanges it holds, in
        order, with their rows (several when the worker merged consecutive ones)."""
        if batch.n == 0:
            return
        version = self.metrics.model_versions.current(version)  # its slot may be gone since it was queued
        window = self.windows.get(version)
        before_f, before_o = window.features.columns_capped, window.outputs.columns_capped
        window.append(batch)
        if self.segments.enabled:
            self._label_segments(version, batch)
        for observe in self.observers:  # e.g. the drift engine's per-bin counters; they never raise
            observe(version, batch)
        m = self.metrics
        counters = self._counters.get((version, source))
        if counters is None:  # labelled children cached: versions are capped, sources are few
            counters = (m.events.labels(self.model, version, source), m.predictions.labels(self.model, version))
            self._counters[(version, source)] = counters
        counters[0].inc(batch.n)
        counters[1].inc(batch.n)
        capped = (window.features.columns_capped - before_f, window.outputs.columns_capped - before_o)
        if capped[0]:
            m.label_values_capped.labels("feature").inc(capped[0])
        if capped[1]:
            m.label_values_capped.labels("output").inc(capped[1])
        if self.predlog is not None and self.predlog.enabled:
            # one call per exchange: each has its own endpoint, status and latency
            for part, rows in _parts(batch, exchanges):
                self.predlog.log_batch(
                    model=self.model,
                    model_version=version,
                    endpoint=part.endpoint if part else source,
                    status=part.status if part else None,
                    latency_seconds=part.latency_seconds if part else None,
                    prediction_ids=rows.prediction_ids,
                    timestamps=rows.timestamps,
                    features=rows.features,
                    outputs=rows.outputs,
                    row_extra=rows.annotations,
                )


def _parts(batch: EventBatch, exchanges: list[tuple[Exchange, int]] | None):
    """(exchange, its rows) for each exchange a batch holds: the batch itself when it holds one
    (or none: pushed events), else a slice of it per exchange."""
    ids = batch.ensure_ids()
    stamps = batch.ensure_timestamps()
    if not exchanges or len(exchanges) == 1:
        yield (exchanges[0][0] if exchanges else None), batch
        return
    start = 0
    for part, n in exchanges:
        stop = start + n
        yield part, EventBatch(
            n,
            features={k: v[start:stop] for k, v in batch.features.items()},
            outputs={k: v[start:stop] for k, v in batch.outputs.items()},
            prediction_ids=ids[start:stop],
            timestamps=stamps[start:stop],
            annotations={i - start: a for i, a in batch.annotations.items() if start <= i < stop}
            if batch.annotations else None,
        )
        start = stop


def _mergeable(a: tuple[str, EventBatch, Exchange], b: tuple[str, EventBatch, Exchange]) -> bool:
    """Two decoded exchanges can be windowed as one batch: same version, source and columns."""
    return (a[0] == b[0] and a[2].source == b[2].source
            and list(a[1].features) == list(b[1].features) and list(a[1].outputs) == list(b[1].outputs))


def merge_batches(batches: list[EventBatch]) -> EventBatch:
    """Rows of batches with the same columns, in order, as one batch. Columns stay lists, or
    numpy arrays when every part's column is an array of one dtype."""
    def concat(parts: list) -> Any:
        if all(isinstance(p, np.ndarray) for p in parts) and len({p.dtype for p in parts}) == 1:
            return np.concatenate(parts)
        out: list = []
        for p in parts:
            out.extend(p.tolist() if isinstance(p, np.ndarray) else p)
        return out

    first = batches[0]
    notes: dict[int, dict[str, Any]] = {}  # e.g. the genai text kept for the prediction log
    offset = 0
    for b in batches:
        notes.update({offset + i: a for i, a in (b.annotations or {}).items()})
        offset += b.n
    return EventBatch(
        sum(b.n for b in batches),
        features={name: concat([b.features[name] for b in batches]) for name in first.features},
        outputs={name: concat([b.outputs[name] for b in batches]) for name in first.outputs},
        prediction_ids=[i for b in batches for i in b.ensure_ids()],
        timestamps=[t for b in batches for t in b.ensure_timestamps()],
        source=first.source,
        output_kinds=first.output_kinds,
        annotations=notes or None,
    )
