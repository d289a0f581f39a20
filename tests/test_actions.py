"""Alert-triggered actions: matchers, templates, configuration errors, and the receiver over real
sockets calling a real HTTP endpoint (and real commands)."""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from prometheus_client import CollectorRegistry

from inferwatch.alerting.notifications import parse_notification
from inferwatch.alerting.receiver import ActionsServer
from inferwatch.config.templates import Template, TemplateError, parse_matcher
from inferwatch.config import ConfigError, load_actions_config, load_config
from inferwatch.cli import main as cli_main

from conftest import start_sidecar, wait_for

TOKEN = "s3cret-token"


class Target:
    """An HTTP endpoint that records every request and answers with the queued status codes (then 200)."""

    def __init__(self):
        self.requests: list[dict] = []
        self.statuses: list[int] = []
        self.delay = 0.0
        self.set_cookie: str | None = None   # sent with every answer when set
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                target.requests.append({"path": self.path, "headers": dict(self.headers), "body": body,
                                        "at": time.monotonic()})
                time.sleep(target.delay)
                status = target.statuses.pop(0) if target.statuses else 200
                self.send_response(status)
                if target.set_cookie:
                    self.send_header("Set-Cookie", target.set_cookie)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def target():
    t = Target()
    yield t
    t.stop()


def alert(fingerprint="f1", starts="2026-01-01T00:00:00Z", status="firing", **labels):
    labels = {"alertname": "InferwatchDatasetDrift", "model": "fraud", "model_version": "3", "severity": "critical",
              **labels}
    return {"status": status, "labels": labels, "annotations": {"description": 'drift "big"'},
            "startsAt": starts, "fingerprint": fingerprint, "generatorURL": "http://prometheus/graph"}


def notification(*alerts):
    return {"version": "4", "status": "firing", "receiver": "actions", "groupKey": "{}", "alerts": list(alerts)}


def write_config(tmp_path, target_url: str, top=None, **action_overrides) -> str:
    action = {"name": "retrain", "matchers": ['alertname="InferwatchDatasetDrift"', "model=~fraud|loan"],
              "http": {"url": f"{target_url}/dags/retrain/dagRuns", "headers": {"X-Model": "{{ model }}"},
                       "body": {"conf": {"model": "{{ model }}", "why": "{{ annotations.description }}"}}},
              "cooldown_seconds": 3600, "cooldown_by": ["model"], "retries": 2, "backoff_seconds": 0.05,
              **action_overrides}
    config = {"listen_address": "127.0.0.1", "port": 0, "auth": {"bearer_token": TOKEN},
              "audit_log": {"path": str(tmp_path / "audit.jsonl")}, "actions": [action], **(top or {})}
    path = tmp_path / "actions.yaml"
    path.write_text(json.dumps(config))
    return str(path)


@pytest.fixture
def server_for(tmp_path):
    servers = []

    def start(target_url, top=None, **overrides):
        server = ActionsServer(load_actions_config(write_config(tmp_path, target_url, top, **overrides)),
                               CollectorRegistry()).start()
        servers.append(server)
        return server
    yield start
    for server in servers:
        server.stop()


def post(server, body, token=TOKEN):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(f"http://127.0.0.1:{server.port}/v1/alerts", data=data, headers=headers, timeout=10)


def metric(server, outcome, action="retrain"):
    return server.registry.get_sample_value("inferwatch_actions_total", {"action": action, "outcome": outcome})


def audit(tmp_path):
    path = tmp_path / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# --- pure parts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text, labels, expected", [
    ('alertname="InferwatchDatasetDrift"', {"alertname": "InferwatchDatasetDrift"}, True),
    ("model=fraud", {"model": "fraud"}, True),
    ("model=fraud", {"model": "fraudster"}, False),
    ('model!="fraud"', {"model": "loan"}, True),
    ('model=~"fr.*"', {"model": "fraud"}, True),
    ('model=~"fr"', {"model": "fraud"}, False),   # anchored, as in Alertmanager
    ("model!~fr.*", {"model": "fraud"}, False),
    ("team=", {}, True),                            # empty matches a missing label
])
def test_matchers(text, labels, expected):
    assert parse_matcher(text)(labels) is expected


@pytest.mark.parametrize("text", ["model", "=x", 'model=~"("'])
def test_bad_matchers(text):
    with pytest.raises(ValueError):
        parse_matcher(text)


def test_templates_substitute_and_never_evaluate():
    [a] = parse_notification(json.dumps(notification(alert())).encode())
    assert Template("m={{ model }} v={{labels.model_version}} {{ annotations.description }} {{ fingerprint }}").render(
        a.lookup) == 'm=fraud v=3 drift "big" f1'
    with pytest.raises(TemplateError, match="the alert has no 'region'"):
        Template("{{ region }}").render(a.lookup)
    for bad in ("{{ model | upper }}", "{{ __import__('os') }}", "{{ model }", "x }}"):
        with pytest.raises(TemplateError):
            Template(bad)
    body = Template.render_tree(Template.compile_tree({"conf": ["{{ annotations.description }}", 3]}), a.lookup)
    assert body == {"conf": ['drift "big"', 3]}


def test_notifications_are_validated_with_where():
    for body, where in ((b"{", "body: not JSON"), (b"[]", "body: expected"), (b'{"alerts": 1}', "alerts: expected a list"),
                        (b'{"alerts": [{"labels": {"a": 1}}]}', "alerts[0].labels: expected an object of strings"),
                        (b'{"alerts": [{"status": "firing"}]}', "alerts[0].labels: required")):
        with pytest.raises(ValueError, match=where.replace("[", r"\[").replace("]", r"\]")):
            parse_notification(body)
    [a] = parse_notification(b'{"alerts": [{"status": "firing", "labels": {"alertname": "X"}}]}')
    assert len(a.fingerprint) == 16   # computed from the labels when Alertmanager's is missing


@pytest.mark.parametrize("config, message", [
    ({"actions": [{"matchers": ["a=b"], "command": ["true"]}]}, "actions[0].name: required key is missing"),
    ({"actions": [{"name": "x", "matchers": ["a=b"]}]}, "actions[0]: needs exactly one of http (with a url) and command"),
    ({"actions": [{"name": "x", "matchers": ["a=b"], "command": ["true"], "http": {"url": "http://h"}}]},
     "needs exactly one of"),
    ({"actions": [{"name": "x", "matchers": ["nope"], "command": ["true"]}]}, "actions[0].matchers[0]: expected name=value"),
    ({"actions": [{"name": "x", "matchers": [], "command": ["true"]}]}, "actions[0].matchers: at least one matcher"),
    ({"actions": [{"name": "x", "matchers": ["a=b"], "command": ["{{ a | b }}"]}]}, "actions[0].command[0]: {{ a | b }}"),
    ({"actions": [{"name": "x", "matchers": ["a=b"], "http": {"url": "http://h", "body": {"k": "{{ x"}}}]},
     "actions[0].http.body: unbalanced"),
    ({"actions": [{"name": "x", "matchers": ["a=b"], "command": ["true"], "retries": -1}]}, "actions[0].retries: must be 0"),
    ({"actions": [{"name": "x", "matchers": ["a=b"], "command": ["true"]}], "max_queue_items": 0},
     "max_queue_items: must be greater than 0"),
    ({"actions": [{"name": "x", "matchers": ["a=b"], "command": ["true"]}, {"name": "x", "matchers": ["a=b"],
                                                                            "command": ["true"]}]}, "duplicate action"),
    ({"actoins": []}, "actoins: unknown key"),
    ({}, "actions: at least one action is required"),
])
def test_config_problems_name_file_and_key(tmp_path, config, message):
    path = tmp_path / "actions.yaml"
    path.write_text(json.dumps(config))
    with pytest.raises(ConfigError) as info:
        load_actions_config(path)
    assert any(p.startswith(f"{path}:") and message in p for p in info.value.problems), info.value.problems


def test_the_example_is_valid(monkeypatch, capsys):
    monkeypatch.setenv("INFERWATCH_ACTIONS_TOKEN", "t")
    example = Path(__file__).resolve().parents[1] / "examples" / "actions.yaml"
    assert cli_main(["actions", "--config", str(example), "--check"]) == 0
    assert "retrain-fraud" in capsys.readouterr().out


# --- the receiver, for real ------------------------------------------------------------------------


def test_an_alert_calls_the_endpoint_once_then_duplicate_and_cooldown(server_for, target, tmp_path):
    server = server_for(target.url)
    answer = post(server, notification(alert()))
    assert answer.status_code == 200 and answer.json()["queued"] == 1
    assert wait_for(lambda: metric(server, "success") == 1)
    [call] = target.requests
    assert call["path"] == "/dags/retrain/dagRuns" and call["headers"]["X-Model"] == "fraud"
    assert call["headers"]["Content-Type"] == "application/json"
    assert json.loads(call["body"]) == {"conf": {"model": "fraud", "why": 'drift "big"'}}

    assert post(server, notification(alert())).json()["duplicate"] == 1                     # Alertmanager's repeat
    assert post(server, notification(alert(fingerprint="f2", model_version="4"))).json()["cooldown"] == 1  # same model
    assert post(server, notification(alert(fingerprint="f3", model="loan"))).json()["queued"] == 1   # another model
    assert post(server, notification(alert(fingerprint="f4", model="other"))).json()["unmatched"] == 1
    assert post(server, notification(alert(status="resolved"))).json()["queued"] == 0
    assert wait_for(lambda: metric(server, "success") == 2)
    assert len(target.requests) == 2
    assert metric(server, "duplicate") == 1 and metric(server, "cooldown") == 1
    assert server.registry.get_sample_value("inferwatch_actions_alerts_received_total", {"status": "resolved"}) == 1

    entries = audit(tmp_path)
    assert [e["outcome"] for e in entries if e["fingerprint"] == "f1"] == ["queued", "success", "duplicate"]
    success = next(e for e in entries if e["outcome"] == "success")
    assert success["status_code"] == 200 and success["attempts"] == 1 and success["alertname"] == "InferwatchDatasetDrift"
    assert success["matched"] == ['alertname="InferwatchDatasetDrift"', 'model=~"fraud|loan"']
    assert success["request"]["url"].endswith("/dags/retrain/dagRuns") and success["cooldown_key"] == {"model": "fraud"}


def test_the_webhook_wants_the_token_and_valid_bodies(server_for, target):
    server = server_for(target.url)
    assert post(server, notification(alert()), token=None).status_code == 401
    assert post(server, notification(alert()), token="wrong").status_code == 401
    bad = post(server, b'{"alerts": [{"labels": "x"}]}')
    assert bad.status_code == 400 and bad.json() == {"error": "invalid_payload",
                                                     "detail": "alerts[0].labels: expected an object of strings"}
    assert post(server, b"not json").json()["error"] == "invalid_json"
    for reason, count in (("unauthorized", 2), ("invalid_payload", 1), ("invalid_json", 1)):
        assert server.registry.get_sample_value("inferwatch_actions_webhook_errors_total", {"reason": reason}) == count
    assert not target.requests


def test_retries_with_backoff_then_success(server_for, target, tmp_path):
    target.statuses = [503, 500]
    server = server_for(target.url, backoff_seconds=0.2)
    post(server, notification(alert()))
    assert wait_for(lambda: metric(server, "success") == 1)
    assert len(target.requests) == 3
    first, second, third = (r["at"] for r in target.requests)
    assert second - first >= 0.2 and third - second >= 0.4   # backoff_seconds x 2^(n-1)
    assert server.registry.get_sample_value("inferwatch_action_retries_total", {"action": "retrain"}) == 2
    assert next(e for e in audit(tmp_path) if e["outcome"] == "success")["attempts"] == 3


def test_a_client_error_is_not_retried_and_a_failure_allows_the_next_try(server_for, target, tmp_path):
    target.statuses = [400]
    server = server_for(target.url)
    post(server, notification(alert()))
    assert wait_for(lambda: metric(server, "failure") == 1)
    assert len(target.requests) == 1
    failure = next(e for e in audit(tmp_path) if e["outcome"] == "failure")
    assert failure["status_code"] == 400 and failure["attempts"] == 1
    assert post(server, notification(alert())).json()["queued"] == 1   # no cooldown after a failure
    assert wait_for(lambda: metric(server, "success") == 1)


def test_a_full_queue_drops_counts_and_asks_alertmanager_to_retry(server_for, target):
    target.delay = 1.0
    server = server_for(target.url, top={"max_queue_items": 1, "workers": 1}, cooldown_by=["model_version"])
    answers = [post(server, notification(alert(fingerprint=f"f{i}", model_version=str(i)))) for i in range(4)]
    # one running, one waiting, the rest dropped
    assert [a.status_code for a in answers][2:] == [503, 503], [a.json() for a in answers]
    assert answers[3].headers["Retry-After"] and answers[3].json()["dropped"] == 1
    assert metric(server, "dropped") == 2
    assert server.registry.get_sample_value("inferwatch_actions_queue_capacity_items") == 1
    assert wait_for(lambda: metric(server, "success") == 2, 10)
    retry = post(server, notification(alert(fingerprint="f3", model_version="3")))   # Alertmanager's retry
    assert retry.status_code == 200 and retry.json()["queued"] == 1


def test_a_missing_label_is_a_template_error(server_for, target, tmp_path):
    server = server_for(target.url, http={"url": f"{target.url}/x", "body": "{{ region }}"})
    assert post(server, notification(alert())).json()["template_error"] == 1
    assert metric(server, "template_error") == 1 and not target.requests
    assert "the alert has no 'region'" in audit(tmp_path)[0]["error"]


def test_a_command_action_runs_without_a_shell(server_for, tmp_path):
    out = tmp_path / "ran.txt"
    script = ("import json, os, sys; open(sys.argv[1], 'w').write(sys.argv[2] + ' ' + "
              "json.loads(os.environ['INFERWATCH_ALERT'])['labels']['model'])")
    server = server_for("http://unused", http={}, command=[sys.executable, "-c", script, str(out),
                                                          "{{ model }};$(reboot)"])
    post(server, notification(alert()))
    assert wait_for(lambda: metric(server, "success") == 1)
    assert out.read_text() == "fraud;$(reboot) fraud"
    assert next(e for e in audit(tmp_path) if e["outcome"] == "success")["exit_code"] == 0


def test_the_sidecar_serves_the_receiver_on_its_admin_port(upstream, target, tmp_path):
    config = json.loads(open(write_config(tmp_path, target.url)).read())
    config.pop("listen_address"), config.pop("port")
    sidecar = start_sidecar(upstream.url, actions=config)
    try:
        url = f"http://127.0.0.1:{sidecar.admin_port}/v1/alerts"
        assert requests.post(url, json=notification(alert()), timeout=5).status_code == 401
        answer = requests.post(url, json=notification(alert()), headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
        assert answer.json()["queued"] == 1
        assert wait_for(lambda: len(target.requests) == 1)
        scrape = requests.get(f"http://127.0.0.1:{sidecar.admin_port}/metrics", timeout=5).text
        assert 'inferwatch_actions_total{action="retrain",outcome="duplicate"} 0.0' in scrape
        assert wait_for(lambda: 'inferwatch_actions_total{action="retrain",outcome="success"} 1.0' in
                        requests.get(f"http://127.0.0.1:{sidecar.admin_port}/metrics", timeout=5).text)
    finally:
        sidecar.stop()


def test_the_token_can_come_from_a_mounted_file(tmp_path):
    token = tmp_path / "actions-token"
    token.write_text(TOKEN + "\n")
    path = tmp_path / "actions.yaml"
    path.write_text(json.dumps({"auth": {"bearer_token_file": str(token)},
                                "actions": [{"name": "x", "matchers": ["a=b"], "command": ["true"]}]}))
    assert load_actions_config(path).auth.bearer_token == TOKEN
    path.write_text(json.dumps({"auth": {"bearer_token_file": str(tmp_path / "missing")},
                                "actions": [{"name": "x", "matchers": ["a=b"], "command": ["true"]}]}))
    with pytest.raises(ConfigError, match="auth.bearer_token_file: cannot read"):
        load_actions_config(path)
    sidecar = tmp_path / "inferwatch.yaml"
    sidecar.write_text(f"admin: {{write_auth: {{bearer_token_file: {token}}}}}\n")
    assert load_config(sidecar).admin.write_auth.bearer_token == TOKEN


def test_sidecar_config_reports_action_problems_with_the_section(tmp_path):
    path = tmp_path / "inferwatch.yaml"
    path.write_text("actions:\n  actions:\n    - {name: x, matchers: [bad], command: [true]}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert any(p.startswith(f"{path}:actions.actions[0].matchers[0]:") for p in info.value.problems), info.value.problems


@pytest.mark.parametrize("address, warned", [("0.0.0.0", True), ("10.1.2.3", True), ("::", True),
                                             ("127.0.0.1", False), ("::1", False), ("localhost", False)])
def test_an_exposed_receiver_without_auth_is_warned_about(tmp_path, capsys, address, warned):
    path = tmp_path / "actions.yaml"
    path.write_text(json.dumps({"listen_address": address,
                                "actions": [{"name": "retrain", "matchers": ["a=b"], "command": ["true"]}]}))
    assert cli_main(["actions", "--config", str(path), "--check"]) == 0
    out = capsys.readouterr().out
    assert "auth: none" in out
    assert ("WARNING: actions: the receiver on " in out) is warned, out
    assert ("has no authentication: anyone who reaches it can run retrain" in out) is warned


def test_check_config_lists_the_sidecars_actions_and_their_auth(tmp_path, capsys):
    path = tmp_path / "inferwatch.yaml"
    action = "{name: retrain, matchers: [a=b], command: [true]}"
    path.write_text(f"admin: {{listen_address: 0.0.0.0}}\nactions:\n  actions: [{action}]\n")
    assert cli_main(["check-config", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "actions:     retrain on the admin port's /v1/alerts (auth: none)" in out
    assert "WARNING:     actions: the receiver on 0.0.0.0 has no authentication" in out
    path.write_text(f"admin: {{listen_address: 0.0.0.0}}\nactions:\n  auth: {{bearer_token: t}}\n"
                    f"  actions: [{action}]\n")
    assert cli_main(["check-config", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "(auth: bearer token)" in out and "WARNING:     actions:" not in out   # (admin.write_auth warns apart)


def test_the_command_serves_until_sigterm(tmp_path, target):
    import re
    import signal
    import subprocess

    process = subprocess.Popen([sys.executable, "-m", "inferwatch", "actions", "--config",
                                write_config(tmp_path, target.url)], stderr=subprocess.PIPE, text=True)
    try:
        banner = process.stderr.readline()
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/v1/alerts", banner).group(1))
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()["actions"] == ["retrain"]
        answer = requests.post(f"http://127.0.0.1:{port}/v1/alerts", json=notification(alert()),
                               headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
        assert answer.json()["queued"] == 1
        # the target records the request before it answers: wait for the answer to be counted
        assert wait_for(lambda: 'inferwatch_actions_total{action="retrain",outcome="success"} 1.0' in requests.get(
            f"http://127.0.0.1:{port}/metrics", timeout=5).text)
        assert len(target.requests) == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()


# --- what a label value may not do (hostile alerts) ---------------------------------------------

ANY_MODEL = ['alertname="InferwatchDatasetDrift"']


def test_url_placeholders_are_percent_encoded_per_part(server_for, target, tmp_path):
    """A label cannot leave its path segment or add query parameters: before, this label sent the
    configured Authorization to /admin/delete."""
    server = server_for(target.url, matchers=ANY_MODEL, cooldown_by=["model"], http={
        "url": target.url + "/dags/{{ model }}/run?note={{ annotations.description }}&v={{ model_version }}",
        "headers": {"Authorization": "Bearer for-the-dag-api"}})
    post(server, notification(alert(fingerprint="f1", model="../../../admin/delete?x=")))
    post(server, notification(alert(fingerprint="f2", model="a b&c=d#e", model_version="1&admin=1")))
    assert wait_for(lambda: metric(server, "success") == 2)
    paths = sorted(r["path"] for r in target.requests)
    assert paths == ["/dags/..%2F..%2F..%2Fadmin%2Fdelete%3Fx%3D/run?note=drift%20%22big%22&v=3",
                     "/dags/a%20b%26c%3Dd%23e/run?note=drift%20%22big%22&v=1%26admin%3D1"]
    # A whole dot segment is refused: the action does not run.
    assert post(server, notification(alert(fingerprint="f3", model=".."))).json()["template_error"] == 1
    assert len(target.requests) == 2
    assert "dot segment" in next(e for e in audit(tmp_path) if e["outcome"] == "template_error")["error"]


def test_url_placeholders_cannot_choose_the_host(tmp_path):
    path = write_config(tmp_path, "http://unused", http={"url": "http://{{ host }}.example/x"})
    with pytest.raises(ConfigError) as err:
        load_actions_config(path)
    assert any("http.url" in p and "host" in p for p in err.value.problems), err.value.problems


def record_argv(tmp_path):
    out = tmp_path / "argv.json"
    return out, [sys.executable, "-c", f"import json, sys; open({str(out)!r}, 'w').write(json.dumps(sys.argv[1:]))"]


def test_a_label_cannot_become_a_command_option(server_for, tmp_path):
    out, command = record_argv(tmp_path)
    server = server_for("http://unused", matchers=ANY_MODEL, http={}, command=command + ["--model", "{{ model }}"])
    assert post(server, notification(alert(model="--delete-everything"))).json()["template_error"] == 1
    assert not out.exists()
    assert "option" in next(e for e in audit(tmp_path) if e["outcome"] == "template_error")["error"]
    # An ordinary value (and one with a dash inside, or after a literal prefix) still runs.
    post(server, notification(alert(fingerprint="f2", model="fraud-v2")))
    assert wait_for(lambda: metric(server, "success") == 1)
    assert json.loads(out.read_text()) == ["--model", "fraud-v2"]


@pytest.mark.parametrize("overrides", [
    {"command_tail": ["--", "{{ model }}"]},                               # the end of options, documented
    {"command_tail": ["{{ model }}"], "allow_option_values": True},         # allowed by the action
])
def test_option_like_values_pass_after_a_double_dash_or_when_allowed(server_for, tmp_path, overrides):
    out, command = record_argv(tmp_path)
    tail = overrides.pop("command_tail")
    server = server_for("http://unused", matchers=ANY_MODEL, http={}, command=command + tail, **overrides)
    post(server, notification(alert(model="--looks-like-an-option")))
    assert wait_for(lambda: metric(server, "success") == 1)
    assert json.loads(out.read_text())[-1] == "--looks-like-an-option"


def test_cookies_do_not_persist_between_actions(server_for, target):
    target.set_cookie = "session=from-the-first-call; Path=/"
    server = server_for(target.url, matchers=ANY_MODEL)
    post(server, notification(alert(fingerprint="f1", model="fraud")))
    assert wait_for(lambda: metric(server, "success") == 1)
    post(server, notification(alert(fingerprint="f2", model="loan")))
    assert wait_for(lambda: metric(server, "success") == 2)
    assert len(target.requests) == 2
    assert not any("Cookie" in r["headers"] for r in target.requests), [r["headers"] for r in target.requests]
    assert len(server.runner.session.cookies) == 0
