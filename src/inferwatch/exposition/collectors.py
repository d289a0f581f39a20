"""The custom collectors behind one wrapper, so that none of them can take /metrics down.

A custom collector runs inside the scrape: one that raises would fail the whole exposition,
and Prometheus would see the sidecar as down over a bug in, say, the drift collector. As in
node_exporter, ``CollectorSet`` is the one collector registered in the registry; it runs each
named collector it holds, and one that raises loses only its own families: the failure is
logged (at most once per ``LOG_INTERVAL_SECONDS`` per collector) and counted in
``inferwatch_monitoring_errors_total{stage="collector"}``, and every other collector's families
are still served.

For every collector it holds it exports ``inferwatch_collector_success{collector}`` and
``inferwatch_collector_duration_seconds{collector}``. Success is 1 when the collector did not
raise and, for one that can half-succeed, when it read everything it was configured to read:
such a collector sets ``last_success`` to False during ``collect()`` (the model-process
collector does when a process is not readable).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterator, Protocol

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily, Metric

log = logging.getLogger(__name__)

# A collector that fails on every scrape would log on every scrape: once per this many seconds.
LOG_INTERVAL_SECONDS = 300.0


class Collector(Protocol):
    def collect(self) -> Iterator[Metric]: ...


def _status_families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
    return (
        GaugeMetricFamily("inferwatch_collector_success",
                          "1 if the collector read everything it was configured to read, else 0.",
                          labels=["collector"]),
        GaugeMetricFamily("inferwatch_collector_duration_seconds",
                          "Time the collector took at the last scrape, in seconds.", labels=["collector"]),
    )


class CollectorSet:
    """Named custom collectors, each run in isolation at scrape time (see the module docstring).

    ``errors``: the counter child a failed collector increments
    (``Metrics.monitoring_errors.labels(model, "collector")``); None counts nothing (tests).
    """

    def __init__(self, errors: Counter | None = None, *, clock: Callable[[], float] = time.monotonic):
        self.errors = errors
        self._clock = clock
        self._collectors: dict[str, Collector] = {}
        self._lock = threading.Lock()  # the admin server scrapes from several threads
        self._next_log: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def add(self, name: str, collector: Collector) -> None:
        """Hold ``collector`` under ``name``, the value of its ``collector`` label."""
        if name in self._collectors:
            raise ValueError(f"a collector named {name!r} is already registered")
        self._collectors = {**self._collectors, name: collector}

    def names(self) -> list[str]:
        return list(self._collectors)

    def describe(self) -> list[Metric]:
        """The held collectors' own descriptions (so the registry checks their names when this
        set is registered) and the two status families."""
        described: list[Metric] = []
        for name, collector in self._collectors.items():
            describe = getattr(collector, "describe", None)
            if describe is None:
                continue
            try:
                described.extend(describe())
            except Exception:  # noqa: BLE001 - a description is only a registration-time check
                log.warning("collector %s failed to describe its metrics", name, exc_info=True)
        return [*described, *_status_families()]

    def collect(self) -> Iterator[Metric]:
        success, duration = _status_families()
        for name, collector in self._collectors.items():
            started = time.perf_counter()
            try:
                families = list(collector.collect())  # a generator raises as it is consumed
                ok = getattr(collector, "last_success", True) is not False
            except Exception:  # noqa: BLE001 - one collector must not fail the scrape
                self._failed(name)
                families, ok = [], False
            yield from families
            success.add_metric([name], 1.0 if ok else 0.0)
            duration.add_metric([name], time.perf_counter() - started)
        yield success
        yield duration

    def _failed(self, name: str) -> None:
        if self.errors is not None:
            self.errors.inc()
        now = self._clock()
        with self._lock:
            if now < self._next_log.get(name, float("-inf")):
                self._unlogged[name] = self._unlogged.get(name, 0) + 1
                return
            self._next_log[name] = now + LOG_INTERVAL_SECONDS
            unlogged = self._unlogged.pop(name, 0)
        log.exception("collector %s failed; its metrics are left out of this scrape%s", name,
                      f" ({unlogged} more failures since the last report)" if unlogged else "")


__all__ = ["CollectorSet", "Collector", "LOG_INTERVAL_SECONDS"]
