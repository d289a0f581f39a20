#!/usr/bin/env python
"""What `inferwatch job` adds to a job's wall time, and what an alert-triggered action costs.

    .venv/bin/python benchmarks/job_overhead.py            # ~30 s
    .venv/bin/python benchmarks/job_overhead.py --runs 5   # fewer runs

(a) `true` run directly, through `inferwatch job` with a Debian prometheus-pushgateway on loopback
    (two pushes and one read-back per run), and through `inferwatch job` with nothing listening
    (the fail-open path: two refused connections). Wall time per run, median of --runs, side by side.
(b) In process: `ActionRunner.handle` deciding a notification of 100 firing alerts against 10
    actions (matchers, de-duplication, cooldown bookkeeping), all of them duplicates after the first
    round: decisions per second.

This is a benchmark that prints figures, not a test: nothing here asserts a target.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Processes, free_port, install_signal_handlers, machine, median, run_main, wait_http  # noqa: E402


def wall(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - started)
    return median(times)


def jobs(runs: int) -> None:
    procs = Processes()
    try:
        job = [sys.executable, "-m", "inferwatch", "job", "--name", "bench", "--instance", "bench"]
        rows = [("true, directly", wall(["true"], runs))]
        binary = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
        if binary:
            port = free_port()
            procs.start([binary, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="], name="pushgateway")
            wait_http(f"http://127.0.0.1:{port}/-/ready")
            rows.append(("inferwatch job -- true (Pushgateway up)",
                         wall([*job, "--pushgateway", f"http://127.0.0.1:{port}", "--", "true"], runs)))
        else:
            print("prometheus-pushgateway not installed: skipping the Pushgateway row", file=sys.stderr)
        rows.append(("inferwatch job -- true (nothing listening)",
                     wall([*job, "--pushgateway", f"http://127.0.0.1:{free_port()}", "--", "true"], runs)))
        rows.append(("python -c pass (interpreter start, for scale)", wall([sys.executable, "-c", "pass"], runs)))
        print(f"(a) wall time per run, median of {runs}")
        for name, seconds in rows:
            print(f"    {name:<48} {seconds * 1000:8.1f} ms")
    finally:
        procs.close()


def decisions() -> None:
    from prometheus_client import CollectorRegistry

    from inferwatch.alerting.actions import ActionRunner, Alert
    from inferwatch.config import ActionConfig, ActionsConfig, AuditLogConfig

    cfg = ActionsConfig(audit_log=AuditLogConfig(path=str(Path("/dev/null"))), max_queue_items=10_000, actions=[
        ActionConfig(name=f"a{i}", matchers=['alertname="InferwatchDatasetDrift"', f'model=~"m{i}|m{i + 10}"'],
                     command=["true"], cooldown_by=["model"]) for i in range(10)])
    runner = ActionRunner(cfg, CollectorRegistry())   # workers not started: what is queued stays queued
    alerts = [Alert({"alertname": "InferwatchDatasetDrift", "model": f"m{i % 20}", "model_version": str(i)}, {},
                    "firing", f"fp{i}", "2026-01-01T00:00:00Z", "") for i in range(100)]
    runner.handle(alerts)   # first round: queued or cooldown
    rounds = 200
    started = time.perf_counter()
    for _ in range(rounds):
        runner.handle(alerts)
    elapsed = time.perf_counter() - started
    print("(b) ActionRunner.handle, 100 alerts x 10 actions per notification (after the first: duplicates)")
    print(f"    {rounds * len(alerts) / elapsed:12,.0f} alerts decided per second "
          f"({elapsed / rounds * 1000:.2f} ms per notification)")
    runner.audit.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    install_signal_handlers()
    print(f"machine: {machine()}")
    jobs(args.runs)
    decisions()
    return 0


if __name__ == "__main__":
    run_main(main)
