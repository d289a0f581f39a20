"""Checks across keys of the sidecar's configuration that types alone cannot express."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING
from pathlib import Path
from urllib.parse import urlparse

from .actions import read_token_file, validate_actions

from .sections import BUILTIN_OUTPUT_RULES, OUTPUT_TYPES, UNBANDED, BandConfig

if TYPE_CHECKING:
    from .root import Config


def http_url_problem(text: str) -> str | None:
    """Why ``text`` is not an http(s) URL a client can open (a port out of range included), or None."""
    url = urlparse(text)
    if url.scheme not in ("http", "https") or not url.netloc:
        return f"expected an http(s) URL, got {text!r}"
    try:
        port = url.port   # raises on a port outside 0-65535 or not a number
    except ValueError:
        port = 0
    if port == 0:
        return f"expected a port number 1-65535 in the URL, got {text!r}"
    return None


def validate(cfg: Config, problems: list[str]) -> None:
    src = cfg.source

    def positive(key: str, value: float) -> None:
        if value <= 0:
            problems.append(f"{src}:{key}: must be greater than 0, got {value!r}")

    if upstream_problem := http_url_problem(cfg.upstream.url):
        problems.append(f"{src}:upstream.url: {upstream_problem}")
    for key, value in (
        ("upstream.timeout_seconds", cfg.upstream.timeout_seconds),
        ("upstream.connect_timeout_seconds", cfg.upstream.connect_timeout_seconds),
        ("upstream.read_timeout_seconds", cfg.upstream.read_timeout_seconds),
        ("upstream.max_connections", cfg.upstream.max_connections),
        ("upstream.pool_timeout_seconds", cfg.upstream.pool_timeout_seconds),
        ("upstream.health_interval_seconds", cfg.upstream.health_interval_seconds),
        ("proxy.max_body_bytes", cfg.proxy.max_body_bytes),
        ("proxy.max_monitored_body_bytes", cfg.proxy.max_monitored_body_bytes),
        ("proxy.monitoring_budget_bytes", cfg.proxy.monitoring_budget_bytes),
        ("proxy.grpc_max_message_bytes", cfg.proxy.grpc_max_message_bytes),
        ("admin.max_body_bytes", cfg.admin.max_body_bytes),
        ("admin.threads", cfg.admin.threads),
        ("proxy.header_timeout_seconds", cfg.proxy.header_timeout_seconds),
        ("proxy.idle_timeout_seconds", cfg.proxy.idle_timeout_seconds),
        ("proxy.max_connections", cfg.proxy.max_connections),
        ("admin.header_timeout_seconds", cfg.admin.header_timeout_seconds),
        ("admin.idle_timeout_seconds", cfg.admin.idle_timeout_seconds),
        ("admin.body_timeout_seconds", cfg.admin.body_timeout_seconds),
        ("admin.max_connections", cfg.admin.max_connections),
        ("payload.max_decode_bytes", cfg.payload.max_decode_bytes),
        ("window.max_events", cfg.window.max_events),
        ("window.max_age_seconds", cfg.window.max_age_seconds),
        ("limits.max_model_versions", cfg.limits.max_model_versions),
        ("limits.max_features", cfg.limits.max_features),
        ("limits.max_outputs", cfg.limits.max_outputs),
        ("limits.max_categories", cfg.limits.max_categories),
        ("queue.max_items", cfg.queue.max_items),
        ("queue.max_bytes", cfg.queue.max_bytes),
        ("shutdown.drain_timeout_seconds", cfg.shutdown.drain_timeout_seconds),
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
    if not (math.isfinite(cfg.shutdown.readiness_delay_seconds) and cfg.shutdown.readiness_delay_seconds >= 0):
        problems.append(f"{src}:shutdown.readiness_delay_seconds: expected seconds >= 0, "
                        f"got {cfg.shutdown.readiness_delay_seconds}")
    if any(not str(c).strip() for c in cfg.cloudevents.components):
        problems.append(f"{src}:cloudevents.components: an empty name (list ce-component values, e.g. predictor)")
    if not 0 <= cfg.proxy.grpc_port <= 65535:
        problems.append(f"{src}:proxy.grpc_port: expected a port number 1-65535 or 0 (off), got {cfg.proxy.grpc_port}")
    elif cfg.proxy.grpc_port:
        host, sep, upstream_port = cfg.proxy.grpc_upstream.rpartition(":")
        if not (sep and host and upstream_port.isdigit()):
            problems.append(f"{src}:proxy.grpc_upstream: the model server's gRPC address as host:port is needed "
                            f"with proxy.grpc_port, got {cfg.proxy.grpc_upstream!r}")
        if cfg.proxy.grpc_port in (cfg.proxy.port, cfg.admin.port):
            problems.append(f"{src}:proxy.grpc_port: must differ from proxy.port and admin.port")
    if not 1 <= cfg.proxy.workers <= 64:
        problems.append(f"{src}:proxy.workers: expected a number of processes 1-64, got {cfg.proxy.workers}")
    elif cfg.proxy.workers > 1 and cfg.proxy.engine != "fast":
        problems.append(f"{src}:proxy.workers: worker processes run the fast engine; set proxy.engine: fast "
                        f"(got {cfg.proxy.engine!r})")
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
    _validate_genai(cfg, problems)
    for key, auth in (("admin.metrics_auth", cfg.admin.metrics_auth), ("admin.write_auth", cfg.admin.write_auth),
                      ("actions.auth", cfg.actions.auth)):
        read_token_file(auth, f"{src}:{key}", problems)
    failed = cfg.admin.failed_auth
    if failed.burst < 1 or failed.max_clients < 1:
        problems.append(f"{src}:admin.failed_auth: burst and max_clients must be at least 1, "
                        f"got {failed.burst} and {failed.max_clients}")
    if not (math.isfinite(failed.per_minute) and failed.per_minute > 0):
        problems.append(f"{src}:admin.failed_auth.per_minute: expected a number above 0, got {failed.per_minute}")
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
        if url_problem := http_url_problem(ch.url):
            problems.append(f"{src}:{key}.url: {url_problem}")
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
    if not 0.0 <= d.min_effect <= 1.0:
        problems.append(f"{src}:drift.min_effect: expected a share of probability mass from 0 to 1, "
                        f"got {d.min_effect!r}")
    if d.recent_events < 0:
        problems.append(f"{src}:drift.recent_events: must be 0 (off) or more, got {d.recent_events!r}")
    for name, f in d.features.items():
        if f and f.min_effect != -1.0 and not 0.0 <= f.min_effect <= 1.0:
            problems.append(f"{src}:drift.features.{name}.min_effect: expected -1 (drift.min_effect) or a share "
                            f"from 0 to 1, got {f.min_effect!r}")
    if not 0.0 <= d.dataset_drift_share <= 1.0:
        problems.append(f"{src}:drift.dataset_drift_share: expected a number from 0 to 1, got {d.dataset_drift_share}")
    # Imported here, not at the top: the registry brings scipy, which a proxy worker process
    # (serving/workers.py) unpickling its Config has no use for.
    from inferwatch.stats.registry import DRIFT_METHODS

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
    non_negative: tuple[tuple[str, float], ...] = (
        ("guard.range_tolerance", g.range_tolerance), ("guard.duplicate_memory_events", g.duplicate_memory_events),
        ("guard.top_features", g.top_features), ("guard.quarantine.backup_count", g.quarantine.backup_count))
    for key, number in non_negative:
        if number < 0:
            problems.append(f"{src}:{key}: must be 0 or more, got {number!r}")
    if g.schema_min_events > g.schema_window_events:
        problems.append(f"{src}:guard.schema_min_events: must not exceed guard.schema_window_events "
                        f"({g.schema_window_events}), got {g.schema_min_events}")
    if not 0.5 < g.schema_change_share <= 1.0:
        problems.append(f"{src}:guard.schema_change_share: expected a number above 0.5 and at most 1, "
                        f"got {g.schema_change_share}")
    if not 0.0 < g.outlier_fpr < 0.05:
        problems.append(f"{src}:guard.outlier_fpr: expected a number between 0 and 0.05, got {g.outlier_fpr}")


MAX_OUTPUT_MATCHERS = 50
_MATCHER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def _validate_genai(cfg: Config, problems: list[str]) -> None:
    src, genai = cfg.source, cfg.genai
    if not 1 <= genai.max_request_models <= 1000:
        problems.append(f"{src}:genai.max_request_models: expected an integer from 1 to 1000, "
                        f"got {genai.max_request_models!r}")
    if len(genai.output_matchers) > MAX_OUTPUT_MATCHERS:
        problems.append(f"{src}:genai.output_matchers: at most {MAX_OUTPUT_MATCHERS} matchers (each is a "
                        f"label value and a regex search per response), got {len(genai.output_matchers)}")
    seen: set[str] = set()
    for i, matcher in enumerate(genai.output_matchers):
        key = f"{src}:genai.output_matchers[{i}]"
        if not _MATCHER_NAME.match(matcher.name):
            problems.append(f"{key}.name: expected letters, digits and underscores (a label value), "
                            f"got {matcher.name!r}")
        elif matcher.name in seen:
            problems.append(f"{key}.name: duplicate matcher {matcher.name!r}")
        seen.add(matcher.name)
        try:
            re.compile(matcher.pattern)
        except re.error as exc:
            problems.append(f"{key}.pattern: not a regular expression: {exc}")
        else:
            if not matcher.pattern:
                problems.append(f"{key}.pattern: must not be empty (it would match every response)")
