"""Alert-triggered actions for real: the Debian Alertmanager, with the shipped routing tree, delivers a
firing drift alert to `inferwatch actions` (bearer token from a file), which calls a test HTTP endpoint
exactly once although Alertmanager repeats the notification and a second alert of the same model
arrives within the cooldown."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests
import yaml
from prometheus_client import CollectorRegistry
from stack_helpers import free_port, stop_process, wait_until

from inferwatch.alerting.receiver import ActionsServer
from inferwatch.config import load_actions_config
from inferwatch.demo.stack import AlertWebhook, alertmanager_binary, alertmanager_config

TOKEN = "am-to-actions-token"


@pytest.fixture
def loop(tmp_path):
    binary = alertmanager_binary()
    if binary is None:
        pytest.fail("alertmanager is not installed: `make test` installs the Debian prometheus-alertmanager package")
    endpoint = AlertWebhook().start()          # stands in for the orchestrator's REST API
    teams = AlertWebhook().start()             # every other receiver of the shipped tree
    (tmp_path / "token").write_text(TOKEN + "\n")
    actions_file = tmp_path / "actions.yaml"
    actions_file.write_text(yaml.safe_dump({
        "listen_address": "127.0.0.1", "port": 0, "auth": {"bearer_token_file": str(tmp_path / "token")},
        "audit_log": {"path": str(tmp_path / "audit.jsonl")},
        "actions": [{"name": "retrain-fraud", "matchers": ['alertname="InferwatchDatasetDrift"', 'model="fraud"'],
                     "http": {"url": endpoint.url.replace("/alerts", "/api/v1/dags/retrain/dagRuns"),
                              "body": {"conf": {"model": "{{ model }}", "model_version": "{{ model_version }}",
                                                "alert": "{{ fingerprint }}"}}},
                     "cooldown_seconds": 3600, "cooldown_by": ["model"], "retries": 2, "backoff_seconds": 0.1}],
    }))
    server = ActionsServer(load_actions_config(actions_file), CollectorRegistry()).start()

    # The shipped routing tree, its receivers pointed at the test; the actions receiver at the server,
    # with the token read from a file as the shipped configuration does.
    config = alertmanager_config(teams.url)
    (receiver,) = [r for r in config["receivers"] if r["name"] == "actions"]
    receiver["webhook_configs"] = [{"url": f"http://127.0.0.1:{server.port}/v1/alerts", "send_resolved": True,
                                    "http_config": {"authorization": {"credentials_file": str(tmp_path / "token")}}}]
    (route,) = [r for r in config["route"]["routes"] if r.get("receiver") == "actions"]
    route.update(group_wait="1s", group_interval="1s", repeat_interval="2s")   # repeats within the test
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = open(tmp_path / "alertmanager.log", "wb")
    process = subprocess.Popen([binary, f"--config.file={tmp_path / 'alertmanager.yml'}",
                                f"--storage.path={tmp_path / 'am-data'}", f"--web.listen-address=127.0.0.1:{port}",
                                "--cluster.listen-address="], stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_until(lambda: requests.get(f"{url}/-/ready", timeout=1).ok, 30), (tmp_path / "alertmanager.log").read_text()
        yield url, server, endpoint, teams, tmp_path
    finally:
        stop_process(process)
        log.close()
        server.stop()
        endpoint.stop()
        teams.stop()


def fire(url: str, **labels: str) -> None:
    now = datetime.now(timezone.utc)
    alert = {"labels": {"alertname": "InferwatchDatasetDrift", "severity": "critical", "team": "data", **labels},
             "annotations": {"description": "The inputs of fraud drifted."},
             "startsAt": now.isoformat(), "endsAt": (now + timedelta(minutes=10)).isoformat(),
             "generatorURL": "http://prometheus/graph"}
    assert requests.post(f"{url}/api/v2/alerts", json=[alert], timeout=5).status_code == 200


def count(server: ActionsServer, outcome: str) -> float:
    return server.registry.get_sample_value("inferwatch_actions_total", {"action": "retrain-fraud", "outcome": outcome})


def test_alertmanager_delivers_and_the_endpoint_is_called_exactly_once(loop):
    url, server, endpoint, teams, tmp_path = loop
    fire(url, model="fraud", model_version="3")
    assert wait_until(lambda: endpoint.notifications, 20), (tmp_path / "alertmanager.log").read_text()
    [call] = endpoint.notifications
    assert call["_path"] == "/api/v1/dags/retrain/dagRuns"
    assert call["conf"]["model"] == "fraud" and call["conf"]["model_version"] == "3" and call["conf"]["alert"]

    # Within the cooldown: another version of the same model, an unrelated model, and Alertmanager's
    # own repeats (repeat_interval 2s) of the first alert.
    fire(url, model="fraud", model_version="4")
    fire(url, model="loan", model_version="1")
    assert wait_until(lambda: count(server, "cooldown") >= 1 and count(server, "duplicate") >= 2, 20), (
        count(server, "cooldown"), count(server, "duplicate"))
    time.sleep(1)
    assert len(endpoint.notifications) == 1                                   # exactly once
    assert count(server, "success") == 1 and count(server, "failure") == 0
    assert server.registry.get_sample_value("inferwatch_actions_webhook_errors_total", {"reason": "unauthorized"}) == 0

    # `continue: true`: the data team was notified as well, through its own receiver
    assert {receiver for receiver, _ in teams.alerts(alertname="InferwatchDatasetDrift")} == {"data-pager"}
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    [success] = [e for e in audit if e["outcome"] == "success"]
    assert success["labels"]["model_version"] == "3" and success["status_code"] == 200
    assert {e["outcome"] for e in audit} >= {"queued", "success", "duplicate", "cooldown"}
