"""`inferwatch demo` with its monitoring stack: Prometheus scrapes the sidecar and, by the end,
holds the performance (from the delayed labels) and shadow challenger series the model dashboard
draws, the business bands and the per-segment performance."""

from __future__ import annotations

import re
import subprocess
import sys

from stack_helpers import free_port, tool

from inferwatch.demo.runner import PROMETHEUS_SERIES


def test_the_demos_prometheus_holds_performance_and_shadow_series():
    tool("prometheus")   # fails, as the other stack tests do, when it is not installed
    ports = [free_port() for _ in range(4)]
    result = subprocess.run(
        [sys.executable, "-m", "inferwatch", "demo", "--duration", "25",
         *(arg for name, port in zip(("--proxy-port", "--admin-port", "--upstream-port", "--challenger-port"), ports)
           for arg in (name, str(port)))],
        capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    line = next((line for line in result.stdout.splitlines() if line.startswith("Prometheus (")), None)
    assert line, result.stdout
    listed = line.split("holds: ", 1)[1].removesuffix(" series.").split(", ")
    counts = {what: int(n) for what, n in (re.fullmatch(r"([a-z ]+) (\d+)", item).groups() for item in listed)}
    assert set(counts) == {what for what, _ in PROMETHEUS_SERIES}, line
    assert all(n > 0 for n in counts.values()), line
    # accuracy, precision, recall, f1 (binary and macro), ROC-AUC and log loss, for the champion and
    # for the challenger on the same labels; a 2x2 confusion matrix; four bands plus unbanded
    assert counts["performance"] >= 9 and counts["shadow performance"] >= 9, line
    assert counts["confusion"] == 4 and counts["bands"] == 5, line
