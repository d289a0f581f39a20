"""Both ports under slow, idle and hostile clients, over real sockets and a real process.

No wall-clock bounds: each probe gets a generous timeout, where the old threaded admin server
did not answer at all. The latency figures are benchmarks/admin_attack.py's.
"""

from __future__ import annotations

import logging
import resource
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests
import yaml

from conftest import admin_url, proxy_url, sample, scrape, wait_for


class SlowClients:
    """Connections that each send one byte of a request head every ``interval`` seconds, never finishing."""

    HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 200

    def __init__(self, port: int, count: int, interval: float = 1.0):
        self.sockets = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]
        self.interval = interval
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)
        self._thread.start()

    def _trickle(self) -> None:
        for i in range(len(self.HEAD)):
            for s in self.sockets:
                try:
                    s.sendall(self.HEAD[i:i + 1])
                except OSError:
                    pass   # closed by the server: that is allowed
            self.sent += 1
            if self._stop.wait(self.interval):
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for s in self.sockets:
            s.close()


def idle_sockets(port: int, count: int) -> list[socket.socket]:
    out = []
    for _ in range(count):
        s = socket.socket()
        s.settimeout(5)
        s.connect(("127.0.0.1", port))
        out.append(s)
    return out


def test_probes_and_scrapes_answer_under_50_slow_and_50_idle_clients(upstream, sidecar_factory):
    sidecar = sidecar_factory(upstream.url)
    slow = SlowClients(sidecar.admin_port, 50)
    idle = idle_sockets(sidecar.admin_port, 50)
    try:
        time.sleep(1.5)   # every slow client is mid-head
        for _ in range(6):   # several seconds of attack, probing each second
            health = requests.get(admin_url(sidecar, "/healthz"), timeout=5)
            assert health.status_code == 200 and health.json() == {"status": "ok"}
            metrics = requests.get(admin_url(sidecar, "/metrics"), timeout=5)
            assert metrics.status_code == 200 and "inferwatch_build_info" in metrics.text
            assert requests.get(admin_url(sidecar, "/readyz"), timeout=5).status_code == 200
            time.sleep(1)
        assert slow.sent >= 6   # the slow clients were trickling throughout
        assert sample(scrape(sidecar), "inferwatch_connections_open", port="admin") >= 100
    finally:
        slow.close()
        for s in idle:
            s.close()


def test_slow_and_idle_connections_are_closed_by_their_timeouts(upstream, sidecar_factory):
    sidecar = sidecar_factory(upstream.url, **{
        "admin.header_timeout_seconds": 1.0, "admin.idle_timeout_seconds": 1.0,
        "proxy.header_timeout_seconds": 1.0, "proxy.idle_timeout_seconds": 1.0})
    for port_name, port in (("admin", sidecar.admin_port), ("proxy", sidecar.proxy_port)):
        slow = SlowClients(port, 3, interval=0.2)
        idle = idle_sockets(port, 3)
        kept = socket.create_connection(("127.0.0.1", port), timeout=5)   # one request, then idle
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert kept.recv(65536).startswith(b"HTTP/1.1 ")
        try:
            for s in [*idle, kept]:   # closed by the server: recv sees the end of the stream
                assert s.recv(1) == b""
            text = scrape(sidecar)
            assert wait_for(lambda: sample(scrape(sidecar), "inferwatch_connections_closed_total", port=port_name,
                                           reason="header_timeout") >= 6, 10)
            assert sample(text, "inferwatch_connections_closed_total", port=port_name, reason="idle_timeout") >= 1
        finally:
            slow.close()
            for s in [*idle, kept]:
                s.close()


def test_a_push_body_that_never_arrives_gets_408(upstream, sidecar_factory):
    sidecar = sidecar_factory(upstream.url, **{"admin.body_timeout_seconds": 1.0})
    with socket.create_connection(("127.0.0.1", sidecar.admin_port), timeout=10) as s:
        s.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n[")
        answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 408 ") and b'"error": "body_timeout"' in answer
    assert sample(scrape(sidecar), "inferwatch_connections_closed_total", port="admin", reason="body_timeout") == 1


def test_idle_connections_past_the_limit_evict_the_oldest_so_valid_requests_pass(upstream, sidecar_factory):
    sidecar = sidecar_factory(upstream.url, **{"admin.max_connections": 20, "proxy.max_connections": 20})
    idle = idle_sockets(sidecar.admin_port, 60) + idle_sockets(sidecar.proxy_port, 60)
    try:
        for _ in range(3):
            assert requests.get(admin_url(sidecar, "/healthz"), timeout=5).status_code == 200
            r = requests.post(proxy_url(sidecar, "/v1/models/m:predict"), json={"instances": [[1, 2]]}, timeout=5)
            assert r.status_code == 200
        text = scrape(sidecar)
        for port in ("admin", "proxy"):
            assert sample(text, "inferwatch_connections_open", port=port) <= 20
            assert sample(text, "inferwatch_connections_closed_total", port=port, reason="evicted") >= 40
    finally:
        for s in idle:
            s.close()


def _limit_descriptors(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    return apply


def test_more_idle_sockets_than_descriptors_do_not_stop_valid_requests_nor_flood_the_log(upstream, tmp_path):
    """The issue's attack at a smaller scale: more idle sockets than `ulimit -n` on both ports."""
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    config = tmp_path / "inferwatch.yaml"
    config.write_text(yaml.safe_dump({
        "upstream": {"url": upstream.url, "max_connections": 16},
        "proxy": {"listen_address": "127.0.0.1", "port": ports[0], "max_connections": 100},
        "admin": {"listen_address": "127.0.0.1", "port": ports[1], "max_connections": 50},
        "model": {"name": "m", "version": "1"}}))
    log_path = tmp_path / "stderr.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "inferwatch", "run", "--config", str(config)],
                                stderr=log_file, preexec_fn=_limit_descriptors(256))
    idle: list[socket.socket] = []
    try:
        def up():
            try:
                return requests.get(f"http://127.0.0.1:{ports[1]}/healthz", timeout=1).ok
            except requests.RequestException:
                return False

        assert wait_for(up, 30)
        for port, count in ((ports[0], 300), (ports[1], 100)):   # 400 sockets > 256 descriptors
            for _ in range(count):
                s = socket.socket()
                s.settimeout(5)
                s.connect(("127.0.0.1", port))
                idle.append(s)
        time.sleep(1)
        for _ in range(3):
            assert requests.get(f"http://127.0.0.1:{ports[1]}/healthz", timeout=5).status_code == 200
            r = requests.post(f"http://127.0.0.1:{ports[0]}/v1/models/m:predict", json={"instances": [[1]]},
                              timeout=5)
            assert r.status_code == 200
        text = requests.get(f"http://127.0.0.1:{ports[1]}/metrics", timeout=5).text
        assert sample(text, "inferwatch_connections_closed_total", port="proxy", reason="evicted") >= 200
    finally:
        for s in idle:
            s.close()
        proc.terminate()
        proc.wait(15)
    lines = log_path.read_text().splitlines()
    flood = [line for line in lines if "connection" in line or "accept" in line]
    assert len(flood) <= 4, lines[-20:]   # one rate-limited line per port and reason, not one per socket


def test_a_malformed_header_line_is_counted_and_never_logged(sidecar, caplog):
    with caplog.at_level(logging.DEBUG):
        with socket.create_connection(("127.0.0.1", sidecar.admin_port), timeout=5) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization Bearer s3cret-token\r\n\r\n")
            answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n")[0]
    logged = "\n".join(caplog.text.splitlines())
    assert "s3cret" not in logged and "Traceback" not in logged
    assert any("malformed HTTP request" in r.getMessage() for r in caplog.records)
    assert sample(scrape(sidecar), "inferwatch_malformed_requests_total") == 1


@pytest.mark.parametrize("path", ["/v1/events", "/v1/labels"])
def test_a_body_nested_100000_deep_gets_400_json(upstream, sidecar_factory, path):
    sidecar = sidecar_factory(upstream.url, **{"labels.enabled": True})
    for deep in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000):
        r = requests.post(admin_url(sidecar, path), data=deep, headers={"Content-Type": "application/json"},
                          timeout=10)
        assert r.status_code == 400 and r.json()["error"] and r.json()["detail"]


# --- every admin endpoint, any body: never 5xx, and every 4xx a JSON error ---------------------

ENDPOINTS = [("POST", "/v1/events"), ("POST", "/v1/cloudevents"), ("POST", "/v1/labels"), ("GET", "/metrics"),
             ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/v1/status"), ("POST", "/v1/status"),
             ("PUT", "/v1/events"), ("POST", "/nope")]
CONTENT_TYPES = [None, "application/json", "application/x-ndjson", "application/cloudevents+json",
                 "application/cloudevents-batch+json", "text/plain", "application/octet-stream"]


def _json_values():
    from hypothesis import strategies as st

    scalars = (st.none() | st.booleans() | st.integers(min_value=-(10 ** 400), max_value=10 ** 400)
               | st.floats(allow_nan=False) | st.text(max_size=20))
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.sampled_from(["features", "prediction", "events", "label", "prediction_id",
                                                           "model_version", "timestamp", "instances", "x"]),
                                          inner, max_size=4), max_leaves=12)


def _bodies():
    import json as _json

    from hypothesis import strategies as st

    def nested(depth_and_kind):
        depth, kind = depth_and_kind
        return {"list": b"[" * depth + b"]" * depth, "object": b'{"a":' * depth + b"1" + b"}" * depth,
                "events": b'{"events":[{"features":' + b"[" * depth + b"]" * depth + b"}]}"}[kind]

    def huge_number(digits):   # written out: beyond int()'s 4300-digit limit on purpose
        nines = b"9" * digits
        return (b'[{"features": {"a": ' + nines + b'}, "prediction": 1e999, "label": ' + nines
                + b', "prediction_id": "p", "timestamp": -' + nines + b"}]")

    as_json = _json_values().map(lambda v: _json.dumps(v).encode())
    return (st.binary(max_size=300) | as_json
            | st.tuples(st.sampled_from([10, 1_000, 5_000, 100_000]), st.sampled_from(["list", "object", "events"]))
            .map(nested)
            | st.integers(min_value=20, max_value=5_000).map(huge_number))


@pytest.fixture(scope="module")
def fuzz_sidecar(tmp_path_factory):
    from conftest import Upstream, start_sidecar

    upstream = Upstream()
    sidecar = start_sidecar(upstream.url, **{"labels.enabled": True, "admin.max_body_bytes": 1_000_000})
    yield sidecar
    sidecar.stop()
    upstream.stop()


def test_fuzz_every_admin_endpoint_answers_any_body_without_5xx(fuzz_sidecar):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    session = requests.Session()

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(endpoint=st.sampled_from(ENDPOINTS), body=_bodies(), content_type=st.sampled_from(CONTENT_TYPES),
           cloudevent=st.booleans(), gzip=st.booleans())
    def check(endpoint, body, content_type, cloudevent, gzip):
        method, path = endpoint
        headers = {}
        if content_type:
            headers["Content-Type"] = content_type
        if gzip:
            headers["Content-Encoding"] = "gzip"
        if cloudevent:
            headers.update({"ce-id": "fuzz", "ce-specversion": "1.0", "ce-source": "fuzz",
                            "ce-type": "org.kubeflow.serving.inference.response"})
        r = session.request(method, admin_url(fuzz_sidecar, path), data=body, headers=headers, timeout=30)
        assert r.status_code < 500, (r.status_code, r.text[:300])
        if r.status_code >= 400:
            problem = r.json()
            assert isinstance(problem, dict) and problem.get("error"), r.text[:300]

    check()
