"""`inferwatch demo`: the model server, the sidecar in front of it, a challenger model the sidecar
mirrors traffic to, drifting traffic with delayed labels, and a live summary; Prometheus too when
its binary is on this machine."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from .model import CATEGORICAL, NUMERIC
from .model_server import MODEL_NAME
from .stack import link_line, start_demo_stack
from .traffic import TrafficGenerator


def wait_http(url: str, timeout: float = 30.0, process: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        try:
            if requests.get(url, timeout=1).status_code < 500:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.1)
    return False


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus's histogram_quantile over cumulative (upper bound, count) pairs."""
    buckets = sorted(buckets)
    total = buckets[-1][1] if buckets else 0
    if total == 0:
        return float("nan")
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / max(count - lower_count, 1e-12)
        lower_bound, lower_count = bound, count
    return lower_bound


def summarize(metrics_text: str) -> dict[str, float]:
    out = {"requests": 0.0, "errors": 0.0, "events_in_window": 0.0, "predictions": 0.0, "dropped": 0.0,
           "payload_errors": 0.0, "drifted_features": 0.0, "features_evaluated": 0.0, "dataset_drifted": 0.0,
           "failed_ratio": 0.0, "outlier_ratio": 0.0, "schema_changes": 0.0,
           "accuracy": float("nan"), "estimated_accuracy": float("nan"), "challenger_accuracy": float("nan"),
           "agreement": float("nan"), "labels": 0.0}
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            if s.name == "inferwatch_requests_total":
                out["requests"] += s.value
                if s.labels.get("code", "").startswith("5"):
                    out["errors"] += s.value
            elif s.name == "inferwatch_request_duration_seconds_bucket":
                bound = float(s.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + s.value
            elif s.name == "inferwatch_window_events":
                out["events_in_window"] += s.value
            elif s.name == "inferwatch_predictions_total":
                out["predictions"] += s.value
            elif s.name == "inferwatch_events_dropped_total":
                out["dropped"] += s.value
            elif s.name == "inferwatch_payload_errors_total":
                out["payload_errors"] += s.value
            elif s.name == "inferwatch_feature_drifted":
                out["features_evaluated"] += 1
                out["drifted_features"] += s.value
            elif s.name == "inferwatch_dataset_drifted":
                out["dataset_drifted"] = max(out["dataset_drifted"], s.value)
            elif s.name == "inferwatch_data_quality_failed_events_ratio":
                out["failed_ratio"] = max(out["failed_ratio"], s.value)
            elif s.name == "inferwatch_outlier_ratio":
                out["outlier_ratio"] = max(out["outlier_ratio"], s.value)
            elif s.name == "inferwatch_schema_changed":
                out["schema_changes"] += s.value
            elif s.labels.get("metric") == "accuracy" and s.name in _ACCURACY:
                out[_ACCURACY[s.name]] = s.value
            elif s.name == "inferwatch_shadow_agreement_ratio":
                out["agreement"] = s.value
            elif s.name == "inferwatch_labels_total" and s.labels.get("outcome") == "matched":
                out["labels"] += s.value
    pairs = list(buckets.items())
    out["p50_ms"] = histogram_quantile(0.5, pairs) * 1000
    out["p99_ms"] = histogram_quantile(0.99, pairs) * 1000
    return out


_ACCURACY = {"inferwatch_model_performance": "accuracy", "inferwatch_estimated_performance": "estimated_accuracy",
             "inferwatch_shadow_performance": "challenger_accuracy"}


# What the demo's Prometheus should hold by the end: (what, series selector) for the closing summary.
PROMETHEUS_SERIES = (
    ("performance", "inferwatch_model_performance"),
    ("estimated", "inferwatch_estimated_performance"),
    ("confusion", "inferwatch_confusion_matrix_total"),
    ("labels", "inferwatch_labels_total"),
    ("label drift", "inferwatch_label_drift_score"),
    ("shadow performance", "inferwatch_shadow_performance"),
    ("shadow agreement", "inferwatch_shadow_agreement_ratio"),
    ("shadow requests", "inferwatch_shadow_requests_total"),
    ("bands", "inferwatch_prediction_band_total"),
    ("classes", "inferwatch_predicted_class_total"),
    ("segment performance", "inferwatch_segment_model_performance"),
)


def prometheus_series(query) -> dict[str, int]:
    """Series per signal in the demo's Prometheus (``query``: PromQL -> result list)."""
    out = {}
    for what, selector in PROMETHEUS_SERIES:
        result = query(f"count({selector})")
        out[what] = int(float(result[0]["value"][1])) if result else 0
    return out


def ratio(value: float) -> str:
    return "-" if value != value else f"{value:.2f}"  # NaN: not published yet


def drifted(summary: dict[str, float]) -> str:
    """"2/9": drifted features of those evaluated; "-" before the first evaluation."""
    if not summary["features_evaluated"]:
        return "-"
    return f"{summary['drifted_features']:.0f}/{summary['features_evaluated']:.0f}"


def dataset(summary: dict[str, float], shift: float = 0.0, injected: str = "") -> str:
    """The dataset's drift decision with its likely cause: "DRIFT:shift" once the population moves,
    else the last injection seen ("DRIFT:outliers": a burst of outliers moves the window's
    distributions too, and stays in the window after the burst)."""
    if not summary["features_evaluated"]:
        return "warm-up"
    if not summary["dataset_drifted"]:
        return "ok"
    cause = "shift" if shift > 0 else injected
    return f"DRIFT:{cause}" if cause else "DRIFTED"


# The live table: (header, width) of each column; 120 columns at most, explained once by LEGEND.
COLUMNS = (("t(s)", 4), ("shift", 5), ("reqs", 6), ("5xx", 4), ("p50ms", 6), ("p99ms", 6), ("window", 6),
           ("drop", 4), ("drifted", 7), ("dataset", 14), ("bad", 5), ("outl", 5), ("schema", 7), ("labels", 6),
           ("acc", 4), ("est", 4), ("v2acc", 5), ("agree", 5))
LEGEND = """\
Columns: t(s) seconds since the start; shift how far the applicants have drifted (0-1); reqs requests
  through the sidecar; 5xx errors; p50ms/p99ms latency; window events held for drift; drop events dropped;
  drifted features drifted/evaluated; dataset the dataset's drift decision and its cause (shift, or the
  injected outliers/renamed column); bad share of events failing a data quality check; outl share of
  outliers; schema a renamed column seen; labels outcomes joined; acc accuracy on labels; est accuracy
  estimated without labels (CBPE); v2acc the challenger's accuracy; agree champion/challenger agreement."""


def percent(value: float) -> str:
    """A share in at most 5 characters ("100.0%" would widen the table)."""
    return "100%" if value >= 0.9995 else f"{value:.1%}"


def table_row(cells: list[str]) -> str:
    return " ".join(f"{cell:>{width}}" for cell, (_, width) in zip(cells, COLUMNS))


def summary_row(elapsed: float, shift: float, s: dict[str, float], injected: str) -> str:
    return table_row([
        f"{elapsed:.0f}", f"{shift:.2f}", f"{s['requests']:.0f}", f"{s['errors']:.0f}", f"{s['p50_ms']:.1f}",
        f"{s['p99_ms']:.1f}", f"{s['events_in_window']:.0f}", f"{s['dropped']:.0f}", drifted(s),
        dataset(s, shift, injected), percent(s["failed_ratio"]), percent(s["outlier_ratio"]),
        "CHANGED" if s["schema_changes"] else "ok", f"{s['labels']:.0f}", ratio(s["accuracy"]),
        ratio(s["estimated_accuracy"]), ratio(s["challenger_accuracy"]), ratio(s["agreement"])])


# What the demo model answers: the approval probability in the seed's business bands (shares
# expected from the undrifted population: the drift moves applicants to refer_to_human), and the
# decision between two known classes. The compose stack configures the same (a test checks).
DEMO_OUTPUTS = {
    "approval_probability": {"type": "score", "bands": [
        {"name": "refer_to_human", "max": 0.6, "expected_share": 0.3},
        {"name": "high_rate", "min": 0.6, "max": 0.7},
        {"name": "mid_rate", "min": 0.71, "max": 0.9},
        {"name": "low_rate", "min": 0.9, "expected_share": 0.15}]},
    "decision": {"type": "class", "classes": ["approve", "refer"]},
}


def sidecar_config(workdir: Path, *, upstream_port: int, proxy_port: int, admin_port: int, model_pid: int,
                   challenger_port: int | None = None) -> Path:
    features = [{"name": n, "type": "numeric"} for n in NUMERIC] + [{"name": n, "type": "categorical"}
                                                                     for n in CATEGORICAL]
    config = {
        "model": {"name": MODEL_NAME, "version": "v1", "info": {"framework": "numpy", "task": "binary_classification"}},
        "upstream": {"url": f"http://127.0.0.1:{upstream_port}", "timeout_seconds": 10, "health_interval_seconds": 2},
        "proxy": {"listen_address": "127.0.0.1", "port": proxy_port},
        "admin": {"listen_address": "127.0.0.1", "port": admin_port},
        "payload": {"codec": "kserve_v1", "features": features},
        "window": {"max_events": 5000, "max_age_seconds": 900},
        # No training data in the demo: the first 1,000 (undrifted) requests are the reference.
        "reference": {"warmup_events": 1000},
        "drift": {"interval_seconds": 5},
        "process": {"pid": model_pid},
        "prediction_log": {"path": str(workdir / "predictions.jsonl"), "sample_rate": 0.05,
                           "max_bytes": 10 * 1024 * 1024, "backup_count": 2},
        # Events that fail a data quality check or are outliers, with the reasons.
        "guard": {"quarantine": {"path": str(workdir / "quarantine.jsonl"), "max_bytes": 10 * 1024 * 1024,
                                 "backup_count": 2}},
        "predictions": {"outputs": DEMO_OUTPUTS},
        # Requests, drift and performance per region.
        "segments": {"features": ["region"]},
        # The traffic sends each applicant's outcome a few seconds after the decision.
        "labels": {"enabled": True, "ttl_seconds": 600},
        "performance": {"task": "classification", "prediction_output": "decision",
                        "score_output": "approval_probability", "positive_class": "approve",
                        "negative_class": "refer", "threshold": 0.6, "interval_seconds": 5, "min_events": 50},
    }
    if challenger_port:
        config["shadow"] = {"challengers": [{"name": "loan-v2", "url": f"http://127.0.0.1:{challenger_port}"}]}
    path = workdir / "inferwatch.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def keep_running(processes: list[subprocess.Popen]) -> int:
    """``--keep``: every process left up until Ctrl-C (0), or until one of them ends (1)."""
    print("Still running (--keep): every link above answers until Ctrl-C.", flush=True)
    try:
        while all(process.poll() is None for process in processes):
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nStopping.")
        return 0
    print("A demo process ended; stopping the rest.", file=sys.stderr)
    return 1


def stop_processes(processes: list[subprocess.Popen]) -> None:
    """SIGTERM to each, the last started first; each waited for 10 s, then killed."""
    for process in reversed(processes):
        process.terminate()
    for process in processes:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def run_demo(*, duration: float = 60.0, proxy_port: int = 8080, admin_port: int = 9180, upstream_port: int = 8081,
             challenger_port: int = 8082, with_stack: bool = True, report_every: float = 5.0,
             keep: bool = False) -> int:
    """Run the demo for ``duration`` seconds and stop everything; with ``keep``, stop the traffic
    but leave the servers (and their links) up until Ctrl-C."""
    workdir = Path(tempfile.mkdtemp(prefix="inferwatch-demo-"))
    processes: list[subprocess.Popen] = []
    python = sys.executable
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        model = subprocess.Popen([python, "-m", "inferwatch.demo.model_server", "--port", str(upstream_port)],
                                 stdout=subprocess.DEVNULL, stderr=open(workdir / "model_server.log", "wb"), env=env)
        processes.append(model)
        if not wait_http(f"http://127.0.0.1:{upstream_port}/", 60, model):
            print(f"the demo model server did not start on port {upstream_port}; see {workdir / 'model_server.log'}",
                  file=sys.stderr)
            return 1
        challenger = subprocess.Popen([python, "-m", "inferwatch.demo.model_server", "--port", str(challenger_port),
                                       "--variant", "challenger"], stdout=subprocess.DEVNULL,
                                      stderr=open(workdir / "challenger.log", "wb"), env=env)
        processes.append(challenger)
        if not wait_http(f"http://127.0.0.1:{challenger_port}/", 60, challenger):
            print(f"the challenger model server did not start on port {challenger_port}; see "
                  f"{workdir / 'challenger.log'}", file=sys.stderr)
            return 1
        config = sidecar_config(workdir, upstream_port=upstream_port, proxy_port=proxy_port, admin_port=admin_port,
                                model_pid=model.pid, challenger_port=challenger_port)
        sidecar = subprocess.Popen([python, "-m", "inferwatch", "run", "--config", str(config)],
                                   stdout=subprocess.DEVNULL, stderr=open(workdir / "sidecar.log", "wb"), env=env)
        processes.append(sidecar)
        if not wait_http(f"http://127.0.0.1:{admin_port}/healthz", 30, sidecar):
            print(f"the sidecar did not start; see {workdir / 'sidecar.log'}", file=sys.stderr)
            return 1
        wait_http(f"http://127.0.0.1:{admin_port}/readyz", 10)
        model_url = f"/v1/models/{MODEL_NAME}"
        for line in (
                link_line("Model server", f"http://127.0.0.1:{upstream_port}{model_url}",
                          f"(POST {model_url}:predict)"),
                link_line("Challenger", f"http://127.0.0.1:{challenger_port}/", "(loan-v2: a copy of every request)"),
                link_line("Sidecar", f"http://127.0.0.1:{proxy_port}{model_url}",
                          f"(the proxy: POST {model_url}:predict)"),
                link_line("Metrics", f"http://127.0.0.1:{admin_port}/metrics"),
                link_line("Status", f"http://127.0.0.1:{admin_port}/v1/status")):
            print(line)
        print(f"{'Work files:':<14}{workdir} (config, logs, prediction and quarantine logs)")
        stack = None
        if with_stack:
            stack = start_demo_stack(workdir, admin_port)
            if stack is not None:
                processes.extend(stack.processes)
        traffic = TrafficGenerator(f"http://127.0.0.1:{proxy_port}/v1/models/{MODEL_NAME}:predict",
                                   duration=duration, labels_url=f"http://127.0.0.1:{admin_port}/v1/labels").start()
        print(f"\nSending traffic for {duration:g}s; the applicant population drifts after {duration / 2:g}s; "
              f"outcomes arrive as labels 2-8s after each decision.")
        print(f"Injected: a burst of outliers at {duration * traffic.outliers_at:g}-"
              f"{duration * (traffic.outliers_at + traffic.outliers_for):g}s, and `income` renamed "
              f"`annual_income` from {duration * traffic.rename_at:g}s (a schema change).\n"
              f"The outliers also move the window's distributions: drift shows from the burst, before the "
              f"population shifts.")
        print(LEGEND)
        print(table_row([header for header, _ in COLUMNS]))
        start = time.monotonic()
        injected = ""   # the last injection seen: the likely cause of drift while shift is 0
        while traffic.running():
            time.sleep(min(report_every, max(0.1, duration - (time.monotonic() - start))))
            if traffic.phase() != "-":
                injected = traffic.phase()
            try:
                s = summarize(requests.get(f"http://127.0.0.1:{admin_port}/metrics", timeout=5).text)
            except requests.RequestException as exc:
                print(f"cannot scrape the sidecar: {exc}")
                continue
            print(summary_row(time.monotonic() - start, traffic.shift(), s, injected), flush=True)
            if time.monotonic() - start >= duration:
                break
        traffic.stop()
        if stack is not None:
            try:
                series = prometheus_series(stack.query)
                print()
                print(textwrap.fill(f"Prometheus ({stack.prometheus_url}) holds: "
                                    + ", ".join(f"{what} {n}" for what, n in series.items()) + " series.",
                                    width=120, subsequent_indent="  ", break_on_hyphens=False))
            except Exception as exc:  # noqa: BLE001 - the summary is a courtesy; the demo ran
                print(f"\nPrometheus could not be queried: {exc}")
        print(f"\nDone: {traffic.sent} requests sent, {traffic.failed} failed, {traffic.labels_sent} labels sent. "
              f"Work files are in {workdir}.")
        if keep:
            return keep_running(processes)
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        stop_processes(processes)
