"""`inferwatch demo --generative`, run short without Prometheus: the OpenAI-compatible stub behind the
sidecar, chat traffic from the official client, the change halfway, and the table's figures read
from the sidecar's own metrics. (tests/stack/test_stack_demo_generative.py runs it with the stack.)"""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import free_ports
from inferwatch.demo.generative import COLUMNS, GENERATIVE_ALERTS, firing_alerts, summarize_generative

SCRAPE = """\
# TYPE inferwatch_genai_requests counter
inferwatch_genai_requests_total{model="chat",error_type=""} 90
inferwatch_genai_requests_total{model="chat",error_type="stream_error"} 10
# TYPE inferwatch_genai_finish_reasons counter
inferwatch_genai_finish_reasons_total{model="chat",finish_reason="stop"} 60
inferwatch_genai_finish_reasons_total{model="chat",finish_reason="length"} 20
# TYPE inferwatch_genai_output_matches counter
inferwatch_genai_output_matches_total{model="chat",matcher="refusal"} 8
inferwatch_genai_output_matches_total{model="chat",matcher="secret"} 1
# TYPE inferwatch_genai_server_time_to_first_token_seconds histogram
inferwatch_genai_server_time_to_first_token_seconds_bucket{model="chat",le="0.1"} 50
inferwatch_genai_server_time_to_first_token_seconds_bucket{model="chat",le="1.0"} 100
inferwatch_genai_server_time_to_first_token_seconds_bucket{model="chat",le="+Inf"} 100
inferwatch_genai_server_time_to_first_token_seconds_count{model="chat"} 100
inferwatch_genai_server_time_to_first_token_seconds_sum{model="chat"} 20
"""


def table(stdout: str) -> list[dict[str, str]]:
    lines = stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.split()[:2] == ["t(s)", "phase"])
    headers = lines[at].split()
    return [dict(zip(headers, line.split())) for line in lines[at + 1:] if line.strip()[:1].isdigit()]


def test_the_table_reads_the_genai_families():
    s = summarize_generative(SCRAPE)
    assert (s["requests"], s["failed"], s["finished"], s["truncated"], s["refusals"]) == (100, 10, 80, 20, 8)
    assert s["ttft_p50"] == 0.1 and abs(s["ttft_p99"] - 0.982) < 1e-9   # Prometheus's interpolation
    assert firing_alerts([{"state": "firing", "labels": {"alertname": "A", "team": "ml"}},
                          {"state": "pending", "labels": {"alertname": "B", "team": "ops"}}]) == {"A": "ml"}
    assert len(set(GENERATIVE_ALERTS.values())) == len(GENERATIVE_ALERTS)
    assert [name for name, _ in COLUMNS][-1] == "alerts"


def test_the_generative_demo_runs_end_to_end():
    proxy, admin, upstream = free_ports(3)
    result = subprocess.run(
        [sys.executable, "-m", "inferwatch", "demo", "--generative", "--duration", "8", "--no-stack",
         "--proxy-port", str(proxy), "--admin-port", str(admin), "--upstream-port", str(upstream)],
        capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "with the official openai client" in result.stdout
    assert "after 4s the prompts grow longer" in result.stdout
    rows = table(result.stdout)
    assert rows, result.stdout
    last = rows[-1]
    assert last["phase"] == "changed" and int(last["reqs"]) > 20, result.stdout
    assert float(last["ttft50"]) > 0 and float(last["tok/s"]) > 0, result.stdout
    sent, failed = map(int, re.search(r"Done: (\d+)\s+chat\s+requests\s+sent,\s+(\d+)\s+failed", result.stdout).groups())
    truncations = int(re.search(r"(\d+)\s+truncations", result.stdout).group(1))
    assert sent >= int(last["reqs"]) and failed < sent and truncations > 0, result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 120, result.stdout
