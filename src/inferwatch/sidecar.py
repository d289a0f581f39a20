"""Wires the parts together and runs them: the proxy on an asyncio loop thread, the admin
server on another (its write endpoints on a few threads), the monitoring worker on one more. One process, so custom
collectors and process metrics work (client_python's multiprocess mode loses both).
"""

from __future__ import annotations

import asyncio
import logging
import platform
import signal
import threading
import time
from typing import Any, cast

from aiohttp import web
from prometheus_client import CollectorRegistry

from inferwatch import __version__
from inferwatch.serving.admin import cloudevent_exchange, create_admin_app
from inferwatch.ingest.cloudevents import CloudEventPairer
from inferwatch.config import Config
from inferwatch.exposition.collectors import CollectorSet
from inferwatch.support.auth import AuthCollector, configure_failure_budget
from inferwatch.exposition.metrics import Metrics
from inferwatch.monitors.outputs import OutputCollector, OutputMonitor
from inferwatch.pipeline.collector import StateCollector
from inferwatch.pipeline.worker import Pipeline
from inferwatch.pipeline.predlog import PredictionLogger
from inferwatch.serving.proxy import Proxy
from inferwatch.serving.admin_server import AdminServer
from inferwatch.serving.connections import ConnectionStats, limited_exception_handler, new_event_loop, proxy_guard
from inferwatch.monitors.resources import GPUCollector, ModelProcessCollector
from inferwatch.pipeline.window import WindowStore

log = logging.getLogger(__name__)

# After the drain, how long to wait for the proxy's last in-flight answers (counted, not monitored).
LATE_ANSWERS_GRACE_SECONDS = 2.0


class Sidecar:
    def __init__(self, cfg: Config, registry: CollectorRegistry | None = None):
        self.cfg = cfg
        self.started_at = time.time()
        self.metrics = Metrics.for_model(cfg.model, cfg.limits, registry)
        self.metrics.set_model_info(cfg.model.version, cfg.model.info, deployed_timestamp=self.started_at)
        kinds = {spec.name: spec.type for spec in cfg.payload.features if spec.type != "auto"}
        self.windows = WindowStore(
            capacity=cfg.window.max_events, max_age_seconds=cfg.window.max_age_seconds,
            max_versions=cfg.limits.max_model_versions, max_features=cfg.limits.max_features,
            max_outputs=cfg.limits.max_outputs, max_categories=cfg.limits.max_categories, feature_kinds=kinds,
            reserved_features=cfg.payload.feature_names, reserved_outputs=list(cfg.predictions.outputs),
            on_reclaim=lambda kind: self.metrics.label_values_reclaimed.labels(kind).inc())
        self.predlog = PredictionLogger(cfg.prediction_log)
        self.pipeline = Pipeline(cfg.model, self.metrics, self.windows, self.predlog, queue=cfg.queue,
                                 payload=cfg.payload, segments=cfg.segments)
        # a version that lost its label slot to a more frequent one: its window and cached counters go
        self.metrics.model_versions.on_reclaim += [self.windows.drop, self.pipeline.forget_version]
        self.pairer = CloudEventPairer(max_pending=cfg.cloudevents.max_pending,
                                       ttl_seconds=cfg.cloudevents.ttl_seconds,
                                       components=cfg.cloudevents.components or None,
                                       endpoint_versions=cfg.cloudevents.endpoint_versions)
        registry = self.metrics.registry
        # Every custom collector runs inside this one, registered below: one that raises loses
        # only its own families, never the scrape.
        self.collectors = CollectorSet(self.metrics.monitoring_errors.labels(cfg.model.name, "collector"))
        self.collectors.add("state", StateCollector(cfg.model.name, self.windows, self.pipeline.queue, self.pairer,
                                                    self.predlog))
        # What the model answers: classes, score/value histograms, bands, unreasonable outputs.
        self.outputs = OutputMonitor(
            cfg.model.name, cfg.predictions, max_outputs=cfg.limits.max_outputs,
            overflow=self.metrics.label_values_capped, main_version=self.metrics.version_label(cfg.model.version, ""),
            on_error=lambda: self.metrics.monitoring_errors.labels(cfg.model.name, "outputs").inc())
        self.pipeline.observers.append(self.outputs.observe)
        self.collectors.add("outputs", OutputCollector(self.outputs))
        # OpenAI-compatible serving: decoded in the worker, counted by the genai monitor.
        self.genai = None
        if cfg.genai.enabled:
            from inferwatch.monitors.genai import GenAICollector, GenAIMonitor
            from inferwatch.pipeline.genai import GenAIDecoding

            self.genai = GenAIMonitor(cfg.model.name, cfg.genai, overflow=self.metrics.label_values_capped,
                                      on_error=lambda: self.metrics.monitoring_errors.labels(cfg.model.name, "genai").inc())
            self.pipeline.genai = GenAIDecoding(cfg.genai, self.genai.observe, cfg.payload.max_decode_bytes)
            self.metrics.model_versions.on_reclaim.append(self.genai.forget_version)
            self.collectors.add("genai", GenAICollector(self.genai))
        # The reference (file or warm-up) and drift against it: a background thread and a collector.
        self.reference = None
        self.drift = None
        if cfg.reference.enabled:
            from inferwatch.monitors.drift import DriftCollector, DriftEngine
            from inferwatch.reference import ReferenceStore

            main_version = self.metrics.version_label(cfg.model.version, cfg.model.version)
            self.reference = ReferenceStore(cfg.reference, main_version=main_version,
                                            main_window=lambda: self.windows.windows().get(main_version))
            self.drift = DriftEngine(
                cfg.drift, self.windows, self.reference, model=cfg.model.name, main_version=main_version,
                on_error=lambda: self.metrics.monitoring_errors.labels(cfg.model.name, "drift").inc(),
                segments=self.pipeline.segments if cfg.segments.drift else None)
            self.pipeline.observers.append(self.drift.observe)
            self.collectors.add("drift", DriftCollector(self.drift))
            # Segment values: the reference's most frequent categories first (top-K), then first seen.
            profile = self.reference.current()
            if profile is not None:  # the reference's columns are kept whatever else arrives first
                self.windows.reserve_columns(list(profile.features), list(profile.outputs))
            if profile is not None and self.pipeline.segments.enabled:
                self.pipeline.segments.seed_from_profile(profile)
        # The input guard: data quality, schema changes and outliers on every windowed event.
        self.guard = None
        if cfg.guard.enabled:
            from inferwatch.monitors.guard import Guard, GuardCollector

            self.guard = Guard(
                cfg.guard, model=cfg.model.name, window_capacity=cfg.window.max_events,
                window_max_age_seconds=cfg.window.max_age_seconds, declared_features=cfg.payload.features,
                redact=cfg.prediction_log.redact,
                reference=self.reference.current if self.reference is not None else None,
                on_error=lambda: self.metrics.monitoring_errors.labels(cfg.model.name, "guard").inc(),
                on_capped=lambda: self.metrics.label_values_capped.labels("unknown_feature").inc())
            self.pipeline.observers.append(self.guard.observe)
            self.collectors.add("guard", GuardCollector(self.guard))
        # Ground truth and performance: the join store, a background thread and a collector. Shadow
        # comparisons need the champion's answers from the join store too.
        self.performance = None
        if cfg.labels.enabled or cfg.shadow.enabled:
            from inferwatch.monitors.performance import PerformanceCollector, PerformanceEngine

            self.performance = PerformanceEngine(
                cfg.labels, cfg.performance, self.windows, self.metrics, model=cfg.model.name,
                model_version=cfg.model.version, outputs=cfg.predictions.outputs,
                segment_features=cfg.segments.features, label_warmup=cfg.reference.warmup_events,
                reference=self.reference.current if self.reference is not None else lambda: None)
            self.pipeline.observers.append(self.performance.observe)
            self.pipeline.label_sink = self.performance.add_labels
            self.collectors.add("performance", PerformanceCollector(self.performance))
        mirror = None
        if cfg.shadow.enabled and cfg.proxy.enabled:
            from inferwatch.serving.shadow import ShadowComparator, ShadowMirror

            mirror = ShadowMirror(cfg.model, cfg.shadow, self.metrics, self.pipeline.submit_shadow)
            self.pipeline.shadow_sink = ShadowComparator(cfg.model.name, cfg.shadow, self.metrics, self.performance,
                                                         self.predlog)
        proxy_type: type[Proxy] = Proxy
        if cfg.proxy.engine == "fast":  # the httptools data plane (serving/fast_proxy.py)
            from inferwatch.serving.fast_proxy import FastProxy

            proxy_type = FastProxy
        self.proxy = proxy_type(cfg.model, cfg.proxy, cfg.upstream, self.metrics, self.pipeline,
                                mirror) if cfg.proxy.enabled else None
        self.grpc_proxy: Any = None  # a GrpcProxy when proxy.grpc_port is set
        if cfg.proxy.enabled and cfg.proxy.grpc_port:  # imported only when on: grpcio's start-up cost
            from inferwatch.serving.grpc_proxy import GrpcProxy

            self.grpc_proxy = GrpcProxy(cfg.model, cfg.proxy, self.metrics, self.pipeline)
        p = cfg.process
        process_collector = None
        if p.pid or p.pidfile or p.match:
            process_collector = ModelProcessCollector(cfg.model.name, pid=p.pid, pidfile=p.pidfile, match=p.match)
            self.collectors.add("model_process", process_collector)
        if p.gpu:
            gpu = GPUCollector(cfg.model.name, process=process_collector)
            if gpu.available:  # no GPU or no NVML: nothing configured to read, no gpu collector
                self.collectors.add("gpu", gpu)
        registry.register(self.collectors)
        failed = cfg.admin.failed_auth   # one budget per process: what it protects is the process's CPU
        configure_failure_budget(failed.burst, failed.per_minute, failed.max_clients)
        registry.register(AuthCollector())
        self.admin_app = create_admin_app(cfg.admin, cfg.model, cfg.labels, self.metrics, self.pipeline,
                                          status=self.status, ready=self.ready, pairer=self.pairer,
                                          report=self.report)
        # Alert-triggered actions: an Alertmanager webhook receiver on the admin port (POST /v1/alerts).
        self.actions = None
        if cfg.actions.actions:
            from inferwatch.alerting.actions import ActionRunner
            from inferwatch.alerting.receiver import add_receiver_route

            self.actions = ActionRunner(cfg.actions, registry)
            add_receiver_route(self.admin_app, self.actions, cfg.actions)
            warning = cfg.actions.exposure_warning(cfg.admin.listen_address)
            if warning:
                log.warning(warning)
        if cfg.write_exposure_warning():  # write endpoints open beyond loopback: said once, at start
            log.warning(cfg.write_exposure_warning())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []
        self._admin_server: AdminServer | None = None
        self.connection_stats = ConnectionStats(registry)   # both ports' connection counters
        self.proxy_port: int | None = None
        self.grpc_port: int | None = None
        self.admin_port: int | None = None
        self._stopped = threading.Event()
        self._draining = threading.Event()
        self._signalled = threading.Event()
        self._hurry = threading.Event()  # a second signal: skip the readiness delay
        self._lost = 0
        self._stop_deadline = 0.0
        self.proxy_workers: Any = None  # a ProxyWorkers when proxy.workers > 1

    # --- introspection --------------------------------------------------------------------

    def ready(self) -> tuple[bool, dict[str, Any]]:
        ok = self.pipeline.running
        checks: dict[str, Any] = {"config": "loaded", "worker": "running" if ok else "stopped"}
        if self.proxy is not None:
            up = self.proxy.up_value == 1.0
            checks["upstream"] = "reachable" if up else f"unreachable ({self.cfg.upstream.url})"
            ok = ok and up
        if self.proxy_workers is not None:  # the port is served while at least one worker listens
            running = len(self.proxy_workers.running_pids())
            checks["proxy_workers"] = f"{running} of {self.cfg.proxy.workers} running"
            ok = ok and running > 0
        if self._draining.is_set():  # shutting down: the load balancer must stop sending first
            checks["shutdown"] = "draining"
            ok = False
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
            "proxy": {"enabled": self.proxy is not None, "port": self.proxy_port, "grpc_port": self.grpc_port,
                      "workers": self.cfg.proxy.workers,
                      "worker_pids": self.proxy_workers.running_pids() if self.proxy_workers is not None else []},
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

    def report(self, version: str | None = None) -> str:
        """The drift report page of ``version``'s window (the configured version by default)."""
        from inferwatch.report.live import render_live_report

        main = self.metrics.version_label(self.cfg.model.version, self.cfg.model.version)
        return render_live_report(model=self.cfg.model.name, version=version or main, main_version=main,
                                  windows=self.windows, drift=self.drift, performance=self.performance,
                                  range_tolerance=self.cfg.guard.range_tolerance)

    def _shadow_status(self) -> dict[str, Any] | None:
        mirror = self.proxy.mirror if self.proxy is not None else None
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
        if self.guard is not None:
            self.guard.start()  # ages events out of the window ratios when no batch arrives
        if self.actions is not None:
            self.actions.start()
        if self.proxy is not None:
            started = threading.Event()
            errors: list[BaseException] = []
            thread = threading.Thread(target=self._run_loop, args=(self.proxy, started, errors),
                                      name="inferwatch-proxy", daemon=True)
            thread.start()
            if not started.wait(60):
                raise TimeoutError("the proxy did not start within 60 s")
            if errors:
                raise errors[0]
            self._threads.append(thread)
        if self.grpc_proxy is not None:
            self.grpc_port = self.grpc_proxy.start()
        self._start_admin()
        maintenance = threading.Thread(target=self._maintain, name="inferwatch-maintenance", daemon=True)
        maintenance.start()
        self._threads.append(maintenance)
        workers = f" ({self.cfg.proxy.workers} worker processes)" if self.proxy_workers is not None else ""
        log.info("inferwatch %s: proxy on %s%s, admin on %s", __version__, self.proxy_port, workers, self.admin_port)
        return self

    def _run_loop(self, proxy: Proxy, started: threading.Event, errors: list[BaseException]) -> None:
        loop = new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        p = self.cfg.proxy
        # Loop errors such as accept() out of descriptors logged once a minute, not once per retry.
        loop.set_exception_handler(limited_exception_handler("proxy"))
        if p.workers > 1:  # the port is the worker processes'; this loop receives their hand-offs
            self._run_workers(loop, proxy, started, errors)
            return
        # Header and idle timeouts and a connection limit (aiohttp has neither).
        connections = proxy_guard(p, self.connection_stats)
        try:
            if p.engine == "fast":  # serving/fast_proxy.py: its own server, behind the same guard
                from inferwatch.serving.fast_proxy import FastProxy, FastRunner

                runner: Any = FastRunner(cast(FastProxy, proxy), connections)
                server, self.proxy_port = loop.run_until_complete(runner.serve(p.listen_address, p.port))
            else:
                app = proxy.make_app()
                app.middlewares.append(connections.middleware)
                runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                       keepalive_timeout=p.idle_timeout_seconds + p.header_timeout_seconds + 1)
                loop.run_until_complete(runner.setup())
                server, self.proxy_port = loop.run_until_complete(connections.serve(runner, p.listen_address, p.port))
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            errors.append(exc)
            try:  # the proxy's client session and startup tasks closed: no warnings after the error line
                loop.run_until_complete(runner.cleanup())
            except Exception:  # noqa: BLE001 - setup itself failed: nothing more to close
                pass
            self._loop = None   # stop() has no loop to stop
            loop.close()
            started.set()
            return
        started.set()
        loop.run_forever()
        connections.stop()
        server.close()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    def _run_workers(self, loop: asyncio.AbstractEventLoop, proxy: Proxy, started: threading.Event,
                     errors: list[BaseException]) -> None:
        """``proxy.workers`` > 1 (serving/workers.py): this loop probes the model server, sends the
        shadow copies and takes the workers' exchanges and metrics; the workers serve the port."""
        from inferwatch.exposition.worker_metrics import metric_families
        from inferwatch.serving.workers import ProxyWorkers

        self.proxy_workers = ProxyWorkers(self.cfg, self.metrics,
                                          metric_families(self.metrics, self.connection_stats),
                                          self.pipeline.submit_exchange, proxy.mirror)
        try:
            loop.run_until_complete(proxy.startup())
            self.proxy_port = loop.run_until_complete(self.proxy_workers.start())
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            errors.append(exc)
            loop.run_until_complete(proxy.cleanup())
            self._loop = None
            loop.close()
            started.set()
            return
        started.set()
        loop.run_forever()
        # stop(): the workers finish their answers in flight and hand off the rest within the drain
        loop.run_until_complete(self.proxy_workers.stop(max(self._stop_deadline - time.monotonic(), 0.0)))
        loop.run_until_complete(proxy.cleanup())
        loop.close()

    def _start_admin(self) -> None:
        malformed = self.metrics.malformed_requests
        self._admin_server = AdminServer(self.admin_app, self.cfg.admin, self.connection_stats,
                                         lambda reason: malformed.labels(self.cfg.model.name, reason).inc())
        self.admin_port = self._admin_server.start()

    def _maintain(self, interval: float = 1.0) -> None:
        """Periodic housekeeping: requests whose CloudEvent response never came still carry
        features, so they are monitored without outputs once their pairing TTL passes."""
        version = self.metrics.version_label(self.cfg.model.version, self.cfg.model.version)
        while not self._stopped.wait(interval):
            try:
                for paired in self.pairer.expire():
                    self.pipeline.submit_exchange(cloudevent_exchange(paired, version if paired.model_version is None
                        else self.metrics.version_label(paired.model_version, version)))
            except Exception:  # noqa: BLE001
                log.exception("maintenance failed")
                self.metrics.monitoring_errors.labels(self.cfg.model.name, "maintenance").inc()

    def stop(self) -> int:
        """Shut down without losing what was acknowledged: close both ports (in-flight requests
        finish and are queued), close the monitoring queue, process what it holds within
        ``shutdown.drain_timeout_seconds``, then stop the engines and close the logs. Returns the
        acknowledged events and labels that could not be processed (logged; 0 on a clean stop)."""
        if self._stopped.is_set():
            return self._lost
        self._draining.set()
        self._stopped.set()  # the maintenance thread ends
        deadline = self._stop_deadline = time.monotonic() + self.cfg.shutdown.drain_timeout_seconds
        log_errors = self.predlog.errors
        if self._loop is not None:  # the proxy stops listening and waits for its in-flight requests
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._admin_server is not None:
            self._admin_server.stop()
        if self.grpc_proxy is not None:  # calls in flight finish (and are queued) within the drain
            self.grpc_proxy.stop(max(deadline - time.monotonic(), 0.0))
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        try:  # CloudEvent requests whose response never came, due now: monitored without outputs
            version = self.metrics.version_label(self.cfg.model.version, self.cfg.model.version)
            for paired in self.pairer.expire():
                self.pipeline.submit_exchange(cloudevent_exchange(paired, version if paired.model_version is None
                    else self.metrics.version_label(paired.model_version, version)))
        except Exception:  # noqa: BLE001
            log.exception("shutdown: flushing expired CloudEvents failed")
        drained = self.pipeline.shutdown(max(deadline - time.monotonic(), 0.0))
        # A proxied request still in flight when the drain ended is answered to its client but can
        # no longer be monitored: wait briefly for such answers so they are counted among the lost.
        for thread in self._threads:
            thread.join(LATE_ANSWERS_GRACE_SECONDS)
        late = self.pipeline.unmonitored_after_close - drained.unmonitored
        drained.events_lost += late
        drained.unmonitored += late
        if self.drift is not None:
            self.drift.stop()
        if self.performance is not None:
            self.performance.stop()
        if self.actions is not None:
            self.actions.stop()
        self.predlog.close()
        if self.guard is not None:
            self.guard.close()
        unlogged = self.predlog.errors - log_errors  # lines the drain could not write
        self._lost = drained.events_lost + drained.labels_lost + unlogged
        counted = sum(sample.value for family in self.metrics.events.collect() for sample in family.samples
                      if sample.name.endswith("_total"))
        if self._lost:
            log.error("shutdown: %d acknowledged events were not processed (%d events and %d labels not monitored "
                      "within shutdown.drain_timeout_seconds=%g, %d prediction log lines lost); "
                      "inferwatch_events_total %d", self._lost, drained.events_lost, drained.labels_lost,
                      self.cfg.shutdown.drain_timeout_seconds, unlogged, counted)
        else:
            log.info("shutdown: queue drained in %.1fs, nothing acknowledged lost; inferwatch_events_total %d",
                     drained.seconds, counted)
        return self._lost

    def serve_forever(self) -> int:
        """Run until SIGTERM/SIGINT (the main thread only waits), then shut down: /readyz answers
        503 for ``shutdown.readiness_delay_seconds`` (a second signal cuts it short), then
        ``stop()``. Returns what ``stop()`` could not process (the exit code's reason)."""
        def on_signal(signum, frame):
            if self._signalled.is_set():
                self._hurry.set()
                return
            log.info("signal %s: not ready, shutting down in %gs", signum, self.cfg.shutdown.readiness_delay_seconds)
            self._draining.set()
            self._signalled.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        try:
            while not self._signalled.wait(0.5):
                pass
            self._hurry.wait(self.cfg.shutdown.readiness_delay_seconds)
        finally:
            lost = self.stop()
        return lost

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

