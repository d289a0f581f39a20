import re
import socket
import subprocess
import sys

import numpy as np

from inferwatch.demo.model import LoanModel, generate
from inferwatch.demo.runner import histogram_quantile


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


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


def test_demo_runs_end_to_end():
    proxy, admin, upstream, challenger = free_ports(4)
    result = subprocess.run(
        [sys.executable, "-m", "inferwatch", "demo", "--duration", "6", "--no-stack", "--proxy-port", str(proxy),
         "--admin-port", str(admin), "--upstream-port", str(upstream), "--challenger-port", str(challenger)],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "drifts after 3s" in result.stdout
    assert ", 0 failed," in result.stdout
    last_row = [line for line in result.stdout.splitlines() if line.strip()[:1].isdigit()][-1].split()
    requests_sent, in_window, labels_matched = float(last_row[2]), float(last_row[7]), float(last_row[15])
    assert requests_sent > 50 and in_window > 50 and labels_matched > 0   # delayed labels were joined
    assert 0.0 <= float(last_row[19]) <= 1.0   # the challenger was mirrored to and compared (v2 agree)
    assert int(re.search(r"(\d+) labels sent", result.stdout).group(1)) > 0


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
