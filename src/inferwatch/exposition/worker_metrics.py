"""Request-path metrics of ``proxy.workers`` processes, added into the sidecar's own families.

A worker process has its own registry; ``MetricSnapshots`` lists the series that changed since
its last snapshot (cumulative values), and the sidecar's ``MetricMerger`` adds each change into the
same family of its own registry as a delta. Counters and histograms so equal a single process's
totals, whatever the number of workers; the gauges in ``SUMMED_GAUGES`` are the sum of the
workers' last values. prometheus_client has no public way to add to a histogram's buckets, so
both sides read and add to the children's value cells directly (as ``Metrics._forget_version``
reads ``_metrics``); ``tests/test_proxy_workers.py`` holds the totals equal to one process's.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from prometheus_client.metrics import MetricWrapperBase

# Gauges a worker sets that the sidecar sums over its workers; every other gauge a worker's
# registry holds (its own upstream_up, say) belongs to the sidecar alone.
SUMMED_GAUGES = frozenset(("inferwatch_requests_in_flight", "inferwatch_monitoring_bytes_in_flight",
                           "inferwatch_connections_open"))


def metric_families(*holders: Any) -> dict[str, MetricWrapperBase]:
    """The metric objects held as attributes of ``holders`` (a ``Metrics``, a ``ConnectionStats``), by name."""
    return {metric._name: metric for holder in holders for metric in vars(holder).values()
            if isinstance(metric, MetricWrapperBase)}


def _child_value(kind: str | None, child: Any) -> Any:
    if kind == "counter":
        return child._value.get()
    if kind == "histogram":  # raw (not cumulative) bucket counts and the sum
        return tuple(bucket.get() for bucket in child._buckets), child._sum.get()
    return next(iter(child._child_samples())).value  # a gauge, set_function or not


class MetricSnapshots:
    """The worker's side: the request-path series that changed since the last snapshot."""

    def __init__(self, families: dict[str, MetricWrapperBase]):
        self.families = [(name, metric) for name, metric in families.items()
                         if metric._type in ("counter", "histogram") or name in SUMMED_GAUGES]
        self.sent: dict[tuple[str, Any], Any] = {}

    def changed(self) -> list[tuple[str, Any, Any]]:
        out = []
        for name, metric in self.families:
            with metric._lock:
                children = list(metric._metrics.items())
            for labels, child in children:
                value = _child_value(metric._type, child)
                key = (name, labels)
                if self.sent.get(key) != value:
                    self.sent[key] = value
                    out.append((name, labels, value))
        return out


class MetricMerger:
    """The sidecar's side: each worker's snapshots added into the sidecar's own families."""

    def __init__(self, families: dict[str, MetricWrapperBase]):
        self.families = families
        self.last: dict[int, dict[tuple[str, tuple[str, ...]], Any]] = {}
        self.gauges: dict[tuple[str, tuple[str, ...]], dict[int, float]] = {}

    def apply(self, worker: int, entries: list[tuple[str, Any, Any]]) -> None:
        last = self.last.setdefault(worker, {})
        for name, labels, value in entries:
            metric = self.families.get(name)
            if metric is None:
                continue
            key = (name, labels)
            previous = last.get(key)
            last[key] = value
            child: Any = metric.labels(*labels)
            if metric._type == "counter":
                delta = value - (previous or 0.0)
                child.inc(delta if delta >= 0 else value)  # below the last: the worker's series restarted
            elif metric._type == "histogram":
                buckets, total = value
                before, total_before = previous if previous is not None else ((0.0,) * len(buckets), 0.0)
                restarted = any(b < a for a, b in zip(before, buckets))
                for bucket, now, then in zip(child._buckets, buckets, before):
                    bucket.inc(now if restarted else now - then)
                child._sum.inc(total if restarted else total - total_before)
            elif name in SUMMED_GAUGES:
                by_worker = self.gauges.get(key)
                if by_worker is None:
                    by_worker = self.gauges[key] = {}
                    child.set_function(partial(_summed, by_worker))
                by_worker[worker] = value

    def forget(self, worker: int) -> None:
        """A worker that is gone holds no connections or bytes; its counted totals stay."""
        self.last.pop(worker, None)
        for by_worker in self.gauges.values():
            by_worker.pop(worker, None)


def _summed(by_worker: dict[int, float]) -> float:
    return float(sum(tuple(by_worker.values())))
