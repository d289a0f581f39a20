"""Helpers for the monitoring stack's tests: the repository's files and the Prometheus tools."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

REPO = Path(__file__).resolve().parents[2]
RULES_DIR = REPO / "prometheus" / "rules"
RULE_FILES = sorted(RULES_DIR.glob("*.yml"))
THRESHOLDS = REPO / "prometheus" / "thresholds.yaml"
DASHBOARDS = sorted((REPO / "grafana" / "dashboards").glob("*.json"))


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: `make test` installs the Debian prometheus and "
                    f"prometheus-alertmanager packages")
    return path


def run(*args: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, **kwargs)


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except requests.RequestException:
            value = None
        if value:
            return value
        time.sleep(interval)
    return None


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


class Pushgateway:
    """The Debian prometheus-pushgateway on a free loopback port, in memory only (Debian's default
    --persistence.file is a shared /var/lib path: every test run would see the last one's groups)."""

    def __init__(self, tmp: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(tmp / "pushgateway.log", "wb")
        self.process = subprocess.Popen(
            [tool("prometheus-pushgateway"), f"--web.listen-address=127.0.0.1:{self.port}", "--persistence.file="],
            stdout=subprocess.DEVNULL, stderr=self.log, cwd=tmp)
        self.tmp = tmp
        assert wait_until(lambda: requests.get(f"{self.url}/-/ready", timeout=1).ok, 20), self.log_text()

    def log_text(self) -> str:
        return (self.tmp / "pushgateway.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        stop_process(self.process)
        self.log.close()


class Prometheus:
    """A real Prometheus on a free loopback port with the given scrape configs (1 s interval)."""

    def __init__(self, tmp: Path, scrape_configs: list[dict], rule_files: list[str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = tmp
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                  "rule_files": rule_files or [], "scrape_configs": scrape_configs}
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = open(tmp / "prometheus.log", "wb")
        self.process = subprocess.Popen(
            [tool("prometheus"), f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"], stdout=subprocess.DEVNULL, stderr=self.log)
        assert wait_until(lambda: requests.get(f"{self.url}/-/ready", timeout=1).ok, 30), self.log_text()

    def log_text(self) -> str:
        return (self.tmp / "prometheus.log").read_text(errors="replace")[-3000:]

    def query(self, expr: str) -> list[dict]:
        answer = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10).json()
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def stop(self) -> None:
        stop_process(self.process)
        self.log.close()
