"""The actions configuration: alert-triggered actions, standalone or in the sidecar's file."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal
import os
from pathlib import Path

from .loader import ConfigError, build, read_yaml
from .sections import AuthConfig, TLSConfig
from .templates import Template, TemplateError, URLTemplate, parse_matcher


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
    # A command item that starts with a placeholder whose value starts with "-" would be read as
    # an option: the action is refused (template_error) unless a literal "--" item comes before
    # it, or this is true.
    allow_option_values: bool = False
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
        if self.auth.enabled or not self.actions or is_loopback(listen_address):
            return ""
        return (f"actions: the receiver on {listen_address} has no authentication: anyone who reaches it can "
                f"run {', '.join(a.name for a in self.actions)}; set auth.bearer_token or auth.bearer_token_file "
                f"(what Alertmanager sends)")


def is_loopback(address: str) -> bool:
    import ipaddress

    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


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
            try:
                URLTemplate(action.http.url)
            except TemplateError as exc:
                problem(f"{where}.http.url", str(exc))
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
    data = read_yaml(path)
    source = str(path)
    problems: list[str] = []
    cfg = build(ActionsConfig, data, "", problems, source)
    if cfg is not None:
        cfg.source = source
        if not cfg.actions and not problems:
            problems.append(f"{source}:actions: at least one action is required")
        validate_actions(cfg, problems)
    if problems:
        raise ConfigError(problems)
    return cfg
