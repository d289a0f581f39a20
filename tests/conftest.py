"""Shared fixtures: a real upstream model server process and an in-process sidecar on loopback."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from hypothesis import settings

from inferwatch.config import load_config
from inferwatch.sidecar import Sidecar

HERE = Path(__file__).parent

# CI (`.ci/run` sets CI=true) replays the same examples on every run, so a red CI is reproducible
# and never a new random draw; `make test` elsewhere keeps exploring fresh examples.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


class Upstream:
    def __init__(self, delay: float = 0.0):
        self.process = subprocess.Popen([sys.executable, str(HERE / "upstream_server.py"), "--delay", str(delay)],
                                        stdout=subprocess.PIPE, text=True)
        self.port = int(self.process.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture
def upstream():
    server = Upstream()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def dask_cluster_client():
    """A client of a two-worker Dask LocalCluster (worker processes), one per test module."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        with Client(cluster) as c:
            yield c


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def start_sidecar(upstream_url: str, **overrides) -> Sidecar:
    values = {
        "upstream.url": upstream_url,
        "upstream.health_interval_seconds": 0.2,
        "upstream.timeout_seconds": 2.0,
        "proxy.listen_address": "127.0.0.1",
        "proxy.port": 0,
        "admin.listen_address": "127.0.0.1",
        "admin.port": 0,
        "model.name": "m",
        "model.version": "1",
    }
    values.update(overrides)
    sidecar = Sidecar(load_config(None, values)).start()
    wait_for(lambda: sidecar.proxy is None or sidecar.proxy.up_value == 1.0, 5)
    return sidecar


@pytest.fixture
def sidecar_factory():
    started: list[Sidecar] = []

    def factory(upstream_url: str, **overrides) -> Sidecar:
        sidecar = start_sidecar(upstream_url, **overrides)
        started.append(sidecar)
        return sidecar

    yield factory
    for sidecar in started:
        sidecar.stop()


@pytest.fixture
def sidecar(upstream, sidecar_factory):
    return sidecar_factory(upstream.url)


def proxy_url(sidecar: Sidecar, path: str) -> str:
    return f"http://127.0.0.1:{sidecar.proxy_port}{path}"


def admin_url(sidecar: Sidecar, path: str) -> str:
    return f"http://127.0.0.1:{sidecar.admin_port}{path}"


def scrape(sidecar: Sidecar) -> str:
    return requests.get(admin_url(sidecar, "/metrics"), timeout=5).text


def sample(text: str, name: str, **labels) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def registry_samples(registry) -> dict[str, list]:
    """Every sample of a registry's exposition: name -> [(labels, value)]."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, list] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def python_lines(fn) -> int:
    """The lines of Python that ``fn()`` executes (code in C, numpy's loops included, runs none).

    A machine-independent measure of work: a per-row Python loop shows as thousands more lines at
    a larger input, whatever the machine's speed.
    """
    count = 0

    def tracer(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
        return tracer

    gc.collect()  # no collection (and no finaliser of another test's objects) runs inside fn
    gc.disable()
    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        fn()
    finally:
        sys.settrace(previous)
        gc.enable()
    return count


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on loopback right now (bound together, then released)."""
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def read_until(process: subprocess.Popen, marker: str, timeout: float) -> str:
    """The process's stdout up to (and including) the line containing ``marker``; the process is
    killed if the marker has not come within ``timeout`` seconds."""
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    seen = []
    try:
        for line in process.stdout:
            seen.append(line)
            if marker in line:
                break
    finally:
        timer.cancel()
    return "".join(seen)


@contextlib.contextmanager
def json_server(answer):
    """A model server on loopback that answers every POST with ``answer(path, request_json)``
    (a JSON-able object, status 200); yields its base URL and stops it after."""
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def do_POST(self):
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            data = json.dumps(answer(self.path, request)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()

