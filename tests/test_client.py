"""The push client against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from inferwatch.client import InferwatchClient
from inferwatch.ingest.push import parse_events


class Capture(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.posts: list[dict] = []
        self.lock = threading.Lock()
        self.status = 200
        self.gate = threading.Event()  # cleared: requests wait until it is set again
        self.gate.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def events(self) -> list[dict]:
        with self.lock:
            return [event for post in self.posts for event in post["body"]["events"]]


class Handler(BaseHTTPRequestHandler):
    server: Capture

    def do_POST(self) -> None:  # noqa: N802 (http.server naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.gate.wait(timeout=60)
        with self.server.lock:
            self.server.posts.append(
                {"path": self.path, "headers": dict(self.headers), "body": json.loads(body), "raw": body}
            )
            status = self.server.status
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    srv = Capture()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.gate.set()  # release a held request, should a test have failed while holding it
    srv.shutdown()
    srv.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_log_flush_and_event_shape(server):
    with InferwatchClient(server.url, flush_interval=30, model_version="v1") as client:
        pid = client.log({"age": 31, "city": "SF"}, prediction=0.93, prediction_id="p-1", timestamp=1700000000.0)
        other = client.log({"age": 45}, prediction=[0.2, 0.8], model_version="v2")
        assert pid == "p-1"
        assert isinstance(other, str) and other
        assert client.flush(timeout=10)
        assert client.sent_events == 2
    (post,) = server.posts
    assert post["path"] == "/v1/events"
    assert post["headers"]["Content-Type"] == "application/json"
    assert "Authorization" not in post["headers"]
    first, second = post["body"]["events"]
    assert first == {"prediction_id": "p-1", "timestamp": 1700000000.0, "features": {"age": 31, "city": "SF"},
                     "prediction": 0.93, "model_version": "v1"}
    assert second["prediction_id"] == other and second["model_version"] == "v2"
    # What the client sends is what the server parses.
    batches, rejections = parse_events(post["raw"], post["headers"]["Content-Type"], max_bytes=1 << 20)
    assert rejections == [] and sum(b.n for b in batches) == 2


def test_batching_by_size(server):
    client = InferwatchClient(server.url, batch_size=10, flush_interval=30)
    try:
        for i in range(35):
            client.log({"i": i})
        assert client.flush(timeout=10)
    finally:
        client.close()
    sizes = [len(post["body"]["events"]) for post in server.posts]
    assert sum(sizes) == 35
    assert max(sizes) <= 10
    assert sizes.count(10) >= 3
    assert [e["features"]["i"] for e in server.events()] == list(range(35))


def test_full_batch_is_sent_without_waiting_for_the_interval(server):
    client = InferwatchClient(server.url, batch_size=5, flush_interval=60)
    try:
        for i in range(5):
            client.log({"i": i})
        deadline = time.monotonic() + 5
        while not server.posts and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(server.events()) == 5
    finally:
        client.close()


def test_flush_interval_sends_partial_batches(server):
    client = InferwatchClient(server.url, batch_size=500, flush_interval=0.1)
    try:
        client.log({"a": 1})
        deadline = time.monotonic() + 5
        while not server.posts and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(server.events()) == 1
    finally:
        client.close()


def test_bearer_token(server):
    with InferwatchClient(server.url + "/", token="s3cret", flush_interval=30) as client:
        client.log({"a": 1})
        assert client.flush(timeout=10)
    assert server.posts[0]["headers"]["Authorization"] == "Bearer s3cret"
    assert server.posts[0]["path"] == "/v1/events"


def test_drops_when_queue_is_full(server):
    server.gate.clear()  # hold the sender's posts so the queue fills up
    client = InferwatchClient(server.url, batch_size=2, max_queue=5, flush_interval=30)
    try:
        caller = threading.Thread(target=lambda: [client.log({"i": i}) for i in range(100)])
        caller.start()
        # log() never blocks: all 100 calls return while the server answers no post (were log()
        # to wait for the sender, it would wait for the gate, i.e. forever).
        caller.join(timeout=30)
        assert not caller.is_alive()
        assert client.dropped >= 90
        server.gate.set()
        assert client.flush(timeout=20)
        assert client.sent_events + client.dropped == 100
    finally:
        client.close()


def test_down_server_never_raises(caplog):
    client = InferwatchClient(f"http://127.0.0.1:{free_port()}", flush_interval=0.05, timeout=0.5, backoff=0.01)
    try:
        for i in range(50):
            client.log({"i": i}, prediction=i)
        assert client.flush(timeout=20)
        assert client.failed_events == 50
        assert client.sent_events == 0
    finally:
        client.close()


def test_server_errors_are_retried_then_counted(server):
    server.status = 503
    with InferwatchClient(server.url, flush_interval=30, retries=2, backoff=0.01) as client:
        client.log({"a": 1})
        assert client.flush(timeout=10)
        assert client.failed_events == 1
    assert len(server.posts) == 3  # first try + 2 retries


def test_client_errors_are_not_retried(server):
    server.status = 400
    with InferwatchClient(server.url, flush_interval=30, backoff=0.01) as client:
        client.log({"a": 1})
        assert client.flush(timeout=10)
        assert client.failed_events == 1
    assert len(server.posts) == 1


def test_bad_input_fails_open(server):
    with InferwatchClient(server.url, flush_interval=30) as client:
        client.log(None)  # not a mapping: dropped, not raised
        client.log({"when": object(), "arr": np.array([1.5, 2.5]), "n": np.int64(3), "x": float("nan")})
        assert client.flush(timeout=10)
        assert client.dropped == 1
        assert client.sent_events == 1
    (event,) = server.events()
    assert event["features"]["arr"] == [1.5, 2.5] and event["features"]["n"] == 3
    assert isinstance(event["features"]["when"], str)


def test_features_are_copied(server):
    features = {"a": 1}
    with InferwatchClient(server.url, flush_interval=30) as client:
        client.log(features)
        features["a"] = 2
        client.flush(timeout=10)
    assert server.events()[0]["features"] == {"a": 1}


def test_close_flushes_and_later_logs_are_dropped(server):
    client = InferwatchClient(server.url, flush_interval=30)
    for i in range(3):
        client.log({"i": i})
    client.close()
    assert len(server.events()) == 3
    client.log({"i": 99})
    assert client.dropped == 1
    client.close()  # idempotent


def test_flush_with_nothing_logged_returns_immediately(server):
    with InferwatchClient(server.url) as client:
        assert client.flush(timeout=0)  # nothing to wait for: true without waiting at all
        assert client.flush(timeout=5)
