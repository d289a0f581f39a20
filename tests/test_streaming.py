"""Streaming passthrough over real sockets: server-sent events relayed as they are sent, long
streams under a short timeout, stalls and clients that leave mid-stream, large request bodies."""

import hashlib
import json
import time

import pytest
import requests

from conftest import proxy_url, sample, scrape, wait_for
from upstream_server import pattern


def read_events(response: requests.Response) -> tuple[bytes, list[tuple[float, dict]]]:
    """The whole body, and each event's (arrival time, data) as the client saw it arrive."""
    body, arrivals, buffer = b"", [], b""
    for chunk in response.iter_content(chunk_size=None):
        now = time.time()
        body += chunk
        buffer += chunk
        while b"\r\n\r\n" in buffer:
            event, buffer = buffer.split(b"\r\n\r\n", 1)
            for line in event.split(b"\r\n"):
                if line.startswith(b"data: {"):
                    arrivals.append((now, json.loads(line[6:])))
    return body, arrivals


def test_sse_events_reach_the_client_as_they_are_sent_and_unchanged(upstream, sidecar):
    with requests.get(proxy_url(sidecar, "/sse?n=20&interval=0.1"), stream=True, timeout=30) as r:
        assert r.status_code == 200 and r.headers["Content-Type"] == "text/event-stream"
        body, arrivals = read_events(r)
    assert [data["i"] for _, data in arrivals] == list(range(20))
    # The first event was in the client's hands before the model server sent the last one (1.9 s
    # later): relayed, not buffered. Buffered, the first arrives after the last is sent.
    first_arrival, last_sent = arrivals[0][0], arrivals[-1][1]["sent"]
    assert first_arrival < last_sent
    # and every event arrived after it was sent, in order
    assert all(arrived >= data["sent"] - 0.05 for arrived, data in arrivals)
    # byte for byte what the model server wrote (its events rebuilt from what they carried)
    sent = b"".join(b"event: token\r\ndata: " + json.dumps(data).encode() + b"\r\n\r\n" for _, data in arrivals)
    assert body == b": a comment line\r\n\r\n" + sent + b"data: [DONE]\n\n"
    text = scrape(sidecar)
    assert sample(text, "inferwatch_time_to_first_byte_seconds_count", endpoint="other") == 1
    ttfb = sample(text, "inferwatch_time_to_first_byte_seconds_sum", endpoint="other")
    total = sample(text, "inferwatch_request_duration_seconds_sum", endpoint="other")
    assert ttfb < total and total >= 1.9   # the duration is the whole stream's


def test_a_stream_longer_than_the_total_timeout_survives(upstream, sidecar_factory):
    # Before streaming, upstream.timeout_seconds (2 s here) bounded the whole answer: a 504.
    sidecar = sidecar_factory(upstream.url, **{"upstream.timeout_seconds": 2.0})
    with requests.get(proxy_url(sidecar, "/sse?n=31&interval=0.2"), stream=True, timeout=30) as r:
        assert r.status_code == 200
        body, arrivals = read_events(r)
    assert len(arrivals) == 31 and body.endswith(b"data: [DONE]\n\n")
    assert sample(scrape(sidecar), "inferwatch_upstream_errors_total", reason="timeout") == 0


def test_a_slow_answer_is_still_a_504_before_any_byte(upstream, sidecar_factory):
    sidecar = sidecar_factory(upstream.url, **{"upstream.timeout_seconds": 0.5})
    r = requests.get(proxy_url(sidecar, "/slow?seconds=3"), timeout=30)
    assert r.status_code == 504 and r.json()["error"] == "upstream_timeout"


def test_a_stall_mid_stream_ends_the_stream_and_counts_a_timeout(upstream, sidecar_factory):
    sidecar = sidecar_factory(upstream.url, **{"upstream.read_timeout_seconds": 0.5})
    received = b""
    with requests.get(proxy_url(sidecar, "/stall?seconds=5"), stream=True, timeout=30) as r:
        assert r.status_code == 200
        with pytest.raises(requests.exceptions.ChunkedEncodingError):  # cut, never completed
            for chunk in r.iter_content(chunk_size=None):
                received += chunk
    assert received == b"first"   # what was sent stays sent
    assert sample(scrape(sidecar), "inferwatch_upstream_errors_total", reason="read_timeout") == 1


def test_a_client_leaving_mid_stream_cancels_the_upstream_request(upstream, sidecar):
    with requests.get(proxy_url(sidecar, "/sse?n=100&interval=0.1&id=left"), stream=True, timeout=30) as r:
        next(r.iter_content(chunk_size=None))
    # the proxy's next write fails, it closes the upstream connection, the model server sees it
    status = lambda: requests.get(upstream.url + "/stream-status?id=left", timeout=5).json()["status"]  # noqa: E731
    assert wait_for(lambda: status() == "aborted", 10)
    assert wait_for(lambda: sample(scrape(sidecar), "inferwatch_client_disconnects_total") == 1, 10)
    assert sample(scrape(sidecar), "inferwatch_requests_in_flight") == 0


@pytest.mark.parametrize("chunked", [False, True])
def test_a_request_body_over_the_monitoring_cap_streams_to_the_upstream(upstream, sidecar_factory, chunked):
    sidecar = sidecar_factory(upstream.url, **{"proxy.max_monitored_body_bytes": 1024})
    body = bytes(range(256)) * 40_000   # ~10 MB
    data = (body[i:i + 65536] for i in range(0, len(body), 65536)) if chunked else body
    r = requests.post(proxy_url(sidecar, "/sink"), data=data, timeout=30)
    assert r.status_code == 200
    assert r.json() == {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_a_streamed_request_over_max_body_bytes_gets_413(upstream, sidecar_factory):
    sidecar = sidecar_factory(upstream.url, **{"proxy.max_body_bytes": 100_000, "proxy.max_monitored_body_bytes": 1024})
    chunks = (b"x" * 65536 for _ in range(10))   # chunked: no Content-Length to refuse up front
    # /sink reads the whole body before it answers (the predict route reads Content-Length bytes, so
    # it could answer a chunked upload before the sidecar had relayed 100 kB of it: a race)
    r = requests.post(proxy_url(sidecar, "/sink"), data=chunks, timeout=30)
    assert r.status_code == 413 and r.json()["error"] == "request_too_large"


def test_monitored_requests_beyond_the_budget_stream_unmonitored_and_are_counted(upstream, sidecar_factory):
    # A budget smaller than one body: the request is still served, not monitored, and counted.
    sidecar = sidecar_factory(upstream.url, **{"proxy.monitoring_budget_bytes": 1000})
    rows = {"instances": [[float(i), 1.0] for i in range(200)]}
    r = requests.post(proxy_url(sidecar, "/v1/models/m:predict"), json=rows, timeout=30)
    assert r.status_code == 200 and len(r.json()["predictions"]) == 200
    assert sidecar.pipeline.drain()
    text = scrape(sidecar)
    assert sample(text, "inferwatch_unmonitored_bodies_total", body="request", reason="budget") == 1
    assert sample(text, "inferwatch_monitoring_bytes_in_flight") == 0


@pytest.mark.parametrize("chunked", [False, True])
def test_a_large_response_passes_unchanged(upstream, sidecar, chunked):
    n = 50 * 1024 * 1024 + 123
    digest, size = hashlib.sha256(), 0
    with requests.get(proxy_url(sidecar, f"/big?bytes={n}&chunked={int(chunked)}"), stream=True, timeout=60) as r:
        assert r.status_code == 200
        for chunk in r.iter_content(chunk_size=1 << 20):
            digest.update(chunk)
            size += len(chunk)
    expected = hashlib.sha256()
    for block in pattern(n):
        expected.update(block)
    assert size == n and digest.hexdigest() == expected.hexdigest()
