"""Prometheus and Alertmanager on loopback, for the demo and the end-to-end tests.

Both run from temporary copies of the shipped files, changed only where a short run needs it:

- the rules of ``prometheus/rules/`` (rendered from ``prometheus/thresholds.yaml`` when the
  repository is not at hand) with every ``for:`` capped (``max_for``); expressions, labels and
  annotations untouched;
- ``alertmanager/alertmanager.yml`` with its routing tree and inhibition untouched, the grouping
  waits shortened, and every receiver's integrations (PagerDuty, Slack, email, webhook) replaced by
  one webhook to a local :class:`AlertWebhook` that records, and here prints, each notification.

Prometheus loads the rules only after its first scrape of the sidecar: before it, ``up`` is
absent, and the absent form of ``InferwatchSidecarDown`` would fire within a shortened ``for:``.
"""

from __future__ import annotations

import copy
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
import yaml

REPO = Path(__file__).resolve().parents[3]
RULES_DIR = REPO / "prometheus" / "rules"
THRESHOLDS = REPO / "prometheus" / "thresholds.yaml"
ALERTMANAGER_CONFIG = REPO / "alertmanager" / "alertmanager.yml"
ALERTMANAGER_BINARIES = ("alertmanager", "prometheus-alertmanager")   # upstream name, Debian name


# --- files --------------------------------------------------------------------------------------


def _seconds(duration: str) -> float:
    from inferwatch.alerting.promql import duration_seconds

    seconds = duration_seconds(duration)
    if seconds is None:
        raise ValueError(f"not a Prometheus duration: {duration!r}")
    return seconds


def shipped_rule_files() -> dict[str, dict[str, Any]]:
    """File name -> parsed content of the shipped rule files; rendered from the thresholds
    (the file when present, else the defaults) when the repository's rules are not at hand."""
    files = sorted(RULES_DIR.glob("*.yml"))
    if files:
        return {path.name: yaml.safe_load(path.read_text(encoding="utf-8")) for path in files}
    from inferwatch.alerting.render import render
    from inferwatch.alerting.thresholds import load_thresholds

    thresholds = load_thresholds(THRESHOLDS if THRESHOLDS.is_file() else None)
    return {path.name: yaml.safe_load(text) for path, text in render(thresholds, Path("."), None).items()}


def shorten_for(rule_file: dict[str, Any], max_for: str) -> dict[str, Any]:
    """A copy of a rule file in which no alert waits longer than ``max_for``."""
    limit = _seconds(max_for)
    out = copy.deepcopy(rule_file)
    for group in out.get("groups", []):
        for rule in group.get("rules", []):
            if "alert" in rule and rule.get("for") and _seconds(rule["for"]) > limit:
                rule["for"] = max_for
    return out


def write_rules(directory: Path, max_for: str) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, content in shipped_rule_files().items():
        path = directory / name
        path.write_text(yaml.safe_dump(shorten_for(content, max_for), sort_keys=False), encoding="utf-8")
        paths.append(path)
    return paths


def alertmanager_config(webhook_url: str, *, source: Path = ALERTMANAGER_CONFIG, group_wait: str = "1s",
                        group_interval: str = "2s") -> dict[str, Any]:
    """The shipped Alertmanager configuration with every receiver pointed at ``webhook_url``
    (``<webhook_url>/<receiver name>``); routes, grouping labels and inhibitions unchanged."""
    config = yaml.safe_load(source.read_text(encoding="utf-8"))
    config["global"] = {"resolve_timeout": config.get("global", {}).get("resolve_timeout", "5m")}
    config["templates"] = [str((source.parent / t).resolve()) if not Path(t).is_absolute() else t
                           for t in config.get("templates", [])]
    config["route"]["group_wait"] = group_wait
    config["route"]["group_interval"] = group_interval
    receivers = []
    for receiver in config.get("receivers", []):
        integrations = [key for key in receiver if key.endswith("_configs")]
        if integrations:
            receiver = {"name": receiver["name"],
                        "webhook_configs": [{"url": f"{webhook_url.rstrip('/')}/{receiver['name']}",
                                             "send_resolved": True}]}
        receivers.append(receiver)
    config["receivers"] = receivers
    return config


# --- the webhook ------------------------------------------------------------------------------------


class AlertWebhook:
    """An HTTP server that records every Alertmanager notification POSTed to it."""

    def __init__(self, on_notification: Callable[[dict[str, Any]], None] | None = None, host: str = "127.0.0.1",
                 port: int = 0):
        self.notifications: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._on_notification = on_notification
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    notification = json.loads(body)
                except ValueError:
                    self.send_response(400)
                    self.end_headers()
                    return
                notification["_path"] = self.path
                with webhook._lock:
                    webhook.notifications.append(notification)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                if webhook._on_notification is not None:
                    try:
                        webhook._on_notification(notification)
                    except Exception:  # noqa: BLE001 - printing must never break the receiver
                        pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="alert-webhook", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.socket.getsockname()[:2]
        return f"http://{host}:{port}/alerts"

    def start(self) -> "AlertWebhook":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def alerts(self, status: str | None = None, **labels: str) -> list[tuple[str, dict[str, Any]]]:
        """(receiver, alert) of every alert delivered so far whose labels include ``labels``."""
        with self._lock:
            notifications = list(self.notifications)
        return [(n.get("receiver", ""), alert) for n in notifications for alert in n.get("alerts", [])
                if (status is None or alert.get("status") == status)
                and all(alert.get("labels", {}).get(k) == v for k, v in labels.items())]


def describe_alert(receiver: str, alert: dict[str, Any]) -> str:
    labels, annotations = alert.get("labels", {}), alert.get("annotations", {})
    model = labels.get("model", "")
    if labels.get("model_version"):
        model += f" {labels['model_version']}"
    # What tells two alerts of one name apart: the feature or output, else the method (the
    # multivariate alert fires once for correlation and once for PCA reconstruction).
    shown = [k for k in ("feature", "output") if labels.get(k)] or [k for k in ("method",) if labels.get(k)]
    detail = ", ".join(f"{k}={labels[k]}" for k in shown)
    return (f"ALERT [{alert.get('status', '?')}] {labels.get('alertname', '?')} team={labels.get('team', '')} "
            f"severity={labels.get('severity', '')} model={model.strip() or '-'}"
            f"{' ' + detail if detail else ''} -> {receiver}: {annotations.get('summary', '')}")


def print_notification(notification: dict[str, Any]) -> None:
    for alert in notification.get("alerts", []):
        print(describe_alert(notification.get("receiver", "?"), alert), flush=True)


# --- processes -----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_or_free(preferred: int) -> int:
    """``preferred`` when nothing listens there on loopback, else a free port."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return free_port()


def alertmanager_binary() -> str | None:
    for name in ALERTMANAGER_BINARIES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _ready(url: str, process: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            if requests.get(url, timeout=1).ok:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.1)
    return False


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


class StackError(RuntimeError):
    pass


class MonitoringStack:
    """Prometheus scraping ``targets`` with the shipped rules, Alertmanager with the shipped routes,
    and a webhook recording what Alertmanager delivers; all on loopback, files in ``workdir``.

    ``start()`` raises StackError when Prometheus does not start; Alertmanager is left out (with
    a message) when its binary or the shipped configuration is missing and ``require_alertmanager``
    is false."""

    def __init__(self, workdir: Path, targets: list[str], *, prometheus_port: int | None = None,
                 alertmanager_port: int | None = None, max_for: str = "10s", scrape_interval: str = "1s",
                 evaluation_interval: str = "1s", group_wait: str = "1s", group_interval: str = "2s",
                 on_notification: Callable[[dict[str, Any]], None] | None = None,
                 require_alertmanager: bool = True, job: str = "inferwatch"):
        self.workdir = Path(workdir)
        self.targets = targets
        self.prometheus_port = prometheus_port or free_port()
        self.alertmanager_port = alertmanager_port or free_port()
        self.max_for = max_for
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval
        self.group_wait = group_wait
        self.group_interval = group_interval
        self.require_alertmanager = require_alertmanager
        self.job = job
        self.webhook = AlertWebhook(on_notification)
        self.prometheus: subprocess.Popen | None = None
        self.alertmanager: subprocess.Popen | None = None
        self.rule_files: list[Path] = []
        self._logs: list[Any] = []

    # URLs and logs

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    @property
    def alertmanager_url(self) -> str | None:
        return f"http://127.0.0.1:{self.alertmanager_port}" if self.alertmanager is not None else None

    @property
    def processes(self) -> list[subprocess.Popen]:
        return [p for p in (self.prometheus, self.alertmanager) if p is not None]

    def log(self, name: str, tail: int = 4000) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def _log_file(self, name: str):
        handle = open(self.workdir / f"{name}.log", "wb")
        self._logs.append(handle)
        return handle

    # lifecycle

    def start(self, *, wait_for_rules: bool = True, timeout: float = 30.0) -> "MonitoringStack":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.webhook.start()
        self._start_alertmanager(timeout)
        self._start_prometheus(timeout)
        if wait_for_rules:
            self.load_rules_after_first_scrape(timeout)
        else:
            threading.Thread(target=self._load_rules_quietly, args=(timeout,), name="load-rules", daemon=True).start()
        return self

    def _start_alertmanager(self, timeout: float) -> None:
        binary = alertmanager_binary()
        missing = None if binary else "the alertmanager binary is not installed"
        if binary and not ALERTMANAGER_CONFIG.is_file():
            missing = f"{ALERTMANAGER_CONFIG} is missing"
        if missing or binary is None:  # (missing says why whenever binary is None)
            if self.require_alertmanager:
                raise StackError(missing)
            print(f"Alertmanager: skipped ({missing}).")
            return
        config = alertmanager_config(self.webhook.url, group_wait=self.group_wait, group_interval=self.group_interval)
        path = self.workdir / "alertmanager.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        self.alertmanager = subprocess.Popen(
            [binary, f"--config.file={path}", f"--storage.path={self.workdir / 'alertmanager-data'}",
             f"--web.listen-address=127.0.0.1:{self.alertmanager_port}", "--cluster.listen-address="],
            stdout=subprocess.DEVNULL, stderr=self._log_file("alertmanager"))
        if not _ready(f"http://127.0.0.1:{self.alertmanager_port}/-/ready", self.alertmanager, timeout):
            _stop(self.alertmanager)
            self.alertmanager = None
            message = f"Alertmanager did not start; see {self.workdir / 'alertmanager.log'}:\n{self.log('alertmanager')}"
            if self.require_alertmanager:
                raise StackError(message)
            print(message)

    def _prometheus_config(self, with_rules: bool) -> dict[str, Any]:
        config: dict[str, Any] = {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.evaluation_interval},
            "scrape_configs": [{"job_name": self.job, "static_configs": [{"targets": list(self.targets)}]}],
        }
        if with_rules:
            config["rule_files"] = [str(path) for path in self.rule_files]
        if self.alertmanager is not None:
            config["alerting"] = {"alertmanagers": [
                {"static_configs": [{"targets": [f"127.0.0.1:{self.alertmanager_port}"]}]}]}
        return config

    def _start_prometheus(self, timeout: float) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise StackError("the prometheus binary is not installed")
        self.rule_files = write_rules(self.workdir / "rules", self.max_for)
        self._write_prometheus_config(with_rules=False)
        self.prometheus = subprocess.Popen(
            [binary, f"--config.file={self.workdir / 'prometheus.yml'}", f"--storage.tsdb.path={self.workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.prometheus_port}",
             # Resend active alerts every evaluation (default 1m): an alert sent while a reload
             # had not yet rediscovered Alertmanager reaches it a moment later.
             f"--rules.alert.resend-delay={self.evaluation_interval}"],
            stdout=subprocess.DEVNULL, stderr=self._log_file("prometheus"))
        if not _ready(f"{self.prometheus_url}/-/ready", self.prometheus, timeout):
            raise StackError(f"Prometheus did not start; see {self.workdir / 'prometheus.log'}:\n{self.log('prometheus')}")

    def _write_prometheus_config(self, with_rules: bool) -> None:
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(self._prometheus_config(with_rules)),
                                                     encoding="utf-8")

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = requests.get(f"{self.prometheus_url}/api/v1/query", params={"query": expr}, timeout=10).json()
        if answer.get("status") != "success":
            raise StackError(f"query {expr!r} failed: {answer.get('error')}")
        return answer["data"]["result"]

    def _wait(self, predicate: Callable[[], Any], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = predicate()
            except (requests.RequestException, StackError, ValueError):
                value = None
            if value:
                return value
            time.sleep(0.2)
        return None

    def load_rules_after_first_scrape(self, timeout: float = 30.0) -> None:
        """Wait until every target has been scraped successfully, then load the rules (SIGHUP)."""
        scraped = self._wait(lambda: len(self.query(f'up{{job="{self.job}"}} == 1')) >= len(self.targets), timeout)
        if not scraped:
            raise StackError(f"Prometheus did not scrape {self.targets} within {timeout:g}s:\n{self.log('prometheus')}")
        self._write_prometheus_config(with_rules=True)
        assert self.prometheus is not None
        self.prometheus.send_signal(signal.SIGHUP)

        def loaded():
            answer = requests.get(f"{self.prometheus_url}/api/v1/rules", timeout=5).json()
            return len(answer["data"]["groups"]) >= sum(
                len(yaml.safe_load(p.read_text())["groups"]) for p in self.rule_files)
        if not self._wait(loaded, timeout):
            raise StackError(f"Prometheus did not load the rules:\n{self.log('prometheus')}")
        if self.alertmanager is not None:   # a reload rediscovers Alertmanager on a 5s tick
            def discovered():
                answer = requests.get(f"{self.prometheus_url}/api/v1/alertmanagers", timeout=5).json()
                return answer["data"]["activeAlertmanagers"]
            if not self._wait(discovered, timeout):
                raise StackError(f"Prometheus did not find Alertmanager:\n{self.log('prometheus')}")

    def _load_rules_quietly(self, timeout: float) -> None:
        try:
            self.load_rules_after_first_scrape(timeout)
        except StackError as exc:
            print(f"Prometheus: the rules were not loaded: {exc}")

    def alerts(self) -> list[dict[str, Any]]:
        """Prometheus's alerts, pending and firing."""
        return requests.get(f"{self.prometheus_url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]

    def stop(self) -> None:
        for process in (self.prometheus, self.alertmanager):
            if process is not None:
                _stop(process)
        try:
            self.webhook.stop()
        except Exception:  # noqa: BLE001 - never started
            pass
        for handle in self._logs:
            handle.close()

    def __enter__(self) -> "MonitoringStack":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# --- the demo -----------------------------------------------------------------------------------------


def answers(url: str, timeout: float = 3.0) -> bool:
    """True when a GET of ``url`` succeeds (2xx or 3xx): the demo prints only links that work."""
    try:
        return requests.get(url, timeout=timeout).status_code < 400
    except requests.RequestException:
        return False


# Prometheus's alerts page: upstream builds (React UI), then Debian's (classic UI only), then the API.
PROMETHEUS_ALERT_PAGES = ("/alerts", "/classic/alerts", "/api/v1/alerts")


def first_answering(base: str, paths: tuple[str, ...]) -> str | None:
    """The first of ``base + path`` that answers: UIs move between versions (Debian's Prometheus
    2.42 serves its alerts page at /classic/alerts, upstream builds at /alerts)."""
    return next((base + path for path in paths if answers(base + path)), None)


def link_line(label: str, url: str | None, note: str = "") -> str:
    """One "Label: URL   note" line, the URL checked by a GET first."""
    if url is None or not answers(url):
        return f"{label + ':':<14}{url or '(no page answered)'}   (did not answer a GET: not a link)"
    return f"{label + ':':<14}{url}{'   ' + note if note else ''}"


def start_demo_stack(workdir: Path, admin_port: int, *, prometheus_port: int = 9090,
                     alertmanager_port: int = 9093, max_for: str = "10s") -> MonitoringStack | None:
    """For ``inferwatch demo``: Prometheus (and Alertmanager when installed) on the usual ports when
    they are free, printing each alert Alertmanager delivers; None when Prometheus is missing."""
    if shutil.which("prometheus") is None:
        print("prometheus is not installed: skipping it (make demo installs it where apt-get can).")
        return None
    stack = MonitoringStack(workdir / "stack", [f"127.0.0.1:{admin_port}"],
                            prometheus_port=port_or_free(prometheus_port),
                            alertmanager_port=port_or_free(alertmanager_port), max_for=max_for,
                            scrape_interval="2s", evaluation_interval="2s",
                            on_notification=print_notification, require_alertmanager=False)
    try:
        stack.start(wait_for_rules=False)
    except StackError as exc:
        print(f"Prometheus: not started: {exc}")
        stack.stop()
        return None
    print(link_line("Prometheus", first_answering(stack.prometheus_url, PROMETHEUS_ALERT_PAGES),
                    f"(rules of prometheus/rules/, `for:` at most {max_for})"))
    if stack.alertmanager_url:
        ui = first_answering(stack.alertmanager_url, ("/",))   # its UI's alerts view is the #/alerts fragment
        print(link_line("Alertmanager", f"{ui}#/alerts" if ui else f"{stack.alertmanager_url}/api/v2/alerts",
                        "(shipped routes; receivers -> this terminal)"))
    return stack
