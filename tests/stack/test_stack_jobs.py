"""Job health for real: `inferwatch job` and the Python API push to a Debian prometheus-pushgateway on
loopback, and a real Prometheus (honor_labels) scrapes the Pushgateway and sees the jobs."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import requests
from stack_helpers import Prometheus, Pushgateway, wait_until

from inferwatch.job import JobOptions, JobRun, monitored_job

FAIL = [sys.executable, "-c", "import sys; print('extracting...'); print('boom', file=sys.stderr); sys.exit(3)"]
SUCCEED = [sys.executable, "-c", "print('trained: auc=0.91')"]


@pytest.fixture(scope="module")
def pushgateway(tmp_path_factory):
    gateway = Pushgateway(tmp_path_factory.mktemp("pushgateway"))
    yield gateway
    gateway.stop()


def job(pushgateway_url: str, name: str, *argv: str, extra=(), **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inferwatch", "job", "--name", name, "--pushgateway", pushgateway_url,
                           "--instance", "runner-1", *extra, "--", *argv],
                          capture_output=True, text=True, timeout=60, **kwargs)


def group(gateway: Pushgateway, name: str, instance: str = "runner-1") -> dict[str, float]:
    """The pushed samples of one group: {metric name: value}."""
    data = requests.get(f"{gateway.url}/api/v1/metrics", timeout=5).json()["data"]
    for g in data:
        if g["labels"] == {"job": name, "instance": instance}:
            return {key: float(family["metrics"][0]["value"]) for key, family in g.items()
                    if isinstance(family, dict) and "metrics" in family}
    return {}


def test_a_failing_and_a_succeeding_job_pass_through_and_accumulate(pushgateway):
    before = time.time()
    failed = job(pushgateway.url, "etl-features", *FAIL, extra=["--team", "data", "--model", "fraud"])
    assert failed.returncode == 3
    assert failed.stdout == "extracting...\n" and failed.stderr == "boom\n"   # nothing of ours added
    metrics = group(pushgateway, "etl-features")
    assert metrics["inferwatch_job_last_exit_code"] == 3
    assert metrics["inferwatch_job_runs_total"] == 1 and metrics["inferwatch_job_failures_total"] == 1
    assert metrics["inferwatch_job_running"] == 0
    assert "inferwatch_job_last_success_timestamp_seconds" not in metrics
    assert before <= metrics["inferwatch_job_last_start_timestamp_seconds"] <= metrics[
        "inferwatch_job_last_end_timestamp_seconds"] <= time.time()
    assert 0 < metrics["inferwatch_job_last_duration_seconds"] < 30

    for _ in range(2):
        ok = job(pushgateway.url, "etl-features", *SUCCEED, extra=["--team", "data", "--model", "fraud"])
        assert ok.returncode == 0 and ok.stdout == "trained: auc=0.91\n" and ok.stderr == ""
    metrics = group(pushgateway, "etl-features")
    assert metrics["inferwatch_job_runs_total"] == 3 and metrics["inferwatch_job_failures_total"] == 1
    assert metrics["inferwatch_job_last_exit_code"] == 0
    success = metrics["inferwatch_job_last_success_timestamp_seconds"]
    assert success == metrics["inferwatch_job_last_end_timestamp_seconds"]

    # a later failure keeps the last success where it was
    assert job(pushgateway.url, "etl-features", *FAIL, extra=["--team", "data"]).returncode == 3
    metrics = group(pushgateway, "etl-features")
    assert metrics["inferwatch_job_last_success_timestamp_seconds"] == success
    assert metrics["inferwatch_job_last_failure_timestamp_seconds"] > success
    assert metrics["inferwatch_job_runs_total"] == 4 and metrics["inferwatch_job_failures_total"] == 2


def test_schedule_lateness_overrides_and_environment(pushgateway):
    scheduled = time.time() - 90
    result = job(pushgateway.url, "train-late", *SUCCEED,
                 extra=["--schedule-timestamp", str(scheduled), "--max-age", "26h", "--max-duration", "90m",
                        "--package", "requests"])
    assert result.returncode == 0, result.stderr
    metrics = group(pushgateway, "train-late")
    assert metrics["inferwatch_job_last_scheduled_timestamp_seconds"] == pytest.approx(scheduled)
    assert 90 <= metrics["inferwatch_job_last_start_delay_seconds"] < 120
    assert metrics["inferwatch_job_max_age_seconds"] == 26 * 3600
    assert metrics["inferwatch_job_max_duration_seconds"] == 90 * 60
    text = requests.get(f"{pushgateway.url}/metrics", timeout=5).text
    info = next(line for line in text.splitlines() if line.startswith("inferwatch_job_info{") and "train-late" in line)
    for label in ("python_version=", "inferwatch_version=", "numpy=", "requests=", "environment_hash=", 'team="ml"'):
        assert label in info, info


def test_an_unreachable_pushgateway_never_fails_the_job(pushgateway):
    from stack_helpers import free_port

    url = f"http://127.0.0.1:{free_port()}"
    result = job(url, "orphan", *FAIL)
    assert result.returncode == 3
    assert result.stdout == "extracting...\n"
    assert result.stderr.startswith("boom\n") or "boom\n" in result.stderr
    assert f"cannot push the job's start to the Pushgateway at {url}" in result.stderr
    assert "the job itself is not affected" in result.stderr
    assert job(url, "orphan", *SUCCEED).returncode == 0


def test_a_missing_command_is_a_failed_run(pushgateway):
    result = job(pushgateway.url, "typo", "/no/such/program")
    assert result.returncode == 127 and "cannot run '/no/such/program'" in result.stderr
    assert group(pushgateway, "typo")["inferwatch_job_last_exit_code"] == 127


def test_sigterm_is_forwarded_and_the_childs_exit_code_passes_through(pushgateway):
    child = ("import signal, sys, time\n"
             "def stop(signum, frame):\n"
             "    print('child got', signum, flush=True); sys.exit(7)\n"
             "signal.signal(signal.SIGTERM, stop)\n"
             "print('ready', flush=True)\n"
             "time.sleep(60)\n")
    process = subprocess.Popen([sys.executable, "-m", "inferwatch", "job", "--name", "long-train", "--pushgateway",
                                pushgateway.url, "--instance", "runner-1", "--", sys.executable, "-c", child],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "ready\n"
        assert group(pushgateway, "long-train")["inferwatch_job_running"] == 1
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 7, err
    assert out == f"child got {int(signal.SIGTERM)}\n"
    metrics = group(pushgateway, "long-train")
    assert metrics["inferwatch_job_last_exit_code"] == 7 and metrics["inferwatch_job_running"] == 0


def test_a_child_killed_by_a_signal_ends_the_job_the_same_way(pushgateway):
    result = job(pushgateway.url, "killed", sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)")
    assert result.returncode == -signal.SIGTERM   # re-raised: the caller sees the same death
    assert group(pushgateway, "killed")["inferwatch_job_last_exit_code"] == 128 + signal.SIGTERM


def test_context_manager_and_decorator(pushgateway):
    with JobRun(JobOptions("py-ok", pushgateway=pushgateway.url, instance="runner-1", model="fraud")) as run:
        assert group(pushgateway, "py-ok")["inferwatch_job_running"] == 1
    assert run.pushed == ["start", "end"]
    assert group(pushgateway, "py-ok")["inferwatch_job_last_exit_code"] == 0

    @monitored_job("py-fails", pushgateway=pushgateway.url, instance="runner-1", team="data")
    def step(x):
        raise RuntimeError(f"bad input {x}")

    with pytest.raises(RuntimeError, match="bad input 1"):
        step(1)
    metrics = group(pushgateway, "py-fails")
    assert metrics["inferwatch_job_last_exit_code"] == 1 and metrics["inferwatch_job_failures_total"] == 1

    @monitored_job("py-exit", pushgateway=pushgateway.url, instance="runner-1")
    def main():
        raise SystemExit(4)

    with pytest.raises(SystemExit):
        main()
    assert group(pushgateway, "py-exit")["inferwatch_job_last_exit_code"] == 4


def test_prometheus_scrapes_both_jobs_with_their_own_labels(pushgateway, tmp_path):
    assert job(pushgateway.url, "nightly-etl", *FAIL, extra=["--team", "data", "--model", "fraud"]).returncode == 3
    assert job(pushgateway.url, "nightly-train", *SUCCEED, extra=["--model", "fraud"]).returncode == 0
    prometheus = Prometheus(tmp_path, [{"job_name": "pushgateway", "honor_labels": True,
                                        "static_configs": [{"targets": [pushgateway.url.split("//")[1]]}]}])
    try:
        selector = 'inferwatch_job_last_exit_code{job=~"nightly-.*"}'
        result = wait_until(lambda: len(prometheus.query(selector)) == 2 and prometheus.query(selector), 30)
        assert result, prometheus.log_text()
        seen = {r["metric"]["job"]: (r["metric"], float(r["value"][1])) for r in result}
        assert seen["nightly-etl"][1] == 3 and seen["nightly-train"][1] == 0
        assert seen["nightly-etl"][0]["team"] == "data" and seen["nightly-train"][0]["team"] == "ml"
        assert {m["instance"] for m, _ in seen.values()} == {"runner-1"}   # the pushed instance, not the gateway's
        assert {m["model"] for m, _ in seen.values()} == {"fraud"}
        failures = prometheus.query('inferwatch_job_failures_total{job=~"nightly-.*"}')
        assert {r["metric"]["job"]: float(r["value"][1]) for r in failures} == {"nightly-etl": 1, "nightly-train": 0}
        assert prometheus.query('inferwatch_job_info{job="nightly-train", python_version!=""}')
    finally:
        prometheus.stop()
