"""``proxy.workers: N`` (serving/workers.py): N proxy processes on one port feeding one pipeline.

The same requests through one process and through two worker processes must leave the same
counters, the same histogram counts and the same window; a worker that dies is started again;
shutdown hands off every answered exchange; the configuration refuses what cannot work.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading

import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import Upstream, admin_url, proxy_url, sample, scrape, wait_for
from inferwatch.config import ConfigError, load_config

# Families whose values depend on time or on the process, not on the requests.
TIMED = ("inferwatch_request_duration_seconds", "inferwatch_time_to_first_byte_seconds",
         "inferwatch_upstream_probe", "inferwatch_uptime", "inferwatch_worker_", "inferwatch_queue_",
         "inferwatch_proxy_worker", "inferwatch_drift_", "inferwatch_reference_", "inferwatch_connections_",
         "inferwatch_collector_", "inferwatch_window_oldest", "inferwatch_last_")


def _traffic(sidecar) -> None:
    """Predictions on fresh and kept-alive connections, a metadata GET, an upstream error status,
    a payload the decoder refuses, a body over the cap (413) and a malformed request (400)."""
    url = proxy_url(sidecar, "/v1/models/m:predict")
    rng = np.random.default_rng(7)
    for i in range(40):  # a connection each: the kernel spreads them over the workers
        rows = rng.normal(size=(1 + i % 3, 3)).round(6).tolist()
        assert requests.post(url, json={"instances": rows}, timeout=10).status_code == 200
    with requests.Session() as session:
        for i in range(20):
            assert session.post(url, json={"instances": [[i, 0.5, -1.0]]}, timeout=10).status_code == 200
        assert session.get(proxy_url(sidecar, "/v1/models/m"), timeout=10).status_code == 404  # no metadata route
        assert session.get(proxy_url(sidecar, "/status/503"), timeout=10).status_code == 503
        r = session.post(url, data=b"{not json", headers={"Content-Type": "application/json"}, timeout=10)
        assert r.status_code == 400  # refused by the model server; the payload error is counted too
    assert requests.post(url, data=b"x" * 5000, timeout=10).status_code == 413
    assert requests.post(proxy_url(sidecar, "/v1/models/m:predict"), data=b"1",
                         headers={"Content-Length": "1", "Transfer-Encoding": "chunked"}, timeout=10).status_code == 400


def _comparable(text: str) -> dict[tuple, float]:
    """Every counter and histogram of the request path and the monitors, by name and labels (only
    the counts of the timed ones)."""
    out = {}
    for family in text_string_to_metric_families(text):
        if family.type not in ("counter", "histogram") or not family.name.startswith("inferwatch_") \
                or family.name.startswith(TIMED):
            if family.name.startswith(("inferwatch_request_duration", "inferwatch_time_to_first_byte")):
                out.update({(s.name, tuple(sorted(s.labels.items()))): s.value
                            for s in family.samples if s.name.endswith("_count")})
            continue
        for s in family.samples:
            if not s.name.endswith("_created"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_two_workers_count_and_window_exactly_what_one_process_does(upstream, sidecar_factory):
    settings = {"proxy.max_body_bytes": 4096, "window.max_events": 10_000}
    single = sidecar_factory(upstream.url, **settings)
    workers = sidecar_factory(upstream.url, **settings, **{"proxy.workers": 2})
    assert len(workers.proxy_workers.pids) == 2 and workers.proxy_port
    for sidecar in (single, workers):
        _traffic(sidecar)
    expected = sample(scrape(single), "inferwatch_requests_total")
    assert expected == 64  # a malformed request is counted apart
    wait_for(lambda: sample(scrape(workers), "inferwatch_requests_total") == expected
             and workers.pipeline.processed == single.pipeline.processed)
    # both workers served: each sent its own request counts
    served = [pid for pid, series in workers.proxy_workers.merger.last.items()
              if any(name == "inferwatch_requests" for name, _ in series)]
    assert len(served) == 2
    wait_for(lambda: _comparable(scrape(workers)) == _comparable(scrape(single)))
    assert _comparable(scrape(workers)) == _comparable(scrape(single))
    text = scrape(workers)
    assert sample(text, "inferwatch_proxy_workers") == 2
    assert sample(text, "inferwatch_connections_open", port="proxy") >= 0
    assert text.count("# HELP inferwatch_requests_total ") == 1  # one family, whatever the processes
    result = subprocess.run([shutil.which("promtool") or "promtool", "check", "metrics"], input=text,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    status = requests.get(admin_url(workers, "/v1/status"), timeout=5).json()["proxy"]
    assert status["workers"] == 2 and sorted(status["worker_pids"]) == sorted(workers.proxy_workers.pids)
    ready = requests.get(admin_url(workers, "/readyz"), timeout=5).json()
    assert ready["checks"]["proxy_workers"] == "2 of 2 running"
    assert sample(text, "inferwatch_malformed_requests_total") == 1
    assert sample(text, "inferwatch_payload_errors_total") == 1
    # the windows hold the same rows (in arrival order, which two processes may interleave)
    one, two = single.windows.get("1").snapshot(), workers.windows.get("1").snapshot()
    assert one.n == two.n == 79 + 20
    assert one.features.keys() == two.features.keys() and one.outputs.keys() == two.outputs.keys()
    for mine, theirs in [(one.features, two.features), (one.outputs, two.outputs)]:
        for name, column in mine.items():
            np.testing.assert_array_equal(np.sort(column.values), np.sort(theirs[name].values))
    assert sorted(one.prediction_ids) != sorted(two.prediction_ids)  # two sidecars, two id sources


def test_a_worker_that_dies_is_started_again_and_serving_goes_on(upstream, sidecar_factory, caplog):
    sidecar = sidecar_factory(upstream.url, **{"proxy.workers": 2})
    url = proxy_url(sidecar, "/v1/models/m:predict")
    for _ in range(10):
        assert requests.post(url, json={"instances": [[1.0, 2.0]]}, timeout=10).status_code == 200
    wait_for(lambda: sample(scrape(sidecar), "inferwatch_requests_total") == 10)
    victim = sidecar.proxy_workers.pids[0]
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: sample(scrape(sidecar), "inferwatch_proxy_worker_restarts_total") == 1, 30)
    assert wait_for(lambda: len(sidecar.proxy_workers.pids) == 2 and victim not in sidecar.proxy_workers.pids
                    and sample(scrape(sidecar), "inferwatch_proxy_workers") == 2, 30)
    for _ in range(10):
        assert requests.post(url, json={"instances": [[1.0, 2.0]]}, timeout=10).status_code == 200
    # what the dead worker had reported stays counted; the new one adds to it
    assert wait_for(lambda: sample(scrape(sidecar), "inferwatch_requests_total") == 20)
    # killed again soon after its start: a crash loop, so the next start waits twice as long
    assert sidecar.proxy_workers.workers[0].pid not in (None, victim)  # the victim was worker 0
    os.kill(sidecar.proxy_workers.workers[0].pid, signal.SIGKILL)
    assert wait_for(lambda: sample(scrape(sidecar), "inferwatch_proxy_worker_restarts_total") == 2, 30)
    assert wait_for(lambda: sample(scrape(sidecar), "inferwatch_proxy_workers") == 2, 30)
    waits = [r.getMessage().rsplit(" in ", 1)[-1] for r in caplog.records if "starting it again" in r.getMessage()]
    assert waits == ["0.5s", "1s"]


def test_shutdown_hands_off_every_answered_exchange(sidecar_factory):
    slow = Upstream(delay=0.3)
    try:
        sidecar = sidecar_factory(slow.url, **{"proxy.workers": 2, "shutdown.drain_timeout_seconds": 20})
        url = proxy_url(sidecar, "/v1/models/m:predict")
        answers: list[int] = []

        def call() -> None:
            answers.append(requests.post(url, json={"instances": [[1.0, 2.0]]}, timeout=20).status_code)

        threads = [threading.Thread(target=call) for _ in range(12)]
        for thread in threads:
            thread.start()
        wait_for(lambda: sample(scrape(sidecar), "inferwatch_requests_in_flight") >= 6, 10)
        assert sidecar.stop() == 0
        for thread in threads:
            thread.join(30)
        assert answers == [200] * 12
        assert sidecar.pipeline.processed == 12
        assert sidecar.metrics.requests.labels("m", "1", "/v1/models/{model}:predict", "POST", "200")._value.get() == 12
        assert sidecar.proxy_workers.workers and all(w.process.poll() is not None
                                                     for w in sidecar.proxy_workers.workers.values())
    finally:
        slow.stop()


@pytest.mark.parametrize("overrides, message", [
    ({"proxy.workers": 0}, "proxy.workers: expected a number of processes 1-64, got 0"),
    ({"proxy.workers": 2, "proxy.engine": "aiohttp"}, "proxy.workers: worker processes run the fast engine"),
])
def test_workers_the_configuration_refuses(overrides, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, {"upstream.url": "http://127.0.0.1:1", **overrides})
    assert message in str(info.value)
