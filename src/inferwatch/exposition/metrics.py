"""The metric contract. Names are public API: docs/metrics.md documents every one.

All metrics live on a registry passed in (tests build their own). Label values that come
from traffic go through a ``LabelCap`` so no label can grow without bound.
"""

from __future__ import annotations

import platform
import threading
from typing import TYPE_CHECKING, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from inferwatch import __version__
from inferwatch.stats.heavy_hitters import FrequentSlots

if TYPE_CHECKING:
    from inferwatch.config import LimitsConfig, ModelConfig

NAMESPACE = "inferwatch"
OTHER = "other"

# Model serving spans ~1 ms (a small tree model) to tens of seconds (a large generative model);
# 0.1 s is a bucket boundary because it is the default latency SLO.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 10.0, 30.0,
)
# Ground truth arrives seconds (a click) to weeks (a loan default) after the prediction.
LABEL_DELAY_BUCKETS = (1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 3 * 3600.0, 6 * 3600.0, 12 * 3600.0, 86400.0,
                       2 * 86400.0, 7 * 86400.0, 30 * 86400.0)
# |challenger - champion| of a score (0..1) or a regression value: fine steps below 0.1 for
# scores, coarse ones above for values.
DIFFERENCE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 100.0)
SIZE_BUCKETS = tuple(float(100 * 4**i) for i in range(11))  # 100 B .. ~100 MiB
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class LabelCap:
    """At most ``limit`` values of a label; the rest become ``other``.

    The ``reserved`` values (the schema's: the configured model version) always keep their slot;
    the other slots go by frequency (``FrequentSlots``), so values that stopped arriving give theirs
    up to values that keep arriving. Overflows are counted in
    ``inferwatch_label_values_capped_total{label}``, slots taken back in
    ``inferwatch_label_values_reclaimed_total{label}``; ``on_reclaim`` listeners get the value
    that lost its slot, to drop what they keep for it (its series, its window).
    """

    def __init__(self, label: str, limit: int, overflow: Counter | None = None, reserved: Iterable[str] = (), *,
                 reclaimed: Counter | None = None, halve_every: int = 1024):
        self.label = label
        self.limit = limit
        self.slots = FrequentSlots(limit, reserved, halve_every=halve_every)
        self._lock = threading.Lock()
        self._overflow = overflow.labels(label=label) if overflow is not None else None
        self._reclaimed = reclaimed.labels(label=label) if reclaimed is not None else None
        self.on_reclaim: list[Callable[[str], None]] = []

    def __call__(self, value: str, events: int = 1) -> str:
        if value in self.slots.reserved:  # the common case, lock-free: the configured version
            return value
        with self._lock:
            admitted, victim = self.slots.admit(value, events)
        if victim is not None:
            if self._reclaimed is not None:
                self._reclaimed.inc()
            for listener in self.on_reclaim:
                listener(victim)
        if admitted:
            return value
        if self._overflow is not None:
            self._overflow.inc()
        return OTHER

    def current(self, label: str) -> str:
        """``label`` (a value this cap returned earlier) if it still holds its slot, else ``other``:
        for work queued before a reclaim, so it does not bring the reclaimed value's series back."""
        slots = self.slots
        # while slots are free none was ever reclaimed: a label given without the cap stays as it is
        return label if label == OTHER or label in slots or len(slots) < slots.limit else OTHER

    def __len__(self) -> int:
        return len(self.slots)


def normalize_method(method: str) -> str:
    return method if method in HTTP_METHODS else OTHER


class Metrics:
    """Every metric the sidecar exports, built on one registry."""

    def __init__(self, model: str, registry: CollectorRegistry | None = None, *, max_model_versions: int = 8,
                 reserved_versions: Iterable[str] = (), sidecar_process_metrics: bool = True):
        self.model = model
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        mv = ("model", "model_version")

        self.label_values_capped = Counter(
            "inferwatch_label_values_capped", "Label values replaced by 'other' because the label reached its cap.",
            ["label"], registry=r)
        self.label_values_reclaimed = Counter(
            "inferwatch_label_values_reclaimed",
            "Capped label slots taken back from a value that stopped arriving by a more frequent one.",
            ["label"], registry=r)
        # The configured version keeps its slot; the others go by frequency (LabelCap).
        self.model_versions = LabelCap("model_version", max_model_versions, self.label_values_capped,
                                       reserved_versions, reclaimed=self.label_values_reclaimed)
        self.model_versions.on_reclaim.append(self._forget_version)

        # --- the serving path -----------------------------------------------------------
        self.requests = Counter(
            "inferwatch_requests", "HTTP requests proxied to the model server, by route template and status code.",
            [*mv, "endpoint", "method", "code"], registry=r)
        self.request_duration = Histogram(
            "inferwatch_request_duration_seconds",
            "Upstream round trip of proxied requests as seen by the sidecar, in seconds.",
            [*mv, "endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.proxy_workers = Gauge(
            "inferwatch_proxy_workers", "Proxy worker processes serving the proxy port (proxy.workers; 0 when the "
            "sidecar's own process serves it).", ["model"], registry=r)
        self.proxy_worker_restarts = Counter(
            "inferwatch_proxy_worker_restarts", "Proxy worker processes that exited without being told to and "
            "were started again.", ["model"], registry=r)
        self.requests_in_flight = Gauge(
            "inferwatch_requests_in_flight", "Proxied requests currently waiting for the model server.",
            list(mv), registry=r)
        self.request_size = Histogram(
            "inferwatch_request_size_bytes", "Size of proxied request bodies, in bytes.",
            [*mv, "endpoint"], buckets=SIZE_BUCKETS, registry=r)
        self.response_size = Histogram(
            "inferwatch_response_size_bytes", "Size of proxied response bodies, in bytes.",
            [*mv, "endpoint"], buckets=SIZE_BUCKETS, registry=r)
        self.upstream_errors = Counter(
            "inferwatch_upstream_errors",
            "Proxied requests that got no response from the model server, by reason (connection, reset, protocol, "
            "timeout, connect_timeout, pool_timeout).",
            [*mv, "reason"], registry=r)
        self.malformed_requests = Counter(
            "inferwatch_malformed_requests",
            "Requests the proxy or admin port refused with 400 because their HTTP could not be parsed, by reason "
            "(malformed, too_long, method, request_line, url, header, body).",
            ["model", "reason"], registry=r)
        self.upstream_up = Gauge(
            "inferwatch_upstream_up", "1 if the last health probe of the model server succeeded, else 0.",
            ["model"], registry=r)
        self.upstream_probe_duration = Gauge(
            "inferwatch_upstream_probe_duration_seconds", "Duration of the last health probe of the model server.",
            ["model"], registry=r)
        # Streaming passthrough (serving/proxy.py, serving/streaming.py).
        self.time_to_first_byte = Histogram(
            "inferwatch_time_to_first_byte_seconds",
            "From the request's arrival to the first byte of the model server's answer, in seconds.",
            [*mv, "endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.unmonitored_bodies = Counter(
            "inferwatch_unmonitored_bodies",
            "Proxied bodies (body: request, response) not kept whole for monitoring, by reason (too_large: over "
            "proxy.max_monitored_body_bytes; budget: proxy.monitoring_budget_bytes in use). They were still served.",
            [*mv, "body", "reason"], registry=r)
        self.unmonitored_bytes = Counter(
            "inferwatch_unmonitored_bytes",
            "Bytes of proxied bodies passed through without a monitoring copy, by body (request, response).",
            [*mv, "body"], registry=r)
        self.monitoring_bytes_in_flight = Gauge(
            "inferwatch_monitoring_bytes_in_flight",
            "Bytes of monitoring copies held by requests in flight (bounded by proxy.monitoring_budget_bytes).",
            ["model"], registry=r)
        self.client_disconnects = Counter(
            "inferwatch_client_disconnects",
            "Proxied requests whose client went away before the answer was relayed; the upstream request was "
            "cancelled.",
            list(mv), registry=r)

        # --- events -------------------------------------------------------------------
        self.predictions = Counter(
            "inferwatch_predictions", "Rows predicted (one request may carry many rows).", list(mv), registry=r)
        self.events = Counter(
            "inferwatch_events", "Prediction events added to the window, by source (proxy, push, cloudevent).",
            [*mv, "source"], registry=r)
        self.events_dropped = Counter(
            "inferwatch_events_dropped",
            "Prediction events dropped before reaching the window, by reason (queue_full, invalid, ...).",
            [*mv, "reason"], registry=r)
        self.payload_errors = Counter(
            "inferwatch_payload_errors", "Request or response bodies that could not be decoded, by reason.",
            [*mv, "reason"], registry=r)
        self.segment_events = Counter(
            "inferwatch_segment_events",
            "Prediction events by segment feature and its value (first segments.max_values values, then other).",
            [*mv, "segment", "value"], registry=r)
        self.monitoring_errors = Counter(
            "inferwatch_monitoring_errors",
            "Unexpected exceptions inside monitoring, by stage; the request was still served.",
            ["model", "stage"], registry=r)

        # --- ground truth ---------------------------------------------------------------
        self.labels_received = Counter(
            "inferwatch_labels",
            "Labels received on /v1/labels, by outcome of the join to their prediction "
            "(matched, unknown_id, expired, duplicate, invalid).",
            [*mv, "outcome"], registry=r)
        self.label_delay = Histogram(
            "inferwatch_label_delay_seconds", "Time from a prediction to the arrival of its label, in seconds.",
            list(mv), buckets=LABEL_DELAY_BUCKETS, registry=r)

        # --- shadow challengers --------------------------------------------------------
        self.shadow_requests = Counter(
            "inferwatch_shadow_requests",
            "Requests mirrored to a shadow challenger, by status code (or timeout, connection, error).",
            ["model", "model_version", "challenger", "code"], registry=r)
        self.shadow_duration = Histogram(
            "inferwatch_shadow_duration_seconds", "Round trip of requests mirrored to a shadow challenger, in seconds.",
            ["model", "model_version", "challenger"], buckets=LATENCY_BUCKETS, registry=r)
        self.shadow_dropped = Counter(
            "inferwatch_shadow_dropped",
            "Sampled requests not mirrored or not compared, by reason (queue_full, queue_bytes: the challenger's queue; "
            "monitoring_queue_full: the worker's).", ["model", "model_version", "challenger", "reason"], registry=r)
        self.shadow_comparisons = Counter(
            "inferwatch_shadow_comparisons",
            "Challenger answers compared with the champion's, by outcome (agree, disagree, unmatched, undecodable).",
            ["model", "model_version", "challenger", "outcome"], registry=r)
        self.shadow_agreement = Gauge(
            "inferwatch_shadow_agreement_ratio",
            "Share of the last shadow.agreement_window compared answers where the challenger agreed with the "
            "champion (same class; regression: within shadow.agreement_tolerance).", ["model", "model_version", "challenger"],
            registry=r)
        self.shadow_difference = Histogram(
            "inferwatch_shadow_prediction_difference",
            "Absolute difference between the challenger's and the champion's score (or regression value).",
            ["model", "model_version", "challenger"], buckets=DIFFERENCE_BUCKETS, registry=r)
        self.shadow_queue = Gauge(
            "inferwatch_shadow_queue_items", "Requests waiting to be mirrored to a shadow challenger.",
            ["model", "model_version", "challenger"], registry=r)

        # --- identity -----------------------------------------------------------------
        self.build_info = Gauge(
            "inferwatch_build_info", "Always 1; labels carry the inferwatch and Python versions.",
            ["version", "python_version"], registry=r)
        self.build_info.labels(version=__version__, python_version=platform.python_version()).set(1)
        self._model_info: Gauge | None = None

        if sidecar_process_metrics:
            # The sidecar's own CPU, memory and GC, under the standard process_/python_ names.
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)

    @classmethod
    def for_model(cls, model: "ModelConfig", limits: "LimitsConfig", registry: CollectorRegistry | None = None, *,
                  sidecar_process_metrics: bool = True) -> "Metrics":
        """The metrics of ``model`` with the configured label caps: the sidecar's, and a proxy
        worker process's (serving/workers.py), which must cap labels alike."""
        return cls(model.name, registry, max_model_versions=limits.max_model_versions,
                   reserved_versions=[model.version], sidecar_process_metrics=sidecar_process_metrics)

    def set_model_info(self, version: str, info: dict[str, str], deployed_timestamp: float | None = None) -> None:
        """``inferwatch_model_info`` = 1, once per configured model version, with free-form labels."""
        keys = sorted(k for k in info if k not in ("model", "model_version"))
        if self._model_info is None:
            self._model_info = Gauge(
                "inferwatch_model_info", "Always 1; labels describe the served model (from configuration).",
                ["model", "model_version", *keys], registry=self.registry)
            self.model_deployed = Gauge(
                "inferwatch_model_start_timestamp_seconds",
                "When the sidecar first saw this model version configured (Unix time).",
                ["model", "model_version"], registry=self.registry)
        self._model_info.labels(self.model, version, *(str(info[k]) for k in keys)).set(1)
        if deployed_timestamp is not None:
            self.model_deployed.labels(self.model, version).set(deployed_timestamp)

    def version_label(self, version: str | None, default: str, events: int = 1) -> str:
        """The capped ``model_version`` label of ``events`` events of ``version`` (or ``default``)."""
        return self.model_versions(version or default, events)

    def _forget_version(self, version: str) -> None:
        """A version lost its slot: its series go (they would otherwise pile up, one set per
        reclaimed slot); if it comes back, it starts from 0 like a new version."""
        for metric in list(vars(self).values()):
            if isinstance(metric, MetricWrapperBase) and "model_version" in metric._labelnames:
                at = metric._labelnames.index("model_version")
                with metric._lock:
                    gone = [key for key in metric._metrics if key[at] == version]
                for key in gone:
                    metric.remove(*key)

