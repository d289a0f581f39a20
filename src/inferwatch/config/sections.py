"""The sections of the sidecar's configuration, one dataclass each, with their defaults.

Every component takes its own section (``DriftConfig``, ``GuardConfig`` ...), never the whole
``Config``. Defaults are documented in docs/configuration.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

CODECS = ("auto", "kserve_v1", "open_inference_v2", "seldon_v1", "mlflow", "records")


@dataclass
class ModelConfig:
    name: str = "model"
    version: str = "unversioned"
    # Free-form labels added to inferwatch_model_info (e.g. framework, git_sha).
    info: dict[str, str] = field(default_factory=dict)


@dataclass
class UpstreamConfig:
    url: str = "http://127.0.0.1:8081"
    timeout_seconds: float = 30.0
    connect_timeout_seconds: float = 5.0
    # Once the model server has started its answer (head and first bytes within timeout_seconds),
    # the longest silence between two chunks of it: a stream may last any time while it moves.
    read_timeout_seconds: float = 30.0
    max_connections: int = 256
    # Longest wait for one of max_connections to come free (HAProxy's `timeout queue`); the wait
    # counts against timeout_seconds too.
    pool_timeout_seconds: float = 30.0
    health_path: str = "/"
    health_interval_seconds: float = 5.0


@dataclass
class ProxyConfig:
    enabled: bool = True
    listen_address: str = "0.0.0.0"
    port: int = 8080
    max_body_bytes: int = 64 * 1024 * 1024
    # Route templates for the `endpoint` label and for deciding what is a prediction, in
    # addition to the built-in inference routes, e.g. "/score/{model}".
    routes: list[str] = field(default_factory=list)
    # Methods whose responses on an inference route are decoded as predictions.
    prediction_methods: list[str] = field(default_factory=lambda: ["POST"])
    # Client connections (serving/connections.py): a request head must arrive within
    # header_timeout_seconds; an idle keep-alive connection is closed after idle_timeout_seconds
    # (longer than cloud load balancers keep theirs, so they never reuse one we closed); past
    # max_connections the longest-waiting idle one is closed to make room.
    header_timeout_seconds: float = 10.0
    idle_timeout_seconds: float = 3630.0
    max_connections: int = 1024
    # The monitoring copy of one body (request or response); past it a response keeps this much,
    # marked truncated, and a request streams to the model server unmonitored (both counted).
    max_monitored_body_bytes: int = 8 * 1024 * 1024
    # All monitoring copies held by requests in flight at once; past it bodies stream through
    # unmonitored (counted), so memory follows configuration, not traffic (docs/design.md).
    monitoring_budget_bytes: int = 64 * 1024 * 1024
    # The gRPC port (serving/grpc_proxy.py): 0 = off. Every call is forwarded unchanged to
    # grpc_upstream ("host:port", the model server's gRPC port); a message larger than
    # grpc_max_message_bytes, either way, is refused with RESOURCE_EXHAUSTED (counted).
    grpc_port: int = 0
    grpc_upstream: str = ""
    grpc_max_message_bytes: int = 4 * 1024 * 1024
    # The HTTP data plane (docs/design.md, "The data plane"): "fast" (an asyncio.Protocol server
    # and pooled client on the httptools parser) or "aiohttp" (aiohttp's server and client).
    engine: Literal["aiohttp", "fast"] = "fast"
    # Proxy processes on the port (serving/workers.py): above 1, N processes of the fast engine
    # listen with SO_REUSEPORT and hand their exchanges to this process's one pipeline.
    workers: int = 1


@dataclass
class AuthConfig:
    # A static bearer token, or basic-auth users mapped to password hashes made by
    # `inferwatch hash-password`. Empty = no authentication.
    bearer_token: str = ""
    # ... or a file holding the token (a mounted secret), read once when the configuration loads.
    bearer_token_file: str = ""
    basic_users: dict[str, str] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return bool(self.bearer_token or self.basic_users)


@dataclass
class FailedAuthConfig:
    # Failed basic-auth checks (each costs a password hash) a client address may make: a burst,
    # refilled at per_minute; past it the answer is 429 without hashing. At most max_clients
    # addresses are remembered (least recently failed forgotten first).
    burst: int = 10
    per_minute: float = 10.0
    max_clients: int = 4096


@dataclass
class TLSConfig:
    cert_file: str = ""
    key_file: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)


@dataclass
class AdminConfig:
    listen_address: str = "0.0.0.0"
    port: int = 9180
    max_body_bytes: int = 16 * 1024 * 1024
    # Threads for the write endpoints (push, labels, alerts); probes and scrapes never wait for them.
    threads: int = 8
    # As proxy.*: probes open a new connection each time, Prometheus keeps one alive between scrapes.
    header_timeout_seconds: float = 10.0
    idle_timeout_seconds: float = 75.0
    # A push body must arrive whole within this (else 408).
    body_timeout_seconds: float = 30.0
    max_connections: int = 128
    tls: TLSConfig = field(default_factory=TLSConfig)
    # Separate credentials for scraping (/metrics) and for writes (/v1/events, ...).
    metrics_auth: AuthConfig = field(default_factory=AuthConfig)
    write_auth: AuthConfig = field(default_factory=AuthConfig)
    failed_auth: FailedAuthConfig = field(default_factory=FailedAuthConfig)


@dataclass
class FeatureSpec:
    name: str
    type: Literal["auto", "numeric", "categorical"] = "auto"

    @classmethod
    def from_shorthand(cls, name: str) -> "FeatureSpec":
        """``features: [age, region]``: a feature given by its name alone."""
        return cls(name=name)


@dataclass
class PayloadConfig:
    codec: Literal["auto", "kserve_v1", "open_inference_v2", "mlflow", "records"] = "auto"
    # Names for positional (list) rows, in order; also declares types.
    features: list[FeatureSpec] = field(default_factory=list)
    # Dotted paths to the inputs in the request and the outputs in the response, overriding
    # the codec's own, e.g. "data.rows" or "result.scores".
    input_path: str = ""
    output_path: str = ""
    # Bodies above this are forwarded but not decoded (counted as reason="too_large").
    max_decode_bytes: int = 8 * 1024 * 1024

    @property
    def feature_names(self) -> list[str]:
        return [spec.name for spec in self.features]


@dataclass
class WindowConfig:
    max_events: int = 10_000
    max_age_seconds: float = 3600.0


@dataclass
class LimitsConfig:
    max_model_versions: int = 8
    max_features: int = 256
    max_outputs: int = 32
    max_categories: int = 64


@dataclass
class QueueConfig:
    max_items: int = 10_000
    # The bodies and decoded batches waiting for the worker, in bytes; beyond either bound an
    # item is dropped and counted (inferwatch_events_dropped_total{reason="queue_full"}).
    max_bytes: int = 64 * 1024 * 1024


@dataclass
class ShutdownConfig:
    # On SIGTERM /readyz answers 503 for this long first, while everything is still served, so the
    # load balancer stops sending before the ports close.
    readiness_delay_seconds: float = 2.0
    # Then the ports close, in-flight requests finish and the monitoring queue is processed, for at
    # most this long; what is left is counted, logged, and the exit code is 1. The default and the
    # delay fit Kubernetes' 30 s terminationGracePeriodSeconds.
    drain_timeout_seconds: float = 25.0


@dataclass
class CloudEventsConfig:
    # KServe/Seldon payload loggers send a request and its response as two CloudEvents; the
    # first half waits here for the second, bounded in count and time.
    max_pending: int = 10_000
    ttl_seconds: float = 60.0
    # KServe ce-component values monitored; others (a transformer's raw inputs) are dropped
    # and counted. Empty: every component.
    components: list[str] = field(default_factory=lambda: ["predictor"])
    # A KServe ce-endpoint other than "default" (a canary) is its own model_version.
    endpoint_versions: bool = True


@dataclass
class ProcessConfig:
    # How to find the model server's process: a pid, a pidfile, or a regular expression
    # matched against the process name and command line. None set = no process metrics.
    pid: int = 0
    pidfile: str = ""
    match: str = ""
    gpu: bool = True


@dataclass
class PredictionLogConfig:
    path: str = ""
    # Share of events whose inputs and outputs are written (metadata is always written).
    sample_rate: float = 0.0
    redact: list[str] = field(default_factory=list)
    max_bytes: int = 100 * 1024 * 1024
    backup_count: int = 5


@dataclass
class LoggingConfig:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


@dataclass
class ReferenceConfig:
    # A reference profile made by `inferwatch profile` (docs/reference-profile.md) ...
    path: str = ""
    # ... or, without a file, the first N production events frozen as the reference (0 = off).
    warmup_events: int = 0

    @property
    def enabled(self) -> bool:
        return bool(self.path or self.warmup_events)


@dataclass
class FeatureDriftConfig:
    # Per-feature (or per-output) override of the drift decision; see docs/drift.md.
    method: str = "auto"
    threshold: float = 0.0  # 0 = the method's default (drift.thresholds)
    enabled: bool = True
    # A test's decision also needs this share of probability mass moved (KS D / total
    # variation, 0 to 1); -1 = drift.min_effect, 0 = significance alone.
    min_effect: float = -1.0


@dataclass
class DriftConfig:
    # Active when a reference is configured (reference.path or reference.warmup_events).
    interval_seconds: float = 60.0
    # Windows with fewer present values of a feature are not evaluated (no series for it).
    min_events: int = 100
    # Statistics published as inferwatch_feature_drift_score{method}; empty = every method of the type.
    methods: list[str] = field(default_factory=list)
    # inferwatch_feature_statistic (mean, std, quantiles, ... of reference and current).
    summary_statistics: bool = True
    # The decision: "auto" = the test (ks / chi2) at every window size, which also needs the effect
    # (KS D / total variation: the share of mass that moved) to reach min_effect (docs/drift.md).
    numeric_method: str = "auto"
    categorical_method: str = "auto"
    min_effect: float = 0.03
    # The same test on the window's most recent events, corrected with the full window's tests as
    # one family, so an abrupt shift is decided within an evaluation or two; 0 = off.
    recent_events: int = 1000
    # No longer used (auto decided by a distance above this many events before issue 19); kept so
    # existing files load.
    sample_test_max_events: int = 1000
    # p-value decisions: family-wise (bonferroni) or false discovery rate (bh) at alpha.
    correction: Literal["bonferroni", "bh", "none"] = "bonferroni"
    alpha: float = 0.01
    # Distance decisions: score >= threshold; keys are methods (defaults in docs/drift.md).
    thresholds: dict[str, float] = field(default_factory=dict)
    # The dataset drifted when at least this share of features drifted (0 = any one feature).
    dataset_drift_share: float = 0.0
    features: dict[str, FeatureDriftConfig] = field(default_factory=dict)
    # Cumulative per-bin counters for fleet-wide PSI in PromQL.
    bin_counters: bool = True


@dataclass
class BandConfig:
    # A named range of an output's values: min <= value < max (the highest band also includes
    # its max). Values in no band are counted as the band `unbanded`; overlapping bands are errors.
    name: str
    min: float = -math.inf
    max: float = math.inf
    # The share of predictions expected in this band (0-1): InferwatchPredictionBandShift
    # compares the band's recent share with it; unset (-1) = with the band's own past share.
    expected_share: float = -1.0


@dataclass
class RangeRuleConfig:
    # An unreasonable-output rule: a value outside [min, max] counts under `name`.
    name: str
    min: float = -math.inf
    max: float = math.inf


OUTPUT_TYPES = ("class", "score", "value")
UNBANDED = "unbanded"
BUILTIN_OUTPUT_RULES = ("non_finite", "not_numeric", "outside_probability", "unknown_class")


@dataclass
class OutputSpec:
    # class: a label (or class number) -> inferwatch_predicted_class_total{class};
    # score: a probability or score -> inferwatch_prediction_score histogram, bands, [0, 1] rule;
    # value: a regression value -> inferwatch_prediction_value histogram, bands.
    type: str = ""
    # Histogram bucket upper bounds (score/value); empty = the type's defaults (docs/configuration.md).
    buckets: list[float] = field(default_factory=list)
    bands: list[BandConfig] = field(default_factory=list)
    rules: list[RangeRuleConfig] = field(default_factory=list)
    # score: a value outside [0, 1] is unreasonable (rule outside_probability); false for raw scores.
    probability: bool = True
    # class: the known classes; others count as `other` and as rule unknown_class. Empty = the
    # first max_classes classes seen, then `other`.
    classes: list[str] = field(default_factory=list)
    max_classes: int = 0  # 0 = predictions.max_classes


@dataclass
class PredictionsConfig:
    # What each model output is; see docs/configuration.md#predictions.
    outputs: dict[str, OutputSpec] = field(default_factory=dict)
    # Outputs not listed: categorical ones are classes, numeric ones values (default buckets).
    auto: bool = True
    max_classes: int = 20


@dataclass
class SegmentsConfig:
    # Features whose values slice requests, drift and performance (e.g. [region]); see
    # docs/configuration.md#segments. Each becomes a `segment` label value.
    features: list[str] = field(default_factory=list)
    # Label values per segment feature: the reference profile's most frequent categories (with
    # reference.path), then the first distinct values seen, max_values in all; the rest `other`
    # (counted in inferwatch_label_values_capped_total{label="segment"}).
    max_values: int = 10
    # Drift per segment value: each value's rows of the version's window are evaluated by the
    # drift engine (needs a reference); costs about one extra evaluation per segment feature.
    drift: bool = True

    @property
    def enabled(self) -> bool:
        return bool(self.features)


@dataclass
class LabelsConfig:
    # Ground truth joined to predictions by prediction id (POST /v1/labels on the admin port).
    enabled: bool = False
    # The join store: predictions waiting for their label, bounded in count and time (the
    # oldest is evicted first; evictions are counted). About 600 bytes per max_pending (measured,
    # 34-character ids): a waiting prediction, and an id remembered after its label or eviction.
    max_pending: int = 100_000
    ttl_seconds: float = 86_400.0
    # Labels accepted in one POST (more is a 400 saying so).
    max_batch: int = 10_000


@dataclass
class PerformanceConfig:
    # What the model does: "auto" decides from the configured outputs, else on the first label
    # from the reference profile and the values seen (monitors/performance/task.py).
    task: Literal["auto", "classification", "regression"] = "auto"
    # The output holding the predicted class or value ("" = "prediction" when present, else the
    # first output) and, for binary classifiers, the one holding the positive class's probability.
    prediction_output: str = ""
    score_output: str = ""
    # Binary classification: the positive and negative classes (as label values: "1", "true",
    # "fraud" ...), and the decision threshold used when only a score is given.
    positive_class: str = "1"
    negative_class: str = "0"
    threshold: float = 0.5
    # The labelled window performance is computed over, per model version.
    max_events: int = 10_000
    max_age_seconds: float = 7 * 86_400.0
    interval_seconds: float = 60.0
    # Fewer labelled events in the window: no performance series (too noisy to publish).
    min_events: int = 30
    # Distinct classes exported (confusion matrix cells); the rest are "other". The metrics
    # compare the real classes, so the cap never makes two classes a hit.
    max_classes: int = 20
    # Adjusted R²: the model's number of features (0 = the features seen in the window).
    feature_count: int = 0
    # Confidence-based performance estimation from calibrated scores of a binary classifier.
    estimation: bool = True
    # Binary classifiers with a score: a prediction whose probability for the class it chose is at
    # least this is confident; the share of labelled predictions confident and wrong is the metric
    # confident_error_rate (an unreasonable answer only labels can reveal).
    confident_score: float = 0.9
    # Regression: MAPE leaves out rows whose |true value| is at most this (0: only exact zeros),
    # so a truth at or near zero cannot blow the ratio up (docs/configuration.md).
    mape_min_abs_target: float = 0.0


@dataclass
class ChallengerConfig:
    name: str  # the `challenger` label value
    url: str  # its model server; the request's path and query are appended


@dataclass
class ShadowConfig:
    # Challengers that get a copy of sampled inference requests; their answers are compared with
    # the champion's and never returned to the client.
    challengers: list[ChallengerConfig] = field(default_factory=list)
    sample_rate: float = 1.0
    # Mirrored requests waiting per challenger; when full a request is not mirrored (counted).
    max_queue: int = 1000
    # ... and their request bodies' bytes per challenger (large payloads fill memory long before
    # max_queue items do); beyond it a request is not mirrored (counted, reason queue_bytes).
    max_queue_bytes: int = 64 * 1024 * 1024
    # Mirrored requests in flight per challenger.
    concurrency: int = 4
    timeout_seconds: float = 10.0
    # Regression: answers within this absolute difference agree.
    agreement_tolerance: float = 0.0
    # inferwatch_shadow_agreement_ratio is over the last this many comparisons.
    agreement_window: int = 1000

    @property
    def enabled(self) -> bool:
        return bool(self.challengers)


@dataclass
class QuarantineConfig:
    # JSON lines of the events that failed a check or were outliers, with the reasons; off when empty.
    path: str = ""
    max_bytes: int = 100 * 1024 * 1024
    backup_count: int = 5


@dataclass
class GuardConfig:
    # Data quality checks, schema change detection and outlier scores on every windowed event,
    # against the reference profile's schema (or payload.features when there is no profile).
    enabled: bool = True
    # A numeric value is out of range outside [min - t * (max - min), max + t * (max - min)] of the reference.
    range_tolerance: float = 0.1
    # Duplicates: an event whose feature vector equals one of the last N distinct vectors
    # (0 = window.max_events).
    duplicates: bool = True
    duplicate_memory_events: int = 0
    # Unexpected feature names: the most frequent ones become `feature` label values once present
    # in at least `unknown_feature_min_events` events, up to `max_unknown_features` names (kept
    # once given); the rest are "other". A client sending random keys cannot take the labels.
    max_unknown_features: int = 10
    unknown_feature_min_events: int = 10
    # Schema change: among the last `schema_window_events` events (once at least
    # `schema_min_events` arrived), a schema feature missing from, or a new feature present in,
    # at least `schema_change_share` of them.
    schema_window_events: int = 200
    schema_min_events: int = 20
    schema_change_share: float = 0.95
    # Outliers: Mahalanobis distance on the standardised numeric features, the threshold
    # calibrated on the reference for this false-positive rate.
    outliers: bool = True
    outlier_fpr: float = 0.001
    # Features named per outlier (largest robust z-scores) in the quarantine and prediction logs.
    top_features: int = 3
    quarantine: QuarantineConfig = field(default_factory=QuarantineConfig)


@dataclass
class OutputMatcherConfig:
    # A regular expression searched in each completion's text; a response that matches counts
    # once in inferwatch_genai_output_matches_total{matcher=name} (e.g. refusals, a secret pattern).
    name: str
    pattern: str


@dataclass
class GenAIConfig:
    # OpenAI-compatible serving (/v1/chat/completions, /v1/completions, /v1/embeddings, also under a
    # one-segment prefix such as /openai/v1/...): routes and bodies are recognised automatically.
    enabled: bool = True
    output_matchers: list[OutputMatcherConfig] = field(default_factory=list)
    # Distinct `request_model` label values (the request body's "model"); the rest are "other".
    max_request_models: int = 20
    # Prompt and completion text is never a label and is left out of the prediction log unless this is set.
    keep_text_in_prediction_log: bool = False
