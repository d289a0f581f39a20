"""The thresholds file, ``prometheus/thresholds.yaml``: typed dataclasses and their defaults.

It loads through the sidecar's typed loader (``inferwatch.config.loader``): every problem is a
``file:key: message`` line, and all of them are reported at once. Every key is optional; a
mapping in the file overrides its default key by key, except the user-named ones (metric
bounds, per-model budgets, Kubernetes labels), which replace the default as a whole.

A field's type may carry a check of its value (``Ratio``: a number between 0 and 1; see
``constraints``), tested before the loader converts the file; checks across keys are in
:func:`validate`. The drift methods and performance metrics a rule may name are the ones
``stats`` defines.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from inferwatch.config.loader import ConfigError, build, read_yaml
from inferwatch.exposition.metrics import LATENCY_BUCKETS
from inferwatch.stats.performance import PERFORMANCE_METRICS
from inferwatch.stats.registry import DRIFT_METHODS

from .constraints import Check, as_file, checked_mapping, field_names, file_keys, nonempty_list, real, whole
from .promql import duration_seconds

#: The thresholds file's problems are configuration problems (``problems``: ``file:key: message``).
ThresholdsError = ConfigError


# Field types with their checks. Module-level names: annotations are strings, evaluated here.
SeverityName = Literal["critical", "warning", "info"]
SEVERITIES: tuple[str, ...] = typing.get_args(SeverityName)
Severity = Annotated[SeverityName,
                     Check(lambda v: v in SEVERITIES, f"must be one of {', '.join(SEVERITIES)}, got {{value!r}}")]
DropReason = Literal["queue_full", "handoff_full", "undecodable", "invalid"]
DROP_REASONS: tuple[str, ...] = typing.get_args(DropReason)

Duration = Annotated[str, Check(lambda v: isinstance(v, str) and duration_seconds(v) is not None,
                                "must be a Prometheus duration such as 5m or 1h30m, got {value!r}")]
Ratio = Annotated[float, Check(lambda v: real(v) and 0 < v < 1,
                               "must be a number between 0 and 1 (exclusive), got {value!r}")]
Positive = Annotated[float, Check(lambda v: real(v) and v > 0, "must be a positive number, got {value!r}")]
AtLeastZero = Annotated[float, Check(lambda v: real(v) and v >= 0, "must be a number >= 0, got {value!r}")]
Seconds = Annotated[float, Check(lambda v: real(v) and v > 0, "must be a positive number of seconds, got {value!r}")]
Count = Annotated[int, Check(lambda v: whole(v) and v >= 0, "must be a whole number >= 0, got {value!r}")]
Predictions = Annotated[int, Check(lambda v: whole(v) and v >= 1,
                                   "must be a whole number of predictions >= 1, got {value!r}")]
DailyAmount = Annotated[float, Check(lambda v: real(v) and v > 0, "must be a positive amount per day, got {value!r}")]
ModelBudgets = Annotated[dict[str, DailyAmount], Check(
    lambda v: isinstance(v, dict), "expected a mapping of model names to amounts per day, got {value!r}")]
HourPrice = Annotated[float, Check(lambda v: real(v) and v >= 0,
                                   "must be a price >= 0 per hour of one CPU core / one GPU, got {value!r}")]
Currency = Annotated[str, Check(lambda v: isinstance(v, str) and re.fullmatch(r"[A-Za-z]{1,8}", v) is not None,
                                "must be a currency code such as USD or EUR, got {value!r}")]
DriftMethod = Annotated[str, Check(lambda v: v in DRIFT_METHODS,
                                   f"must be one of {', '.join(DRIFT_METHODS)}, got {{value!r}}")]
DropReasons = Annotated[list[DropReason], Check(lambda v: nonempty_list(v) and set(v) <= set(DROP_REASONS),
                                                f"must be a non-empty list of {', '.join(DROP_REASONS)}, "
                                                f"got {{value!r}}")]
# Metric bounds: the names are the performance engine's metrics (stats.performance).
PerformanceMetric = Annotated[str, Check(lambda v: v in PERFORMANCE_METRICS,
                                         f"unknown metric (expected one of {', '.join(PERFORMANCE_METRICS)})")]
Bound = Annotated[float, Check(real, "must be a number, got {value!r}")]
MetricBounds = Annotated[dict[PerformanceMetric, Bound], Check(
    lambda v: isinstance(v, dict), "expected a mapping of metrics to numbers, got {value!r}")]
LatencyBucket = Annotated[float, Check(lambda v: v in LATENCY_BUCKETS,
                                       "must be a bucket boundary of inferwatch_request_duration_seconds "
                                       f"({', '.join(f'{b:g}' for b in LATENCY_BUCKETS)}), got {{value!r}}")]
ErrorTypes = Annotated[list[str], Check(lambda v: isinstance(v, list) and all(
    isinstance(x, str) and re.fullmatch(r"[a-z0-9_]+", x) for x in v),
    "must be a list of error_type values of inferwatch_genai_requests_total such as http_4xx, got {value!r}")]
Windows = Annotated[list[Duration], Check(nonempty_list, "must be a non-empty list of durations")]
RunbookBaseURL = Annotated[str, Check(lambda v: isinstance(v, str) and re.match(r"^https?://", v) is not None,
                                      "must be an http(s) URL, got {value!r}")]
Selector = Annotated[str, Check(lambda v: isinstance(v, str) and "job" in v and "{" not in v,
                                "must be label matchers without braces that select the sidecar's scrape job, "
                                "e.g. job=~\".*inferwatch.*\"; got {value!r}")]
KubernetesName = Annotated[str, Check(lambda v: isinstance(v, str) and
                                      re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", v) is not None,
                                      "must be a Kubernetes object name, got {value!r}")]
KubernetesLabels = Annotated[dict[str, str], Check(
    lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()), "must map label names to strings")]


# --- the sections ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BurnRateAlert:
    """One multi-window burn-rate alert of the latency SLO (every key required)."""

    severity: Severity
    factor: Positive
    long_window: Duration
    short_window: Duration
    for_: Duration


BurnRateAlerts = Annotated[list[BurnRateAlert], Check(nonempty_list, "must be a non-empty list")]


def _default_burn_rates() -> list[BurnRateAlert]:
    return [BurnRateAlert("critical", 14.4, "1h", "5m", "2m"), BurnRateAlert("warning", 6.0, "6h", "30m", "15m")]


@dataclass(frozen=True)
class SLO:
    latency_seconds: LatencyBucket = 0.1
    objective: Ratio = 0.95
    windows: Windows = field(default_factory=lambda: ["5m", "30m", "1h", "6h", "1d", "3d"])
    burn_rate_alerts: BurnRateAlerts = field(default_factory=_default_burn_rates)


@dataclass(frozen=True)
class GenerativeSLO:
    """The time-to-first-token SLO of streamed generative answers (OpenAI-compatible routes); its
    burn-rate alerts use the factors, windows and severities of ``slo.burn_rate_alerts``."""

    time_to_first_token_seconds: Seconds = 1.0
    objective: Ratio = 0.99


@dataclass(frozen=True)
class FleetDrift:
    """Fleet-wide PSI per feature across every replica, from the sidecars' bin counters."""

    range: Duration = "1h"


@dataclass(frozen=True)
class Cost:
    cpu_hour_price: HourPrice = 0.05
    gpu_hour_price: HourPrice = 2.5
    currency: Currency = "USD"


@dataclass(frozen=True)
class Kubernetes:
    """Metadata of the PrometheusRule."""

    name: KubernetesName = "inferwatch"
    labels: KubernetesLabels = field(default_factory=lambda: {
        "app.kubernetes.io/name": "inferwatch", "app.kubernetes.io/component": "alerting-rules"})


# --- the alerts: one class per alert, so each has its own defaults ----------------------------
# The shapes (a ratio threshold, a threshold in seconds ...) are base classes; an alert's class
# only restates the defaults that differ. Field names are the file's keys (`for_` is `for`).


@dataclass(frozen=True)
class Watchdog:
    for_: Duration = "1m"


@dataclass(frozen=True)
class Alert:
    severity: Severity = "warning"
    for_: Duration = "15m"


@dataclass(frozen=True)
class DownAlert(Alert):
    severity: Severity = "critical"
    absent: bool = True               # also fire when the series is missing altogether


@dataclass(frozen=True)
class RatioAlert(Alert):
    threshold: Ratio = 0.05


@dataclass(frozen=True)
class SecondsAlert(Alert):
    threshold_seconds: Seconds = 900.0


@dataclass(frozen=True)
class ModelServerDown(DownAlert):
    for_: Duration = "2m"


@dataclass(frozen=True)
class SidecarDown(DownAlert):
    for_: Duration = "5m"


@dataclass(frozen=True)
class HighErrorRate(RatioAlert):
    severity: Severity = "critical"
    for_: Duration = "10m"


@dataclass(frozen=True)
class HighLatencyP99(SecondsAlert):
    threshold_seconds: Seconds = 0.5


@dataclass(frozen=True)
class EventsDropped(RatioAlert):
    threshold: Ratio = 0.01
    reasons: DropReasons = field(default_factory=lambda: ["queue_full", "handoff_full"])


@dataclass(frozen=True)
class ProxyWorkerRestarts(Alert):
    threshold: Count = 2              # restarts of proxy worker processes over 15m
    for_: Duration = "5m"


@dataclass(frozen=True)
class FeatureDrift(Alert):
    method: DriftMethod = "psi"
    # 0: the sidecar's decision alone (significant and a minimum effect: docs/drift.md); a second
    # gate on a binned distance would hide decided category swaps and new values (PSI ~0.05).
    min_score: AtLeastZero = 0.0


@dataclass(frozen=True)
class DatasetDrift(Alert):
    severity: Severity = "critical"


@dataclass(frozen=True)
class MultivariateDrift(Alert):
    """The sidecar's multivariate decisions (inferwatch_multivariate_drifted, issue 19)."""


@dataclass(frozen=True)
class PayloadErrors(RatioAlert):
    for_: Duration = "10m"


@dataclass(frozen=True)
class DriftEvaluationStale(SecondsAlert):
    for_: Duration = "5m"


@dataclass(frozen=True)
class SchemaChange(Alert):
    severity: Severity = "critical"
    for_: Duration = "5m"


@dataclass(frozen=True)
class OutlierSpike(RatioAlert):
    severity: Severity = "critical"
    threshold: Ratio = 0.01
    for_: Duration = "5m"


@dataclass(frozen=True)
class PredictionDrift(Alert):
    method: DriftMethod = "psi"
    threshold_score: Positive = 0.2


@dataclass(frozen=True)
class ModelPerformanceDegraded(Alert):
    for_: Duration = "30m"
    floors: MetricBounds = field(default_factory=lambda: {"accuracy": 0.7, "roc_auc": 0.7, "r2": 0.5})
    ceilings: MetricBounds = field(default_factory=dict)
    min_events: Count = 100


@dataclass(frozen=True)
class LabelsNotArriving(Alert):
    window: Duration = "6h"
    for_: Duration = "30m"


@dataclass(frozen=True)
class ShadowDisagreement(RatioAlert):
    threshold: Ratio = 0.2
    window: Duration = "30m"
    min_comparisons: Count = 100
    for_: Duration = "30m"


@dataclass(frozen=True)
class PredictionBandShift(RatioAlert):
    threshold: Ratio = 0.1
    window: Duration = "1h"
    baseline: Duration = "1d"
    min_predictions: Predictions = 100
    for_: Duration = "30m"


@dataclass(frozen=True)
class UnreasonablePredictions(RatioAlert):
    threshold: Ratio = 0.01
    for_: Duration = "10m"


@dataclass(frozen=True)
class GenerativeErrorRate(RatioAlert):
    severity: Severity = "critical"
    for_: Duration = "10m"
    # Client errors (a prompt over the context length, a bad parameter) are the callers' to fix.
    ignored_error_types: ErrorTypes = field(default_factory=lambda: ["http_4xx"])


@dataclass(frozen=True)
class GenerativeResponseShare(RatioAlert):
    """A share of generative responses over ``threshold``, once ``min_responses`` were seen in 5m."""

    min_responses: Count = 20
    for_: Duration = "10m"


@dataclass(frozen=True)
class GenerativeTruncationSpike(GenerativeResponseShare):
    threshold: Ratio = 0.1


@dataclass(frozen=True)
class JobFailed(Alert):
    for_: Duration = "1m"


@dataclass(frozen=True)
class JobNotSucceededRecently(SecondsAlert):
    threshold_seconds: Seconds = 93600.0
    for_: Duration = "5m"


@dataclass(frozen=True)
class JobDurationHigh(SecondsAlert):
    threshold_seconds: Seconds = 7200.0
    for_: Duration = "5m"


@dataclass(frozen=True)
class InferenceCostOverBudget(Alert):
    daily_budget: DailyAmount = 100.0
    model_budgets: ModelBudgets = field(default_factory=dict)
    for_: Duration = "30m"


@dataclass(frozen=True)
class Alerts:
    # the operations team
    InferwatchModelServerDown: ModelServerDown = field(default_factory=ModelServerDown)
    InferwatchSidecarDown: SidecarDown = field(default_factory=SidecarDown)
    InferwatchHighErrorRate: HighErrorRate = field(default_factory=HighErrorRate)
    InferwatchHighLatencyP99: HighLatencyP99 = field(default_factory=HighLatencyP99)
    InferwatchEventsDropped: EventsDropped = field(default_factory=EventsDropped)
    InferwatchProxyWorkerRestarts: ProxyWorkerRestarts = field(default_factory=ProxyWorkerRestarts)
    InferwatchWatchdog: Watchdog = field(default_factory=Watchdog)
    # the data team
    InferwatchFeatureDrift: FeatureDrift = field(default_factory=FeatureDrift)
    InferwatchDatasetDrift: DatasetDrift = field(default_factory=DatasetDrift)
    InferwatchMultivariateDrift: MultivariateDrift = field(default_factory=MultivariateDrift)
    InferwatchPayloadErrors: PayloadErrors = field(default_factory=PayloadErrors)
    InferwatchDriftEvaluationStale: DriftEvaluationStale = field(default_factory=DriftEvaluationStale)
    InferwatchDataQualityIssues: RatioAlert = field(default_factory=RatioAlert)
    InferwatchSchemaChange: SchemaChange = field(default_factory=SchemaChange)
    InferwatchOutlierSpike: OutlierSpike = field(default_factory=OutlierSpike)
    # the ML team
    InferwatchPredictionDrift: PredictionDrift = field(default_factory=PredictionDrift)
    InferwatchModelPerformanceDegraded: ModelPerformanceDegraded = field(default_factory=ModelPerformanceDegraded)
    InferwatchLabelsNotArriving: LabelsNotArriving = field(default_factory=LabelsNotArriving)
    InferwatchShadowDisagreement: ShadowDisagreement = field(default_factory=ShadowDisagreement)
    InferwatchPredictionBandShift: PredictionBandShift = field(default_factory=PredictionBandShift)
    InferwatchUnreasonablePredictions: UnreasonablePredictions = field(default_factory=UnreasonablePredictions)
    # generative models (OpenAI-compatible routes): errors go to ops, truncations and matches to ml
    InferwatchGenerativeErrorRate: GenerativeErrorRate = field(default_factory=GenerativeErrorRate)
    InferwatchGenerativeTruncationSpike: GenerativeTruncationSpike = field(default_factory=GenerativeTruncationSpike)
    InferwatchGenerativeOutputMatchSpike: GenerativeResponseShare = field(default_factory=GenerativeResponseShare)
    # training and data jobs
    InferwatchJobFailed: JobFailed = field(default_factory=JobFailed)
    InferwatchJobNotSucceededRecently: JobNotSucceededRecently = field(default_factory=JobNotSucceededRecently)
    InferwatchJobDurationHigh: JobDurationHigh = field(default_factory=JobDurationHigh)
    # cost (the operations team)
    InferwatchInferenceCostOverBudget: InferenceCostOverBudget = field(default_factory=InferenceCostOverBudget)


@dataclass(frozen=True)
class Thresholds:
    runbook_base_url: RunbookBaseURL = "https://github.com/inferwatch/inferwatch/blob/main"
    selector: Selector = 'job=~".*inferwatch.*"'
    slo: SLO = field(default_factory=SLO)
    fleet_drift: FleetDrift = field(default_factory=FleetDrift)
    genai_slo: GenerativeSLO = field(default_factory=GenerativeSLO)
    alerts: Alerts = field(default_factory=Alerts)
    cost: Cost = field(default_factory=Cost)
    kubernetes: Kubernetes = field(default_factory=Kubernetes)
    source: str = "<defaults>"

    @property
    def raw(self) -> dict[str, Any]:
        """The thresholds as the file spells them: plain mappings, lists and scalars."""
        data = as_file(self)
        assert isinstance(data, dict)
        return data

    def alert(self, name: str) -> dict[str, Any]:
        """One alert's thresholds as the file spells them (``for``, ``threshold`` ...)."""
        if name not in field_names(Alerts):
            raise KeyError(f"no thresholds for {name}")
        return typing.cast("dict[str, Any]", as_file(getattr(self.alerts, name)))

    def runbook_url(self, alertname: str) -> str:
        return f"{self.runbook_base_url.rstrip('/')}/docs/runbooks.md#{alertname.lower()}"

    def windows(self) -> list[str]:
        """SLO windows to record: the configured ones and every window a burn-rate alert reads."""
        windows = list(self.slo.windows)
        for burn in self.slo.burn_rate_alerts:
            for window in (burn.short_window, burn.long_window):
                if window not in windows:
                    windows.append(window)
        return sorted(windows, key=lambda w: duration_seconds(w) or 0)


#: Every key a thresholds file may set, with its default. The shipped prometheus/thresholds.yaml
#: spells all of them out (a test holds the two equal); a file may also set only what it changes.
DEFAULTS: dict[str, Any] = Thresholds().raw


# --- loading --------------------------------------------------------------------------------


def validate(t: Thresholds, problems: list[str]) -> None:
    """Checks across keys that types and single-value checks cannot express."""
    burns = [b for b in t.slo.burn_rate_alerts if b is not None]   # None: the loader reported it
    for i, burn in enumerate(t.slo.burn_rate_alerts):
        if burn is None:
            continue
        path = f"{t.source}:slo.burn_rate_alerts[{i}]"
        if burn.factor * (1 - t.slo.objective) >= 1:
            problems.append(f"{path}.factor: factor x (1 - objective) must stay below 1, or the alert can never fire")
        short, long = duration_seconds(burn.short_window), duration_seconds(burn.long_window)
        if short and long and short >= long:
            problems.append(f"{path}: short_window must be shorter than long_window")
    if any(b.factor * (1 - t.genai_slo.objective) >= 1 for b in burns):
        problems.append(f"{t.source}:genai_slo.objective: factor x (1 - objective) of a burn-rate alert "
                        f"(slo.burn_rate_alerts) must stay below 1, or its alert can never fire")
    if len({b.severity for b in burns}) != len(burns):
        problems.append(f"{t.source}:slo.burn_rate_alerts: each burn-rate alert needs its own severity")


def load_thresholds(path: str | Path | None) -> Thresholds:
    """The defaults, overridden by the file at ``path`` (when given); raises ThresholdsError."""
    if not path:
        return Thresholds()
    source = str(path)
    problems: list[str] = []
    data = checked_mapping(read_yaml(path), Thresholds, "", problems, source) or {}
    loaded: list[str] = []
    t = build(Thresholds, data, "", loaded, source)
    problems += [file_keys(p) for p in loaded]
    t = dataclasses.replace(t, source=source)
    validate(t, problems)
    if problems:
        raise ThresholdsError(problems)
    return t
