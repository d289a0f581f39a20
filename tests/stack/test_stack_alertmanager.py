"""Alertmanager: the configuration checks, every team x severity route, inhibition, the webhook printer."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import requests
from stack_helpers import REPO, free_port, load_yaml, run, stop_process, tool, wait_until

CONFIG = REPO / "alertmanager" / "alertmanager.yml"


def routes_test(*labels: str, expect: str) -> subprocess.CompletedProcess:
    return run(tool("amtool"), "config", "routes", "test", f"--config.file={CONFIG}",
               f"--verify.receivers={expect}", *labels)


def test_amtool_check_config():
    result = run(tool("amtool"), "check-config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 templates" in result.stdout


@pytest.mark.parametrize("team", ["data", "ml", "ops"])
@pytest.mark.parametrize("severity, kind", [("critical", "pager"), ("warning", "chat"), ("info", "chat")])
def test_routes_by_team_then_severity(team, severity, kind):
    result = routes_test(f"team={team}", f"severity={severity}", "alertname=InferwatchSomething", "model=loan",
                         expect=f"{team}-{kind}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"{team}-{kind}"


def test_the_watchdog_goes_to_the_null_receiver():
    result = routes_test("alertname=InferwatchWatchdog", "team=ops", "severity=none", expect="null")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("alertname", ["InferwatchDatasetDrift", "InferwatchPredictionDrift"])
def test_drift_alerts_also_reach_the_actions_receiver(alertname):
    result = routes_test(f"alertname={alertname}", "team=data", "severity=critical", "model=loan",
                         expect="actions,data-pager")
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_without_a_known_team_are_still_delivered():
    result = routes_test("alertname=Other", "team=finance", "severity=critical", expect="unrouted")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_wrong_expectation_fails():   # --verify.receivers really verifies
    assert routes_test("team=ops", "severity=critical", expect="ops-chat").returncode != 0


def test_tree_uses_matchers_and_groups_by_alertname_and_model():
    config = load_yaml(CONFIG)
    assert config["route"]["group_by"] == ["alertname", "model"]

    def walk(route):
        assert "match" not in route and "match_re" not in route
        for child in route.get("routes", []):
            yield child
            yield from walk(child)
    assert all("matchers" in route for route in walk(config["route"]))


def test_warnings_are_inhibited_by_a_critical_of_the_same_alert_and_model():
    rules = load_yaml(CONFIG)["inhibit_rules"]
    assert {"source_matchers": ['severity="critical"'], "target_matchers": ['severity="warning"'],
            "equal": ["alertname", "model"]} in rules
    for rule in rules:
        assert "source_match" not in rule and "target_match" not in rule


def test_receivers_cover_webhook_slack_email_and_pagerduty_without_inline_secrets():
    config = load_yaml(CONFIG)
    receivers = {r["name"]: r for r in config["receivers"]}
    for team in ("data", "ml", "ops"):
        assert "pagerduty_configs" in receivers[f"{team}-pager"] and "webhook_configs" in receivers[f"{team}-pager"]
        assert {"slack_configs", "email_configs", "webhook_configs"} <= set(receivers[f"{team}-chat"])
        for pd in receivers[f"{team}-pager"]["pagerduty_configs"]:
            assert "routing_key_file" in pd and "routing_key" not in pd and "service_key" not in pd
        for slack in receivers[f"{team}-chat"]["slack_configs"]:
            assert "api_url" not in slack
    assert set(receivers["null"]) == {"name"}
    glob = config["global"]
    assert "slack_api_url_file" in glob and "smtp_auth_password_file" in glob
    assert "slack_api_url" not in glob and "smtp_auth_password" not in glob
    secrets = REPO / "alertmanager" / "secrets"
    assert (secrets / ".gitignore").read_text().startswith("*\n")
    documented = (secrets / "README.md").read_text()
    for path in json.dumps(config).split('"'):
        if path.startswith("/etc/alertmanager/secrets/"):
            assert f"`{path.rsplit('/', 1)[1]}`" in documented, path


def test_notification_templates_render():
    result = run(tool("amtool"), "template", "render", f"--template.glob={REPO / 'alertmanager/templates/*.tmpl'}",
                 '--template.text={{ template "inferwatch.title" . }}|{{ template "inferwatch.text" . }}')
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("[")


def test_webhook_receiver_prints_notifications():
    port = free_port()
    process = subprocess.Popen([sys.executable, "-u", str(REPO / "alertmanager" / "webhook-receiver.py"),
                                "--host", "127.0.0.1", "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok, 10)
        notification = {
            "version": "4", "receiver": "ops-pager", "status": "firing", "groupLabels": {"alertname": "X"},
            "alerts": [{"status": "firing",
                        "labels": {"alertname": "InferwatchModelServerDown", "severity": "critical", "team": "ops",
                                   "model": "loan", "model_version": "v1", "instance": "inferwatch:9180"},
                        "annotations": {"description": "The model server of loan is down.",
                                        "runbook_url": "https://example.com/runbooks.md#x"}}],
        }
        assert requests.post(f"http://127.0.0.1:{port}/alerts", json=notification, timeout=5).status_code == 200
        assert requests.post(f"http://127.0.0.1:{port}/alerts", data=b"nope", timeout=5).status_code == 400
    finally:
        stop_process(process)
    out = process.stdout.read()
    assert "== ops-pager: firing (1 alert(s))" in out
    assert ("[firing] InferwatchModelServerDown severity=critical team=ops model=loan model_version=v1 "
            "instance=inferwatch:9180") in out
    assert "The model server of loan is down." in out
