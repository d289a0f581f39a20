"""Graceful shutdown (issue 12, item 2): nothing the sidecar acknowledged is lost on SIGTERM.

A real ``inferwatch run`` subprocess with a large monitoring queue takes push load (and proxied
requests) from threads; then SIGTERM. Every event answered 2xx with ``accepted`` must be in the
prediction log (sample rate 1) and in ``inferwatch_events_total``; a drain that cannot finish
in ``shutdown.drain_timeout_seconds`` must say how many were lost and exit non-zero.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests
import yaml

from conftest import Upstream, admin_url, sample, scrape, wait_for

FEATURES = [f"f{i}" for i in range(20)]


@pytest.fixture
def slow_upstream():
    """Every answer takes 0.3 s, so proxied requests are in flight whenever SIGTERM comes."""
    server = Upstream(delay=0.3)
    yield server
    server.stop()


def _config(tmp_path: Path, upstream_url: str, **shutdown) -> Path:
    cfg = {
        "model": {"name": "m", "version": "1"},
        "upstream": {"url": upstream_url, "health_interval_seconds": 0.2},
        "proxy": {"listen_address": "127.0.0.1", "port": 0},
        "admin": {"listen_address": "127.0.0.1", "port": 0},
        "queue": {"max_items": 100000, "max_bytes": 1073741824},
        "prediction_log": {"path": str(tmp_path / "predictions.jsonl"), "sample_rate": 1.0,
                           "max_bytes": 4 * 1024**3},
        "reference": {"warmup_events": 500},
        "drift": {"interval_seconds": 1},
        "shutdown": shutdown,
    }
    path = tmp_path / "inferwatch.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class Run:
    """``inferwatch run`` as a subprocess; its ports read from the banner on stderr."""

    def __init__(self, config: Path):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen([sys.executable, "-m", "inferwatch", "run", "--config", str(config)],
                                        stderr=subprocess.PIPE, text=True, env=env)
        self.lines: list[str] = []
        self._banner = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        assert self._banner.wait(30), "no banner: " + "".join(self.lines)
        banner = next(line for line in self.lines if "metrics on" in line)
        self.admin = "http://127.0.0.1:" + re.search(r":(\d+)/metrics", banner).group(1)
        self.proxy = "http://127.0.0.1:" + re.search(r"127\.0\.0\.1:(\d+) ->", banner).group(1)

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)
            if "metrics on" in line:
                self._banner.set()

    def terminate(self, timeout: float = 120) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            self._reader.join(10)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    @property
    def log(self) -> str:
        return "".join(self.lines)


class Load:
    """Push threads (batches of events) and one proxy thread; every id acknowledged is recorded."""

    def __init__(self, run: Run, pushers: int = 2, batch: int = 200, proxiers: int = 2, instances: int = 200):
        self.run, self.batch, self.instances = run, batch, instances
        self.acked: set[str] = set()
        self.refused = 0
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._push, args=(t,), daemon=True) for t in range(pushers)]
        self.threads += [threading.Thread(target=self._proxy, args=(t,), daemon=True) for t in range(proxiers)]
        for thread in self.threads:
            thread.start()

    def _push(self, t: int) -> None:
        session = requests.Session()
        # One encoded body, its ids made unique per request by a prefix (the client must not be
        # the bottleneck: the load has to outrun the sidecar's worker).
        template = json.dumps({"events": [
            {"prediction_id": f"@@-{j}", "features": {f: (j * 7 + k) % 13 for k, f in enumerate(FEATURES)},
             "prediction": j % 2} for j in range(self.batch)]})
        headers = {"Content-Type": "application/json"}
        i = 0
        while not self.stop.is_set():
            prefix = f"p{t}-{i}"
            i += 1
            try:
                response = session.post(self.run.admin + "/v1/events", data=template.replace("@@", prefix),
                                        headers=headers, timeout=30)
            except requests.RequestException:
                continue  # refused or reset: nothing was acknowledged
            accepted = response.json().get("accepted") if response.ok else 0
            if accepted == self.batch:
                with self._lock:
                    self.acked.update(f"{prefix}-{j}" for j in range(self.batch))
            elif accepted:
                raise AssertionError(f"partial acceptance cannot be attributed: {response.text[:300]}")
            else:
                with self._lock:
                    self.refused += 1

    def _proxy(self, t: int) -> None:
        """Proxied requests of many instances: the proxy only forwards bytes, the worker decodes
        them, so this load outruns the worker and builds the backlog a shutdown has to drain."""
        session = requests.Session()
        body = json.dumps({"instances": [[(j * 7 + k) % 13 for k in range(len(FEATURES))]
                                         for j in range(self.instances)]})
        headers = {"Content-Type": "application/json"}
        i = 0
        while not self.stop.is_set():
            pid = f"x{t}-{i}"
            i += 1
            try:
                response = session.post(self.run.proxy + "/v1/models/m:predict", data=body,
                                        headers={**headers, "X-Prediction-ID": pid}, timeout=30)
            except requests.RequestException:
                continue
            if response.status_code == 200:
                ids = [pid] if self.instances == 1 else [f"{pid}-{j}" for j in range(self.instances)]
                with self._lock:
                    self.acked.update(ids)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)


def _logged_ids(path: Path) -> list[str]:
    ids: list[str] = []
    for file in sorted(path.parent.glob(path.name + "*")):
        with file.open() as lines:
            ids += [json.loads(line)["prediction_id"] for line in lines]
    return ids


def _events_counted(log: str) -> int:
    match = re.search(r"inferwatch_events_total (\d+)", log)
    assert match, "the shutdown summary names the events counted:\n" + log[-3000:]
    return int(match.group(1))


def test_sigterm_under_push_load_loses_nothing_acknowledged(tmp_path, slow_upstream):
    config = _config(tmp_path, slow_upstream.url, drain_timeout_seconds=120, readiness_delay_seconds=0.5)
    run = Run(config)
    load = Load(run, pushers=3, batch=500, proxiers=6, instances=1)
    try:
        # Build a backlog: the pushers outrun the worker (it is far behind within a few seconds).
        wait_for(lambda: len(load.acked) >= 60000, timeout=60, interval=0.1)
        code = run.terminate()
    finally:
        load.finish()
        run.kill()
    acked = load.acked
    assert len(acked) >= 10000, f"too little load to test anything ({len(acked)} acknowledged)"
    logged = _logged_ids(tmp_path / "predictions.jsonl")
    missing = acked - set(logged)
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged events are not in the prediction log"
    assert len(logged) == len(set(logged)), "an event was logged twice"
    # Every event in the log was counted (the proxy's requests and the pushed events alike).
    assert _events_counted(run.log) == len(logged)
    assert code == 0, run.log[-3000:]


def test_readiness_fails_first_on_sigterm(tmp_path, upstream):
    run = Run(_config(tmp_path, upstream.url, readiness_delay_seconds=3))
    try:
        assert wait_for(lambda: requests.get(run.admin + "/readyz", timeout=5).status_code == 200, 10)
        run.process.send_signal(signal.SIGTERM)
        # During the pause the load balancer sees "not ready" while requests are still served.
        status = wait_for(lambda: requests.get(run.admin + "/readyz", timeout=5).status_code == 503, 2)
        assert status, "readiness did not turn 503 after SIGTERM"
        body = requests.get(run.admin + "/readyz", timeout=5).json()
        assert body["checks"]["shutdown"] == "draining"
        assert requests.post(run.proxy + "/v1/models/m:predict", json={"instances": [[1.0]]},
                             timeout=5).status_code == 200
        assert run.process.wait(60) == 0
    finally:
        run.kill()


def test_a_drain_cut_short_accounts_for_every_acknowledged_event(tmp_path, upstream):
    config = _config(tmp_path, upstream.url, drain_timeout_seconds=0.05, readiness_delay_seconds=0)
    run = Run(config)
    load = Load(run, pushers=3, batch=500, proxiers=2, instances=1)  # one row a request: counted exactly
    try:
        wait_for(lambda: len(load.acked) >= 60000, timeout=60, interval=0.1)
        code = run.terminate()
    finally:
        load.finish()
        run.kill()
    logged = set(_logged_ids(tmp_path / "predictions.jsonl"))
    acked = load.acked
    match = re.search(r"(\d+) acknowledged events were not processed", run.log)
    # Whether a backlog is left after 0.05 s depends on how far behind the worker was at the
    # signal (on a quiet machine it usually is; under load it may have caught up). Either way the
    # account must be exact: exit 0 only when nothing acknowledged is missing, and otherwise the
    # logged count is exactly what is missing from the prediction log. (In process, the lossy path
    # is forced: test_what_a_drain_cannot_reach_is_counted_and_returned.)
    if code == 0:
        assert match is None and not acked - logged, (len(acked - logged), run.log[-3000:])
    else:
        assert match, run.log[-3000:]
        lost = int(match.group(1))
        assert lost > 0
        assert len(acked - logged) == lost, (len(acked), len(logged), lost)


# --- the parts, in process ---------------------------------------------------------------------


def test_push_answers_503_once_the_queue_is_closed(sidecar_factory):
    sidecar = sidecar_factory("http://127.0.0.1:9", **{"proxy.enabled": False})
    url = admin_url(sidecar, "/v1/events")
    assert requests.post(url, json=[{"features": {"a": 1}}], timeout=5).status_code == 200
    sidecar.pipeline.queue.close()   # what shutdown does before draining
    r = requests.post(url, json=[{"features": {"a": 1}}], timeout=5)
    assert r.status_code == 503 and r.json()["error"] == "shutting_down"
    assert r.headers["Retry-After"] == "1"
    assert requests.get(admin_url(sidecar, "/healthz"), timeout=5).status_code == 200


def test_what_a_drain_cannot_reach_is_counted_and_returned(sidecar_factory):
    sidecar = sidecar_factory("http://127.0.0.1:9", **{"proxy.enabled": False})
    sidecar.pipeline.stop()   # a worker that never gets to the queue
    url = admin_url(sidecar, "/v1/events")
    r = requests.post(url, json=[{"features": {"a": i}} for i in range(7)], timeout=5)
    assert r.json()["accepted"] == 7
    result = sidecar.pipeline.shutdown(0.1)
    assert result.events_lost == 7
    assert sample(scrape(sidecar), "inferwatch_events_dropped_total", reason="drain_timeout") == 7
    assert not sidecar.pipeline.submit_batch("1", _one_event())   # closed: refused and counted
    assert sample(scrape(sidecar), "inferwatch_events_dropped_total", reason="shutdown") == 1


def _one_event():
    from inferwatch.ingest.events import EventBatch

    return EventBatch(1, features={"a": [1]}, outputs={})
