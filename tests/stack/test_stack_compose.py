"""docker-compose.yml, the Dockerfile and the Kubernetes example agree with each other and with the
Prometheus, Alertmanager and Grafana files they mount (no Docker needed)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest
import yaml
from stack_helpers import REPO, load_yaml

from inferwatch.config import load_actions_config, load_config

COMPOSE = load_yaml(REPO / "docker-compose.yml")
SERVICES = COMPOSE["services"]
LONG_RUNNING = ["model", "challenger", "inferwatch", "prometheus", "alertmanager", "grafana", "webhook",
                "pushgateway", "actions"]


def mounts(service: str) -> dict[str, str]:
    """Container path -> host path (relative to the repository) of a service's bind mounts."""
    out = {}
    for volume in SERVICES[service].get("volumes", []):
        source, target = volume.split(":")[:2]
        out[target] = source
    return out


SECRETS_SCRIPT = REPO / "alertmanager" / "secrets-from-env.sh"


def container_to_host(service: str, container_path: str) -> Path | None:
    path = PurePosixPath(container_path)
    for target, source in mounts(service).items():
        if source.startswith("./") and (path == PurePosixPath(target) or PurePosixPath(target) in path.parents):
            return REPO / source / path.relative_to(target)
    return None


def host_port(address: str) -> tuple[str, int]:
    parts = urlsplit(address if "://" in address else f"//{address}")
    return parts.hostname, parts.port


def sidecar_config(tmp_path: Path, text: str, name: str = "inferwatch.yaml"):
    path = tmp_path / name
    path.write_text(text.replace("$$", "$"))   # Compose's escape: the sidecar sees one $
    return load_config(path)


def test_services_of_the_stack():
    assert set(SERVICES) == {"model", "challenger", "inferwatch", "traffic", "prometheus", "alertmanager", "grafana",
                             "webhook", "pushgateway", "actions"}


@pytest.mark.parametrize("service", LONG_RUNNING)
def test_long_running_services_have_healthchecks(service):
    test = SERVICES[service]["healthcheck"]["test"]
    assert test[0] == "CMD" and len(test) > 2


def test_dependencies_wait_for_health():
    for name, service in SERVICES.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in SERVICES
            assert condition == {"condition": "service_healthy"}, name
            assert "healthcheck" in SERVICES[dependency]


def test_every_bind_mount_exists_and_named_volumes_are_declared():
    declared = set(COMPOSE["volumes"])
    used = set()
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in declared, f"{name}: named volume {source} is not declared"
                used.add(source)
    assert used == declared == {"prometheus-data", "alertmanager-data", "grafana-data", "pushgateway-data"}


def test_demo_commands_and_image():
    image = SERVICES["model"]["image"]
    assert SERVICES["model"]["build"] == "."
    assert all(SERVICES[s]["image"] == image for s in ("inferwatch", "traffic", "challenger"))
    assert SERVICES["challenger"]["command"][-2:] == ["--variant", "challenger"]
    assert SERVICES["model"]["command"] == ["python", "-m", "inferwatch.demo.model_server", "--host", "0.0.0.0",
                                            "--port", "8081"]
    assert SERVICES["inferwatch"]["command"][:3] == ["inferwatch", "run", "--config"]
    assert SERVICES["inferwatch"]["pid"] == "service:model"


def test_sidecar_config_is_valid_and_agrees_with_ports_and_prometheus(tmp_path, monkeypatch):
    monkeypatch.setenv("INFERWATCH_WRITE_TOKEN", "t")
    (config_ref,) = SERVICES["inferwatch"]["configs"]
    assert SERVICES["inferwatch"]["command"][-1] == config_ref["target"]
    cfg = sidecar_config(tmp_path, COMPOSE["configs"][config_ref["source"]]["content"])
    assert (cfg.model.name, cfg.model.version) == ("loan", "v1")
    assert host_port(cfg.upstream.url) == ("model", int(SERVICES["model"]["command"][-1]))
    assert f"{cfg.proxy.port}:{cfg.proxy.port}" in SERVICES["inferwatch"]["ports"]
    assert f"{cfg.admin.port}:{cfg.admin.port}" in SERVICES["inferwatch"]["ports"]
    assert f"{cfg.proxy.grpc_port}:{cfg.proxy.grpc_port}" in SERVICES["inferwatch"]["ports"]
    assert cfg.process.match and re.search(cfg.process.match, " ".join(SERVICES["model"]["command"]))
    traffic = SERVICES["traffic"]["command"]
    assert traffic[:3] == ["python", "-m", "inferwatch.demo.traffic"]
    assert traffic[traffic.index("--url") + 1] == f"http://inferwatch:{cfg.proxy.port}/v1/models/{cfg.model.name}:predict"
    assert traffic[traffic.index("--labels-url") + 1] == f"http://inferwatch:{cfg.admin.port}/v1/labels"
    assert cfg.labels.enabled
    (challenger,) = cfg.shadow.challengers
    challenger_command = SERVICES["challenger"]["command"]
    assert host_port(challenger.url) == ("challenger", int(challenger_command[challenger_command.index("--port") + 1]))
    from inferwatch.demo import traffic as traffic_module  # the module the command runs exists

    assert callable(traffic_module.main)

    prometheus = load_yaml(REPO / "prometheus" / "prometheus.yml")
    (job,) = [j for j in prometheus["scrape_configs"] if j["job_name"] == "inferwatch"]
    assert job["static_configs"][0]["targets"] == [f"inferwatch:{cfg.admin.port}"]
    selector = load_yaml(REPO / "prometheus" / "thresholds.yaml")["selector"]
    assert re.fullmatch(re.search(r'job=~"(.*)"', selector).group(1), job["job_name"])


def test_the_stack_and_inferwatch_demo_monitor_the_model_alike(tmp_path, monkeypatch):
    """Outputs (the seed's loan bands), segments and performance are configured the same in the
    compose stack and in `inferwatch demo`, so the dashboards and alerts see the same series."""
    from inferwatch.demo.runner import sidecar_config as demo_sidecar_config

    monkeypatch.setenv("INFERWATCH_WRITE_TOKEN", "t")
    (config_ref,) = SERVICES["inferwatch"]["configs"]
    stack = sidecar_config(tmp_path, COMPOSE["configs"][config_ref["source"]]["content"])
    demo = load_config(demo_sidecar_config(tmp_path, upstream_port=1, proxy_port=2, admin_port=3, model_pid=4,
                                           challenger_port=5))
    assert stack.predictions == demo.predictions and stack.segments == demo.segments
    # the drift alerts and panels need a reference: the same warm-up as the demo's
    assert stack.reference == demo.reference and stack.reference.enabled
    assert (stack.performance.prediction_output, stack.performance.score_output, stack.performance.threshold) == \
        (demo.performance.prediction_output, demo.performance.score_output, demo.performance.threshold)
    bands = stack.predictions.outputs["approval_probability"].bands
    assert [(b.name, b.min, b.max) for b in bands] == [
        ("refer_to_human", float("-inf"), 0.6), ("high_rate", 0.6, 0.7), ("mid_rate", 0.71, 0.9),
        ("low_rate", 0.9, float("inf"))]
    assert stack.segments.features == ["region"] and [c.name for c in demo.shadow.challengers] == ["loan-v2"]


def test_prometheus_loads_the_rules_and_reaches_alertmanager():
    config_path = "/etc/prometheus/prometheus.yml"
    assert container_to_host("prometheus", config_path) == REPO / "prometheus" / "prometheus.yml"
    assert f"--config.file={config_path}" in SERVICES["prometheus"]["command"]
    prometheus = load_yaml(REPO / "prometheus" / "prometheus.yml")
    for pattern in prometheus["rule_files"]:
        host = container_to_host("prometheus", str(PurePosixPath(config_path).parent / pattern))
        assert host is not None and sorted(host.parent.glob(host.name)) == sorted(
            (REPO / "prometheus" / "rules").glob("*.yml"))
    (target,) = prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    name, port = host_port(target)
    assert name in SERVICES and f"{port}:{port}" in SERVICES[name]["ports"]


def test_alertmanager_files_secrets_and_webhook_agree():
    config_path = "/etc/alertmanager/alertmanager.yml"
    assert f"--config.file={config_path}" in SERVICES["alertmanager"]["command"]
    assert container_to_host("alertmanager", config_path) == REPO / "alertmanager" / "alertmanager.yml"
    config = load_yaml(REPO / "alertmanager" / "alertmanager.yml")
    for pattern in config["templates"]:
        host = container_to_host("alertmanager", str(PurePosixPath(config_path).parent / pattern))
        assert host is not None and list(host.parent.glob(host.name))
    text = (REPO / "alertmanager" / "alertmanager.yml").read_text()
    # the secrets directory is a tmpfs the entrypoint fills from alertmanager/secrets/ and the environment
    service = SERVICES["alertmanager"]
    assert service["tmpfs"] == ["/etc/alertmanager/secrets"]
    assert container_to_host("alertmanager", "/etc/alertmanager/secrets-files") == REPO / "alertmanager" / "secrets"
    entrypoint = service["entrypoint"]
    assert entrypoint[0] == "/bin/sh" and container_to_host("alertmanager", entrypoint[1]) == SECRETS_SCRIPT
    secrets = set(re.findall(r"/etc/alertmanager/secrets/([\w.-]+)", text))
    script = SECRETS_SCRIPT.read_text()
    # every receiver secret the config reads has an environment variable; the actions token is a
    # file only, as the actions service reads the same file
    for name in secrets - {"actions-token"}:
        variable = re.search(rf'^put {re.escape(name)} "\$\{{(\w+):-\}}"$', script, re.M)
        assert variable, name
        assert service["environment"][variable.group(1)] == f"${{{variable.group(1)}:-}}", name
    assert "actions-token" in secrets and "put actions-token" not in script
    webhook_args = SERVICES["webhook"]["command"]
    port = int(webhook_args[webhook_args.index("--port") + 1])
    assert container_to_host("webhook", webhook_args[2]) == REPO / "alertmanager" / "webhook-receiver.py"
    urls = {r["name"]: c["url"] for r in config["receivers"] for c in r.get("webhook_configs", [])}
    assert urls.pop("actions") == "http://actions:9190/v1/alerts"   # see test_actions_receiver_agrees
    assert urls and all(host_port(url) == ("webhook", port) for url in urls.values())


def test_the_alertmanager_entrypoint_writes_secrets_from_files_then_the_environment(tmp_path):
    files, secrets = tmp_path / "files", tmp_path / "secrets"
    files.mkdir()
    secrets.mkdir()
    (files / "README.md").write_text("docs")
    (files / "smtp-password").write_text("from-a-file")
    (files / "slack-api-url").write_text("https://hooks.slack.com/old")
    env = {"PATH": os.environ["PATH"], "SECRETS_FILES": str(files), "SECRETS_DIR": str(secrets),
           "ALERTMANAGER": "/bin/echo", "SLACK_API_URL": "https://hooks.slack.com/services/T/B/x",
           "PAGERDUTY_OPS_ROUTING_KEY": "ops key with spaces", "PAGERDUTY_ML_ROUTING_KEY": ""}
    result = subprocess.run(["/bin/sh", str(SECRETS_SCRIPT), "--config.file=/etc/a.yml", "--storage.path=/x"],
                            env=env, capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "--config.file=/etc/a.yml --storage.path=/x\n"   # Alertmanager gets the arguments
    written = {p.name: p.read_text() for p in secrets.iterdir()}
    assert written == {"smtp-password": "from-a-file",                        # a file, kept
                       "slack-api-url": "https://hooks.slack.com/services/T/B/x",   # the environment wins
                       "pagerduty-ops-routing-key": "ops key with spaces"}    # as given, no newline
    assert all(p.stat().st_mode & 0o077 == 0 for p in secrets.iterdir())      # readable by Alertmanager only


def test_actions_receiver_agrees_with_alertmanager_and_the_pushgateway(tmp_path):
    """The compose `actions` service: a valid actions file, the port and token Alertmanager uses,
    and a command that runs `inferwatch job` against the stack's Pushgateway."""
    service = SERVICES["actions"]
    (config_ref,) = service["configs"]
    assert service["command"] == ["inferwatch", "actions", "--config", config_ref["target"]]
    text = COMPOSE["configs"][config_ref["source"]]["content"]
    token_path = yaml.safe_load(text)["auth"]["bearer_token_file"]
    token_host = container_to_host("actions", token_path)
    assert token_host == REPO / "alertmanager" / "secrets" / "actions-token"
    (tmp_path / "token").write_text("t")
    path = tmp_path / "actions.yaml"
    path.write_text(text.replace(token_path, str(tmp_path / "token")))
    cfg = load_actions_config(path)
    am = load_yaml(REPO / "alertmanager" / "alertmanager.yml")
    (receiver,) = [r for r in am["receivers"] if r["name"] == "actions"]
    (webhook,) = receiver["webhook_configs"]
    assert host_port(webhook["url"]) == ("actions", cfg.port) and f"{cfg.port}" in service["expose"]
    credentials = webhook["http_config"]["authorization"]["credentials_file"]
    # one token file, two readers: Alertmanager's entrypoint copies it into its secrets tmpfs
    copied_from = credentials.replace("/etc/alertmanager/secrets/", "/etc/alertmanager/secrets-files/")
    assert container_to_host("alertmanager", copied_from) == token_host
    (action,) = cfg.actions
    argv = action.command
    assert argv[:2] == ["inferwatch", "job"] and host_port(argv[argv.index("--pushgateway") + 1]) == ("pushgateway", 9091)
    assert "9091:9091" in SERVICES["pushgateway"]["ports"]
    prometheus = load_yaml(REPO / "prometheus" / "prometheus.yml")
    jobs = {j["job_name"]: j for j in prometheus["scrape_configs"]}
    assert jobs["pushgateway"]["honor_labels"] is True
    assert jobs["pushgateway"]["static_configs"][0]["targets"] == ["pushgateway:9091"]
    assert jobs["actions"]["static_configs"][0]["targets"] == [f"actions:{cfg.port}"]
    selector = load_yaml(REPO / "prometheus" / "thresholds.yaml")["selector"]
    assert not re.fullmatch(re.search(r'job=~"(.*)"', selector).group(1), "actions")   # not taken for a sidecar


def test_grafana_provisioning_agrees_with_mounts_and_prometheus():
    grafana = SERVICES["grafana"]
    env = grafana["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD")
    assert container_to_host("grafana", "/etc/grafana/provisioning") == REPO / "grafana" / "provisioning"
    (source,) = [d for d in load_yaml(REPO / "grafana/provisioning/datasources/inferwatch.yml")["datasources"]
                 if d["type"] == "prometheus"]
    assert source["isDefault"] and host_port(source["url"]) == ("prometheus", 9090)
    assert "9090:9090" in SERVICES["prometheus"]["ports"]
    assert "--web.listen-address" not in " ".join(SERVICES["prometheus"]["command"])   # default :9090
    (manager,) = [d for d in load_yaml(REPO / "grafana/provisioning/datasources/inferwatch.yml")["datasources"]
                  if d["type"] == "alertmanager"]
    assert host_port(manager["url"]) == ("alertmanager", 9093)
    (provider,) = load_yaml(REPO / "grafana/provisioning/dashboards/inferwatch.yml")["providers"]
    dashboards = container_to_host("grafana", provider["options"]["path"])
    assert dashboards == REPO / "grafana" / "dashboards" and list(dashboards.glob("*.json"))
    assert container_to_host("grafana", env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]).is_file()


def test_dockerfile_is_slim_and_non_root():
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.\d+-slim$", text, flags=re.M)
    assert len(re.findall(r"^FROM \$\{BASE_IMAGE\}", text, flags=re.M)) == 2
    assert re.search(r"^USER 10001:10001$", text, flags=re.M)
    cmd = re.search(r"^CMD (.*)$", text, flags=re.M).group(1)
    assert yaml.safe_load(cmd) == ["inferwatch", "run", "--config", "/etc/inferwatch/inferwatch.yaml"]
    ignored = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert ignored[0] == "*" and {"!pyproject.toml", "!README.md", "!src/"} <= set(ignored)


def test_kubernetes_example(tmp_path, monkeypatch):
    k8s = REPO / "examples" / "kubernetes"
    kustomization = load_yaml(k8s / "kustomization.yaml")
    for resource in kustomization["resources"]:
        assert (k8s / resource).is_file(), resource
    deployment = load_yaml(k8s / "deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["shareProcessNamespace"] is True and pod["securityContext"]["runAsNonRoot"] is True
    containers = {c["name"]: c for c in pod["containers"]}
    sidecar = containers["inferwatch"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()

    configmap = load_yaml(k8s / "configmap.yaml")
    (volume,) = [v for v in pod["volumes"] if v["name"] == "config"]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    (mount,) = [m for m in sidecar["volumeMounts"] if m["name"] == "config"]
    assert sidecar["args"][-1] == f"{mount['mountPath']}/inferwatch.yaml"
    monkeypatch.delenv("MODEL_VERSION", raising=False)
    text = configmap["data"]["inferwatch.yaml"]
    # the write endpoints take the token of a mounted Secret: the admin port is reachable in the cluster
    token_path = PurePosixPath(yaml.safe_load(text)["admin"]["write_auth"]["bearer_token_file"])
    mounts_by_path = {m["mountPath"]: m["name"] for m in sidecar["volumeMounts"]}
    (token_volume,) = [v for v in pod["volumes"] if v["name"] == mounts_by_path[str(token_path.parent)]]
    assert token_volume["secret"]["secretName"]
    (tmp_path / "token").write_text("t")
    cfg = sidecar_config(tmp_path, text.replace(str(token_path), str(tmp_path / "token")))
    assert cfg.admin.write_auth.enabled and cfg.write_exposure_warning() == ""
    assert cfg.model.name == "loan" and cfg.model.version == "v1"
    assert cfg.reference.enabled   # else no drift is evaluated and the drift alerts can never fire
    assert re.search(cfg.process.match, shlex.join(containers["model"]["command"]))
    model_port = int(containers["model"]["command"][-1])
    assert host_port(cfg.upstream.url) == ("127.0.0.1", model_port)
    ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    assert ports == {"http": cfg.proxy.port, "metrics": cfg.admin.port, "grpc": cfg.proxy.grpc_port}

    service = load_yaml(k8s / "service.yaml")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(ports)
    selector = load_yaml(REPO / "prometheus" / "thresholds.yaml")["selector"]
    job_pattern = re.search(r'job=~"(.*)"', selector).group(1)
    pod_monitor = load_yaml(k8s / "podmonitor.yaml")
    assert pod_monitor["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert re.fullmatch(job_pattern, f"ml/{pod_monitor['metadata']['name']}")   # job = <namespace>/<name>
    service_monitor = load_yaml(k8s / "servicemonitor.yaml")
    (endpoint,) = service_monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    assert re.fullmatch(job_pattern, endpoint["relabelings"][0]["replacement"])


def test_kubernetes_pipelines_example(tmp_path, monkeypatch):
    """examples/kubernetes/pipelines: a Pushgateway scraped with honorLabels, a CronJob whose
    `inferwatch job` arguments parse and point at that Pushgateway with a stable instance, and an
    `inferwatch actions` Deployment whose configuration loads and agrees with its mounts and ports."""
    from inferwatch.cli import build_parser

    k8s = REPO / "examples" / "kubernetes" / "pipelines"
    docs = {}
    for resource in load_yaml(k8s / "kustomization.yaml")["resources"]:
        for doc in yaml.safe_load_all((k8s / resource).read_text(encoding="utf-8")):
            docs[(doc["kind"], doc["metadata"]["name"])] = doc

    def served(name: str) -> tuple[dict, dict, dict]:
        """A Deployment's pod spec, its Service and ServiceMonitor endpoint, checked to agree."""
        deployment, service = docs[("Deployment", name)], docs[("Service", name)]
        monitor = docs[("ServiceMonitor", name)]
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        (port,) = service["spec"]["ports"]
        assert port["targetPort"] in {p["name"] for p in container["ports"]}
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] == port["name"]
        return deployment["spec"]["template"]["spec"], port, endpoint

    # the Pushgateway: honorLabels, persistence on its claim
    pod, port, endpoint = served("pushgateway")
    assert endpoint["honorLabels"] is True
    (container,) = pod["containers"]
    persistence = next(a.split("=", 1)[1] for a in container["args"] if a.startswith("--persistence.file="))
    (mount,) = container["volumeMounts"]
    assert PurePosixPath(mount["mountPath"]) in PurePosixPath(persistence).parents
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in docs

    # the CronJob: `inferwatch job` against that Service, one group per job (a stable instance)
    cron = docs[("CronJob", "train-loan")]["spec"]
    assert cron["concurrencyPolicy"] == "Forbid"
    (job_container,) = cron["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    argv = job_container["args"]
    assert argv[:2] == ["inferwatch", "job"]
    args = build_parser().parse_args(argv[1:])
    command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    assert command and args.name == "train-loan" and args.team == "ml" and args.model == "loan"
    assert args.instance, "a pod's host name changes every run: --instance must be set"
    assert host_port(args.pushgateway) == ("pushgateway", port["port"])
    assert args.max_age == 26 * 3600 and args.max_duration == 2 * 3600

    # the actions receiver: its file loads; config, token and port agree with the Deployment
    pod, port, _ = served("alert-actions")
    (container,) = pod["containers"]
    config_path = PurePosixPath(container["args"][container["args"].index("--config") + 1])
    mounts_by_path = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_map = docs[("ConfigMap", volumes[mounts_by_path[str(config_path.parent)]]["configMap"]["name"])]
    text = config_map["data"][config_path.name]
    token_path = PurePosixPath(yaml.safe_load(text)["auth"]["bearer_token_file"])
    assert "secret" in volumes[mounts_by_path[str(token_path.parent)]]
    (tmp_path / "token").write_text("t")
    (tmp_path / "actions.yaml").write_text(text.replace(str(token_path), str(tmp_path / "token")))
    for env in container["env"]:
        monkeypatch.setenv(env["name"], env.get("value", "from-a-secret"))
    cfg = load_actions_config(tmp_path / "actions.yaml")
    assert cfg.listen_address == "0.0.0.0"
    assert {p["containerPort"] for p in container["ports"]} == {cfg.port} == {port["port"]}
    assert cfg.actions[0].http.url == "http://airflow-webserver.airflow:8080/api/v1/dags/retrain_model/dagRuns"
    selector = load_yaml(REPO / "prometheus" / "thresholds.yaml")["selector"]
    sidecars = re.search(r'job=~"(.*)"', selector).group(1)
    assert not re.fullmatch(sidecars, "alert-actions")   # its ServiceMonitor's job is not taken for a sidecar


def test_the_demo_traffic_injects_what_the_guard_alerts_on_long_enough_to_fire(tmp_path, monkeypatch):
    """The stack's traffic injects a burst of outliers and a renamed column; each lasts longer than its
    alert needs (the rate window, then `for:`), and the burst comes after the warm-up reference is frozen
    (a reference full of outliers would make them normal)."""
    import inspect

    from inferwatch.demo.traffic import TrafficGenerator
    from inferwatch.alerting.promql import duration_seconds

    monkeypatch.setenv("INFERWATCH_WRITE_TOKEN", "t")
    (config_ref,) = SERVICES["inferwatch"]["configs"]
    cfg = sidecar_config(tmp_path, COMPOSE["configs"][config_ref["source"]]["content"])
    assert cfg.guard.enabled and cfg.guard.outliers and cfg.reference.warmup_events > 0
    command = SERVICES["traffic"]["command"]
    defaults = {name: p.default for name, p in inspect.signature(TrafficGenerator).parameters.items()}

    def arg(flag: str) -> float:
        name = flag.lstrip("-").replace("-", "_")
        return float(command[command.index(flag) + 1]) if flag in command else float(defaults[name])

    duration = arg("--duration")
    outliers = (duration * arg("--outliers-at"), duration * (arg("--outliers-at") + arg("--outliers-for")))
    renamed = (duration * arg("--rename-at"), duration)
    alerts = load_yaml(REPO / "prometheus" / "thresholds.yaml")["alerts"]
    margin = 60.0   # the 5m rate crossing the threshold (10% outliers against 1%), scrapes, evaluations
    assert outliers[1] - outliers[0] >= duration_seconds(alerts["InferwatchOutlierSpike"]["for"]) + margin
    assert renamed[1] - renamed[0] >= duration_seconds(alerts["InferwatchSchemaChange"]["for"]) + margin
    assert outliers[1] <= renamed[0]
    events_per_second = defaults["concurrency"] * defaults["rate_per_worker"] * 2.5   # 1-4 rows a request
    assert outliers[0] >= 2 * cfg.reference.warmup_events / events_per_second


def test_the_stack_ships_with_write_auth_and_the_traffic_sends_its_token(tmp_path, monkeypatch):
    """The admin port is published: /v1/events and /v1/labels take a bearer token from the
    environment, which the traffic service (it posts labels) gets too; nothing to warn about."""
    from inferwatch.demo.traffic import main as traffic_main  # noqa: F401 - the command it runs

    monkeypatch.setenv("INFERWATCH_WRITE_TOKEN", "s3cret")
    (config_ref,) = SERVICES["inferwatch"]["configs"]
    cfg = sidecar_config(tmp_path, COMPOSE["configs"][config_ref["source"]]["content"])
    assert cfg.admin.write_auth.bearer_token == "s3cret" and cfg.warnings() == []
    for service in ("inferwatch", "traffic"):
        value = SERVICES[service]["environment"]["INFERWATCH_WRITE_TOKEN"]
        assert value.startswith("${INFERWATCH_WRITE_TOKEN:?"), service   # compose refuses to start without it
    traffic = SERVICES["traffic"]["command"]
    assert "--labels-token-env" not in traffic    # the default variable: INFERWATCH_WRITE_TOKEN
