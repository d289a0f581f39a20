"""The sidecar's whole configuration: every section, parsed once from one file."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from .actions import ActionsConfig, is_loopback
from .loader import ConfigError, build, read_yaml
from .sections import GenAIConfig
from .sections import (AdminConfig, CloudEventsConfig, DriftConfig, GuardConfig, LabelsConfig, LimitsConfig,
                       LoggingConfig, ModelConfig, PayloadConfig, PerformanceConfig, PredictionLogConfig,
                       PredictionsConfig, ProcessConfig, ProxyConfig, QueueConfig, ReferenceConfig, SegmentsConfig,
                       ShadowConfig, ShutdownConfig, UpstreamConfig, WindowConfig)
from .validate import validate


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
    shutdown: ShutdownConfig = field(default_factory=ShutdownConfig)
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
    # OpenAI-compatible generative serving: tokens, time to first token, finish reasons.
    genai: GenAIConfig = field(default_factory=GenAIConfig)
    # Alert-triggered actions on the admin port (POST /v1/alerts); off while `actions.actions` is empty.
    actions: ActionsConfig = field(default_factory=ActionsConfig)
    source: str = "<defaults>"

    def write_exposure_warning(self) -> str:
        """A warning when the admin port's write endpoints take events and labels from anyone who
        can reach a non-loopback address (they feed drift, performance and alerts); "" otherwise."""
        admin = self.admin
        if admin.write_auth.enabled or is_loopback(admin.listen_address):
            return ""
        paths = ["/v1/events", "/v1/cloudevents", *(["/v1/labels"] if self.labels.enabled else [])]
        return (f"admin: {', '.join(paths)} on {admin.listen_address}:{admin.port} have no authentication: anyone "
                f"who reaches the port can push events and labels that move drift, performance and alerts; set "
                f"admin.write_auth (bearer_token_file or basic_users), or admin.listen_address: 127.0.0.1")

    def warnings(self) -> list[str]:
        """What `inferwatch check-config` and the start log warn about."""
        warnings = [self.write_exposure_warning()]
        if self.actions.actions:
            warnings.append(self.actions.exposure_warning(self.admin.listen_address))
        return [w for w in warnings if w]

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
        lines += [f"WARNING:     {warning}" for warning in self.warnings()]
        return "\n".join(lines)


def parse_config(data: Any, source: str = "<config>") -> Config:
    """Build a ``Config`` from parsed YAML (a mapping or None); raise ``ConfigError`` on problems."""
    problems: list[str] = []
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: expected a mapping at the top level, got {type(data).__name__}"])
    cfg = build(Config, data, "", problems, source)
    if cfg is not None:
        cfg.source = source
        validate(cfg, problems)
    if problems:
        raise ConfigError(problems)
    return cfg


def load_config(path: str | os.PathLike[str] | None, overrides: dict[str, Any] | None = None) -> Config:
    """Load a YAML file (or nothing: defaults) and apply dotted-key ``overrides`` from the CLI."""
    data: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        data = read_yaml(path)
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
