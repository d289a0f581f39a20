"""`inferwatch demo` with its monitoring stack: every link it prints answers, and Prometheus, by the end,
holds the performance (from the delayed labels) and shadow challenger series the model dashboard
draws, the business bands and the per-segment performance."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import requests

from conftest import read_until
from stack_helpers import free_port, tool

from inferwatch.demo.runner import PROMETHEUS_SERIES



def test_the_demos_prometheus_holds_performance_and_shadow_series_and_its_links_answer():
    """Run with --keep: by the end Prometheus holds the series, and every link the demo printed
    (Prometheus's alerts page on the installed version included) answers a GET."""
    tool("prometheus")   # fails, as the other stack tests do, when it is not installed
    ports = [free_port() for _ in range(4)]
    process = subprocess.Popen(
        [sys.executable, "-m", "inferwatch", "demo", "--duration", "25", "--keep",
         *(arg for name, port in zip(("--proxy-port", "--admin-port", "--upstream-port", "--challenger-port"), ports)
           for arg in (name, str(port)))],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        stdout = read_until(process, "until Ctrl-C", 240)
        assert "until Ctrl-C" in stdout, stdout
        links = re.findall(r"(?<!POST )(https?://[^\s)]+)", stdout.split("\nSending traffic")[0])
        alerts_page = re.search(r"^Prometheus: +(\S+)", stdout, flags=re.M)   # /alerts or /classic/alerts
        assert alerts_page and alerts_page.group(1) in links, stdout
        for url in links:
            assert requests.get(url, timeout=10).status_code == 200, (url, stdout)
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0, stdout
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    lines = stdout.splitlines()
    first = next((i for i, line in enumerate(lines) if line.startswith("Prometheus (")), None)
    assert first is not None, stdout
    line = lines[first]   # wrapped at 120 columns: continuation lines are indented
    for more in lines[first + 1:]:
        if not more.startswith("  "):
            break
        line += " " + more.strip()
    listed = line.split("holds: ", 1)[1].removesuffix(" series.").split(", ")
    counts = {what: int(n) for what, n in (re.fullmatch(r"([a-z ]+) (\d+)", item).groups() for item in listed)}
    assert set(counts) == {what for what, _ in PROMETHEUS_SERIES}, line
    assert all(n > 0 for n in counts.values()), line
    # accuracy, precision, recall, f1 (binary and macro), ROC-AUC and log loss, for the champion and
    # for the challenger on the same labels; a 2x2 confusion matrix; four bands plus unbanded
    assert counts["performance"] >= 9 and counts["shadow performance"] >= 9, line
    assert counts["confusion"] == 4 and counts["bands"] == 5, line
