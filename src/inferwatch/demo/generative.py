"""`inferwatch demo --generative`: a language model behind the sidecar. An OpenAI-compatible stub
(``openai_stub``) streams made-up answers at a realistic pace; chat traffic (``chat_traffic``)
asks it questions; halfway through the prompts grow longer and the stub degrades (a slower first
token, more answers cut at max_tokens, more refusals, broken streams), so the generative alerts fire.
Prometheus and Alertmanager too when their binaries are on this machine."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from .chat_traffic import ChatTraffic
from .openai_stub import DEGRADED, HEALTHY, REFUSAL_PATTERN, OpenAIStub
from .runner import histogram_quantile, keep_running, link_line, percent, stop_processes, wait_http
from .stack import MonitoringStack, start_demo_stack

GENAI_MODEL = "chat"
# The alerts this demo means to fire, as the table's `alerts` column abbreviates them.
GENERATIVE_ALERTS = {
    "InferwatchTimeToFirstTokenSLOBurnRate": "TTFT",
    "InferwatchGenerativeErrorRate": "ERR",
    "InferwatchGenerativeTruncationSpike": "TRUNC",
    "InferwatchGenerativeOutputMatchSpike": "REFUSE",
    "InferwatchFeatureDrift": "PROMPT",
    "InferwatchPredictionDrift": "OUTPUT",
}


def generative_config(workdir: Path, *, upstream_port: int, proxy_port: int, admin_port: int,
                      warmup_events: int) -> Path:
    config = {
        "model": {"name": GENAI_MODEL, "version": "v1"},
        "upstream": {"url": f"http://127.0.0.1:{upstream_port}", "timeout_seconds": 60,
                     "health_interval_seconds": 2},
        "proxy": {"listen_address": "127.0.0.1", "port": proxy_port},
        "admin": {"listen_address": "127.0.0.1", "port": admin_port},
        "window": {"max_events": 5000, "max_age_seconds": 900},
        # No past requests in the demo: the first (healthy) ones are the reference of prompts and answers.
        "reference": {"warmup_events": warmup_events},
        "drift": {"interval_seconds": 5},
        # Two requests with the same prompt length and parameters are not a duplicate request: the
        # guard's duplicate check (meant for feature vectors of tabular models) is off for a chat model.
        "guard": {"duplicates": False},
        # Answers that refuse, counted in inferwatch_genai_output_matches_total{matcher="refusal"}.
        "genai": {"output_matchers": [{"name": "refusal", "pattern": REFUSAL_PATTERN}]},
        "prediction_log": {"path": str(workdir / "predictions.jsonl"), "sample_rate": 0.1,
                           "max_bytes": 10 * 1024 * 1024, "backup_count": 2},
    }
    path = workdir / "inferwatch.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def summarize_generative(metrics_text: str) -> dict[str, float]:
    """The table's figures from one scrape of the sidecar."""
    out = {"requests": 0.0, "failed": 0.0, "output_tokens": 0.0, "finished": 0.0, "truncated": 0.0,
           "responses": 0.0, "refusals": 0.0, "prompt_drift": float("nan"), "output_drift": float("nan")}
    ttft: dict[float, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            labels = s.labels
            if s.name == "inferwatch_genai_requests_total":
                out["requests"] += s.value
                out["failed"] += s.value if labels.get("error_type") else 0.0
            elif s.name == "inferwatch_genai_server_time_to_first_token_seconds_bucket":
                bound = float(labels["le"])
                ttft[bound] = ttft.get(bound, 0.0) + s.value
            elif s.name == "inferwatch_genai_tokens_total" and labels.get("token_type") == "output":
                out["output_tokens"] += s.value
            elif s.name == "inferwatch_genai_finish_reasons_total":
                out["finished"] += s.value
                out["truncated"] += s.value if labels.get("finish_reason") == "length" else 0.0
            elif s.name == "inferwatch_genai_responses_total":
                out["responses"] += s.value
            elif s.name == "inferwatch_genai_output_matches_total" and labels.get("matcher") == "refusal":
                out["refusals"] += s.value
            elif s.name == "inferwatch_feature_drift_score" and labels.get("method") == "psi" \
                    and labels.get("feature") == "prompt_tokens":
                out["prompt_drift"] = s.value
            elif s.name == "inferwatch_prediction_drift_score" and labels.get("method") == "psi" \
                    and labels.get("output") == "completion_tokens":
                out["output_drift"] = s.value
    pairs = list(ttft.items())
    out["ttft_p50"] = histogram_quantile(0.5, pairs)
    out["ttft_p99"] = histogram_quantile(0.99, pairs)
    return out


def firing_alerts(alerts: list[dict[str, Any]]) -> dict[str, str]:
    """Alert name -> team of every firing alert (Prometheus's /api/v1/alerts)."""
    return {a["labels"]["alertname"]: a["labels"].get("team", "") for a in alerts if a.get("state") == "firing"}


COLUMNS = (("t(s)", 4), ("phase", 7), ("reqs", 5), ("fail", 5), ("ttft50", 6), ("ttft99", 6), ("tok/s", 6),
           ("trunc", 5), ("refuse", 6), ("pdrift", 6), ("odrift", 6), ("alerts", 30))
LEGEND = """\
Columns: t(s) seconds since the start; phase healthy, or changed (longer prompts, a slower model);
  reqs chat requests through the sidecar; fail failed (5xx, broken streams); ttft50/ttft99 time to
  first token in seconds; tok/s output tokens per second since the last row; trunc share of answers
  cut at max_tokens; refuse share of refusals (the `refusal` output matcher); pdrift/odrift PSI of
  prompt_tokens / completion_tokens against the first requests; alerts the generative alerts firing in
  Prometheus (TTFT SLO burn, ERRors, TRUNCations, REFUSals, PROMPT and OUTPUT drift)."""


def _cell(value: float, fmt: str) -> str:
    return "-" if value != value else format(value, fmt)   # NaN: nothing measured yet


def table_row(cells: list[str]) -> str:
    return " ".join(f"{cell:>{width}}" if name != "alerts" else cell
                    for cell, (name, width) in zip(cells, COLUMNS))


def summary_row(elapsed: float, phase: str, s: dict[str, float], tokens_per_second: float, alerts: str) -> str:
    share = (lambda part, whole: percent(part / whole) if whole else "-")
    return table_row([f"{elapsed:.0f}", phase, f"{s['requests']:.0f}", f"{s['failed']:.0f}",
                      _cell(s["ttft_p50"], ".2f"), _cell(s["ttft_p99"], ".2f"), f"{tokens_per_second:.0f}",
                      share(s["truncated"], s["finished"]), share(s["refusals"], s["responses"]),
                      _cell(s["prompt_drift"], ".2f"), _cell(s["output_drift"], ".2f"), alerts])


def alerts_cell(stack: MonitoringStack | None) -> tuple[str, dict[str, str]]:
    if stack is None:
        return "(no Prometheus)", {}
    try:
        firing = firing_alerts(stack.alerts())
    except Exception:  # noqa: BLE001 - a missed row of alerts is not worth stopping the demo
        return "?", {}
    return ",".join(short for name, short in GENERATIVE_ALERTS.items() if name in firing) or "-", firing


def run_generative_demo(*, duration: float = 60.0, proxy_port: int = 8080, admin_port: int = 9180,
                        upstream_port: int = 8081, with_stack: bool = True, report_every: float = 5.0,
                        keep: bool = False, workers: int = 16) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="inferwatch-genai-demo-"))
    processes: list[subprocess.Popen] = []
    stub = OpenAIStub(port=upstream_port, behaviour=HEALTHY)
    stack: MonitoringStack | None = None
    try:
        try:
            stub.start()
        except RuntimeError as exc:
            print(f"the OpenAI-compatible stub did not start: {exc}", file=sys.stderr)
            return 1
        # The first requests are the reference: most of the healthy half (about a request a second per worker).
        warmup = int(min(1000, max(50, 0.6 * workers * duration / 2)))
        config = generative_config(workdir, upstream_port=stub.port, proxy_port=proxy_port, admin_port=admin_port,
                                   warmup_events=warmup)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        sidecar = subprocess.Popen([sys.executable, "-m", "inferwatch", "run", "--config", str(config)],
                                   stdout=subprocess.DEVNULL, stderr=open(workdir / "sidecar.log", "wb"), env=env)
        processes.append(sidecar)
        if not wait_http(f"http://127.0.0.1:{admin_port}/healthz", 30, sidecar):
            print(f"the sidecar did not start; see {workdir / 'sidecar.log'}", file=sys.stderr)
            return 1
        wait_http(f"http://127.0.0.1:{admin_port}/readyz", 10)
        for line in (link_line("Model server", f"{stub.url}/v1/models", "(OpenAI-compatible stub: POST /v1/chat/completions)"),
                     link_line("Sidecar", f"http://127.0.0.1:{proxy_port}/v1/models",
                               "(the proxy: point any OpenAI client's base_url at .../v1)"),
                     link_line("Metrics", f"http://127.0.0.1:{admin_port}/metrics"),
                     link_line("Status", f"http://127.0.0.1:{admin_port}/v1/status")):
            print(line)
        print(f"{'Work files:':<14}{workdir} (config, sidecar log, prediction log: lengths, no text)")
        if with_stack:
            stack = start_demo_stack(workdir, admin_port)
            if stack is not None:
                processes.extend(stack.processes)

        def degrade() -> None:
            stub.behaviour = DEGRADED

        traffic = ChatTraffic(f"http://127.0.0.1:{proxy_port}", duration=duration, workers=workers,
                              on_change=degrade).start()
        client = "the official openai client" if traffic.use_openai else "plain HTTP (pip install openai to use its client)"
        print("\n" + textwrap.fill(
            f"Sending chat requests for {duration:g}s from {workers} users with {client}; after "
            f"{duration * traffic.change_at:g}s the prompts grow longer and the model degrades (first token "
            f"{HEALTHY.first_token_seconds:g}s -> {DEGRADED.first_token_seconds:g}s, more answers cut at max_tokens, "
            f"{DEGRADED.refusal_share:.0%} refusals, broken streams).", 110))
        print(textwrap.fill("Alert `for:` durations are capped at 10s in the demo. The classic latency alerts "
                            "(100 ms for a whole request) fire too: a generative model's latency objective is its "
                            "time to first token.", 110))
        print(LEGEND)
        print(table_row([header for header, _ in COLUMNS]))
        fired = _report(traffic, stack, admin_port, duration, report_every)
        traffic.stop()
        print("\n" + textwrap.fill(
            f"Done: {traffic.sent} chat requests sent, {traffic.failed} failed; the stub answered "
            f"{stub.served['refusals']} refusals, {stub.served['finish_length']} truncations, "
            f"{stub.served['stream_errors']} broken streams. Work files are in {workdir}.", 110))
        if stack is not None:
            generative = {name: team for name, team in fired.items() if name in GENERATIVE_ALERTS}
            others = sorted(set(fired) - set(generative))
            print(textwrap.fill("Generative alerts that fired: " + (
                ", ".join(f"{n} (team {t})" for n, t in generative.items()) or "none")
                + (f"; others: {', '.join(others)}" if others else ""), 110, break_on_hyphens=False))
        if keep:
            return keep_running(processes)
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        stop_processes(processes)
        stub.stop()


def _report(traffic: ChatTraffic, stack: MonitoringStack | None, admin_port: int, duration: float,
            every: float) -> dict[str, str]:
    """Print a row every ``every`` seconds until the traffic ends; every alert seen firing, with its team."""
    start = last_time = time.monotonic()
    last_tokens = 0.0
    fired: dict[str, str] = {}
    while traffic.running():
        time.sleep(min(every, max(0.1, duration - (time.monotonic() - start))))
        try:
            s = summarize_generative(requests.get(f"http://127.0.0.1:{admin_port}/metrics", timeout=5).text)
        except requests.RequestException as exc:
            print(f"cannot scrape the sidecar: {exc}")
            continue
        now = time.monotonic()
        cell, firing = alerts_cell(stack)
        fired.update(firing)
        print(summary_row(now - start, traffic.phase(), s, (s["output_tokens"] - last_tokens) / max(now - last_time, 1e-9),
                          cell), flush=True)
        last_tokens, last_time = s["output_tokens"], now
        if now - start >= duration:
            break
    # After the traffic: a few more rows while alerts still wait out their `for:` (the 5m rates hold).
    settle_until = time.monotonic() + (30 if stack is not None else 0)
    while time.monotonic() < settle_until and not set(GENERATIVE_ALERTS) <= set(fired):
        time.sleep(every)
        cell, firing = alerts_cell(stack)
        fired.update(firing)
        print(table_row([f"{time.monotonic() - start:.0f}", "ended", *["" for _ in COLUMNS[2:-1]], cell]), flush=True)
    return fired
