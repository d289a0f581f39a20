"""Alert-triggered actions: decide, queue and run the configured actions for received alerts.

``inferwatch actions --config actions.yaml`` (or an ``actions:`` section of the sidecar's file, on
its admin port) receives Alertmanager's webhook notifications at ``POST /v1/alerts``. For every
firing alert and every action whose matchers all hold, it

1. skips the alert when this action already took this firing episode (same fingerprint and
   ``startsAt``: Alertmanager re-sends a firing alert every ``repeat_interval``) -> ``duplicate``;
2. skips it when the action ran within ``cooldown_seconds`` for the same ``cooldown_by`` label
   values -> ``cooldown``;
3. renders the action's templates with the alert (a missing label -> ``template_error``);
4. puts it on a bounded queue (full -> ``dropped``, and the webhook answers 503 so Alertmanager
   retries the notification later; what was already taken is then a duplicate);
5. a worker runs it -- an HTTP request or a command (argv, no shell) -- retrying failed attempts
   with exponential backoff -> ``success`` or ``failure``. A failure clears the cooldown and the
   episode, so the next notification tries again.

Every decision is counted in ``inferwatch_actions_total{action,outcome}`` and written to the JSON
lines audit log: what ran, why (the alert and the matchers) and with what result.

Templates are plain substitution -- ``{{ model }}``, ``{{ annotations.summary }}``,
``{{ fingerprint }}`` -- never evaluation. A JSON body is a YAML mapping whose strings are
templated and then JSON-encoded, so a label value cannot change the document's structure; URL
placeholders are percent-encoded per part, and a command refuses values that would be options
(``config.templates``). Requests keep no cookies between actions.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import threading
import time
from collections import OrderedDict
from http.cookiejar import DefaultCookiePolicy
from dataclasses import dataclass, field
from typing import Any, Callable

import requests
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from inferwatch.config import ActionConfig, ActionsConfig, AuditLogConfig
from inferwatch.config.templates import Matcher, Template, TemplateError, URLTemplate, parse_matcher, render_argv
from inferwatch.support.jsonlines import RotatingFile

from .notifications import Alert

log = logging.getLogger("inferwatch.actions")

OUTCOMES = ("success", "failure", "duplicate", "cooldown", "dropped", "template_error")
WEBHOOK_ERRORS = ("unauthorized", "throttled", "invalid_json", "invalid_payload", "too_large")
ALERT_STATUSES = ("firing", "resolved", "other")
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
OUTPUT_TAIL_BYTES = 2000


# --- metrics and audit -------------------------------------------------------------------------


class ActionMetrics:
    def __init__(self, registry: CollectorRegistry, actions: list[str]):
        self.actions = Counter("inferwatch_actions", "Alert-triggered action decisions and results, by outcome: "
                               "success, failure (after retries), duplicate (this firing alert was already taken), "
                               "cooldown, dropped (queue full), template_error.", ["action", "outcome"], registry=registry)
        self.duration = Histogram("inferwatch_action_duration_seconds", "Time an action took, retries included, "
                                  "in seconds.", ["action"], buckets=DURATION_BUCKETS, registry=registry)
        self.retries = Counter("inferwatch_action_retries", "Failed action attempts that were retried.", ["action"],
                               registry=registry)
        self.alerts = Counter("inferwatch_actions_alerts_received", "Alerts received in Alertmanager webhook "
                              "notifications, by status (firing, resolved, other).", ["status"], registry=registry)
        self.webhook_errors = Counter("inferwatch_actions_webhook_errors", "Webhook requests refused: unauthorized, "
                                      "throttled (429: too many failed basic-auth checks), invalid_json, "
                                      "invalid_payload, too_large.", ["reason"], registry=registry)
        self.queue_items = Gauge("inferwatch_actions_queue_items", "Actions waiting for a worker.", registry=registry)
        self.queue_capacity = Gauge("inferwatch_actions_queue_capacity_items", "Capacity of the actions queue "
                                    "(max_queue_items).", registry=registry)
        self.tracked = Gauge("inferwatch_actions_tracked_alerts", "Firing alerts and cooldowns remembered for "
                             "de-duplication (bounded by max_tracked_alerts).", registry=registry)
        self.evicted = Counter("inferwatch_actions_tracked_evicted", "Remembered alerts forgotten because "
                               "max_tracked_alerts was reached (such an alert could run its action again).",
                               registry=registry)
        self.audit_errors = Counter("inferwatch_actions_audit_errors", "Audit log lines lost to write errors.",
                                    registry=registry)
        for name in actions:   # every series from the start, at 0
            for outcome in OUTCOMES:
                self.actions.labels(name, outcome)
            self.duration.labels(name)
            self.retries.labels(name)
        for status in ALERT_STATUSES:
            self.alerts.labels(status)
        for reason in WEBHOOK_ERRORS:
            self.webhook_errors.labels(reason)


class AuditLog:
    """JSON lines, one per decision or result, to a size-rotated file (or stdout)."""

    def __init__(self, cfg: AuditLogConfig, metrics: ActionMetrics):
        self._file = RotatingFile(cfg.path, cfg.max_bytes, cfg.backup_count) if cfg.path else None
        self._metrics = metrics
        self._lock = threading.Lock()

    def write(self, entry: dict[str, Any]) -> None:
        line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() % 1 * 1000):03d}Z",
                           **entry}, default=str, sort_keys=False) + "\n"
        with self._lock:
            try:
                if self._file is None:
                    os.write(1, line.encode())
                else:
                    self._file.write([line.encode()])
            except (OSError, ValueError):
                self._metrics.audit_errors.inc()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()


# --- running actions ---------------------------------------------------------------------------


def session_without_cookies() -> requests.Session:
    """A pooled session whose cookie jar refuses every cookie: a cookie one action's endpoint set
    must not ride along with the next action's request (to the same or another endpoint)."""
    session = requests.Session()
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    return session


@dataclass
class CompiledAction:
    cfg: ActionConfig
    matchers: list[Matcher]
    url: URLTemplate | None
    headers: dict[str, Template]
    body: Any
    command: list[Template]

    @classmethod
    def compile(cls, cfg: ActionConfig) -> "CompiledAction":
        http = cfg.http if cfg.http.url else None
        return cls(cfg, [parse_matcher(m) for m in cfg.matchers], URLTemplate(http.url) if http else None,
                   {k: Template(v) for k, v in http.headers.items()} if http else {},
                   Template.compile_tree(http.body) if http else None, [Template(a) for a in cfg.command])

    @property
    def name(self) -> str:
        return self.cfg.name

    def matches(self, labels: dict[str, str]) -> bool:
        return all(m(labels) for m in self.matchers)


@dataclass
class Task:
    action: CompiledAction
    alert: Alert
    episode: tuple[str, str, str]
    cooldown: tuple[str, tuple[str, ...]]
    request: dict[str, Any] = field(default_factory=dict)   # rendered: url/method/headers/body or argv


@dataclass
class Attempt:
    ok: bool
    retryable: bool
    result: dict[str, Any]


class ActionRunner:
    """Decides, queues and runs actions; thread-safe ``handle()``; ``start()``/``stop()`` the workers."""

    def __init__(self, cfg: ActionsConfig, registry: CollectorRegistry, *, session: requests.Session | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.cfg = cfg
        self.actions = [CompiledAction.compile(a) for a in cfg.actions]
        self.metrics = ActionMetrics(registry, [a.name for a in self.actions])
        self.metrics.queue_capacity.set(cfg.max_queue_items)
        self.metrics.queue_items.set_function(lambda: self._queue.qsize())
        self.metrics.tracked.set_function(lambda: len(self._episodes) + len(self._cooldowns))
        self.audit = AuditLog(cfg.audit_log, self.metrics)
        self.session = session or session_without_cookies()
        self.clock = clock
        self._queue: queue.Queue[Task | None] = queue.Queue(cfg.max_queue_items)
        self._lock = threading.Lock()
        self._episodes: OrderedDict[tuple[str, str, str], str] = OrderedDict()   # -> queued / running / done
        self._cooldowns: OrderedDict[tuple[str, tuple[str, ...]], float] = OrderedDict()   # -> until (clock)
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    # -- deciding (the webhook's thread) --

    def handle(self, alerts: list[Alert]) -> dict[str, int]:
        """Decide for every alert and action; returns how many of each decision (and ``unmatched``)."""
        summary = dict.fromkeys(("queued", "duplicate", "cooldown", "dropped", "template_error", "unmatched"), 0)
        for alert in alerts:
            status = alert.status if alert.status in ALERT_STATUSES else "other"
            self.metrics.alerts.labels(status).inc()
            if alert.status != "firing":
                continue
            matched = [a for a in self.actions if a.matches(alert.labels)]
            if not matched:
                summary["unmatched"] += 1
            for action in matched:
                summary[self._decide(action, alert)] += 1
        return summary

    def _decide(self, action: CompiledAction, alert: Alert) -> str:
        episode = (action.name, alert.fingerprint, alert.starts_at)
        cooldown = (action.name, tuple(alert.labels.get(k, "") for k in action.cfg.cooldown_by))
        task = Task(action, alert, episode, cooldown)
        with self._lock:
            if episode in self._episodes:
                decision = "duplicate"
            elif self._cooldowns.get(cooldown, -1.0) > self.clock():
                decision = "cooldown"
            else:   # taken: other alerts of the same cooldown key wait until this run ends (+ cooldown)
                decision = "queued"
                self._remember(self._episodes, episode, "queued")
                self._remember(self._cooldowns, cooldown, float("inf"))
        if decision != "queued":
            self._finish(task, decision, {}, reserved=False)
            return decision
        try:
            task.request = self._render(action, alert)
        except TemplateError as exc:
            self._finish(task, "template_error", {"error": str(exc)}, reserved=True)
            return "template_error"
        try:
            self._queue.put_nowait(task)
        except queue.Full:
            self._finish(task, "dropped", {"error": f"queue full ({self.cfg.max_queue_items} items)"}, reserved=True)
            return "dropped"
        self._audit(task, "queued", {})
        return "queued"

    def _remember(self, store: OrderedDict, key: Any, value: Any) -> None:
        store[key] = value
        store.move_to_end(key)
        while len(self._episodes) + len(self._cooldowns) > self.cfg.max_tracked_alerts:
            victim = self._cooldowns if len(self._cooldowns) > len(self._episodes) else self._episodes
            victim.popitem(last=False)
            self.metrics.evicted.inc()

    def _render(self, action: CompiledAction, alert: Alert) -> dict[str, Any]:
        lookup = alert.lookup
        if action.url is not None:
            headers = {k: t.render(lookup) for k, t in action.headers.items()}
            body = Template.render_tree(action.body, lookup)
            data: bytes | None
            if isinstance(body, (dict, list)):
                data = json.dumps(body).encode()
                headers.setdefault("Content-Type", "application/json")
            else:
                data = None if body is None else str(body).encode()
            return {"method": action.cfg.http.method, "url": action.url.render(lookup), "headers": headers,
                    "body": data}
        return {"argv": render_argv(action.command, lookup, allow_option_values=action.cfg.allow_option_values)}

    # -- running (worker threads) --

    def start(self) -> "ActionRunner":
        for i in range(self.cfg.workers):
            thread = threading.Thread(target=self._work, name=f"inferwatch-actions-{i}", daemon=True)
            thread.start()
            self._workers.append(thread)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        while True:   # what never started is dropped (and audited as such)
            try:
                task = self._queue.get_nowait()
            except queue.Empty:
                break
            if task is not None:
                self._finish(task, "dropped", {"error": "shutting down"}, reserved=True)
        for _ in self._workers:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                pass
        for thread in self._workers:
            thread.join(timeout)
        self.audit.close()

    def _work(self) -> None:
        while not self._stop.is_set():
            task = self._queue.get()
            if task is None:
                return
            try:
                self._run(task)
            except Exception:   # noqa: BLE001 - a worker never dies
                log.exception("action %s failed unexpectedly", task.action.name)
                self._finish(task, "failure", {"error": "internal error (see the log)"}, reserved=True)

    def _run(self, task: Task) -> None:
        cfg = task.action.cfg
        with self._lock:
            self._episodes[task.episode] = "running"
        started = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            attempt = self._attempt(task)
            if attempt.ok or not attempt.retryable or attempts > cfg.retries:
                break
            delay = min(cfg.backoff_seconds * 2 ** (attempts - 1), cfg.max_backoff_seconds)
            self.metrics.retries.labels(cfg.name).inc()
            if self._stop.wait(delay):
                attempt.result["error"] = f"{attempt.result.get('error', 'failed')}; not retried: shutting down"
                break
        self.metrics.duration.labels(cfg.name).observe(time.monotonic() - started)
        self._finish(task, "success" if attempt.ok else "failure", attempt.result, reserved=True, attempts=attempts)

    def _attempt(self, task: Task) -> Attempt:
        cfg, req = task.action.cfg, task.request
        if "argv" in req:
            env = {**os.environ, "INFERWATCH_ALERT": json.dumps(
                {"labels": task.alert.labels, "annotations": task.alert.annotations,
                 "fingerprint": task.alert.fingerprint, "startsAt": task.alert.starts_at})}
            try:
                done = subprocess.run(req["argv"], stdin=subprocess.DEVNULL, capture_output=True,
                                      timeout=cfg.timeout_seconds, env=env)
            except subprocess.TimeoutExpired:
                return Attempt(False, True, {"error": f"timed out after {cfg.timeout_seconds:g}s"})
            except OSError as exc:
                return Attempt(False, False, {"error": f"cannot run {req['argv'][0]!r}: {exc.strerror or exc}"})
            output = (done.stdout + done.stderr)[-OUTPUT_TAIL_BYTES:].decode(errors="replace")
            return Attempt(done.returncode == 0, True, {"exit_code": done.returncode, "output": output})
        try:
            response = self.session.request(req["method"], req["url"], headers=req["headers"], data=req["body"],
                                            timeout=cfg.timeout_seconds)
        except requests.RequestException as exc:
            return Attempt(False, True, {"error": f"{type(exc).__name__}: {exc}"[:500]})
        code = response.status_code
        result = {"status_code": code, "response": response.text[:OUTPUT_TAIL_BYTES]}
        return Attempt(200 <= code < 300, code == 429 or code >= 500, result)

    # -- bookkeeping --

    def _finish(self, task: Task, outcome: str, result: dict[str, Any], *, reserved: bool,
                attempts: int | None = None) -> None:
        """Count and audit an outcome; for a task that took its episode and cooldown (``reserved``),
        start the cooldown after a success, or release both so the next notification tries again."""
        self.metrics.actions.labels(task.action.name, outcome).inc()
        if reserved:
            with self._lock:
                if outcome == "success":
                    self._episodes[task.episode] = "done"
                    self._cooldowns[task.cooldown] = self.clock() + task.action.cfg.cooldown_seconds
                else:
                    self._episodes.pop(task.episode, None)
                    self._cooldowns.pop(task.cooldown, None)
        self._audit(task, outcome, result, attempts=attempts)

    def _audit(self, task: Task, outcome: str, result: dict[str, Any], *, attempts: int | None = None) -> None:
        entry: dict[str, Any] = {
            "action": task.action.name, "outcome": outcome,
            "alertname": task.alert.labels.get("alertname", ""), "fingerprint": task.alert.fingerprint,
            "starts_at": task.alert.starts_at, "labels": task.alert.labels,
            "matched": [str(m) for m in task.action.matchers],
        }
        if task.action.cfg.cooldown_by:
            entry["cooldown_key"] = dict(zip(task.action.cfg.cooldown_by, task.cooldown[1]))
        if task.request and outcome in ("queued", "success", "failure"):
            entry["request"] = ({"argv": task.request["argv"]} if "argv" in task.request else
                                {"method": task.request["method"], "url": task.request["url"]})
        if attempts is not None and outcome in ("success", "failure"):
            entry["attempts"] = attempts
        entry.update(result)
        self.audit.write(entry)
