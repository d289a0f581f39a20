"""Prometheus rules: promtool checks and unit tests, the render is current, alert conventions."""

from __future__ import annotations

import json
import re
import shutil
import sys

import pytest
import yaml

from inferwatch.cli import main as cli_main
from inferwatch.alerting.thresholds import DEFAULTS, ThresholdsError, load_thresholds

from stack_helpers import REPO, RULE_FILES, THRESHOLDS, load_yaml, run, tool

ALERT_FILES = [p for p in RULE_FILES if p.name != "inferwatch-recording.yml"]
# The jobs' alerts go to the team a job names itself (`inferwatch job --team ml|data`).
TEAMS = {"inferwatch-data.yml": "data", "inferwatch-ml.yml": "ml", "inferwatch-ops.yml": "ops",
         "inferwatch-jobs.yml": "{{ $labels.team }}"}
JOB_ALERTS = {"InferwatchJobFailed", "InferwatchJobNotSucceededRecently", "InferwatchJobDurationHigh"}
# Resource metrics and the sidecar's own processes carry `model`, not `model_version`.
BY_MODEL_ONLY = {"InferwatchInferenceCostOverBudget", "InferwatchProxyWorkerRestarts"}


def alert_rules(with_file: bool = False):
    for path in ALERT_FILES:
        for group in load_yaml(path)["groups"]:
            for rule in group["rules"]:
                yield (path.name, rule) if with_file else rule


def test_rule_files_are_the_rendered_set():
    assert [p.name for p in RULE_FILES] == ["inferwatch-data.yml", "inferwatch-jobs.yml", "inferwatch-ml.yml",
                                            "inferwatch-ops.yml", "inferwatch-recording.yml"]


LINT = ("--lint=all", "--lint-fatal")   # users read "FAILED" on a lint warning: none is shipped


def test_promtool_check_rules_lint_clean():
    result = run(tool("promtool"), "check", "rules", *LINT, *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout + result.stderr


def test_rules_of_one_alert_name_differ_in_their_labels():
    """Several rules of one name (a floor per metric, a burn rate per severity) carry a label that
    tells them apart, the one the alert's series already has."""
    seen: dict[tuple, str] = {}
    for rule in alert_rules():
        key = (rule["alert"], tuple(sorted(rule["labels"].items())))
        assert key not in seen, f"two {rule['alert']} rules with the labels {rule['labels']}"
        seen[key] = rule["expr"]
    floors = [r for r in alert_rules() if r["alert"] == "InferwatchModelPerformanceDegraded"]
    assert {r["labels"]["metric"] for r in floors} == set(load_thresholds(THRESHOLDS).alerts
                                                           .InferwatchModelPerformanceDegraded.floors)


def test_promtool_unit_tests_of_every_rule_file():
    tests = sorted((REPO / "prometheus" / "tests").glob("*.yml"))
    assert tests
    # Long ranges (a day of baseline at 1m steps) take a minute on a loaded two-CPU machine.
    result = run(tool("promtool"), "test", "rules", *map(str, tests), cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_silent_unit_test():
    cases = [case for path in sorted((REPO / "prometheus" / "tests").glob("*.yml"))
             for case in load_yaml(path)["tests"]]
    fires, silent = set(), set()
    for case in cases:
        for check in case.get("alert_rule_test", []):
            (fires if check["exp_alerts"] else silent).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert fires == names
    assert silent == names   # the watchdog's "silent" case is before its `for:`


def test_promtool_check_config():
    result = run(tool("promtool"), "check", "config", str(REPO / "prometheus" / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(RULE_FILES)} rule files found" in result.stdout


def test_committed_rules_match_a_fresh_render(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert cli_main(["rules", "check"]) == 0, capsys.readouterr().out


def test_rules_command_via_the_console_script():
    result = run(sys.executable, "-m", "inferwatch", "rules", "check", cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_check_fails_on_a_stale_render_and_render_fixes_it(tmp_path, capsys):
    thresholds = tmp_path / "thresholds.yaml"
    shutil.copy(THRESHOLDS, thresholds)
    shutil.copytree(REPO / "grafana" / "dashboards", tmp_path / "dashboards")
    args = ["--thresholds", str(thresholds), "--output-dir", str(tmp_path / "rules"),
            "--prometheusrule", str(tmp_path / "prometheusrule.yaml"), "--dashboards", str(tmp_path / "dashboards")]
    assert cli_main(["rules", "render", *args]) == 0
    assert cli_main(["rules", "check", *args]) == 0
    thresholds.write_text(thresholds.read_text().replace("threshold_seconds: 0.5", "threshold_seconds: 2"))
    capsys.readouterr()
    assert cli_main(["rules", "check", *args]) == 1
    out = capsys.readouterr()
    assert "+    expr: model:inferwatch_request_duration_seconds:histogram_quantile5m{quantile=\"0.99\"} > 2" in out.out
    assert "inferwatch rules render" in out.err
    assert cli_main(["rules", "render", *args]) == 0
    assert cli_main(["rules", "check", *args]) == 0
    assert "threshold: 2s for 15m" in (tmp_path / "rules" / "inferwatch-ops.yml").read_text()


def _dashboard_args(tmp_path):
    thresholds = tmp_path / "thresholds.yaml"
    shutil.copy(THRESHOLDS, thresholds)
    shutil.copytree(REPO / "grafana" / "dashboards", tmp_path / "dashboards")
    return thresholds, ["--thresholds", str(thresholds), "--output-dir", str(tmp_path / "rules"),
                        "--prometheusrule", "", "--dashboards", str(tmp_path / "dashboards")]


def _constants(path):
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    return {v["name"]: v["query"] for v in dashboard["templating"]["list"] if v["type"] == "constant"}


def test_changed_thresholds_render_the_dashboards_constants(tmp_path, capsys):
    """prometheus/thresholds.yaml is the one file to edit: objective and prices reach the dashboards."""
    thresholds, args = _dashboard_args(tmp_path)
    assert cli_main(["rules", "render", *args]) == 0
    text = thresholds.read_text()
    for old, new in (("objective: 0.95", "objective: 0.99"), ("cpu_hour_price: 0.05", "cpu_hour_price: 0.08"),
                     ("currency: USD", "currency: EUR")):
        assert old in text
        text = text.replace(old, new)
    thresholds.write_text(text)
    capsys.readouterr()
    assert cli_main(["rules", "check", *args]) == 1
    out = capsys.readouterr()
    assert "inferwatch-overview.json (rendered)" in out.out and '"query": "0.99"' in out.out
    assert cli_main(["rules", "render", *args]) == 0
    overview = tmp_path / "dashboards" / "inferwatch-overview.json"
    assert _constants(overview)["slo_objective"] == "0.99"
    assert _constants(overview)["cpu_hour_price"] == "0.08"
    slo_panel = next(p for p in json.loads(overview.read_text())["panels"] if p["title"] == "Within latency SLO")
    assert slo_panel["fieldConfig"]["defaults"]["thresholds"]["steps"][-1]["value"] == 0.99
    assert '"currencyEUR"' in overview.read_text() and '"currencyUSD"' not in overview.read_text()
    assert cli_main(["rules", "check", *args]) == 0


def test_rules_check_catches_a_stale_dashboard(tmp_path, capsys):
    """A dashboard edited by hand (or left behind) with an old constant fails `rules check`."""
    _, args = _dashboard_args(tmp_path)
    assert cli_main(["rules", "render", *args]) == 0
    assert cli_main(["rules", "check", *args]) == 0
    overview = tmp_path / "dashboards" / "inferwatch-overview.json"
    overview.write_text(overview.read_text().replace('"query": "0.05"', '"query": "0.04"'))
    capsys.readouterr()
    assert cli_main(["rules", "check", *args]) == 1
    out = capsys.readouterr()
    assert '-        "query": "0.04"' in out.out and '+        "query": "0.05"' in out.out
    assert "1 generated file(s) differ" in out.err


def test_metric_bounds_and_kubernetes_labels_are_the_users_own_keys(tmp_path):
    """floors, ceilings and kubernetes.labels map the user's names: any metric or label may be
    set, and a mapping replaces the default one as a whole (so a floor can be dropped)."""
    path = tmp_path / "thresholds.yaml"
    path.write_text("alerts:\n  InferwatchModelPerformanceDegraded:\n    floors: {f1: 0.6}\n"
                    "    ceilings: {mape: 0.2, log_loss: 0.5}\n"
                    "kubernetes:\n  labels: {release: kube-prometheus-stack}\n")
    t = load_thresholds(path)
    alert = t.alert("InferwatchModelPerformanceDegraded")
    assert alert["floors"] == {"f1": 0.6} and alert["ceilings"] == {"mape": 0.2, "log_loss": 0.5}
    assert t.raw["kubernetes"]["labels"] == {"release": "kube-prometheus-stack"}
    assert t.raw["kubernetes"]["name"] == "inferwatch"   # other keys still merge with their defaults


CEILING_TEST = """
rule_files: [inferwatch-ml.yml]
evaluation_interval: 1m
tests:
  - name: a regression model's error above its ceiling fires; below it, or on too few labels, stays silent
    interval: 1m
    input_series:
      - series: 'inferwatch_model_performance{job="inferwatch", instance="i:9180", model="price", model_version="2", metric="rmse"}'
        values: '8x10 20x50'
      - series: 'inferwatch_labelled_window_events{job="inferwatch", instance="i:9180", model="price", model_version="2"}'
        values: '500x60'
      - series: 'inferwatch_model_performance{job="inferwatch", instance="i:9180", model="price", model_version="3", metric="rmse"}'
        values: '30x60'
      - series: 'inferwatch_labelled_window_events{job="inferwatch", instance="i:9180", model="price", model_version="3"}'
        values: '20x60'
      - series: 'inferwatch_model_performance{job="inferwatch", instance="i:9180", model="price", model_version="2", metric="r2"}'
        values: '0.9x60'
    alert_rule_test:
      - eval_time: 30m
        alertname: InferwatchModelPerformanceDegraded
        exp_alerts: []
      - eval_time: 50m
        alertname: InferwatchModelPerformanceDegraded
        exp_alerts:
          - exp_labels: {severity: warning, team: ml, job: inferwatch, instance: "i:9180", model: price,
                         model_version: "2", metric: rmse}
            exp_annotations:
              summary: The performance of a model on labelled predictions is out of its agreed bounds.
              description: 'rmse of price version 2 (sidecar i:9180) is 20 over its labelled window, above its ceiling; threshold: rmse > 12.5 with at least 100 labelled predictions, for 30m.'
              runbook_url: https://github.com/inferwatch/inferwatch/blob/main/docs/runbooks.md#inferwatchmodelperformancedegraded
"""


def test_performance_ceilings_render_alerts_that_fire_and_stay_silent(tmp_path):
    """Lower-is-better metrics (RMSE, MAE, MAPE, log loss) get ceilings: not shipped on, so their
    rendered rule is proven here with promtool on a render of thresholds that set one."""
    thresholds = tmp_path / "thresholds.yaml"
    thresholds.write_text(THRESHOLDS.read_text().replace("    ceilings: {}", "    ceilings: {rmse: 12.5}"))
    rules = tmp_path / "rules"
    assert cli_main(["rules", "render", "--thresholds", str(thresholds), "--output-dir", str(rules),
                     "--prometheusrule", str(tmp_path / "prometheusrule.yaml"), "--dashboards", ""]) == 0
    assert 'metric="rmse"} > 12.5' in (rules / "inferwatch-ml.yml").read_text()
    (rules / "ceiling.test.yml").write_text(CEILING_TEST)
    result = run(tool("promtool"), "test", "rules", "ceiling.test.yml", cwd=rules, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shipped_thresholds_spell_out_every_default():
    assert load_thresholds(THRESHOLDS).raw == load_thresholds(None).raw == DEFAULTS


@pytest.mark.parametrize("text, message", [
    ("alerts: {InferwatchHighErrorRate: {treshold: 0.1}}", "alerts.InferwatchHighErrorRate.treshold: unknown key"),
    ("slo: {latency_seconds: 0.2}", "slo.latency_seconds: must be a bucket boundary"),
    ("slo: {objective: 95}", "slo.objective: must be a number between 0 and 1"),
    ("alerts: {InferwatchHighErrorRate: {for: 10 minutes}}",
     "alerts.InferwatchHighErrorRate.for: must be a Prometheus duration"),
    ("alerts: {InferwatchEventsDropped: {reasons: [lost]}}", "alerts.InferwatchEventsDropped.reasons"),
    ("selector: 'model=\"loan\"'", "selector: must be label matchers"),
    ("slo: {burn_rate_alerts: [{severity: critical, factor: 30, long_window: 1h, short_window: 5m, for: 2m}]}",
     "can never fire"),
    ("alerts: {InferwatchFeatureDrift: {method: pvalue}}", "alerts.InferwatchFeatureDrift.method: must be one of"),
    ("alerts: {InferwatchFeatureDrift: {min_score: -1}}", "alerts.InferwatchFeatureDrift.min_score: must be a number >= 0"),
    ("alerts: {InferwatchPredictionDrift: {threshold_score: 0}}",
     "alerts.InferwatchPredictionDrift.threshold_score: must be a positive number"),
    ("alerts: {InferwatchPayloadErrors: {threshold: 5}}", "alerts.InferwatchPayloadErrors.threshold: must be a number"),
    ("alerts: {InferwatchPredictionBandShift: {min_predictions: 0}}",
     "alerts.InferwatchPredictionBandShift.min_predictions: must be a whole number of predictions >= 1"),
    ("alerts: {InferwatchPredictionBandShift: {baseline: a day}}",
     "alerts.InferwatchPredictionBandShift.baseline: must be a Prometheus duration"),
    ("alerts: {InferwatchJobNotSucceededRecently: {threshold_seconds: 0}}",
     "alerts.InferwatchJobNotSucceededRecently.threshold_seconds: must be a positive number of seconds"),
    ("alerts: {InferwatchInferenceCostOverBudget: {daily_budget: -5}}",
     "alerts.InferwatchInferenceCostOverBudget.daily_budget: must be a positive amount"),
    ("alerts: {InferwatchInferenceCostOverBudget: {model_budgets: {llm: 0}}}",
     "alerts.InferwatchInferenceCostOverBudget.model_budgets.llm: must be a positive amount per day"),
    ("alerts: {InferwatchInferenceCostOverBudget: {model_budgets: [llm]}}",
     "alerts.InferwatchInferenceCostOverBudget.model_budgets: expected a mapping"),
    ("alerts: {InferwatchModelPerformanceDegraded: {ceilings: {rmse: low}}}",
     "alerts.InferwatchModelPerformanceDegraded.ceilings.rmse: must be a number"),
    ("cost: {cpu_hour_price: cheap}", "cost.cpu_hour_price: must be a price >= 0"),
    ("cost: {currency: 'US dollars'}", "cost.currency: must be a currency code"),
    ("cost: {gpu_price: 2}", "cost.gpu_price: unknown key"),
    ("alerts: {InferwatchModelPerformanceDegraded: {floors: {acuracy: 0.7}}}",
     "alerts.InferwatchModelPerformanceDegraded.floors.acuracy: unknown metric"),
    ("alerts: {InferwatchModelPerformanceDegraded: {ceilings: {rmse: low}}}",
     "alerts.InferwatchModelPerformanceDegraded.ceilings.rmse: must be a number"),
    ("kubernetes: {labels: {release: 3}}", "kubernetes.labels: must map label names to strings"),
])
def test_thresholds_problems_are_reported_with_their_key(tmp_path, text, message):
    path = tmp_path / "thresholds.yaml"
    path.write_text(text)
    with pytest.raises(ThresholdsError) as info:
        load_thresholds(path)
    assert any(message in problem and str(path) in problem for problem in info.value.problems), info.value.problems


def test_alert_conventions():
    base = load_thresholds(THRESHOLDS).raw["runbook_base_url"]
    names = set()
    for filename, rule in alert_rules(with_file=True):
        name = rule["alert"]
        names.add(name)
        assert re.fullmatch(r"Inferwatch(?:[A-Z][a-z0-9]*|SLO|P99)+", name), name
        assert set(rule["labels"]) >= {"severity", "team"}, name
        assert rule["labels"]["team"] == TEAMS[filename], name
        assert rule["labels"]["severity"] in ("critical", "warning", "info", "none")
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, name
        assert "{{" not in annotations["summary"] and annotations["summary"].endswith("."), name
        assert annotations["runbook_url"] == f"{base}/docs/runbooks.md#{name.lower()}"
        description = annotations["description"]
        assert "$value" in description and "threshold" in description, name
        if name in JOB_ALERTS:
            assert "$labels.job }}" in description and "$labels.instance }}" in description, name
        elif name in BY_MODEL_ONLY:
            assert "$labels.model }}" in description, name
        elif name != "InferwatchWatchdog":
            assert "$labels.model }}" in description and "$labels.model_version }}" in description, name
        if "inferwatch_feature_" in rule["expr"]:
            assert "$labels.feature }}" in description, name
        if "inferwatch_prediction_" in rule["expr"]:
            assert "$labels.output }}" in description, name
    assert names == {"InferwatchModelServerDown", "InferwatchSidecarDown", "InferwatchHighErrorRate",
                     "InferwatchLatencySLOBurnRate", "InferwatchHighLatencyP99", "InferwatchEventsDropped",
                     "InferwatchProxyWorkerRestarts", "InferwatchWatchdog",
                     "InferwatchFeatureDrift", "InferwatchDatasetDrift", "InferwatchMultivariateDrift",
                     "InferwatchPayloadErrors",
                     "InferwatchDriftEvaluationStale",
                     "InferwatchDataQualityIssues", "InferwatchSchemaChange", "InferwatchOutlierSpike",
                     "InferwatchPredictionDrift", "InferwatchModelPerformanceDegraded", "InferwatchLabelsNotArriving",
                     "InferwatchShadowDisagreement", "InferwatchPredictionBandShift",
                     "InferwatchUnreasonablePredictions", "InferwatchInferenceCostOverBudget",
                     "InferwatchTimeToFirstTokenSLOBurnRate", "InferwatchGenerativeErrorRate",
                     "InferwatchGenerativeTruncationSpike", "InferwatchGenerativeOutputMatchSpike"} | JOB_ALERTS


def test_drift_alerts_use_the_drift_engine_metrics():
    """The names of the drift engine's metrics contract (issue 3), spelled exactly."""
    exprs = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    assert "inferwatch_feature_drift_score{" in exprs["InferwatchFeatureDrift"]
    assert "inferwatch_feature_drifted{" in exprs["InferwatchFeatureDrift"]
    assert "inferwatch_dataset_drifted{" in exprs["InferwatchDatasetDrift"]
    assert "inferwatch_drifted_features_ratio{" in exprs["InferwatchDatasetDrift"]
    assert "inferwatch_multivariate_drifted{" in exprs["InferwatchMultivariateDrift"]
    assert "inferwatch_correlation_drift_score{" in exprs["InferwatchMultivariateDrift"]
    assert "inferwatch_drift_last_evaluation_timestamp_seconds{" in exprs["InferwatchDriftEvaluationStale"]
    assert "inferwatch_prediction_drift_score{" in exprs["InferwatchPredictionDrift"]
    assert "inferwatch_payload_errors" in exprs["InferwatchPayloadErrors"]


def test_output_alerts_read_the_output_metrics_through_their_records():
    exprs = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    records = {rule["record"]: rule["expr"] for group in load_yaml(REPO / "prometheus" / "rules" /
                                                                   "inferwatch-recording.yml")["groups"]
               for rule in group["rules"]}
    band = exprs["InferwatchPredictionBandShift"]
    assert "inferwatch_prediction_band_expected_ratio{" in band
    for record in ("model_output_band:inferwatch_prediction_band:ratio1h",
                   "model_output_band:inferwatch_prediction_band:ratio1d_offset1h",
                   "model_output:inferwatch_prediction_band:increase1h"):
        assert record in band and "inferwatch_prediction_band_total{" in records[record]
    unreasonable = exprs["InferwatchUnreasonablePredictions"]
    assert "inferwatch_unreasonable_predictions_total{" in \
        records["model_output_rule:inferwatch_unreasonable_predictions:rate5m"]
    assert "model_output_rule:inferwatch_unreasonable_predictions:rate5m" in unreasonable


def test_job_alerts_route_by_the_jobs_team_and_keep_its_labels():
    exprs = {rule["alert"]: rule for rule in alert_rules()}
    for name in JOB_ALERTS:
        rule = exprs[name]
        assert rule["labels"]["team"] == "{{ $labels.team }}"
        assert "inferwatch_job_" in rule["expr"]
        # `> on (job, instance)` alone would reduce the labels to job and instance and lose `team`
        assert "> on (job, instance)\n" not in rule["expr"], name
    cost = load_yaml(REPO / "prometheus" / "rules" / "inferwatch-recording.yml")
    records = {r["record"] for g in cost["groups"] for r in g["rules"]}
    assert {"model_resource:inferwatch_inference_cost:rate5m", "model:inferwatch_inference_cost:rate5m",
            "model:inferwatch_inference_cost:rate1h", "model:inferwatch_inference_cost_per_prediction:ratio_rate5m"} <= records
    assert "model:inferwatch_inference_cost:rate1h" in exprs["InferwatchInferenceCostOverBudget"]["expr"]


def test_burn_rate_alerts_are_multi_window_with_critical_and_warning():
    burns = [r for r in alert_rules() if r["alert"] == "InferwatchLatencySLOBurnRate"]
    assert {r["labels"]["severity"] for r in burns} == {"critical", "warning"}
    for rule in burns:
        windows = re.findall(r"ratio_rate(\w+) >", rule["expr"])
        assert len(windows) == 2 and "\nand\n" in rule["expr"], rule["expr"]


def test_recording_rules_are_named_level_metric_operations():
    for group in load_yaml(REPO / "prometheus" / "rules" / "inferwatch-recording.yml")["groups"]:
        for rule in group["rules"]:
            assert re.fullmatch(r"[a-z_]+:inferwatch_[a-z_]+:[a-z0-9_]+", rule["record"]), rule["record"]


def test_runbooks_have_a_section_per_alert():
    text = (REPO / "docs" / "runbooks.md").read_text(encoding="utf-8")
    headings = set(re.findall(r"^## (\S+)$", text, flags=re.M))
    for rule in alert_rules():
        assert rule["alert"] in headings, rule["alert"]
        anchor = rule["annotations"]["runbook_url"].rsplit("#", 1)[1]
        assert anchor == rule["alert"].lower()   # GitHub's anchor of "## <name>"
        section = text.split(f"## {rule['alert']}\n", 1)[1].split("\n## ", 1)[0]
        for part in ("**Meaning.**", "**First checks.**", "**Likely causes", "**Actions.**"):
            assert part in section, (rule["alert"], part)


def test_kubernetes_prometheusrule_has_the_same_groups_as_prometheus_rules():
    rule = load_yaml(REPO / "examples" / "kubernetes" / "prometheusrule.yaml")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    groups = [g for path in sorted(RULE_FILES, key=lambda p: p.name != "inferwatch-recording.yml")
              for g in load_yaml(path)["groups"]]
    assert rule["spec"]["groups"] == groups
    assert "inferwatch rules render" in (REPO / "examples" / "kubernetes" / "prometheusrule.yaml").read_text()


def test_per_model_budgets_and_user_keyed_thresholds_render_and_evaluate(tmp_path, capsys):
    """model_budgets, floors and ceilings are keyed by the user's names (models, metrics): they replace
    the defaults' mapping, and a model's own budget wins over daily_budget (promtool on the render)."""
    thresholds = tmp_path / "thresholds.yaml"
    thresholds.write_text(
        "alerts:\n"
        "  InferwatchInferenceCostOverBudget: {daily_budget: 100, model_budgets: {llm: 500, fraud: 1}}\n"
        "  InferwatchModelPerformanceDegraded: {floors: {f1: 0.6}, ceilings: {rmse: 12.5}}\n")
    rules = tmp_path / "rules"
    assert cli_main(["rules", "render", "--thresholds", str(thresholds), "--output-dir", str(rules),
                     "--prometheusrule", str(tmp_path / "prometheusrule.yaml"), "--dashboards", ""]) == 0, \
        capsys.readouterr()
    ml = (rules / "inferwatch-ml.yml").read_text()
    assert 'metric="f1"' in ml and 'metric="rmse"' in ml and 'metric="accuracy"' not in ml
    result = run(tool("promtool"), "check", "rules", *LINT, *map(str, sorted(rules.glob("*.yml"))))
    assert result.returncode == 0, result.stdout + result.stderr

    def cpu(model, cores):
        return {"series": f'inferwatch_model_process_cpu_seconds_total{{job="inferwatch", instance="a", '
                          f'model="{model}"}}', "values": f"0+{60 * cores}x120"}

    def gpu(model, index):
        return {"series": f'inferwatch_gpu_utilization_ratio{{job="inferwatch", instance="a", model="{model}", '
                          f'gpu="{index}"}}', "values": "1x120"}

    # llm: 16 cores and 2 GPUs = 139.2 a day: over the default 100, within its own 500.
    # fraud: 1 core = 1.2 a day: within the default, over its own 1. loan: 1 core, the default: quiet.
    description = ("At the rate of the last hour, serving fraud costs an estimated 1.20 USD per day (CPU and GPU "
                   "use times the configured prices); threshold: the model's daily budget (llm 500, fraud 1; "
                   "else 100 USD) for 30m. An estimate from measured use, not a bill.")
    case = {"rule_files": [str(rules / "inferwatch-recording.yml"), str(rules / "inferwatch-ops.yml")],
            "evaluation_interval": "1m",
            "tests": [{"interval": "1m",
                       "input_series": [cpu("llm", 16), gpu("llm", 0), gpu("llm", 1), cpu("fraud", 1), cpu("loan", 1)],
                       "alert_rule_test": [
                           {"eval_time": "20m", "alertname": "InferwatchInferenceCostOverBudget", "exp_alerts": []},
                           {"eval_time": "90m", "alertname": "InferwatchInferenceCostOverBudget", "exp_alerts": [
                               {"exp_labels": {"severity": "warning", "team": "ops", "model": "fraud"},
                                "exp_annotations": {
                                    "summary": "The estimated inference cost of a model is over its daily budget.",
                                    "description": description,
                                    "runbook_url": load_thresholds(None).runbook_url(
                                        "InferwatchInferenceCostOverBudget")}}]}]}]}
    (tmp_path / "budgets.test.yml").write_text(yaml.safe_dump(case))
    result = run(tool("promtool"), "test", "rules", str(tmp_path / "budgets.test.yml"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
