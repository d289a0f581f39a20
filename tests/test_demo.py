import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import free_ports, read_until
from inferwatch.demo.model import LoanModel, generate
from inferwatch.demo.runner import COLUMNS, dataset, histogram_quantile, summary_row, table_row



def test_loan_model_is_deterministic_and_shift_moves_scores():
    a, b = LoanModel.train(n=5000), LoanModel.train(n=5000)
    assert np.allclose(a.weights, b.weights)
    rng = np.random.default_rng(0)
    base = a.predict_proba(generate(4000, rng)).mean()
    shifted = a.predict_proba(generate(4000, rng, shift=1.0)).mean()
    assert 0.3 < base < 0.95 and shifted < base - 0.05


def test_histogram_quantile_matches_prometheus_interpolation():
    buckets = [(0.1, 50.0), (0.2, 100.0), (float("inf"), 100.0)]
    assert histogram_quantile(0.5, buckets) == 0.1
    assert abs(histogram_quantile(0.75, buckets) - 0.15) < 1e-12


def table(stdout: str) -> list[dict[str, str]]:
    """The demo's live table as rows of header -> cell (headers and cells are single words)."""
    lines = stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.split()[:2] == ["t(s)", "shift"])
    headers = lines[at].split()
    return [dict(zip(headers, line.split())) for line in lines[at + 1:] if line.strip()[:1].isdigit()]


def test_demo_runs_end_to_end():
    proxy, admin, upstream, challenger = free_ports(4)
    result = subprocess.run(
        [sys.executable, "-m", "inferwatch", "demo", "--duration", "6", "--no-stack", "--proxy-port", str(proxy),
         "--admin-port", str(admin), "--upstream-port", str(upstream), "--challenger-port", str(challenger)],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "drifts after 3s" in result.stdout
    assert ", 0 failed," in result.stdout
    last_row = table(result.stdout)[-1]
    assert float(last_row["reqs"]) > 50 and float(last_row["window"]) > 50
    assert float(last_row["labels"]) > 0   # delayed labels were joined
    assert 0.0 <= float(last_row["agree"]) <= 1.0   # the challenger was mirrored to and compared
    assert int(re.search(r"(\d+) labels sent", result.stdout).group(1)) > 0
    # fits 120 columns, and the legend is printed once
    assert max(len(line) for line in result.stdout.splitlines()) <= 120, result.stdout
    assert result.stdout.count("Columns:") == 1


def test_the_dataset_cell_says_why_it_drifted():
    """"DRIFTED" while shift is 0.00 read as a bug: the cell names the cause."""
    drifted = {"features_evaluated": 7.0, "dataset_drifted": 1.0}
    assert dataset(drifted, shift=0.0, injected="outliers") == "DRIFT:outliers"
    assert dataset(drifted, shift=0.4, injected="outliers") == "DRIFT:shift"
    assert dataset({**drifted, "dataset_drifted": 0.0}, shift=0.0, injected="outliers") == "ok"
    assert dataset({"features_evaluated": 0.0, "dataset_drifted": 0.0}) == "warm-up"
    assert all(len(dataset(drifted, 0.0, cause)) <= width for cause in ("outliers", "renamed", "")
               for header, width in COLUMNS if header == "dataset")


def test_a_row_of_extreme_values_still_fits_120_columns():
    s = {"requests": 999999.0, "errors": 999.0, "p50_ms": 999.9, "p99_ms": 9999.9, "events_in_window": 99999.0,
         "dropped": 9999.0, "drifted_features": 10.0, "features_evaluated": 10.0, "dataset_drifted": 1.0,
         "failed_ratio": 1.0, "outlier_ratio": 0.999, "schema_changes": 1.0, "labels": 999999.0,
         "accuracy": 1.0, "estimated_accuracy": float("nan"), "challenger_accuracy": 0.5, "agreement": 1.0}
    assert len(summary_row(9999.0, 1.0, s, "outliers")) <= 120
    assert len(table_row([header for header, _ in COLUMNS])) <= 120


def printed_links(stdout: str) -> list[str]:
    """Every URL the demo printed as a link (a POST target is named after "POST", not linked)."""
    return [url for url in re.findall(r"(?<!POST )(https?://[^\s)]+)", stdout)]



def test_keep_leaves_every_printed_link_up_until_ctrl_c():
    import signal

    import requests

    proxy, admin, upstream, challenger = free_ports(4)
    process = subprocess.Popen(
        [sys.executable, "-m", "inferwatch", "demo", "--duration", "4", "--no-stack", "--keep",
         "--proxy-port", str(proxy), "--admin-port", str(admin), "--upstream-port", str(upstream),
         "--challenger-port", str(challenger)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out = read_until(process, "until Ctrl-C", 120)
        assert "until Ctrl-C" in out, out
        links = printed_links(out)
        assert len(links) >= 5, out
        for url in links:   # the traffic is over, and every link still answers
            assert requests.get(url, timeout=10).status_code == 200, url
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    with pytest.raises(requests.ConnectionError):   # everything stopped with it
        requests.get(f"http://127.0.0.1:{admin}/metrics", timeout=5)


def test_the_demo_traffic_injects_outliers_and_a_schema_change_the_guard_finds():
    """The traffic's outlier burst is scored as outliers (about `outlier_share` of the events) and its
    renamed column is a schema change, against a reference of the traffic's own clean phase."""
    import time

    from inferwatch.config import load_config
    from inferwatch.demo.traffic import TrafficGenerator
    from inferwatch.ingest.events import EventBatch, rows_to_columns
    from inferwatch.monitors.guard import Guard
    from inferwatch.reference import build_profile

    traffic = TrafficGenerator("http://127.0.0.1:1/unused", duration=100.0)
    rng = np.random.default_rng(3)

    def rows_at(progress: float, n: int) -> dict:
        traffic.started = time.monotonic() - progress * traffic.duration
        return rows_to_columns(traffic._instances(n, rng)[0])

    assert traffic.outliers_at > 0.05 and traffic.rename_at > traffic.outliers_at + traffic.outliers_for
    profile = build_profile({"feature": rows_at(0.01, 5000)})
    cfg = load_config(None, {"model.name": "loan", "guard.duplicates": False})
    guard = Guard(cfg.guard, model=cfg.model.name, window_capacity=cfg.window.max_events,
                  window_max_age_seconds=cfg.window.max_age_seconds, reference=lambda: profile)
    clean = EventBatch(2000, features=rows_at(0.1, 2000))
    guard.observe("v1", clean)
    assert len(clean.annotations or {}) < 0.01 * 2000
    burst = EventBatch(2000, features=rows_at(traffic.outliers_at + 0.01, 2000))
    guard.observe("v1", burst)
    assert abs(len(burst.annotations) / 2000 - traffic.outlier_share) < 0.03
    guard.observe("v1", EventBatch(300, features=rows_at(traffic.rename_at + 0.01, 300)))
    view = guard.status()["versions"]["v1"]["schema"]
    assert view["possible_rename"] == {"from": "income", "to": "annual_income"}


def test_alert_lines_tell_alerts_of_one_name_apart():
    from inferwatch.demo.stack import describe_alert

    def line(**labels):
        labels = {"team": "data", "severity": "warning", "model": "loan", "model_version": "v1", **labels}
        return describe_alert("data-chat", {"status": "firing", "labels": labels, "annotations": {"summary": "s"}})

    # the multivariate alert fires once per method: the line names it
    assert "method=correlation" in line(alertname="InferwatchMultivariateDrift", method="correlation")
    assert "method=pca_reconstruction" in line(alertname="InferwatchMultivariateDrift", method="pca_reconstruction")
    # a feature's drift is told apart by the feature; its method (always the configured one) is noise
    feature_line = line(alertname="InferwatchFeatureDrift", feature="age", method="psi")
    assert "feature=age" in feature_line and "method=" not in feature_line
