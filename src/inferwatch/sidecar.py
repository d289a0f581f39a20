"""Wires the parts together and runs them: the proxy on an asyncio loop thread, the admin
WSGI server on its own threads, the monitoring worker on one more. One process, so custom
collectors and process metrics work (client_python's multiprocess mode loses both).
"""

from __future__ import annotations

import asyncio
import logging
import platform
import signal
import threading
import time
from typing import Any

from aiohttp import web
from cheroot import wsgi
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from inferwatch import __version__
from inferwatch.serving.admin import cloudevent_exchange, create_admin_app
from inferwatch.ingest.cloudevents import CloudEventPairer
from inferwatch.config import Config
from inferwatch.exposition.metrics import Metrics
from inferwatch.monitors.outputs import OutputCollector, OutputMonitor
from inferwatch.pipeline.worker import Pipeline
from inferwatch.pipeline.predlog import PredictionLogger
from inferwatch.serving.proxy import Proxy
from inferwatch.monitors.resources import GPUCollector, ModelProcessCollector
from inferwatch.pipeline.window import WindowStore

log = logging.getLogger(__name__)


class StateCollector:
    """Gauges read at scrape time: window sizes, queue depth, pending CloudEvents, log counts."""

    def __init__(self, sidecar: "Sidecar"):
        self.sidecar = sidecar

    def describe(self):
        return []

    def collect(self):
        s = self.sidecar
        model = s.cfg.model.name
        window_events = GaugeMetricFamily(
            "inferwatch_window_events", "Events currently in the window (within its age bound).",
            labels=["model", "model_version"])
        window_bytes = GaugeMetricFamily(
            "inferwatch_window_memory_bytes", "Memory held by the window's columns.", labels=["model", "model_version"])
        now = time.time()
        for version, window in s.windows.windows().items():
            window_events.add_metric([model, version], window.live_events(now))
            window_bytes.add_metric([model, version], window.memory_bytes())
        yield window_events
        yield window_bytes
        queue = s.pipeline.queue
        yield GaugeMetricFamily("inferwatch_queue_items", "Items waiting in the monitoring queue.",
                                value=queue.qsize())
        yield GaugeMetricFamily("inferwatch_queue_capacity_items", "Capacity of the monitoring queue.",
                                value=queue.maxsize)
        yield GaugeMetricFamily("inferwatch_queue_bytes", "Bytes of bodies and batches waiting in the monitoring queue.",
                                value=queue.queued_bytes)
        yield GaugeMetricFamily("inferwatch_queue_capacity_bytes", "Byte capacity of the monitoring queue.",
                                value=queue.max_bytes)
        yield GaugeMetricFamily("inferwatch_cloudevents_pending",
                                "CloudEvent halves waiting for their request or response.",
                                value=s.pairer.pending)
        unpaired = CounterMetricFamily(
            "inferwatch_cloudevents_unpaired", "CloudEvent halves discarded without their pair, by reason.",
            labels=["reason"])
        unpaired.add_metric(["expired"], s.pairer.expired)
        unpaired.add_metric(["full"], s.pairer.evicted_full)
        yield unpaired
        received = CounterMetricFamily(
            "inferwatch_cloudevents", "CloudEvents received from payload loggers, by outcome.", labels=["outcome"])
        received.add_metric(["paired"], s.pairer.paired)
        received.add_metric(["duplicate"], s.pairer.duplicates)
        yield received
        if s.predlog.enabled:
            lines = CounterMetricFamily("inferwatch_prediction_log_lines", "Lines written to the prediction log.")
            lines.add_metric([], s.predlog.written)
            yield lines
            errors = CounterMetricFamily("inferwatch_prediction_log_errors",
                                         "Prediction log lines lost to write errors (the events were still monitored).")
            errors.add_metric([], s.predlog.errors)
            yield errors


class Sidecar:
    def __init__(self, cfg: Config, registry: CollectorRegistry | None = None):
        self.cfg = cfg
        self.started_at = time.time()
        self.metrics = Metrics(cfg.model.name, registry, max_model_versions=cfg.limits.max_model_versions)
        self.metrics.set_model_info(cfg.model.version, cfg.model.info, deployed_timestamp=self.started_at)
        kinds = {spec.name: spec.type for spec in cfg.payload.features if spec.type != "auto"}
        self.windows = WindowStore(
            capacity=cfg.window.max_events, max_age_seconds=cfg.window.max_age_seconds,
            max_versions=cfg.limits.max_model_versions, max_features=cfg.limits.max_features,
            max_outputs=cfg.limits.max_outputs, max_categories=cfg.limits.max_categories, feature_kinds=kinds)
        self.predlog = PredictionLogger(cfg.prediction_log)
        self.pipeline = Pipeline(cfg, self.metrics, self.windows, self.predlog)
        self.pairer = CloudEventPairer(max_pending=cfg.cloudevents.max_pending,
                                       ttl_seconds=cfg.cloudevents.ttl_seconds)
        registry = self.metrics.registry
        registry.register(StateCollector(self))
        # What the model answers: classes, score/value histograms, bands, unreasonable outputs.
        self.outputs = OutputMonitor(
            cfg, self.metrics.label_values_capped, main_version=self.metrics.version_label(cfg.model.version, ""),
            on_error=lambda: self.metrics.monitoring_errors.labels(cfg.model.name, "outputs").inc())
        self.pipeline.observers.append(self.outputs.observe)
        registry.register(OutputCollector(self.outputs))
        # Drift against a reference profile (or a warm-up reference): a background thread and a collector.
        self.drift = None
        if cfg.reference.enabled:
            from inferwatch.monitors.drift import DriftCollector, DriftEngine

            self.drift = DriftEngine.from_config(
                cfg, self.windows, version_label=lambda v: self.metrics.version_label(v, v),
                on_error=lambda: self.metrics.monitoring_errors.labels(cfg.model.name, "drift").inc(),
                segments=self.pipeline.segments)
            self.pipeline.observers.append(self.drift.observe)
            registry.register(DriftCollector(self.drift))
            # Segment values: the reference's most frequent categories first (top-K), then first seen.
            if self.drift.reference is not None and self.pipeline.segments.enabled:
                self.pipeline.segments.seed_from_profile(self.drift.reference)
        # The input guard: data quality, schema changes and outliers on every windowed event.
        self.guard = None
        if cfg.guard.enabled:
            from inferwatch.monitors.guard import Guard, GuardCollector

            self.guard = Guard(
                cfg, reference=(lambda: self.drift.reference) if self.drift is not None else None,
                on_error=lambda: self.metrics.monitoring_errors.labels(cfg.model.name, "guard").inc(),
                on_capped=lambda: self.metrics.label_values_capped.labels("unknown_feature").inc())
            self.pipeline.observers.append(self.guard.observe)
            registry.register(GuardCollector(self.guard))
        # Ground truth and performance: the join store, a background thread and a collector. Shadow
        # comparisons need the champion's answers from the join store too.
        self.performance = None
        if cfg.labels.enabled or cfg.shadow.enabled:
            from inferwatch.monitors.performance import PerformanceCollector, PerformanceEngine

            self.performance = PerformanceEngine(
                cfg, self.windows, self.metrics,
                reference=lambda: self.drift.reference if self.drift is not None else None)
            self.pipeline.observers.append(self.performance.observe)
            self.pipeline.label_sink = self.performance.add_labels
            registry.register(PerformanceCollector(self.performance))
        shadow = None
        if cfg.shadow.enabled and cfg.proxy.enabled:
            from inferwatch.serving.shadow import ShadowComparator, ShadowMirror

            shadow = ShadowMirror(cfg, self.metrics, self.pipeline.submit_shadow)
            self.pipeline.shadow_sink = ShadowComparator(cfg, self.metrics, self.performance, self.predlog)
        self.proxy = Proxy(cfg, self.metrics, self.pipeline, shadow) if cfg.proxy.enabled else None
        p = cfg.process
        process_collector = None
        if p.pid or p.pidfile or p.match:
            process_collector = ModelProcessCollector(cfg.model.name, pid=p.pid, pidfile=p.pidfile, match=p.match)
            registry.register(process_collector)
        if p.gpu:
            registry.register(GPUCollector(cfg.model.name, process=process_collector))
        self.admin_app = create_admin_app(cfg, self.metrics, self.pipeline, status=self.status, ready=self.ready,
                                          pairer=self.pairer)
        # Alert-triggered actions: an Alertmanager webhook receiver on the admin port (POST /v1/alerts).
        self.actions = None
        if cfg.actions.actions:
            from inferwatch.alerting.actions import ActionRunner, add_receiver_route

            self.actions = ActionRunner(cfg.actions, registry)
            add_receiver_route(self.admin_app, self.actions, cfg.actions)
            warning = cfg.actions.exposure_warning(cfg.admin.listen_address)
            if warning:
                log.warning(warning)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._threads: list[threading.Thread] = []
        self._admin_server: wsgi.Server | None = None
        self.proxy_port: int | None = None
        self.admin_port: int | None = None
        self._stopped = threading.Event()

    # --- introspection --------------------------------------------------------------------

    def ready(self) -> tuple[bool, dict[str, Any]]:
        checks: dict[str, Any] = {"config": "loaded", "worker": "running" if self.pipeline._thread else "stopped"}
        ok = self.pipeline._thread is not None
        if self.proxy is not None:
            up = self.proxy.up_value == 1.0
            checks["upstream"] = "reachable" if up else f"unreachable ({self.cfg.upstream.url})"
            ok = ok and up
        return ok, checks

    def status(self) -> dict[str, Any]:
        windows = {
            version: {"events": w.live_events(), "capacity": w.capacity, "appended_total": w.appended_total,
                      "features": sorted(w.features.columns), "outputs": sorted(w.outputs.columns),
                      "memory_bytes": w.memory_bytes()}
            for version, w in self.windows.windows().items()
        }
        return {
            "inferwatch_version": __version__,
            "python_version": platform.python_version(),
            "started_at": self.started_at,
            "model": {"name": self.cfg.model.name, "version": self.cfg.model.version, "info": self.cfg.model.info},
            "upstream": {"url": self.cfg.upstream.url,
                         "up": bool(self.proxy.up_value) if self.proxy else None},
            "proxy": {"enabled": self.proxy is not None, "port": self.proxy_port},
            "queue": {"depth": self.pipeline.queue.qsize(), "capacity": self.pipeline.queue.maxsize,
                      "processed": self.pipeline.processed},
            "windows": windows,
            "drops": _sample_values(self.metrics.events_dropped),
            "payload_errors": _sample_values(self.metrics.payload_errors),
            "drift": self.drift.status() if self.drift is not None else None,
            "performance": self.performance.status() if self.performance is not None else None,
            "shadow": self._shadow_status(),
            "guard": self.guard.status() if self.guard is not None else None,
            "config_source": self.cfg.source,
        }

    def _shadow_status(self) -> dict[str, Any] | None:
        mirror = self.proxy.shadow if self.proxy is not None else None
        if mirror is None:
            return None
        return {"sample_rate": self.cfg.shadow.sample_rate,
                "challengers": {ch.name: {"url": ch.url, "queued": mirror.queues[ch.name].qsize()
                                          if ch.name in mirror.queues else 0}
                                for ch in self.cfg.shadow.challengers}}

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> "Sidecar":
        self.pipeline.start()
        if self.drift is not None:
            self.drift.start()
        if self.performance is not None:
            self.performance.start()
        if self.actions is not None:
            self.actions.start()
        if self.proxy is not None:
            started = threading.Event()
            errors: list[BaseException] = []
            thread = threading.Thread(target=self._run_loop, args=(started, errors), name="inferwatch-proxy",
                                      daemon=True)
            thread.start()
            started.wait(30)
            if errors:
                raise errors[0]
            self._threads.append(thread)
        self._start_admin()
        maintenance = threading.Thread(target=self._maintain, name="inferwatch-maintenance", daemon=True)
        maintenance.start()
        self._threads.append(maintenance)
        log.info("inferwatch %s: proxy on %s, admin on %s", __version__, self.proxy_port, self.admin_port)
        return self

    def _run_loop(self, started: threading.Event, errors: list[BaseException]) -> None:
        try:
            import uvloop  # optional: a faster event loop when installed

            loop = uvloop.new_event_loop()
        except ImportError:
            loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            self._runner = web.AppRunner(self.proxy.make_app(), access_log=None, handle_signals=False)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, self.cfg.proxy.listen_address, self.cfg.proxy.port,
                               backlog=1024, reuse_address=True)
            loop.run_until_complete(site.start())
            self.proxy_port = site._server.sockets[0].getsockname()[1]
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            errors.append(exc)
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.run_until_complete(self._runner.cleanup())
        loop.close()

    def _start_admin(self) -> None:
        a = self.cfg.admin
        server = wsgi.Server((a.listen_address, a.port), self.admin_app, numthreads=a.threads,
                             server_name="inferwatch")
        if a.tls.enabled:
            from cheroot.ssl.builtin import BuiltinSSLAdapter

            server.ssl_adapter = BuiltinSSLAdapter(a.tls.cert_file, a.tls.key_file)
        server.prepare()
        self.admin_port = server.bind_addr[1]
        self._admin_server = server
        thread = threading.Thread(target=server.serve, name="inferwatch-admin", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _maintain(self, interval: float = 1.0) -> None:
        """Periodic housekeeping: requests whose CloudEvent response never came still carry
        features, so they are monitored without outputs once their pairing TTL passes."""
        version = self.metrics.version_label(self.cfg.model.version, self.cfg.model.version)
        while not self._stopped.wait(interval):
            try:
                for paired in self.pairer.expire():
                    self.pipeline.submit_exchange(cloudevent_exchange(paired, version))
            except Exception:  # noqa: BLE001
                log.exception("maintenance failed")
                self.metrics.monitoring_errors.labels(self.cfg.model.name, "maintenance").inc()

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._admin_server is not None:
            self._admin_server.stop()
        self.pipeline.stop()
        if self.drift is not None:
            self.drift.stop()
        if self.performance is not None:
            self.performance.stop()
        if self.actions is not None:
            self.actions.stop()
        for thread in self._threads:
            thread.join(5)
        self.predlog.close()
        if self.guard is not None:
            self.guard.close()

    def serve_forever(self) -> None:
        """Run until SIGTERM/SIGINT (the main thread only waits)."""
        def on_signal(signum, frame):
            log.info("signal %s: shutting down", signum)
            self._stopped_by_signal.set()

        self._stopped_by_signal = threading.Event()
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        try:
            while not self._stopped_by_signal.wait(0.5):
                pass
        finally:
            self.stop()

    def __enter__(self) -> "Sidecar":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _sample_values(metric) -> dict[str, float]:
    """A counter's non-zero series as {label=value,...: count} for the status endpoint."""
    out: dict[str, float] = {}
    for family in metric.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.value:
                key = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()) if k != "model")
                out[key] = sample.value
    return out

