"""How the proxy fails: malformed client requests, timeouts by limit, and 502 details.

Real sockets only: a raw client for bytes no HTTP library sends, a listening socket whose
accept queue is full for a connect that never completes, the test model server for the rest.
"""

import logging
import socket
import threading

import requests

from conftest import Upstream, proxy_url, sample, scrape, wait_for
from inferwatch.config import load_config
from inferwatch.sidecar import Sidecar

SECRET = "s3cr3t-token-value"


def send_raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        answer = b""
        try:
            while chunk := s.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    return answer


def test_malformed_header_lines_are_counted_and_logged_without_their_bytes(sidecar, caplog):
    caplog.set_level(logging.DEBUG)
    bad_heads = [
        f"Authorization Bearer {SECRET}\r\n",          # no colon
        f"Authorization: Bearer {SECRET}\x01\r\n",     # a control character in the value
        f" Authorization: Bearer {SECRET}\r\n",         # obsolete line folding
    ] * 3
    for head in bad_heads:
        answer = send_raw(sidecar.proxy_port, f"GET /echo HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode("latin-1"))
        assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400")
    assert SECRET not in caplog.text          # no header value, no traceback quoting it, at any level
    assert "Traceback" not in caplog.text
    assert sample(scrape(sidecar), "inferwatch_malformed_requests_total", model="m") == len(bad_heads)
    # one reason, one line per interval: a flood is not a log flood
    lines = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    # the port still serves well-formed requests
    assert requests.get(proxy_url(sidecar, "/status/200"), timeout=5).status_code == 200


def test_malformed_requests_are_counted_by_reason(sidecar):
    send_raw(sidecar.proxy_port, b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n")
    send_raw(sidecar.proxy_port, b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n")
    text = scrape(sidecar)
    assert sample(text, "inferwatch_malformed_requests_total") == 2
    assert sample(text, "inferwatch_malformed_requests_total", reason="too_long") == 1


def start_unprobed(upstream_url: str, **overrides) -> Sidecar:
    """A sidecar that does not wait for its upstream to be up (these upstreams never are)."""
    values = {"upstream.url": upstream_url, "proxy.listen_address": "127.0.0.1", "proxy.port": 0,
              "admin.listen_address": "127.0.0.1", "admin.port": 0, "model.name": "m", "model.version": "1"}
    values.update(overrides)
    return Sidecar(load_config(None, values)).start()


def test_connect_timeout_says_connect_and_is_counted_apart():
    # listen(0) with one connection queued and never accepted: the next SYN is dropped, so a
    # connect hangs (on loopback, without any other host)
    black_hole = socket.socket()
    black_hole.bind(("127.0.0.1", 0))
    black_hole.listen(0)
    filler = socket.create_connection(black_hole.getsockname(), timeout=5)
    sidecar = start_unprobed(f"http://127.0.0.1:{black_hole.getsockname()[1]}",
                             **{"upstream.connect_timeout_seconds": 0.3, "upstream.timeout_seconds": 30})
    try:
        r = requests.get(proxy_url(sidecar, "/status/200"), timeout=20)   # not 30 s: the connect limit
        assert r.status_code == 504 and r.json()["error"] == "upstream_timeout"
        detail = r.json()["detail"]
        assert "connect" in detail and "0.3s" in detail and "30s" not in detail
        text = scrape(sidecar)
        assert sample(text, "inferwatch_upstream_errors_total", reason="connect_timeout") == 1
        assert sample(text, "inferwatch_upstream_errors_total", reason="timeout") == 0
    finally:
        sidecar.stop()
        filler.close()
        black_hole.close()


def test_waiting_for_a_pooled_connection_is_its_own_limit_and_reason(upstream, sidecar_factory):
    sidecar = sidecar_factory(upstream.url, **{"upstream.max_connections": 1, "upstream.pool_timeout_seconds": 0.3,
                                               "upstream.timeout_seconds": 10})
    holder: dict = {}
    slow = threading.Thread(target=lambda: holder.update(r=requests.get(proxy_url(sidecar, "/slow?seconds=2"),
                                                                        timeout=20)))
    slow.start()
    try:
        assert wait_for(lambda: sample(scrape(sidecar), "inferwatch_requests_in_flight") == 1, 5)
        r = requests.get(proxy_url(sidecar, "/status/200"), timeout=20)
        assert r.status_code == 504 and r.json()["error"] == "upstream_timeout"
        assert "connections" in r.json()["detail"] and "0.3s" in r.json()["detail"]
    finally:
        slow.join(20)
    assert holder["r"].status_code == 200   # the one holding the connection was not disturbed
    text = scrape(sidecar)
    assert sample(text, "inferwatch_upstream_errors_total", reason="pool_timeout") == 1
    assert sample(text, "inferwatch_upstream_errors_total", reason="timeout") == 0
    # a slot came free again: the next request is served
    assert requests.get(proxy_url(sidecar, "/status/200"), timeout=20).status_code == 200


def test_502_details_are_short_and_free_of_upstream_content(upstream, sidecar_factory, caplog):
    caplog.set_level(logging.WARNING)
    sidecar = sidecar_factory(upstream.url)
    r = requests.get(proxy_url(sidecar, "/garbage"), timeout=5)   # ~16 kB of bad header line
    assert r.status_code == 502 and r.json()["error"] == "upstream_unavailable"
    assert "upstream-secret" not in r.text and len(r.content) < 300
    # the upstream's words are in the log instead, bounded
    logged = [rec.getMessage() for rec in caplog.records if "upstream-secret" in rec.getMessage()]
    assert logged and all(len(line) < 1000 for line in logged)

    dead = Upstream()
    port = dead.port
    dead.stop()
    down = sidecar_factory(f"http://127.0.0.1:{port}")
    r = requests.get(proxy_url(down, "/status/200"), timeout=5)
    assert r.status_code == 502 and str(port) not in r.text and "127.0.0.1" not in r.text
    assert len(r.content) < 300
    assert sample(scrape(down), "inferwatch_upstream_errors_total", reason="connection") == 1
