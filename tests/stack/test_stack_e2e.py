"""End to end, for real, on loopback: the demo model server, the sidecar in front of it, Prometheus
scraping it every second with the shipped rules (``for:`` shortened in a copy), Alertmanager with
the shipped routes (every receiver pointed at a webhook in this test), and traffic.

The tests run in order on one stack: healthy traffic raises nothing, drifted traffic reaches the
data team, and the score's business bands shifting with it the ML team; a stopped model server
reaches the operations team.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import requests
import yaml
from stack_helpers import RULE_FILES, free_port, load_yaml, stop_process, tool, wait_until

from inferwatch.config import load_config
from inferwatch.demo.model import CATEGORICAL, FEATURES, NUMERIC, generate
from inferwatch.demo.runner import DEMO_OUTPUTS
from inferwatch.demo.stack import MonitoringStack, alertmanager_binary
from inferwatch.sidecar import Sidecar

MAX_FOR = "2s"   # every alert's `for:` in the test's copy of the rules
WARMUP_EVENTS = 1000   # the first healthy events become the drift reference


class Traffic:
    """Loan applications through the sidecar's proxy from a background thread; ``shift`` in [0, 1]
    moves the population as the demo does halfway."""

    def __init__(self, url: str, rows: int = 20, interval: float = 0.02):
        self.url, self.rows, self.interval = url, rows, interval
        self.shift = 0.0
        self.sent = self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def _run(self) -> None:
        rng = np.random.default_rng(3)
        session = requests.Session()
        while not self._stop.is_set():
            data = generate(self.rows, rng, shift=self.shift)
            instances = [{name: data[name][i].item() for name in FEATURES} for i in range(self.rows)]
            try:
                answer = session.post(self.url, json={"instances": instances}, timeout=5)
                self.sent += 1
                self.failed += answer.status_code >= 400
            except requests.RequestException:
                self.failed += 1
            self._stop.wait(self.interval)

    def start(self) -> "Traffic":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def sidecar_overrides(upstream_port: int, model_pid: int) -> dict:
    features = [{"name": n, "type": "numeric"} for n in NUMERIC] + [{"name": n, "type": "categorical"}
                                                                     for n in CATEGORICAL]
    return {
        "upstream.url": f"http://127.0.0.1:{upstream_port}",
        "upstream.health_interval_seconds": 0.2,
        "upstream.timeout_seconds": 2.0,
        "proxy.listen_address": "127.0.0.1", "proxy.port": 0,
        "admin.listen_address": "127.0.0.1", "admin.port": 0,
        "model.name": "loan", "model.version": "v1",
        "payload.codec": "kserve_v1",
        "payload.features": features,
        "window.max_events": 3000,
        "process.pid": model_pid,
        "predictions.outputs": DEMO_OUTPUTS,   # the loan bands, with the demo's expected shares
    } | {"reference.warmup_events": WARMUP_EVENTS, "drift.interval_seconds": 1.0}


class E2E:
    def __init__(self, tmp):
        self.tmp = tmp
        self.model = self.sidecar = self.stack = self.traffic = None
        self.model_log = None

    def start(self) -> None:
        tool("prometheus")
        if alertmanager_binary() is None:
            pytest.fail("alertmanager is not installed: `make test` installs the Debian prometheus-alertmanager package")
        port = free_port()
        self.model_log = open(self.tmp / "model_server.log", "wb")
        self.model = subprocess.Popen([sys.executable, "-m", "inferwatch.demo.model_server", "--port", str(port)],
                                      stdout=subprocess.DEVNULL, stderr=self.model_log)
        assert wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/", timeout=1).ok, 60), self.log("model_server")
        self.sidecar = Sidecar(load_config(None, sidecar_overrides(port, self.model.pid))).start()
        self.instance = f"127.0.0.1:{self.sidecar.admin_port}"
        assert wait_until(lambda: requests.get(f"http://{self.instance}/readyz", timeout=1).ok, 10)
        self.traffic = Traffic(f"http://127.0.0.1:{self.sidecar.proxy_port}/v1/models/loan:predict").start()
        self.stack = MonitoringStack(self.tmp / "stack", [self.instance], max_for=MAX_FOR).start(timeout=30)

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def logs(self) -> str:
        return f"prometheus:\n{self.stack.log('prometheus')}\nalertmanager:\n{self.stack.log('alertmanager')}"

    def stop(self) -> None:
        for step in (lambda: self.traffic.stop(), lambda: self.stack.stop(), lambda: self.sidecar.stop(),
                     lambda: stop_process(self.model), lambda: self.model_log.close()):
            try:
                step()
            except AttributeError:   # never started
                pass


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    stack = E2E(tmp_path_factory.mktemp("e2e"))
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


def test_the_copy_changes_only_for(e2e):
    """Prometheus runs the shipped expressions, labels and annotations; only `for:` is shorter."""
    shipped = {path.name: load_yaml(path) for path in RULE_FILES}
    copied = {path.name: yaml.safe_load(path.read_text()) for path in e2e.stack.rule_files}
    assert set(copied) == set(shipped)
    for name, content in shipped.items():
        for group, group_copy in zip(content["groups"], copied[name]["groups"], strict=True):
            for rule, rule_copy in zip(group["rules"], group_copy["rules"], strict=True):
                assert {k: v for k, v in rule_copy.items() if k != "for"} == {k: v for k, v in rule.items() if k != "for"}
                if "alert" in rule:
                    assert rule_copy["for"] == MAX_FOR


def test_healthy_traffic_raises_no_alert_but_the_watchdog(e2e):
    stack = e2e.stack
    # The rules see a few seconds of healthy traffic: rates exist and every rule evaluated.
    assert wait_until(lambda: stack.query('model:inferwatch_requests:rate5m{model="loan", model_version="v1"} > 0'),
                      20), e2e.logs()
    # the drift alerts must have seen healthy drift figures, not none at all
    selector = f'{{instance="{e2e.instance}", model="loan", model_version="v1"}}'
    for metric in ("inferwatch_feature_drift_score", "inferwatch_feature_drifted",
                   "inferwatch_drifted_features_ratio", "inferwatch_dataset_drifted",
                   "inferwatch_prediction_drift_score", "inferwatch_drift_last_evaluation_timestamp_seconds"):
        assert wait_until(lambda: stack.query(metric + selector), 30), (metric, e2e.logs())
    time.sleep(4)   # twice MAX_FOR: anything true now would be firing
    groups = requests.get(f"{stack.prometheus_url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    unhealthy = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"] if r["health"] != "ok"]
    assert not unhealthy, unhealthy
    alerts = {a["labels"]["alertname"]: a["state"] for a in stack.alerts()}
    assert alerts == {"InferwatchWatchdog": "firing"}, alerts
    # The watchdog went through Alertmanager to the null receiver: the pipeline works, nobody was notified.
    def in_alertmanager():
        answer = requests.get(f"{stack.alertmanager_url}/api/v2/alerts", timeout=5).json()
        return {a["labels"]["alertname"]: [r["name"] for r in a["receivers"]] for a in answer}
    assert wait_until(lambda: in_alertmanager().get("InferwatchWatchdog") == ["null"], 10), in_alertmanager()
    assert set(in_alertmanager()) == {"InferwatchWatchdog"}
    assert stack.webhook.alerts() == []
    assert e2e.traffic.sent > 50 and e2e.traffic.failed == 0


def test_feature_drift_reaches_the_data_team(e2e):
    e2e.traffic.shift = 1.0   # the demo's drifted population: lower incomes, more debt, more contractors
    delivered = wait_until(lambda: e2e.stack.webhook.alerts(status="firing", alertname="InferwatchFeatureDrift"), 45)
    assert delivered, (e2e.stack.alerts(), e2e.logs())
    for receiver, alert in delivered:
        labels = alert["labels"]
        assert receiver == "data-chat"   # team data, severity warning
        assert {k: labels[k] for k in ("team", "severity", "model", "model_version", "instance", "method")} == {
            "team": "data", "severity": "warning", "model": "loan", "model_version": "v1",
            "instance": e2e.instance, "method": "psi"}
        assert labels["feature"] in FEATURES
        description = alert["annotations"]["description"]
        match = re.fullmatch(rf"Feature {labels['feature']} of loan version v1 \(sidecar {re.escape(e2e.instance)}\) "
                             r"has drifted from its reference: psi = ([0-9.e+-]+); threshold: .* psi >= 0, for .*\.",
                             description)
        assert match and float(match.group(1)) > 0, description   # the shipped min_score 0: the decision alone
        assert alert["annotations"]["runbook_url"].endswith("docs/runbooks.md#inferwatchfeaturedrift")
    drifted = {alert["labels"]["feature"] for _, alert in delivered}
    assert drifted & {"income", "debt_ratio", "age", "employment"}, drifted   # the features the demo shifts


def test_band_shift_reaches_the_ml_team(e2e):
    """The drifted population (traffic still shifted) sends far more applicants below 0.6: the
    share of refer_to_human leaves its expected 30%, and the ML team hears of it."""
    delivered = wait_until(
        lambda: e2e.stack.webhook.alerts(status="firing", alertname="InferwatchPredictionBandShift",
                                         band="refer_to_human"), 60)
    assert delivered, (e2e.stack.alerts(), e2e.logs())
    receiver, alert = delivered[0]
    assert receiver == "ml-chat"   # team ml, severity warning
    labels = alert["labels"]
    assert {k: labels[k] for k in ("team", "severity", "model", "model_version", "output", "compared_with")} == {
        "team": "ml", "severity": "warning", "model": "loan", "model_version": "v1",
        "output": "approval_probability", "compared_with": "expected_share"}
    assert re.match(r"The share of band refer_to_human of output approval_probability of loan version v1 over the "
                    r"last 1h differs from the configured expected share by \d", alert["annotations"]["description"])
    assert alert["annotations"]["runbook_url"].endswith("docs/runbooks.md#inferwatchpredictionbandshift")
    share = e2e.stack.query('model_output_band:inferwatch_prediction_band:ratio1h{band="refer_to_human"}')
    assert float(share[0]["value"][1]) > 0.4, share


def test_model_server_down_reaches_the_ops_team(e2e):
    e2e.traffic.stop()
    stop_process(e2e.model)
    delivered = wait_until(lambda: e2e.stack.webhook.alerts(status="firing", alertname="InferwatchModelServerDown"),
                           30)
    assert delivered, (e2e.stack.alerts(), e2e.logs())
    receiver, alert = delivered[0]
    assert receiver == "ops-pager"
    labels = alert["labels"]
    assert {k: labels[k] for k in ("team", "severity", "model", "model_version", "instance")} == {
        "team": "ops", "severity": "critical", "model": "loan", "model_version": "v1", "instance": e2e.instance}
    description = alert["annotations"]["description"]
    assert description.startswith(f"The model server of loan version v1 behind {e2e.instance} has failed its "
                                  f"health probe"), description
    assert re.search(r"inferwatch_upstream_up = 0;", description), description
    assert alert["annotations"]["runbook_url"].endswith("docs/runbooks.md#inferwatchmodelserverdown")
    assert {r for r, _ in e2e.stack.webhook.alerts(alertname="InferwatchModelServerDown")} == {"ops-pager"}
