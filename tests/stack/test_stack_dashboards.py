"""Grafana dashboards: provisioning lint, and every panel's PromQL run on a live Prometheus that
scrapes an in-process sidecar with traffic through it (and evaluates the shipped rules)."""

from __future__ import annotations

import json
import os
from pathlib import Path
import random
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import requests
import yaml
from stack_helpers import (DASHBOARDS, REPO, RULES_DIR, Pushgateway, free_port, load_yaml, run, stop_process, tool,
                           wait_until)

from inferwatch.config import load_config
from inferwatch.job import JobOptions, JobRun
from inferwatch.sidecar import Sidecar

VARIABLES = ("model", "model_version", "instance")
# Panels whose series only exist on some machines: the live test requires a successful query only.
MAY_BE_EMPTY = {"GPU", "Monitoring errors"}
# The drift engine's metrics (monitors/drift/): the stack waits until each has a series.
DRIFT_METRICS = {"inferwatch_feature_drift_score", "inferwatch_feature_drift_p_value", "inferwatch_feature_drifted",
                 "inferwatch_feature_statistic", "inferwatch_dataset_drifted", "inferwatch_drifted_features_ratio",
                 "inferwatch_prediction_drift_score", "inferwatch_drift_last_evaluation_timestamp_seconds"}
DASHBOARD = {name: REPO / "grafana" / "dashboards" / f"inferwatch-{name}.json"
             for name in ("overview", "data", "model", "genai")}
# The generative dashboard's panels read a second sidecar, in front of an OpenAI-compatible stub.
GENAI_MODEL = "chat"


def load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def panels(dashboard):
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])   # collapsed rows


def graph_panels(dashboard):
    return [p for p in panels(dashboard) if p["type"] != "row"]


def targets():
    for path in DASHBOARDS:
        for panel in graph_panels(load(path)):
            for target in panel["targets"]:
                yield path.name, panel, target


def constants(dashboard) -> dict[str, str]:
    return {v["name"]: v["query"] for v in dashboard["templating"]["list"] if v["type"] == "constant"}


def extra_variables(dashboard) -> dict[str, str]:
    """Query variables other than model/version/instance, at their default (or All) value."""
    out = {}
    for v in dashboard["templating"]["list"]:
        if v["type"] == "query" and v["name"] not in VARIABLES:
            value = v.get("current", {}).get("value")
            value = value[0] if isinstance(value, list) and len(value) == 1 else value
            out[v["name"]] = value if isinstance(value, str) and value != "$__all" else v.get("allValue", ".*")
    return out


def is_job_query(expr: str) -> bool:
    """Jobs (pushed through the Pushgateway) have no model_version and their instance is a runner:
    their panels select the model's jobs and the jobs for no model with model=~"$model|"."""
    return "inferwatch_job_" in expr


# --- lint ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_provisions_cleanly(path):
    text = path.read_text(encoding="utf-8")
    dashboard = json.loads(text)
    assert dashboard["id"] is None
    assert re.fullmatch(r"[a-z0-9-]{1,40}", dashboard["uid"])
    assert "__inputs" not in dashboard and "__requires" not in dashboard
    assert "DS_PROMETHEUS" not in text
    assert dashboard["title"] and dashboard["description"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert [v["name"] for v in variables.values() if v["type"] == "datasource"] == ["datasource"]
    assert variables["datasource"]["query"] == "prometheus"
    for name in VARIABLES:
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_panel_has_datasource_unit_title_description(path):
    for panel in graph_panels(load(path)):
        name = panel.get("title")
        assert name and panel.get("description"), panel["id"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, name
        assert panel["fieldConfig"]["defaults"].get("unit"), name
        assert panel["targets"], name
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, name


@pytest.mark.parametrize("dashboard, panel, target",
                         [pytest.param(*t, id=f"{t[1]['title']}-{t[2]['refId']}") for t in targets()])
def test_every_query_uses_the_variables_and_rate_interval(dashboard, panel, target):
    expr = target["expr"]
    # Fleet-wide panels read recording rules that sum over every sidecar: no instance to filter.
    variables = [v for v in VARIABLES if not (v == "instance" and "Fleet-wide" in panel["title"])]
    if is_job_query(expr):
        assert 'model=~"$model|"' in expr and "model_version" not in expr, panel["title"]
        variables = []
    for name in variables:
        assert f'{name}=~"${name}"' in expr, (panel["title"], name)
    slo_windows = set(load_yaml(REPO / "prometheus" / "thresholds.yaml")["slo"]["windows"])
    for function, window in re.findall(r"\b(rate|increase|last_over_time)\([^\[]*\[([^\]]+)\]", expr):
        if function == "last_over_time":
            continue
        if "SLO" in panel["title"]:
            assert window in slo_windows | {"$__range"}, (panel["title"], window)
        else:
            assert window == "$__rate_interval", (panel["title"], window)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_slo_constants_match_the_thresholds(path):
    slo = load_yaml(REPO / "prometheus" / "thresholds.yaml")["slo"]
    dashboard = load(path)
    values = constants(dashboard)
    text = json.dumps(dashboard)
    if "$slo_latency_le" in text:
        assert float(values["slo_latency_le"]) == slo["latency_seconds"]
    if "$slo_objective" in text:
        assert float(values["slo_objective"]) == slo["objective"]
    cost = load_yaml(REPO / "prometheus" / "thresholds.yaml")["cost"]
    for name in ("cpu_hour_price", "gpu_hour_price"):
        if f"${name}" in text:
            assert float(values[name]) == cost[name], name


def test_the_overview_covers_the_operations_signals():
    dashboard = load(REPO / "grafana" / "dashboards" / "inferwatch-overview.json")
    exprs = " ".join(t["expr"] for p in graph_panels(dashboard) for t in p["targets"])
    for metric in ("inferwatch_requests_total", "inferwatch_request_duration_seconds_bucket",
                   "inferwatch_upstream_errors_total", "inferwatch_upstream_up", "inferwatch_requests_in_flight",
                   "inferwatch_model_process_cpu_seconds_total", "inferwatch_model_process_resident_memory_bytes",
                   "inferwatch_model_process_threads", "inferwatch_model_process_open_fds",
                   "inferwatch_gpu_utilization_ratio", "inferwatch_events_total", "inferwatch_events_dropped_total",
                   "inferwatch_queue_items", "inferwatch_queue_capacity_items", "$slo_objective",
                   "$cpu_hour_price", "$gpu_hour_price", "inferwatch_job_last_exit_code",
                   "inferwatch_job_last_success_timestamp_seconds", "inferwatch_job_last_duration_seconds",
                   "inferwatch_job_running", "inferwatch_job_runs_total", "inferwatch_job_failures_total",
                   "inferwatch_job_last_start_delay_seconds", "inferwatch_job_info"):
        assert metric in exprs, metric
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}," in exprs


def test_the_dashboards():
    assert sorted(p.name for p in DASHBOARDS) == sorted(p.name for p in DASHBOARD.values())
    assert len({load(p)["uid"] for p in DASHBOARDS}) == len(DASHBOARDS)


def exprs_of(name: str) -> str:
    return " ".join(t["expr"] for p in graph_panels(load(DASHBOARD[name])) for t in p["targets"])


def test_the_data_dashboard_covers_payloads_and_feature_drift():
    exprs = exprs_of("data")
    for metric in ("inferwatch_payload_errors_total", "inferwatch_events_dropped_total", "inferwatch_feature_drift_score",
                   "inferwatch_feature_drift_p_value", "inferwatch_feature_drifted", "inferwatch_dataset_drifted",
                   "inferwatch_drifted_features_ratio", "inferwatch_drift_last_evaluation_timestamp_seconds",
                   'inferwatch_feature_statistic{', 'source="reference"', 'source="current"'):
        assert metric in exprs, metric
    recorded = {rule.get("record") for path in sorted((REPO / "prometheus" / "rules").glob("*.yml"))
                for group in load_yaml(path)["groups"] for rule in group["rules"]}
    fleet_psi = sorted(r for r in recorded if r and "psi" in r)
    for record in fleet_psi:   # a fleet-wide PSI panel exactly when its recording rule exists
        assert record in exprs, record


def test_the_data_dashboard_covers_the_input_guard():
    exprs = exprs_of("data")
    for metric in ("inferwatch_data_quality_events_total", "inferwatch_data_quality_issues_total",
                   "inferwatch_data_quality_failed_events_ratio", "inferwatch_feature_missing_ratio",
                   "inferwatch_feature_out_of_range_ratio", "inferwatch_schema_changed", "inferwatch_outliers_total",
                   "inferwatch_outlier_ratio", "inferwatch_outlier_score_bucket"):
        assert metric in exprs, metric


def test_the_model_dashboard_covers_predictions_and_their_drift():
    exprs = exprs_of("model")
    for metric in ("inferwatch_predictions_total", "inferwatch_prediction_drift_score", "inferwatch_events_total"):
        assert metric in exprs, metric


MODEL_ROWS = {
    "Performance": ("inferwatch_model_performance", "inferwatch_estimated_performance", "inferwatch_labels_total",
                    "inferwatch_label_delay_seconds_bucket", "inferwatch_labelled_window_events",
                    "inferwatch_confusion_matrix_total", "inferwatch_segment_model_performance",
                    "inferwatch_label_drift_score"),
    "Shadow challengers": ("inferwatch_shadow_agreement_ratio", "inferwatch_shadow_prediction_difference_bucket",
                           "inferwatch_shadow_duration_seconds_bucket", "inferwatch_shadow_performance",
                           "inferwatch_shadow_requests_total"),
    "Prediction outputs and bands": ("inferwatch_predicted_class_total", "inferwatch_prediction_score_bucket",
                                     "inferwatch_prediction_value_bucket", "inferwatch_prediction_band_total",
                                     "inferwatch_unreasonable_predictions_total"),
    "Segments": ("inferwatch_segment_events_total", "inferwatch_segment_drifted_features_ratio",
                 "inferwatch_segment_prediction_drift_score"),
}


@pytest.mark.parametrize("row", MODEL_ROWS)
def test_the_model_dashboard_rows_cover_their_metrics(row):
    """Each row of the model dashboard queries its metrics in the panels below its title."""
    dashboard = load(DASHBOARD["model"])
    rows = [p for p in dashboard["panels"] if p["type"] == "row"]
    (top,) = [p["gridPos"]["y"] for p in rows if p["title"] == row]
    bottom = min((p["gridPos"]["y"] for p in rows if p["gridPos"]["y"] > top), default=float("inf"))
    exprs = " ".join(t["expr"] for p in graph_panels(dashboard) if top < p["gridPos"]["y"] < bottom
                     for t in p["targets"])
    for metric in MODEL_ROWS[row]:
        assert metric in exprs, (row, metric)


def test_every_dashboard_row_and_panel_the_runbooks_name_exists():
    """The runbooks send people to dashboards, rows and panels by their titles in *italics*: each
    names the beginning of a real title (a renamed panel is a failing test, not a dead end)."""
    titles = set()
    for path in DASHBOARDS:
        dashboard = load(path)
        titles.add(dashboard["title"])
        titles |= {p["title"] for p in panels(dashboard)}
    text = (REPO / "docs" / "runbooks.md").read_text(encoding="utf-8")
    italics = set(re.findall(r"(?<![*\w])\*([^*\n]{2,80}?)\*(?![*\w])", text))
    not_titles = {"missing", "stops", "inferwatch."}   # emphasis; a regular expression's .*inferwatch.*
    unknown = sorted(phrase for phrase in italics - not_titles
                     if not phrase.startswith(("Team ", "Status →"))   # the alert's team; Prometheus's UI
                     and not any(title.startswith(phrase) for title in titles))
    assert not unknown, unknown
    for row in re.findall(r"row \*([^*]+)\*", text):
        assert row in titles, row


def test_every_metric_queried_is_in_the_contract():
    """Dashboards query only metrics documented in docs/metrics.md (or Prometheus's own `up`)."""
    documented = set(re.findall(r"`(inferwatch_[a-z_]+)`", (REPO / "docs" / "metrics.md").read_text()))
    for _, panel, target in targets():
        for name in re.findall(r"(?<![:\w])(inferwatch_[a-z_]+)", target["expr"]):  # not recording rules
            base = re.sub(r"_(bucket|count|sum)$", "", name)
            assert name in documented or base in documented, (panel["title"], name)


# --- live ------------------------------------------------------------------------------------------------


class Stack:
    def __init__(self, tmp):
        self.upstream = None
        self.challenger = None
        self.sidecar = None
        self.prometheus = None
        self.pushgateway = None
        self.stub = None
        self.genai_sidecar = None
        self.tmp = tmp

    def start(self):
        self.upstream = subprocess.Popen([sys.executable, str(REPO / "tests" / "upstream_server.py")],
                                         stdout=subprocess.PIPE, text=True)
        upstream_port = int(self.upstream.stdout.readline())
        # A shadow challenger: the same model server answering 0.2 higher (another score, mostly the same class).
        self.challenger = subprocess.Popen([sys.executable, str(REPO / "tests" / "upstream_server.py"),
                                            "--offset", "0.2"], stdout=subprocess.PIPE, text=True)
        challenger_port = int(self.challenger.stdout.readline())
        self.sidecar = Sidecar(load_config(None, {
            "upstream.url": f"http://127.0.0.1:{upstream_port}",
            "upstream.health_interval_seconds": 0.2,
            "upstream.timeout_seconds": 2.0,
            "proxy.listen_address": "127.0.0.1", "proxy.port": 0,
            "admin.listen_address": "127.0.0.1", "admin.port": 0,
            "model.name": "loan", "model.version": "v1",
            "payload.codec": "kserve_v1",
            "process.pid": self.upstream.pid,
            # drift panels: a reference profile of the traffic's population (with a label, for the
            # label drift panel), evaluated twice a second
            "reference.path": str(self.reference_profile()), "drift.interval_seconds": 0.5,
            "drift.min_events": 10,
            # output panels: the upstream's answer is a score in the seed's loan bands; pushed events
            # add a class and a value output
            "predictions.outputs": {"prediction": {"type": "score", "bands": [
                {"name": "refer_to_human", "max": 0.6}, {"name": "high_rate", "min": 0.6, "max": 0.7},
                {"name": "mid_rate", "min": 0.71, "max": 0.9}, {"name": "low_rate", "min": 0.9}]},
                "decision": {"type": "class"}, "amount": {"type": "value", "rules": [{"name": "negative", "min": 0}]}},
            # performance panels: labels for every prediction (traffic()), computed twice a second;
            # the upstream's answer is the positive class's probability
            "labels.enabled": True, "performance.task": "classification", "performance.score_output": "prediction",
            "performance.prediction_output": "prediction",
            "performance.interval_seconds": 0.5, "performance.min_events": 5,
            "segments.features": ["region"],
            "shadow.challengers": [{"name": "loan-v2", "url": f"http://127.0.0.1:{challenger_port}"}],
        })).start()
        self.instance = f"127.0.0.1:{self.sidecar.admin_port}"
        self.proxy = f"http://127.0.0.1:{self.sidecar.proxy_port}"
        self.admin = f"http://{self.instance}"
        self.start_genai()
        self.port = free_port()
        self.pushgateway = Pushgateway(self.tmp)
        self.push_jobs()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES_DIR / "*.yml")],
            "scrape_configs": [{"job_name": "inferwatch",
                                "static_configs": [{"targets": [self.instance, self.genai_instance]}]},
                               {"job_name": "pushgateway", "honor_labels": True,
                                "static_configs": [{"targets": [self.pushgateway.url.split("//", 1)[1]]}]}],
        }
        (self.tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = open(self.tmp / "prometheus.log", "wb")
        self.prometheus = subprocess.Popen(
            [tool("prometheus"), f"--config.file={self.tmp / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=self.log)
        assert wait_until(lambda: requests.get(f"{self.url}/-/ready", timeout=1).ok, 30), self.prometheus_log()

    def start_genai(self):
        """A generative model: the OpenAI-compatible stub behind its own sidecar, answering with some of
        everything the generative panels count (truncations, refusals, failures, broken streams)."""
        from inferwatch.demo.openai_stub import REFUSAL_PATTERN, Behaviour, OpenAIStub

        self.stub = OpenAIStub(port=0, behaviour=Behaviour(
            first_token_seconds=0.02, token_seconds=0.001, completion_tokens=12, truncation_share=0.3,
            refusal_share=0.3, error_share=0.05, stream_error_share=0.05)).start()
        self.genai_sidecar = Sidecar(load_config(None, {
            "upstream.url": self.stub.url, "upstream.health_interval_seconds": 0.2, "upstream.timeout_seconds": 5.0,
            "upstream.health_path": "/health",
            "proxy.listen_address": "127.0.0.1", "proxy.port": 0, "admin.listen_address": "127.0.0.1", "admin.port": 0,
            "model.name": GENAI_MODEL, "model.version": "v1",
            "genai.output_matchers": [{"name": "refusal", "pattern": REFUSAL_PATTERN}],
            # drift of the prompts and answers against the first ones (a warm-up reference)
            "reference.warmup_events": 20, "drift.interval_seconds": 0.5, "drift.min_events": 10,
        })).start()
        self.genai_instance = f"127.0.0.1:{self.genai_sidecar.admin_port}"
        self.genai_proxy = f"http://127.0.0.1:{self.genai_sidecar.proxy_port}"

    def genai_traffic(self, session: requests.Session, i: int):
        """Streamed and whole chat, a text completion and embeddings through the generative sidecar."""
        messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "word " * (i % 9 + 1)}]
        chat = {"model": "gpt-x", "messages": messages, "max_tokens": 16, "temperature": 0.5}
        try:
            with session.post(f"{self.genai_proxy}/v1/chat/completions", stream=True, timeout=5,
                              json={**chat, "stream": True, "stream_options": {"include_usage": True}}) as answer:
                for _ in answer.iter_content(None):
                    pass
        except requests.RequestException:   # a stream the stub broke on purpose
            pass
        session.post(f"{self.genai_proxy}/v1/chat/completions", json=chat, timeout=5)
        session.post(f"{self.genai_proxy}/v1/completions", json={"model": "gpt-x", "prompt": "Say", "max_tokens": 8},
                     timeout=5)
        session.post(f"{self.genai_proxy}/v1/embeddings", json={"model": "embed", "input": f"topic {i % 5}"},
                     timeout=5)

    def reference_profile(self):
        """The population traffic() sends (and its labels: the truth is 1 as often as 0)."""
        from inferwatch.reference import build_profile

        rng = np.random.default_rng(4)
        n = 2000
        path = self.tmp / "reference.json"
        build_profile({"feature": {"income": rng.normal(52000.0, 9000.0, n), "debt_ratio": rng.uniform(0.1, 0.6, n),
                                   "region": list(rng.choice(["north", "south", "east"], n))},
                       "output": {"prediction": rng.choice([0.25, 0.75], n)},
                       "label": {"label": list(rng.integers(0, 2, n))}}, kinds={"label": "categorical"}).save(path)
        return path

    def push_jobs(self):
        """The jobs row's data: a scheduled training run of the model that succeeds, a data job that
        fails, and a backfill for no model that is still running."""
        def options(name, **kwargs):
            return JobOptions(name, pushgateway=self.pushgateway.url, instance="runner-1", **kwargs)
        with JobRun(options("train-loan", model="loan", schedule_timestamp=time.time() - 30)):
            pass
        with pytest.raises(RuntimeError):
            with JobRun(options("etl-loan", model="loan", team="data")):
                raise RuntimeError("bad input")
        JobRun(options("backfill", team="data")).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def prometheus_log(self):
        return (self.tmp / "prometheus.log").read_text(errors="replace")[-3000:]

    def traffic(self, seconds: float):
        """Predictions, plus the failures the panels count: 5xx, no answer, undecodable bodies,
        rejected push events."""
        session = requests.Session()
        deadline = time.monotonic() + seconds
        rng = random.Random(5)
        i = 0
        while time.monotonic() < deadline:
            i += 1
            row = {"income": rng.gauss(52000.0, 9000.0), "debt_ratio": rng.uniform(0.1, 0.6),
                   "region": rng.choice(["north", "south", "east"])}
            session.post(f"{self.proxy}/v1/models/loan:predict", json={"instances": [row, row]}, timeout=5,
                         headers={"X-Prediction-ID": f"t{i}"})
            # the truth for both rows (answered 0.25 and 0.75), right most of the time
            session.post(f"{self.admin}/v1/labels", timeout=5, json={"labels": [
                {"prediction_id": f"t{i}-{j}", "label": j if rng.random() < 0.8 else 1 - j} for j in range(2)]})
            session.post(f"{self.proxy}/v1/models/loan:predict", data=b"{not json",
                         headers={"Content-Type": "application/json"}, timeout=5)
            session.get(f"{self.proxy}/status/503", timeout=5)
            session.post(f"{self.admin}/v1/events", timeout=5,   # one accepted, one rejected: dropped{invalid}
                         json={"events": [{"prediction_id": "p", "features": row, "prediction": {
                             "prediction": 0.9, "decision": "approve" if i % 3 else "refer", "amount": 1200.0 * i}},
                                          {"prediction_id": "q", "features": "not an object"}]})
            try:
                session.get(f"{self.proxy}/reset", timeout=5)
            except requests.RequestException:
                pass
            self.genai_traffic(session, i)
            time.sleep(0.05)

    def query(self, expr: str) -> dict:
        return requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10).json()

    def stop(self):
        if self.prometheus is not None:
            stop_process(self.prometheus)
            self.log.close()
        if self.sidecar is not None:
            self.sidecar.stop()
        if self.upstream is not None:
            stop_process(self.upstream)
        if self.challenger is not None:
            stop_process(self.challenger)
        if self.genai_sidecar is not None:
            self.genai_sidecar.stop()
        if self.stub is not None:
            self.stub.stop()
        if self.pushgateway is not None:
            self.pushgateway.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("prometheus"))
    try:
        stack.start()
        # Prometheus applies new targets on a 5s tick: wait for the first scrape, then send traffic
        # while it scrapes every second, so every rate has increases to see.
        assert wait_until(lambda: stack.query("up")["data"]["result"], 20), stack.prometheus_log()
        stack.traffic(3.0)
        assert wait_until(lambda: stack.query('count(rate(inferwatch_requests_total[1m]) > 0) >= 3')["data"]["result"],
                          20), stack.prometheus_log()
        assert wait_until(lambda: len(stack.query("inferwatch_job_running")["data"]["result"]) == 3, 20), \
            stack.prometheus_log()
        # the drift engine has published its first evaluation
        for metric in sorted(DRIFT_METRICS):
            assert wait_until(lambda: stack.query(metric)["data"]["result"], 20), (metric, stack.prometheus_log())
        # and the input guard has checked events against the reference
        assert wait_until(lambda: stack.query("inferwatch_schema_changed")["data"]["result"], 20), \
            stack.prometheus_log()
        # the outlier panels rate the score histogram: two scrapes must see it scored events, on a loaded
        # machine the first traffic may all land before the first scrape, so keep sending
        scored = "rate(inferwatch_outlier_score_count[1m]) > 0"
        assert wait_until(lambda: stack.traffic(0.3) or stack.query(scored)["data"]["result"], 30), \
            stack.prometheus_log()
        # the fleet-wide PSI recording rule, once two scrapes of the bin counters saw an increase:
        # on a loaded machine the first traffic may all land before the bins' first scrape, so
        # keep sending some while waiting
        fleet_psi = "model_version_feature:inferwatch_feature_psi:1h"
        assert wait_until(lambda: stack.traffic(0.3) or stack.query(fleet_psi)["data"]["result"], 30), \
            stack.prometheus_log()
        # and the performance engine its first figures on the labels traffic() sent
        for metric in ("inferwatch_model_performance", "inferwatch_estimated_performance",
                       "inferwatch_segment_model_performance", "inferwatch_shadow_performance"):
            assert wait_until(lambda: stack.query(metric)["data"]["result"], 20), (metric, stack.prometheus_log())
        # the generative sidecar: rates of its counters, and the drift of its prompts and answers
        for metric in (f'rate(inferwatch_genai_output_matches_total{{model="{GENAI_MODEL}"}}[1m]) > 0',
                       f'rate(inferwatch_genai_server_time_to_first_token_seconds_count{{model="{GENAI_MODEL}"}}[1m]) > 0',
                       f'inferwatch_feature_drift_score{{model="{GENAI_MODEL}", feature="prompt_tokens"}}',
                       f'inferwatch_prediction_drift_score{{model="{GENAI_MODEL}", output="completion_tokens"}}'):
            assert wait_until(lambda: stack.traffic(0.3) or stack.query(metric)["data"]["result"], 30), \
                (metric, stack.prometheus_log())
        yield stack
    finally:
        stack.stop()


def substitute(expr: str, dashboard: dict, stack: Stack) -> str:
    generative = dashboard["uid"] == "inferwatch-genai"
    values = {"model": GENAI_MODEL if generative else "loan", "model_version": "v1",
              "instance": stack.genai_instance if generative else stack.instance,
              "__rate_interval": "1m", "__range": "5m", **constants(dashboard), **extra_variables(dashboard)}
    out = re.sub(r"\$\{?(\w+)\}?", lambda m: values[m.group(1)], expr)
    assert "$" not in out, out
    return out


def test_every_panel_query_runs_on_live_prometheus(stack):
    empty, failed = [], []
    for path in DASHBOARDS:
        dashboard = load(path)
        for panel in graph_panels(dashboard):
            for target in panel["targets"]:
                answer = stack.query(substitute(target["expr"], dashboard, stack))
                where = f"{path.name}: {panel['title']} ({target['refId']})"
                if answer.get("status") != "success":
                    failed.append(f"{where}: {answer.get('error')}")
                elif not answer["data"]["result"] and panel["title"] not in MAY_BE_EMPTY:
                    empty.append(where)
    assert not failed, failed
    assert not empty, f"no data for: {empty}"


def test_variable_queries_find_the_sidecar(stack):
    dashboard = load(REPO / "grafana" / "dashboards" / "inferwatch-overview.json")
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    expected = {"model": "loan", "model_version": "v1", "instance": stack.instance}
    for name, value in expected.items():
        match = re.fullmatch(r"label_values\((.*), (\w+)\)", variables[name]["definition"])
        selector = match.group(1).replace("$model_version", "v1").replace("$model", "loan")
        answer = requests.get(f"{stack.url}/api/v1/series", params={"match[]": selector}, timeout=10).json()
        assert answer["status"] == "success"
        assert value in {series.get(match.group(2)) for series in answer["data"]}, name


def test_shipped_rules_evaluate_without_errors_on_live_data(stack):
    def evaluated():
        groups = requests.get(f"{stack.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return rules if rules and all(r.get("lastEvaluation", "").startswith("20") for r in rules) else None
    rules = wait_until(evaluated, 15)
    assert rules, stack.prometheus_log()
    unhealthy = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not unhealthy, unhealthy
    for record in ("model:inferwatch_requests:rate5m", "model:inferwatch_request_errors:ratio_rate5m",
                   "model:inferwatch_latency_slo_errors:ratio_rate5m", "model:inferwatch_events:rate5m",
                   "model:inferwatch_request_duration_seconds:histogram_quantile5m"):
        selector = f'{record}{{model="loan", model_version="v1"}}'
        assert wait_until(lambda: stack.query(selector)["data"]["result"], 10), record

    def alerts() -> set[str]:
        answer = requests.get(f"{stack.url}/api/v1/alerts", timeout=10).json()
        return {a["labels"]["alertname"] for a in answer["data"]["alerts"]}
    # The watchdog is pending (for: 1m) in a stack this young; nothing may report the sidecar down.
    assert "InferwatchWatchdog" in (wait_until(alerts, 5) or set())
    # The failed job's alert is pending for the team the job named, with the job's own labels.
    answer = requests.get(f"{stack.url}/api/v1/alerts", timeout=10).json()
    failed = [a["labels"] for a in answer["data"]["alerts"] if a["labels"]["alertname"] == "InferwatchJobFailed"]
    assert failed == [{"alertname": "InferwatchJobFailed", "severity": "warning", "team": "data", "job": "etl-loan",
                       "instance": "runner-1", "model": "loan"}], failed
    assert not alerts() & {"InferwatchModelServerDown", "InferwatchSidecarDown"}


def test_every_exported_metric_is_documented(stack):
    """A sidecar with every part on (drift, guard, outputs, labels, segments, shadow) exports only
    metrics that docs/metrics.md describes."""
    from prometheus_client.parser import text_string_to_metric_families

    documented = set(re.findall(r"`(inferwatch_[a-z_]+)`", (REPO / "docs" / "metrics.md").read_text()))
    text = requests.get(f"{stack.admin}/metrics", timeout=10).text
    exported = {f.name for f in text_string_to_metric_families(text) if f.name.startswith("inferwatch_")}
    assert len(exported) > 60, sorted(exported)
    # counters' and histograms' `_created` samples read as families of their own in the text format
    names = {re.sub(r"_created$", "", n) for n in exported}
    missing = sorted(n for n in names if n not in documented and f"{n}_total" not in documented)
    assert not missing, f"exported but not in docs/metrics.md: {missing}"


def test_a_scrape_with_every_part_on_passes_promtool_check_metrics(stack):
    """promtool's lint (naming, units, HELP, counters' _total) on the richest scrape: drift, guard,
    outputs, labels and performance, segments and shadow all publishing."""
    text = requests.get(f"{stack.admin}/metrics", timeout=10).text
    assert "inferwatch_feature_drift_score{" in text and "inferwatch_shadow_agreement_ratio{" in text
    result = run(tool("promtool"), "check", "metrics", input=text, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


FAMILIES = Path(__file__).with_name("metric_families.txt")


def test_a_sidecar_with_every_part_on_exports_exactly_the_checked_in_families(stack):
    """The metric contract as a golden file (node_exporter's e2e-output idea): a renamed, lost or new
    family is a visible diff. After an intended change: INFERWATCH_UPDATE_FAMILIES=1 rewrites it."""
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"{stack.admin}/metrics", timeout=10).text
    exported = sorted({f"{f.name} {f.type}" for f in text_string_to_metric_families(text)
                       if f.name.startswith("inferwatch_") and not f.name.endswith("_created")})
    if os.environ.get("INFERWATCH_UPDATE_FAMILIES"):
        FAMILIES.write_text("".join(f"{line}\n" for line in exported))
    expected = FAMILIES.read_text().split("\n")
    assert exported == [line for line in expected if line], "\n".join(
        [f"- {n}" for n in sorted(set(expected) - set(exported)) if n] + [f"+ {n}" for n in sorted(set(exported) - set(expected))])
