"""The sidecar's memory follows its configuration, not the size or number of responses (issue 12
item 3, issue 13): the sidecar runs as its own process and psutil samples its RSS under the load."""

import hashlib
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
import requests

from conftest import wait_for
from upstream_server import pattern

MiB = 1024 * 1024
RSS_GROWTH_BOUND = 64 * MiB
# Monitoring copies bounded to 4 MiB each and 16 MiB at once, the queue to 16 MiB: with the
# streams' own buffers the sidecar stays far under the bound whatever passes through it.
CONFIG = """
upstream: {{url: "{upstream}", health_interval_seconds: 0.5}}
proxy: {{listen_address: 127.0.0.1, port: {proxy}, routes: ["/big"], prediction_methods: [GET],
        max_monitored_body_bytes: 4194304, monitoring_budget_bytes: 16777216}}
admin: {{listen_address: 127.0.0.1, port: {admin}}}
queue: {{max_bytes: 16777216}}
model: {{name: m, version: "1"}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sidecar_process(upstream, tmp_path):
    proxy, admin = free_port(), free_port()
    config = tmp_path / "inferwatch.yaml"
    config.write_text(CONFIG.format(upstream=upstream.url, proxy=proxy, admin=admin))
    process = subprocess.Popen([sys.executable, "-m", "inferwatch", "run", "--config", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{proxy}"

    def answers() -> bool:
        try:
            return requests.get(url + "/", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    try:
        assert wait_for(answers, 20), "the sidecar did not start"
        yield url, psutil.Process(process.pid)
    finally:
        process.terminate()
        process.wait(30)


def fetch(url: str, n: int) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with requests.get(f"{url}/big?bytes={n}&chunked=1", stream=True, timeout=300) as r:
        assert r.status_code == 200
        for chunk in r.iter_content(chunk_size=MiB):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def expected_digest(n: int) -> str:
    digest = hashlib.sha256()
    for block in pattern(n):
        digest.update(block)
    return digest.hexdigest()


class PeakRss:
    def __init__(self, process: psutil.Process):
        self.process, self.peak, self._stop = process, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def baseline(url: str, process: psutil.Process) -> int:
    fetch(url, 8 * MiB)  # warm: imports, pools and first buffers are not growth
    time.sleep(0.5)
    return process.memory_info().rss


def test_one_300mb_and_five_200mb_responses_at_once_keep_rss_bounded(sidecar_process):
    url, process = sidecar_process
    base = baseline(url, process)
    sizes = [300 * MiB] + [200 * MiB] * 5
    with PeakRss(process) as rss, ThreadPoolExecutor(len(sizes)) as pool:
        results = list(pool.map(lambda n: fetch(url, n), sizes))
    assert [size for size, _ in results] == sizes
    assert rss.peak - base < RSS_GROWTH_BOUND, f"RSS grew {(rss.peak - base) / MiB:.0f} MiB"


def test_a_1gb_response_passes_unchanged_with_rss_bounded(sidecar_process):
    url, process = sidecar_process
    base = baseline(url, process)
    n = 1024 * MiB
    with PeakRss(process) as rss:
        size, digest = fetch(url, n)
    assert size == n and digest == expected_digest(n)
    assert rss.peak - base < RSS_GROWTH_BOUND, f"RSS grew {(rss.peak - base) / MiB:.0f} MiB"
