"""The pipeline's own state at scrape time: window sizes, queue depth, pending CloudEvents and the
prediction log's line counts. Nothing is computed here; every number is read from the stage that
owns it, through its public attributes.
"""

from __future__ import annotations

import time
from typing import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from inferwatch.ingest.cloudevents import CloudEventPairer

from .predlog import PredictionLogger
from .window import WindowStore
from .handoff import HandoffQueue


class StateCollector:
    """Gauges read at scrape time: window sizes, queue depth, pending CloudEvents, log counts."""

    def __init__(self, model: str, windows: WindowStore, queue: HandoffQueue, pairer: CloudEventPairer,
                 predlog: PredictionLogger):
        self.model = model
        self.windows = windows
        self.queue = queue
        self.pairer = pairer
        self.predlog = predlog

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        window_events = GaugeMetricFamily(
            "inferwatch_window_events", "Events currently in the window (within its age bound).",
            labels=["model", "model_version"])
        window_bytes = GaugeMetricFamily(
            "inferwatch_window_memory_bytes", "Memory held by the window's columns.", labels=["model", "model_version"])
        now = time.time()
        for version, window in self.windows.windows().items():
            window_events.add_metric([self.model, version], window.live_events(now))
            window_bytes.add_metric([self.model, version], window.memory_bytes())
        yield window_events
        yield window_bytes
        queue = self.queue
        yield GaugeMetricFamily("inferwatch_queue_items", "Items waiting in the monitoring queue.",
                                value=queue.qsize())
        yield GaugeMetricFamily("inferwatch_queue_capacity_items", "Capacity of the monitoring queue.",
                                value=queue.maxsize)
        yield GaugeMetricFamily("inferwatch_queue_bytes", "Bytes of bodies and batches waiting in the monitoring queue.",
                                value=queue.queued_bytes)
        yield GaugeMetricFamily("inferwatch_queue_capacity_bytes", "Byte capacity of the monitoring queue.",
                                value=queue.max_bytes)
        pairer = self.pairer
        yield GaugeMetricFamily("inferwatch_cloudevents_pending",
                                "CloudEvent halves waiting for their request or response.",
                                value=pairer.pending)
        unpaired = CounterMetricFamily(
            "inferwatch_cloudevents_unpaired", "CloudEvent halves discarded without their pair, by reason.",
            labels=["reason"])
        unpaired.add_metric(["expired"], pairer.expired)
        unpaired.add_metric(["full"], pairer.evicted_full)
        yield unpaired
        received = CounterMetricFamily(
            "inferwatch_cloudevents", "CloudEvents received from payload loggers, by outcome.", labels=["outcome"])
        received.add_metric(["paired"], pairer.paired)
        received.add_metric(["duplicate"], pairer.duplicates)
        received.add_metric(["ignored"], pairer.ignored)
        yield received
        if self.predlog.enabled:
            lines = CounterMetricFamily("inferwatch_prediction_log_lines", "Lines written to the prediction log.")
            lines.add_metric([], self.predlog.written)
            yield lines
            errors = CounterMetricFamily("inferwatch_prediction_log_errors",
                                         "Prediction log lines lost to write errors (the events were still monitored).")
            errors.add_metric([], self.predlog.errors)
            yield errors


__all__ = ["StateCollector"]
