"""Configuration: YAML with ${ENV} interpolation, parsed once into typed, frozen-ish objects.

Every problem is reported as ``file:key: message`` and all problems are collected before
failing, so a user fixes a file in one pass. Defaults are documented in docs/configuration.md.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import yaml

CODECS = ("auto", "kserve_v1", "open_inference_v2", "mlflow", "records")


class ConfigError(Exception):
    """Raised with every problem found; ``problems`` are ``file:key: message`` lines."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


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
    max_connections: int = 256
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
    threads: int = 8
    tls: TLSConfig = field(default_factory=TLSConfig)
    # Separate credentials for scraping (/metrics) and for writes (/v1/events, ...).
    metrics_auth: AuthConfig = field(default_factory=AuthConfig)
    write_auth: AuthConfig = field(default_factory=AuthConfig)


@dataclass
class FeatureSpec:
    name: str
    type: Literal["auto", "numeric", "categorical"] = "auto"


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
class CloudEventsConfig:
    # KServe/Seldon payload loggers send a request and its response as two CloudEvents; the
    # first half waits here for the second, bounded in count and time.
    max_pending: int = 10_000
    ttl_seconds: float = 60.0


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


DRIFT_METHODS = ("ks", "psi", "js", "hellinger", "kl", "wasserstein", "chi2", "linf")


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
    # The decision: "auto" = a test (ks / chi2) while a window holds at most
    # sample_test_max_events values of the feature, a distance (wasserstein / js) above.
    numeric_method: str = "auto"
    categorical_method: str = "auto"
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
    # What the model does: "auto" decides on the first label (class-like values, i.e. strings,
    # booleans and integers on both sides, mean classification; anything else regression).
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
    # Distinct classes tracked (confusion matrix, macro averages); the rest are "other".
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
class HTTPActionConfig:
    # An HTTP request, e.g. to trigger a DAG run in an orchestrator's REST API. Strings in the URL,
    # headers and body may use {{ label }}, {{ annotations.name }}, {{ fingerprint }}, {{ status }},
    # {{ startsAt }}, {{ generatorURL }} of the alert (plain substitution, no expressions).
    url: str = ""
    method: Literal["POST", "PUT", "PATCH", "GET", "DELETE"] = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    # A mapping or list is sent as JSON (each string templated, then JSON-encoded: label values
    # cannot break the document); a string is templated and sent as it is.
    body: Any = None


@dataclass
class ActionConfig:
    name: str
    # Alertmanager-style matchers on the alert's labels, all of which must hold:
    # name="value", name!="value", name=~"regex", name!~"regex" (quotes optional).
    matchers: list[str] = field(default_factory=list)
    # Exactly one of an HTTP request and a command (an argv list: no shell; items templated).
    http: HTTPActionConfig = field(default_factory=HTTPActionConfig)
    command: list[str] = field(default_factory=list)
    # After a run, the action does not run again for alerts with the same cooldown_by label
    # values ([] = the action as a whole) for this long. A failed run does not start a cooldown.
    cooldown_seconds: float = 3600.0
    cooldown_by: list[str] = field(default_factory=list)
    # Failed attempts (connection errors, timeouts, HTTP 5xx/429, non-zero exit) are retried
    # with exponential backoff: backoff_seconds, 2x, 4x ... at most max_backoff_seconds.
    retries: int = 3
    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 60.0
    timeout_seconds: float = 30.0


@dataclass
class AuditLogConfig:
    # JSON lines of what ran, why and with what result; "" = stdout.
    path: str = ""
    max_bytes: int = 64 * 1024 * 1024
    backup_count: int = 3


@dataclass
class ActionsConfig:
    # `inferwatch actions` listens here; in the sidecar the receiver is on the admin port instead.
    listen_address: str = "127.0.0.1"
    port: int = 9190
    tls: TLSConfig = field(default_factory=TLSConfig)
    # Credentials Alertmanager sends (webhook_configs[].http_config.authorization).
    auth: AuthConfig = field(default_factory=AuthConfig)
    max_body_bytes: int = 4 * 1024 * 1024
    # Matched alerts wait here for a worker; when full they are dropped and counted.
    max_queue_items: int = 100
    workers: int = 2
    # Firing alerts remembered for de-duplication and cooldowns (oldest forgotten first, counted).
    max_tracked_alerts: int = 10_000
    audit_log: AuditLogConfig = field(default_factory=AuditLogConfig)
    actions: list[ActionConfig] = field(default_factory=list)
    source: str = "<defaults>"

    def auth_kind(self) -> str:
        return "bearer token" if self.auth.bearer_token else "basic auth" if self.auth.basic_users else "none"

    def exposure_warning(self, listen_address: str) -> str:
        """A warning when the receiver, which starts jobs, takes alerts from anyone who can reach a
        non-loopback address; "" otherwise."""
        if self.auth.enabled or not self.actions or _is_loopback(listen_address):
            return ""
        return (f"actions: the receiver on {listen_address} has no authentication: anyone who reaches it can "
                f"run {', '.join(a.name for a in self.actions)}; set auth.bearer_token or auth.bearer_token_file "
                f"(what Alertmanager sends)")


def _is_loopback(address: str) -> bool:
    import ipaddress

    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    payload: PayloadConfig = field(default_factory=PayloadConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    cloudevents: CloudEventsConfig = field(default_factory=CloudEventsConfig)
    process: ProcessConfig = field(default_factory=ProcessConfig)
    prediction_log: PredictionLogConfig = field(default_factory=PredictionLogConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    predictions: PredictionsConfig = field(default_factory=PredictionsConfig)
    segments: SegmentsConfig = field(default_factory=SegmentsConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    performance: PerformanceConfig = field(default_factory=PerformanceConfig)
    shadow: ShadowConfig = field(default_factory=ShadowConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    # Alert-triggered actions on the admin port (POST /v1/alerts); off while `actions.actions` is empty.
    actions: ActionsConfig = field(default_factory=ActionsConfig)
    source: str = "<defaults>"

    def summary(self) -> str:
        features = ", ".join(self.payload.feature_names) or "(discovered from traffic)"
        lines = [
            f"model:       {self.model.name} version {self.model.version}",
            f"upstream:    {self.upstream.url} (timeout {self.upstream.timeout_seconds:g}s)",
            f"proxy:       {'%s:%d' % (self.proxy.listen_address, self.proxy.port) if self.proxy.enabled else 'disabled'}",
            f"admin:       {self.admin.listen_address}:{self.admin.port}"
            f"{' tls' if self.admin.tls.enabled else ''}"
            f"{' metrics-auth' if self.admin.metrics_auth.enabled else ''}"
            f"{' write-auth' if self.admin.write_auth.enabled else ''}",
            f"codec:       {self.payload.codec}",
            f"features:    {features}",
            f"window:      {self.window.max_events} events, {self.window.max_age_seconds:g}s",
            f"queue:       {self.queue.max_items} items, {self.queue.max_bytes / 2**20:g} MiB",
        ]
        if self.reference.enabled:
            source = self.reference.path or f"the first {self.reference.warmup_events} events"
            lines.append(f"drift:       against {source}, every {self.drift.interval_seconds:g}s "
                         f"({self.drift.correction} at alpha {self.drift.alpha:g})")
        else:
            lines.append("drift:       off (no reference: set reference.path or reference.warmup_events)")
        outputs = []
        for name, spec in self.predictions.outputs.items():
            detail = [f"{len(spec.bands)} bands"] if spec.bands else []
            if spec.type == "class":
                detail.append(f"classes {', '.join(spec.classes)}" if spec.classes else "classes as seen")
            detail += [f"rule {rule.name}" for rule in spec.rules]
            outputs.append(f"{name} ({', '.join([spec.type, *detail])})")
        if outputs:
            auto = "; others typed from traffic" if self.predictions.auto else "; no others"
            lines.append(f"outputs:     {', '.join(outputs)}{auto}")
        if self.segments.enabled:
            lines.append(f"segments:    {', '.join(self.segments.features)} ({self.segments.max_values} values each"
                         f"{', drift per value' if self.segments.drift and self.reference.enabled else ''})")
        if self.labels.enabled:
            lines.append(f"labels:      on, {self.labels.max_pending} pending for {self.labels.ttl_seconds:g}s; "
                         f"performance ({self.performance.task}) every {self.performance.interval_seconds:g}s")
        if self.shadow.enabled:
            names = ", ".join(ch.name for ch in self.shadow.challengers if ch is not None)
            lines.append(f"shadow:      {names} (sample rate {self.shadow.sample_rate:g})")
        if self.actions.actions:
            names = ", ".join(a.name for a in self.actions.actions)
            lines.append(f"actions:     {names} on the admin port's /v1/alerts (auth: {self.actions.auth_kind()})")
            warning = self.actions.exposure_warning(self.admin.listen_address)
            if warning:
                lines.append(f"WARNING:     {warning}")
        return "\n".join(lines)


# --- loading -----------------------------------------------------------------------------

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate_env(data: Any, source: str, environ: typing.Mapping[str, str] | None = None, _path: str = "",
                    _problems: list[str] | None = None) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in the string values of parsed YAML.

    Done after parsing, so comments are never touched and problems name the key. A value that
    is exactly one ``${...}`` takes the type its text has in YAML (``port: ${PORT}`` is an int).
    An unset variable without a default is an error.
    """
    environ = os.environ if environ is None else environ
    problems: list[str] = [] if _problems is None else _problems
    if isinstance(data, dict):
        result: Any = {k: interpolate_env(v, source, environ, f"{_path}.{k}" if _path else str(k), problems)
                       for k, v in data.items()}
    elif isinstance(data, list):
        result = [interpolate_env(v, source, environ, f"{_path}[{i}]", problems) for i, v in enumerate(data)]
    elif isinstance(data, str) and "${" in data:
        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            problems.append(f"{source}:{_path}: environment variable {name} is not set and has no default")
            return ""

        result = _ENV.sub(replace, data)
        if _ENV.fullmatch(data):
            try:
                result = yaml.safe_load(result) if result.strip() else None
            except yaml.YAMLError:
                pass
            if isinstance(result, (dict, list)):  # a variable may set a scalar, not a structure
                result = _ENV.sub(replace, data)
    else:
        result = data
    if _problems is None and problems:
        raise ConfigError(problems)
    return result


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "mapping"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return {int: "integer", float: "number", str: "string", bool: "boolean", Any: "any value"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, key: str, problems: list[str], source: str) -> Any:
    """Check ``value`` against ``tp``; append a problem and return None when it does not fit."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value

    def bad() -> None:
        problems.append(f"{source}:{key}: expected {_type_name(tp)}, got {value!r}")

    if origin is Literal:
        if value not in typing.get_args(tp):
            bad()
            return None
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str) and item_tp in (str, FeatureSpec):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            bad()
            return None
        return [_coerce(v, item_tp, f"{key}[{i}]", problems, source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            bad()
            return None
        value_tp = typing.get_args(tp)[1] if typing.get_args(tp) else str
        return {str(k): _coerce(v, value_tp, f"{key}.{k}", problems, source) for k, v in value.items()}
    if tp is FeatureSpec and isinstance(value, str):
        return FeatureSpec(name=value)
    if dataclasses.is_dataclass(tp):
        if value is None:
            return tp()
        if not isinstance(value, dict):
            bad()
            return None
        return _build(tp, value, key, problems, source)
    if tp is bool:
        if not isinstance(value, bool):
            bad()
            return None
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            bad()
            return None
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            bad()
            return None
        return float(value)
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            bad()
            return None
        return str(value)
    raise TypeError(f"unsupported config type {tp}")


def _build(cls: Any, data: dict[str, Any], prefix: str, problems: list[str], source: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.name != "source"}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            problems.append(f"{source}:{path}: unknown key (expected one of {', '.join(sorted(names))})")
            continue
        if value is None:  # `key:` with nothing after it means the default
            continue
        coerced = _coerce(value, hints[key], path, problems, source)
        if coerced is not None:
            kwargs[key] = coerced
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in kwargs
    ]
    for name in missing:
        problems.append(f"{source}:{prefix + '.' if prefix else ''}{name}: required key is missing")
    if missing:
        return None
    return cls(**kwargs)


def _validate(cfg: Config, problems: list[str]) -> None:
    src = cfg.source

    def positive(key: str, value: float) -> None:
        if value <= 0:
            problems.append(f"{src}:{key}: must be greater than 0, got {value!r}")

    url = urlparse(cfg.upstream.url)
    if url.scheme not in ("http", "https") or not url.netloc:
        problems.append(f"{src}:upstream.url: expected an http(s) URL, got {cfg.upstream.url!r}")
    for key, value in (
        ("upstream.timeout_seconds", cfg.upstream.timeout_seconds),
        ("upstream.connect_timeout_seconds", cfg.upstream.connect_timeout_seconds),
        ("upstream.max_connections", cfg.upstream.max_connections),
        ("upstream.health_interval_seconds", cfg.upstream.health_interval_seconds),
        ("proxy.max_body_bytes", cfg.proxy.max_body_bytes),
        ("admin.max_body_bytes", cfg.admin.max_body_bytes),
        ("admin.threads", cfg.admin.threads),
        ("payload.max_decode_bytes", cfg.payload.max_decode_bytes),
        ("window.max_events", cfg.window.max_events),
        ("window.max_age_seconds", cfg.window.max_age_seconds),
        ("limits.max_model_versions", cfg.limits.max_model_versions),
        ("limits.max_features", cfg.limits.max_features),
        ("limits.max_outputs", cfg.limits.max_outputs),
        ("limits.max_categories", cfg.limits.max_categories),
        ("queue.max_items", cfg.queue.max_items),
        ("queue.max_bytes", cfg.queue.max_bytes),
        ("cloudevents.max_pending", cfg.cloudevents.max_pending),
        ("cloudevents.ttl_seconds", cfg.cloudevents.ttl_seconds),
        ("prediction_log.max_bytes", cfg.prediction_log.max_bytes),
        ("labels.max_pending", cfg.labels.max_pending),
        ("labels.ttl_seconds", cfg.labels.ttl_seconds),
        ("labels.max_batch", cfg.labels.max_batch),
        ("performance.max_events", cfg.performance.max_events),
        ("performance.max_age_seconds", cfg.performance.max_age_seconds),
        ("performance.interval_seconds", cfg.performance.interval_seconds),
        ("performance.min_events", cfg.performance.min_events),
        ("performance.max_classes", cfg.performance.max_classes),
        ("shadow.max_queue", cfg.shadow.max_queue),
        ("shadow.max_queue_bytes", cfg.shadow.max_queue_bytes),
        ("shadow.concurrency", cfg.shadow.concurrency),
        ("shadow.timeout_seconds", cfg.shadow.timeout_seconds),
        ("shadow.agreement_window", cfg.shadow.agreement_window),
    ):
        positive(key, value)
    for key, port in (("proxy.port", cfg.proxy.port), ("admin.port", cfg.admin.port)):
        if not 0 <= port <= 65535:
            problems.append(f"{src}:{key}: expected a port number 0-65535, got {port}")
    if cfg.proxy.enabled and cfg.proxy.port and cfg.proxy.port == cfg.admin.port:
        problems.append(f"{src}:admin.port: must differ from proxy.port ({cfg.proxy.port})")
    if not cfg.upstream.health_path.startswith("/"):
        problems.append(f"{src}:upstream.health_path: must start with '/', got {cfg.upstream.health_path!r}")
    for i, route in enumerate(cfg.proxy.routes):
        if not route.startswith("/"):
            problems.append(f"{src}:proxy.routes[{i}]: a route template must start with '/', got {route!r}")
    if not 0.0 <= cfg.prediction_log.sample_rate <= 1.0:
        problems.append(
            f"{src}:prediction_log.sample_rate: expected a number from 0 to 1, got {cfg.prediction_log.sample_rate}"
        )
    if cfg.admin.tls.cert_file and not cfg.admin.tls.key_file:
        problems.append(f"{src}:admin.tls.key_file: required when admin.tls.cert_file is set")
    for key, path in (("admin.tls.cert_file", cfg.admin.tls.cert_file), ("admin.tls.key_file", cfg.admin.tls.key_file)):
        if path and not Path(path).is_file():
            problems.append(f"{src}:{key}: file not found: {path}")
    if cfg.process.match:
        try:
            re.compile(cfg.process.match)
        except re.error as exc:
            problems.append(f"{src}:process.match: not a valid regular expression ({exc})")
    _validate_drift(cfg, problems)
    _validate_segments(cfg, problems)
    _validate_shadow(cfg, problems)
    perf = cfg.performance
    if not 0.0 <= perf.threshold <= 1.0:
        problems.append(f"{src}:performance.threshold: expected a number from 0 to 1, got {perf.threshold}")
    if not (math.isfinite(perf.mape_min_abs_target) and perf.mape_min_abs_target >= 0):
        problems.append(f"{src}:performance.mape_min_abs_target: expected a number >= 0, "
                        f"got {perf.mape_min_abs_target}")
    if not 0.5 < perf.confident_score <= 1.0:
        problems.append(f"{src}:performance.confident_score: expected a probability above 0.5 and at most 1, "
                        f"got {perf.confident_score}")
    if perf.positive_class == perf.negative_class:
        problems.append(f"{src}:performance.negative_class: must differ from performance.positive_class "
                        f"({perf.positive_class!r})")
    if perf.feature_count < 0:
        problems.append(f"{src}:performance.feature_count: must be 0 (the features seen) or more, "
                        f"got {perf.feature_count}")
    _validate_predictions(cfg, problems)
    _validate_guard(cfg, problems)
    for key, auth in (("admin.metrics_auth", cfg.admin.metrics_auth), ("admin.write_auth", cfg.admin.write_auth),
                      ("actions.auth", cfg.actions.auth)):
        read_token_file(auth, f"{src}:{key}", problems)
    cfg.actions.source = src
    if cfg.actions.actions:
        validate_actions(cfg.actions, problems, "actions.")
    seen: set[str] = set()
    for i, spec in enumerate(cfg.payload.features):
        if spec is None:
            continue
        if not spec.name:
            problems.append(f"{src}:payload.features[{i}].name: must not be empty")
        if spec.name in seen:
            problems.append(f"{src}:payload.features[{i}].name: duplicate feature {spec.name!r}")
        seen.add(spec.name)


def _validate_shadow(cfg: Config, problems: list[str]) -> None:
    src, sh = cfg.source, cfg.shadow
    if not 0.0 <= sh.sample_rate <= 1.0:
        problems.append(f"{src}:shadow.sample_rate: expected a number from 0 to 1, got {sh.sample_rate}")
    if sh.agreement_tolerance < 0:
        problems.append(f"{src}:shadow.agreement_tolerance: must be 0 or more, got {sh.agreement_tolerance}")
    if sh.challengers and not cfg.proxy.enabled:
        problems.append(f"{src}:shadow.challengers: shadow traffic mirrors proxied requests; proxy.enabled is false")
    names: set[str] = set()
    for i, ch in enumerate(sh.challengers):
        if ch is None:
            continue
        key = f"shadow.challengers[{i}]"
        if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", ch.name or ""):
            problems.append(f"{src}:{key}.name: expected 1-64 letters, digits, '_', '.', ':' or '-', got {ch.name!r}")
        if ch.name in names:
            problems.append(f"{src}:{key}.name: duplicate challenger {ch.name!r}")
        names.add(ch.name)
        url = urlparse(ch.url)
        if url.scheme not in ("http", "https") or not url.netloc:
            problems.append(f"{src}:{key}.url: expected an http(s) URL, got {ch.url!r}")
        elif ch.url.rstrip("/") == cfg.upstream.url.rstrip("/"):
            problems.append(f"{src}:{key}.url: is the champion (upstream.url); a challenger must be another server")


def _validate_drift(cfg: Config, problems: list[str]) -> None:
    src, d, ref = cfg.source, cfg.drift, cfg.reference
    if ref.path and ref.warmup_events:
        problems.append(f"{src}:reference.warmup_events: set either reference.path or reference.warmup_events")
    if ref.warmup_events < 0:
        problems.append(f"{src}:reference.warmup_events: must be 0 (off) or more, got {ref.warmup_events}")
    if ref.warmup_events > cfg.window.max_events:
        problems.append(f"{src}:reference.warmup_events: must not exceed window.max_events "
                        f"({cfg.window.max_events}), got {ref.warmup_events}")
    if ref.path and not Path(ref.path).is_file():
        problems.append(f"{src}:reference.path: file not found: {ref.path}")
    for key, value in (("drift.interval_seconds", d.interval_seconds), ("drift.min_events", d.min_events),
                       ("drift.sample_test_max_events", d.sample_test_max_events)):
        if value <= 0:
            problems.append(f"{src}:{key}: must be greater than 0, got {value!r}")
    if not 0.0 < d.alpha < 1.0:
        problems.append(f"{src}:drift.alpha: expected a number between 0 and 1, got {d.alpha}")
    if not 0.0 <= d.dataset_drift_share <= 1.0:
        problems.append(f"{src}:drift.dataset_drift_share: expected a number from 0 to 1, got {d.dataset_drift_share}")
    known = ", ".join(DRIFT_METHODS)
    for i, method in enumerate(d.methods):
        if method not in DRIFT_METHODS:
            problems.append(f"{src}:drift.methods[{i}]: unknown method {method!r} (expected one of {known})")
    for key, method in (("drift.numeric_method", d.numeric_method), ("drift.categorical_method", d.categorical_method),
                        *((f"drift.features.{name}.method", f.method) for name, f in d.features.items() if f)):
        if method != "auto" and method not in DRIFT_METHODS:
            problems.append(f"{src}:{key}: unknown method {method!r} (expected auto or one of {known})")
    for method, value in d.thresholds.items():
        if method not in DRIFT_METHODS:
            problems.append(f"{src}:drift.thresholds.{method}: unknown method (expected one of {known})")
        elif not value > 0:
            problems.append(f"{src}:drift.thresholds.{method}: must be greater than 0, got {value!r}")


_LABEL_VALUE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
MAX_BANDS = 16
MAX_BUCKETS = 64


def _validate_predictions(cfg: Config, problems: list[str]) -> None:
    src, pred = cfg.source, cfg.predictions
    if not 1 <= pred.max_classes <= 1000:
        problems.append(f"{src}:predictions.max_classes: expected an integer from 1 to 1000, got {pred.max_classes!r}")
    for name, spec in pred.outputs.items():
        if spec is None:
            continue
        key = f"{src}:predictions.outputs.{name}"
        if spec.type not in OUTPUT_TYPES:
            problems.append(f"{key}.type: expected one of {', '.join(OUTPUT_TYPES)}, got {spec.type!r}")
            continue
        if spec.type == "class":
            for sub in ("buckets", "bands", "rules"):
                if getattr(spec, sub):
                    problems.append(f"{key}.{sub}: only for score and value outputs, not class")
            if spec.max_classes < 0 or spec.max_classes > 1000:
                problems.append(f"{key}.max_classes: expected 0 (predictions.max_classes) to 1000, "
                                f"got {spec.max_classes!r}")
            if len(set(spec.classes)) != len(spec.classes):
                problems.append(f"{key}.classes: classes must be distinct")
            if "other" in spec.classes:
                problems.append(f"{key}.classes: 'other' is reserved for classes beyond the list")
            continue
        if spec.classes:
            problems.append(f"{key}.classes: only for class outputs")
        buckets = [b for b in spec.buckets if b is not None]
        if len(buckets) > MAX_BUCKETS:
            problems.append(f"{key}.buckets: at most {MAX_BUCKETS} buckets, got {len(buckets)}")
        if any(not math.isfinite(b) for b in buckets):
            problems.append(f"{key}.buckets: bucket bounds must be finite (+Inf is always added)")
        elif any(b >= c for b, c in zip(buckets, buckets[1:])):
            problems.append(f"{key}.buckets: bucket bounds must be strictly increasing, got {buckets}")
        _validate_bands(key, [b for b in spec.bands if b is not None], problems)
        rule_names: set[str] = set()
        for i, rule in enumerate(r for r in spec.rules if r is not None):
            where = f"{key}.rules[{i}]"
            if not _LABEL_VALUE.match(rule.name):
                problems.append(f"{where}.name: expected a name of letters, digits and _ (a label value), "
                                f"got {rule.name!r}")
            elif rule.name in BUILTIN_OUTPUT_RULES:
                problems.append(f"{where}.name: {rule.name!r} is a built-in rule "
                                f"({', '.join(BUILTIN_OUTPUT_RULES)})")
            elif rule.name in rule_names:
                problems.append(f"{where}.name: duplicate rule {rule.name!r}")
            rule_names.add(rule.name)
            if not rule.min < rule.max:
                problems.append(f"{where}: min ({rule.min:g}) must be less than max ({rule.max:g})")


def _validate_bands(key: str, bands: list[BandConfig], problems: list[str]) -> None:
    if len(bands) > MAX_BANDS:
        problems.append(f"{key}.bands: at most {MAX_BANDS} bands, got {len(bands)}")
    names: set[str] = set()
    for i, band in enumerate(bands):
        where = f"{key}.bands[{i}]"
        if not _LABEL_VALUE.match(band.name):
            problems.append(f"{where}.name: expected a name of letters, digits and _ (a label value), got {band.name!r}")
        elif band.name == UNBANDED:
            problems.append(f"{where}.name: {UNBANDED!r} is reserved for values in no band")
        elif band.name in names:
            problems.append(f"{where}.name: duplicate band {band.name!r}")
        names.add(band.name)
        if not band.min < band.max:
            problems.append(f"{where}: min ({band.min:g}) must be less than max ({band.max:g})")
        if band.expected_share != -1.0 and not 0.0 <= band.expected_share <= 1.0:
            problems.append(f"{where}.expected_share: expected a share from 0 to 1, got {band.expected_share!r}")
    ordered = sorted((b for b in bands if b.min < b.max), key=lambda b: b.min)
    for a, b in zip(ordered, ordered[1:]):
        if b.min < a.max:
            problems.append(f"{key}.bands: {a.name} [{a.min:g}, {a.max:g}) and {b.name} [{b.min:g}, {b.max:g}) "
                            f"overlap; a value must fall in at most one band")
    shares = [b.expected_share for b in bands if b.expected_share != -1.0]
    if shares and sum(shares) > 1.0 + 1e-9:
        problems.append(f"{key}.bands: expected_share values add up to {sum(shares):g}, more than 1")


MAX_SEGMENT_FEATURES = 8


def _validate_segments(cfg: Config, problems: list[str]) -> None:
    src, seg = cfg.source, cfg.segments
    if not 1 <= seg.max_values <= 1000:
        problems.append(f"{src}:segments.max_values: expected an integer from 1 to 1000, got {seg.max_values!r}")
    if len(seg.features) > MAX_SEGMENT_FEATURES:
        problems.append(f"{src}:segments.features: at most {MAX_SEGMENT_FEATURES} segment features "
                        f"(each multiplies segment series by max_values), got {len(seg.features)}")
    seen: set[str] = set()
    for i, name in enumerate(seg.features):
        if name is None:
            continue
        if not name:
            problems.append(f"{src}:segments.features[{i}]: must not be empty")
        elif name in seen:
            problems.append(f"{src}:segments.features[{i}]: duplicate segment feature {name!r}")
        seen.add(name)


def _validate_guard(cfg: Config, problems: list[str]) -> None:
    src, g = cfg.source, cfg.guard
    for key, value in (("guard.max_unknown_features", g.max_unknown_features),
                       ("guard.unknown_feature_min_events", g.unknown_feature_min_events),
                       ("guard.schema_window_events", g.schema_window_events),
                       ("guard.schema_min_events", g.schema_min_events),
                       ("guard.quarantine.max_bytes", g.quarantine.max_bytes)):
        if value <= 0:
            problems.append(f"{src}:{key}: must be greater than 0, got {value!r}")
    for key, value in (("guard.range_tolerance", g.range_tolerance), ("guard.duplicate_memory_events",
                                                                        g.duplicate_memory_events),
                       ("guard.top_features", g.top_features), ("guard.quarantine.backup_count",
                                                                 g.quarantine.backup_count)):
        if value < 0:
            problems.append(f"{src}:{key}: must be 0 or more, got {value!r}")
    if g.schema_min_events > g.schema_window_events:
        problems.append(f"{src}:guard.schema_min_events: must not exceed guard.schema_window_events "
                        f"({g.schema_window_events}), got {g.schema_min_events}")
    if not 0.5 < g.schema_change_share <= 1.0:
        problems.append(f"{src}:guard.schema_change_share: expected a number above 0.5 and at most 1, "
                        f"got {g.schema_change_share}")
    if not 0.0 < g.outlier_fpr < 0.05:
        problems.append(f"{src}:guard.outlier_fpr: expected a number between 0 and 0.05, got {g.outlier_fpr}")


def read_token_file(auth: AuthConfig, where: str, problems: list[str]) -> None:
    """Fill ``bearer_token`` from ``bearer_token_file`` (surrounding whitespace stripped)."""
    if not auth.bearer_token_file:
        return
    if auth.bearer_token:
        problems.append(f"{where}.bearer_token_file: set either bearer_token or bearer_token_file")
        return
    try:
        token = Path(auth.bearer_token_file).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{where}.bearer_token_file: cannot read {auth.bearer_token_file} ({exc})")
        return
    if not token:
        problems.append(f"{where}.bearer_token_file: {auth.bearer_token_file} is empty")
    auth.bearer_token = token


def validate_actions(cfg: ActionsConfig, problems: list[str], prefix: str = "") -> None:
    """Check an actions configuration (``prefix`` is ``actions.`` inside the sidecar's file)."""
    from .templates import Template, TemplateError, parse_matcher

    src = cfg.source

    def problem(key: str, message: str) -> None:
        problems.append(f"{src}:{prefix}{key}: {message}")

    if not prefix:   # the sidecar's file reads actions.auth's token file with the admin's
        read_token_file(cfg.auth, f"{src}:auth", problems)

    for key, value in (("max_body_bytes", cfg.max_body_bytes), ("max_queue_items", cfg.max_queue_items),
                       ("workers", cfg.workers), ("max_tracked_alerts", cfg.max_tracked_alerts),
                       ("audit_log.max_bytes", cfg.audit_log.max_bytes)):
        if value <= 0:
            problem(key, f"must be greater than 0, got {value!r}")
    if not 0 <= cfg.port <= 65535:
        problem("port", f"expected a port number 0-65535, got {cfg.port}")
    if cfg.tls.cert_file and not cfg.tls.key_file:
        problem("tls.key_file", "required when tls.cert_file is set")
    names: set[str] = set()
    for i, action in enumerate(cfg.actions):
        if action is None:
            continue
        where = f"actions[{i}]"
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", action.name or ""):
            problem(f"{where}.name", f"must be 1-64 letters, digits, '_', '.' or '-', got {action.name!r}")
        elif action.name in names:
            problem(f"{where}.name", f"duplicate action {action.name!r}")
        names.add(action.name)
        if not action.matchers:
            problem(f"{where}.matchers", "at least one matcher is required, e.g. alertname=\"InferwatchDatasetDrift\"")
        for j, text in enumerate(action.matchers):
            try:
                parse_matcher(text)
            except ValueError as exc:
                problem(f"{where}.matchers[{j}]", str(exc))
        if bool(action.http.url) == bool(action.command):
            problem(where, "needs exactly one of http (with a url) and command")
        templates: list[tuple[str, Any]] = [(f"{where}.command[{j}]", arg) for j, arg in enumerate(action.command)]
        if action.http.url:
            templates.append((f"{where}.http.url", action.http.url))
            templates += [(f"{where}.http.headers.{k}", v) for k, v in action.http.headers.items()]
            templates.append((f"{where}.http.body", action.http.body))
        for key, value in templates:
            try:
                Template.compile_tree(value)
            except TemplateError as exc:
                problem(key, str(exc))
        if action.http.url and not re.match(r"^https?://", action.http.url):
            problem(f"{where}.http.url", f"expected an http(s) URL, got {action.http.url!r}")
        for key in ("cooldown_seconds", "backoff_seconds", "max_backoff_seconds", "timeout_seconds"):
            value = getattr(action, key)
            if key == "cooldown_seconds" and value < 0 or key != "cooldown_seconds" and value <= 0:
                problem(f"{where}.{key}", f"must be {'0 or more' if key == 'cooldown_seconds' else 'greater than 0'}, "
                                          f"got {value!r}")
        if action.retries < 0:
            problem(f"{where}.retries", f"must be 0 or more, got {action.retries}")


def load_actions_config(path: str | os.PathLike[str]) -> ActionsConfig:
    """``inferwatch actions --config FILE``: the file's top level is an actions configuration."""
    data = _read_yaml(path)
    source = str(path)
    problems: list[str] = []
    cfg = _build(ActionsConfig, data, "", problems, source)
    if cfg is not None:
        cfg.source = source
        if not cfg.actions and not problems:
            problems.append(f"{source}:actions: at least one action is required")
        validate_actions(cfg, problems)
    if problems:
        raise ConfigError(problems)
    return cfg


def parse_config(data: Any, source: str = "<config>") -> Config:
    """Build a ``Config`` from parsed YAML (a mapping or None); raise ``ConfigError`` on problems."""
    problems: list[str] = []
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: expected a mapping at the top level, got {type(data).__name__}"])
    cfg = _build(Config, data, "", problems, source)
    if cfg is not None:
        cfg.source = source
        _validate(cfg, problems)
    if problems:
        raise ConfigError(problems)
    return cfg


def _read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A YAML file's top-level mapping, ${ENV} interpolated; ConfigError naming the file (and line)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{source}: file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{source}: cannot read ({exc})"]) from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError([f"{source}{where}: invalid YAML ({getattr(exc, 'problem', exc)})"]) from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError([f"{source}: expected a mapping at the top level, got {type(loaded).__name__}"])
    return interpolate_env(loaded or {}, source)


def load_config(path: str | os.PathLike[str] | None, overrides: dict[str, Any] | None = None) -> Config:
    """Load a YAML file (or nothing: defaults) and apply dotted-key ``overrides`` from the CLI."""
    data: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        data = _read_yaml(path)
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[leaf] = value
    return parse_config(data, source)


def dump_defaults() -> dict[str, Any]:
    """The default configuration as plain data (for docs and `inferwatch check-config`)."""
    cfg = Config()
    data = dataclasses.asdict(cfg)
    data.pop("source")
    data["actions"].pop("source")
    return data


__all__ = ["Config", "ConfigError", "load_config", "parse_config", "interpolate_env", "CODECS"]
