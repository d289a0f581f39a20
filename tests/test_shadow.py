"""Shadow challengers over real sockets: mirroring, comparison, challenger performance, isolation."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from conftest import Upstream, admin_url, proxy_url, sample, scrape, wait_for
from inferwatch.config import ConfigError, parse_config


class ConstantModel:
    """A challenger that answers every row with ``value`` (and records what it was sent)."""

    def __init__(self, value: float):
        seen = self.seen = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                seen.append((self.path, dict(self.headers), body))
                rows = json.loads(body).get("instances", [])
                out = json.dumps({"predictions": [value] * len(rows)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def challengers():
    twin, contrarian = Upstream(), ConstantModel(0.9)
    yield twin, contrarian
    twin.stop()
    contrarian.stop()


def predict(sidecar, pid: str, rows: int = 1) -> requests.Response:
    return requests.post(proxy_url(sidecar, "/v1/models/m:predict"), json={"instances": [[1.0, 2.0]] * rows},
                         headers={"X-Prediction-ID": pid}, timeout=5)


def test_challengers_are_mirrored_compared_and_scored(upstream, challengers, sidecar_factory, tmp_path):
    twin, contrarian = challengers
    log_path = tmp_path / "predictions.jsonl"
    sidecar = sidecar_factory(upstream.url, **{
        "labels.enabled": True, "performance.task": "classification", "performance.min_events": 4,
        "performance.interval_seconds": 0.1, "prediction_log.path": str(log_path),
        "shadow.challengers": [{"name": "twin", "url": twin.url}, {"name": "contrarian", "url": contrarian.url}]})
    for i in range(6):  # two rows each: the champion answers 0.25 (class 0) and 0.75 (class 1)
        assert predict(sidecar, f"r{i}", rows=2).json() == {"predictions": [0.25, 0.75]}

    def compared():
        text = scrape(sidecar)
        done = sum(sample(text, "inferwatch_shadow_comparisons_total", challenger=c) for c in ("twin", "contrarian"))
        return text if done == 24 else None

    text = wait_for(compared, 10)
    assert text, scrape(sidecar)
    for name in ("twin", "contrarian"):
        assert sample(text, "inferwatch_shadow_requests_total", challenger=name, code="200") == 6
        assert sample(text, "inferwatch_shadow_duration_seconds_count", challenger=name) == 6
    assert sample(text, "inferwatch_shadow_agreement_ratio", challenger="twin") == 1.0
    assert sample(text, "inferwatch_shadow_agreement_ratio", challenger="contrarian") == 0.5
    assert sample(text, "inferwatch_shadow_comparisons_total", challenger="contrarian", outcome="disagree") == 6
    # |0.9 - 0.25| = 0.65 and |0.9 - 0.75| = 0.15: six each side of 0.5
    assert sample(text, "inferwatch_shadow_prediction_difference_bucket", challenger="contrarian", le="0.25") == 6
    assert sample(text, "inferwatch_shadow_prediction_difference_bucket", challenger="twin", le="0.001") == 12
    # The challenger got the champion's request, with the champion's prediction id, marked as shadow.
    path, headers, body = contrarian.seen[0]
    assert path == "/v1/models/m:predict" and headers["X-Prediction-ID"].startswith("r")
    assert headers["X-Inferwatch-Shadow"] == "contrarian"
    # Shadow answers are not the champion's events.
    assert sample(text, "inferwatch_events_total") == 12
    status = requests.get(admin_url(sidecar, "/v1/status"), timeout=5).json()["shadow"]
    assert status["sample_rate"] == 1.0 and set(status["challengers"]) == {"twin", "contrarian"}

    labels = [{"prediction_id": f"r{i}-{j}", "label": j} for i in range(6) for j in range(2)]
    assert requests.post(admin_url(sidecar, "/v1/labels"), json={"labels": labels}, timeout=5).status_code == 202

    def scored():
        t = scrape(sidecar)
        return t if sample(t, "inferwatch_shadow_labelled_window_events", challenger="contrarian") == 12 else None

    text = wait_for(scored, 10)
    assert text
    assert sample(text, "inferwatch_model_performance", metric="accuracy") == 1.0
    assert sample(text, "inferwatch_shadow_performance", challenger="twin", metric="accuracy") == 1.0
    assert sample(text, "inferwatch_shadow_performance", challenger="contrarian", metric="accuracy") == 0.5
    assert sample(text, "inferwatch_shadow_performance", challenger="contrarian", metric="recall") == 1.0

    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    shadow_lines = [line for line in lines if line.get("challenger") == "contrarian"]
    assert len(shadow_lines) == 12 and {line["prediction_id"] for line in shadow_lines} == \
        {f"r{i}-{j}" for i in range(6) for j in range(2)}
    assert sum("challenger" not in line for line in lines) == 12  # the champion's own lines, as before


def test_a_slow_or_dead_challenger_never_delays_the_champion(upstream, sidecar_factory):
    slow = Upstream(delay=1.5)
    try:
        sidecar = sidecar_factory(upstream.url, **{
            "shadow.challengers": [{"name": "slow", "url": slow.url}, {"name": "dead", "url": "http://127.0.0.1:9"}],
            "shadow.timeout_seconds": 0.5, "shadow.concurrency": 1, "shadow.max_queue": 2})
        latencies = []
        for i in range(10):
            start = time.perf_counter()
            assert predict(sidecar, f"q{i}").status_code == 200
            latencies.append(time.perf_counter() - start)
        # Each mirrored copy waits up to 0.5 s (the dead one fails at once); were the champion held
        # up by them, every answer would take that long. A busy machine may slow one answer, not all.
        assert sorted(latencies)[len(latencies) // 2] < 0.25 and max(latencies) < 1.5, latencies
        text = wait_for(lambda: next((t for t in [scrape(sidecar)]
                                      if sample(t, "inferwatch_shadow_requests_total", challenger="slow") >= 3), None),
                        10)
        assert text
        assert sample(text, "inferwatch_shadow_requests_total", challenger="slow", code="timeout") >= 3
        assert sample(text, "inferwatch_shadow_requests_total", challenger="dead", code="connection") >= 1
        # One in flight and two queued per challenger: the rest were skipped and counted.
        assert sample(text, "inferwatch_shadow_dropped_total", challenger="slow", reason="queue_full") >= 5
        assert sample(text, "inferwatch_requests_total", code="200") == 10
    finally:
        slow.stop()


def test_large_bodies_are_bounded_by_bytes_not_only_by_copies(upstream, sidecar_factory):
    """A slow challenger and 40 kB bodies: the queue has room for 100 copies but only 100 kB, so
    after two bodies wait the rest are skipped as queue_bytes; the champion answers them all."""
    slow = Upstream(delay=5.0)   # busy for the whole test: nothing leaves the queue after the first copy
    try:
        sidecar = sidecar_factory(upstream.url, **{
            "shadow.challengers": [{"name": "slow", "url": slow.url}], "shadow.concurrency": 1,
            "shadow.max_queue": 100, "shadow.max_queue_bytes": 100_000, "shadow.timeout_seconds": 4.0})
        body = {"instances": [[0.123456] * 4000]}   # 40 kB of JSON
        for i in range(8):
            r = requests.post(proxy_url(sidecar, "/v1/models/m:predict"), json=body,
                              headers={"X-Prediction-ID": f"b{i}"}, timeout=5)
            assert r.status_code == 200
        text = scrape(sidecar)
        skipped = sample(text, "inferwatch_shadow_dropped_total", challenger="slow", reason="queue_bytes")
        # one in flight, two waiting (80 kB of the 100 kB), the others skipped (four when the eight
        # requests outran the challenger's task taking the first copy off the queue)
        assert 4 <= skipped <= 5, text
        assert sample(text, "inferwatch_shadow_dropped_total", challenger="slow", reason="queue_full") == 0
    finally:
        slow.stop()


def test_sample_rate_zero_mirrors_nothing(upstream, challengers, sidecar_factory):
    twin, _ = challengers
    sidecar = sidecar_factory(upstream.url, **{"shadow.challengers": [{"name": "twin", "url": twin.url}],
                                               "shadow.sample_rate": 0.0})
    for i in range(3):
        predict(sidecar, f"s{i}")
    sidecar.pipeline.drain()
    time.sleep(0.2)
    assert sample(scrape(sidecar), "inferwatch_shadow_requests_total") == 0


def test_shadow_config_errors_name_the_key():
    with pytest.raises(ConfigError) as err:
        parse_config({"upstream": {"url": "http://m:1"},
                      "shadow": {"sample_rate": 1.5, "challengers": [
                          {"name": "a b", "url": "http://c:1"}, {"name": "c", "url": "ftp://x"},
                          {"name": "c", "url": "http://m:1/"}, {"url": "http://d:1"}]}}, "f.yaml")
    assert set(err.value.problems) == {
        "f.yaml:shadow.challengers[3].name: required key is missing",
        "f.yaml:shadow.sample_rate: expected a number from 0 to 1, got 1.5",
        "f.yaml:shadow.challengers[0].name: expected 1-64 letters, digits, '_', '.', ':' or '-', got 'a b'",
        "f.yaml:shadow.challengers[1].url: expected an http(s) URL, got 'ftp://x'",
        "f.yaml:shadow.challengers[2].name: duplicate challenger 'c'",
        "f.yaml:shadow.challengers[2].url: is the champion (upstream.url); a challenger must be another server",
    }
