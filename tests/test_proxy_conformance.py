"""HTTP/1.1 conformance of the proxy's data plane, on raw sockets, for both ``proxy.engine`` values.

The model server here is a small socket server of our own that records every byte it receives
and answers each path in a fixed, sometimes rude, way (bodiless answers, chunks, an answer cut
short), so each test can say exactly what the client saw and what reached the model server.
"""

from __future__ import annotations

import hashlib
import json
import socket
import socketserver
import threading
import time

import pytest

from conftest import sample, scrape

ENGINES = ("fast", "aiohttp")
BINARY = bytes(range(256)) * 4


# --- the recording model server ----------------------------------------------------------------


def read_until(sock: socket.socket, buffer: bytearray, marker: bytes, timeout: float = 10.0) -> bool:
    sock.settimeout(timeout)
    while marker not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            return False
        buffer += chunk
    return True


def read_exact(sock: socket.socket, buffer: bytearray, n: int) -> bytes:
    while len(buffer) < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buffer += chunk
    out = bytes(buffer[:n])
    del buffer[:n]
    return out


def read_chunked(sock: socket.socket, buffer: bytearray) -> bytes:
    body = b""
    while True:
        read_until(sock, buffer, b"\r\n")
        line, _, rest = bytes(buffer).partition(b"\r\n")
        buffer[:] = rest
        size = int(line.split(b";")[0], 16)
        if size == 0:
            read_until(sock, buffer, b"\r\n")
            _, _, rest = bytes(buffer).partition(b"\r\n")
            buffer[:] = rest
            return body
        body += read_exact(sock, buffer, size)
        read_exact(sock, buffer, 2)


class RecordingHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        buffer = bytearray()
        while read_until(sock, buffer, b"\r\n\r\n", timeout=30):
            head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
            buffer[:] = rest
            lines = head.split(b"\r\n")
            method, target, _ = lines[0].split(b" ")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            if b"chunked" in headers.get(b"transfer-encoding", b""):
                body = read_chunked(sock, buffer)
            else:
                body = read_exact(sock, buffer, int(headers.get(b"content-length", b"0")))
            self.server.received.append((head, body))  # type: ignore[attr-defined]
            if not self.answer(sock, method, target.decode(), head, body):
                return

    def answer(self, sock: socket.socket, method: bytes, path: str, head: bytes, body: bytes) -> bool:
        if path == "/binary":
            sock.sendall(b"HTTP/1.1 200 OK\r\nX-MiXeD-Case: a  b\r\nContent-Length: %d\r\n\r\n" % len(BINARY)
                         + (b"" if method == b"HEAD" else BINARY))
        elif path == "/echo":
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        elif path == "/head":
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n" + (b"" if method == b"HEAD" else b"hello world"))
        elif path == "/204":
            sock.sendall(b"HTTP/1.1 204 No Content\r\nX-Kind: none\r\n\r\n")
        elif path == "/304":
            sock.sendall(b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n")
        elif path == "/chunked":
            sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for part in (b"first,", b"second,", b"third"):
                sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
                time.sleep(0.02)
            sock.sendall(b"0\r\n\r\n")
        elif path == "/cut":  # promises 100 bytes, sends 7 and closes
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
            return False
        elif path == "/vanish":  # closes without a byte of an answer
            return False
        elif path == "/sha":
            digest = hashlib.sha256(body).hexdigest().encode()
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(digest) + digest)
        else:
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        return True


class RecordingUpstream(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), RecordingHandler)
        self.received: list[tuple[bytes, bytes]] = []
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def targets(self) -> list[bytes]:
        """What reached the model server, in order, without the sidecar's health probes."""
        return [t for t in (head.split(b"\r\n")[0].split(b" ")[1] for head, _ in list(self.received)) if t != b"/health"]

    def head_of(self, target: bytes) -> bytes:
        return next(head for head, _ in reversed(self.received) if head.split(b" ")[1] == target)

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


@pytest.fixture
def recording():
    server = RecordingUpstream()
    yield server
    server.stop()


@pytest.fixture(params=ENGINES)
def proxy(request, recording, sidecar_factory):
    sidecar = sidecar_factory(recording.url, **{"proxy.engine": request.param,
                                                "upstream.health_path": "/health"})
    time.sleep(0.05)
    recording.received.clear()  # the health probe's requests
    return sidecar


# --- the client side ---------------------------------------------------------------------------


class Client:
    """One raw connection to the proxy; reads answers one at a time, by their own framing."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = bytearray()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def answer(self, method: str = "GET") -> tuple[int, dict[str, str], bytes, bytes]:
        """(status, headers lower-cased, body, the head as received)."""
        assert read_until(self.sock, self.buffer, b"\r\n\r\n"), f"no answer, got {bytes(self.buffer)!r}"
        head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        self.buffer[:] = rest
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.decode().strip().lower()] = value.decode("latin-1").strip()
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif "chunked" in headers.get("transfer-encoding", ""):
            body = read_chunked(self.sock, self.buffer)
        elif "content-length" in headers:
            body = read_exact(self.sock, self.buffer, int(headers["content-length"]))
        else:  # delimited by the close
            while chunk := self.sock.recv(65536):
                self.buffer += chunk
            body, self.buffer = bytes(self.buffer), bytearray()
        return status, headers, body, head

    def closed(self, timeout: float = 10.0) -> bool:
        """The proxy closed the connection (EOF or reset) with nothing more to read."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536) == b"" and not self.buffer
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def client(proxy):
    c = Client(proxy.proxy_port)
    yield c
    c.close()


def get(path: str, method: str = "GET", extra: str = "") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


# --- the tests ---------------------------------------------------------------------------------


def test_bytes_and_headers_pass_unchanged(client, recording):
    client.send(get("/binary", extra="X-Client: Keep  This\r\n"))
    status, headers, body, head = client.answer()
    assert status == 200 and body == BINARY
    assert b"X-MiXeD-Case: a  b" in head          # the name's case and the value's spaces as sent
    sent_head = recording.head_of(b"/binary")
    assert b"\r\nX-Client: Keep  This" in sent_head


def test_keep_alive_serves_many_requests_on_one_connection(client, recording):
    for i in range(5):
        client.send(get(f"/echo-{i}"))
        status, headers, body, _ = client.answer()
        assert status == 200 and body == b"ok"
        assert headers.get("connection", "").lower() != "close"
    assert recording.targets() == [f"/echo-{i}".encode() for i in range(5)]


def test_connection_close_is_honoured(client):
    client.send(get("/x", extra="Connection: close\r\n"))
    status, _, body, _ = client.answer()
    assert status == 200 and body == b"ok"
    assert client.closed()


def test_pipelined_requests_are_answered_in_order(client, recording):
    client.send(get("/head") + b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nfirst"
                + get("/binary") + b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\nsecond")
    answers = [client.answer()[2] for _ in range(4)]
    assert answers == [b"hello world", b"first", BINARY, b"second"]
    assert recording.targets() == [b"/head", b"/echo", b"/binary", b"/echo"]


def test_chunked_request_body_reaches_the_model_server_whole(client, recording):
    parts = [b"abc", BINARY, b"x" * 70_000]
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    client.send(b"POST /sha HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked)
    status, _, body, _ = client.answer()
    assert status == 200 and body == hashlib.sha256(b"".join(parts)).hexdigest().encode()


def test_chunked_response_reaches_the_client_whole(client):
    client.send(get("/chunked"))
    status, headers, body, _ = client.answer()
    assert status == 200 and body == b"first,second,third"
    assert headers["transfer-encoding"] == "chunked" and "content-length" not in headers
    client.send(get("/x"))                          # the connection is still in step
    assert client.answer()[2] == b"ok"


def test_expect_100_continue_is_answered_before_the_body(client, recording):
    client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    interim, _, _, _ = client.answer()
    assert interim == 100
    client.send(b"body")
    status, _, body, _ = client.answer()
    assert status == 200 and body == b"body"


def test_expect_100_continue_over_the_limit_gets_413_without_100(recording, sidecar_factory):
    for engine in ENGINES:
        sidecar = sidecar_factory(recording.url, **{"proxy.engine": engine, "proxy.max_body_bytes": 1000})
        c = Client(sidecar.proxy_port)
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
        status, _, body, _ = c.answer()
        if status == 100:  # aiohttp's server says 100 before the proxy sees the request (allowed)
            assert engine == "aiohttp"
            status, _, body, _ = c.answer()
        c.close()
        assert status == 413 and json.loads(body)["error"] == "request_too_large", engine
    assert b"/echo" not in recording.targets()


@pytest.mark.parametrize("framing", [
    b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    b"Content-Length: 5\r\nContent-Length: 6\r\n",
    b"Transfer-Encoding: gzip\r\n",
    b"Transfer-Encoding: chunked, gzip\r\n",
])
def test_ambiguous_framing_is_refused_and_never_forwarded(client, recording, framing):
    client.send(b"POST /smuggle HTTP/1.1\r\nHost: t\r\n" + framing + b"\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n")
    status, _, _, _ = client.answer()
    assert status == 400
    assert client.closed()
    time.sleep(0.1)
    assert b"/smuggle" not in recording.targets() and b"/smuggled" not in recording.targets()


@pytest.mark.parametrize("head", [
    b"GET /x HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
    b"GET /" + b"p" * 10_000 + b" HTTP/1.1\r\nHost: t\r\n\r\n",
])
def test_oversized_heads_are_refused(proxy, recording, head):
    c = Client(proxy.proxy_port)
    try:
        c.send(head)
        status, _, _, _ = c.answer()
    finally:
        c.close()
    assert status in (400, 414, 431)
    assert recording.targets() == []
    assert sample(scrape(proxy), "inferwatch_malformed_requests_total", reason="too_long") == 1


def test_head_answer_carries_no_body(client):
    client.send(get("/head", "HEAD"))
    status, headers, body, _ = client.answer("HEAD")
    assert status == 200 and headers.get("content-length") == "11"
    client.send(get("/x"))                          # a body after HEAD would be read as this answer
    status, _, body, _ = client.answer()
    assert status == 200 and body == b"ok"


@pytest.mark.parametrize("path,status", [("/204", 204), ("/304", 304)])
def test_204_and_304_carry_no_body(client, path, status):
    client.send(get(path))
    got, headers, _, _ = client.answer()
    assert got == status
    assert "transfer-encoding" not in headers and headers.get("content-length", "0") == "0"
    client.send(get("/x"))
    assert client.answer()[2] == b"ok"


def test_an_answer_cut_short_is_cut_for_the_client(client, proxy):
    client.send(get("/cut"))
    try:   # a 502 if nothing was relayed yet, else the client's answer is cut: never a whole 200
        status, _, body, _ = client.answer()
    except (ConnectionError, socket.timeout, AssertionError):
        status, body = 0, b""
    assert status in (0, 502), (status, body)
    c = Client(proxy.proxy_port)                    # and the port still serves
    c.send(get("/x"))
    assert c.answer()[2] == b"ok"
    c.close()


def test_an_upstream_closing_without_an_answer_is_a_502(client, proxy):
    client.send(get("/vanish"))
    status, _, body, _ = client.answer()
    assert status == 502 and json.loads(body)["error"] == "upstream_unavailable"
    assert sample(scrape(proxy), "inferwatch_upstream_errors_total", reason="reset") >= 1


def test_http_1_0_client_gets_a_close_delimited_or_sized_answer(proxy):
    c = Client(proxy.proxy_port)
    c.send(b"GET /chunked HTTP/1.0\r\nHost: t\r\n\r\n")
    status, headers, body, _ = c.answer()
    c.close()
    assert status == 200 and body == b"first,second,third"
    assert "chunked" not in headers.get("transfer-encoding", "")   # a 1.0 client cannot read chunks


def test_a_protocol_upgrade_is_answered_as_a_plain_request(client, recording, proxy):
    client.send(b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    status, _, body, _ = client.answer()
    assert status == 200 and body == b"ok"           # one answer, never a second unasked-for 400
    sent_head = recording.head_of(b"/ws").lower()
    assert b"upgrade" not in sent_head                # hop-by-hop: the model server sees a plain GET
    if proxy.cfg.proxy.engine == "fast":              # what follows an upgrade is not HTTP/1.1
        assert client.closed()
    assert sample(scrape(proxy), "inferwatch_malformed_requests_total") == 0


# --- the two engines measure the same ----------------------------------------------------------

# Families whose values depend on time or on the process, not on the requests.
_TIMING = ("_seconds", "_created", "inferwatch_connections_", "inferwatch_collector_", "inferwatch_upstream_up",
           "inferwatch_build_info", "inferwatch_queue_", "inferwatch_monitoring_bytes_in_flight",
           "inferwatch_requests_in_flight", "inferwatch_config_", "inferwatch_window_", "inferwatch_process_",
           "inferwatch_model_process_")


def _counted(text: str) -> dict[tuple, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("inferwatch_") and not any(t in s.name for t in _TIMING):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_both_engines_count_and_monitor_the_same(upstream, sidecar_factory):
    import gzip

    import requests

    from conftest import proxy_url

    rows = [[1.5, 2.0, 3.25], [0.0, -1.0, 7.5], [4.0, 4.0, 4.0]]
    results = {}
    for engine in ENGINES:
        sidecar = sidecar_factory(upstream.url, **{"proxy.engine": engine, "proxy.max_monitored_body_bytes": 2000})
        post = lambda path, **kw: requests.post(proxy_url(sidecar, path), timeout=10, **kw)  # noqa: E731
        answers = [
            post("/v1/models/m:predict", json={"instances": rows}).content,
            post("/v1/models/m:predict", json={"instances": rows[:1]}, headers={"X-Prediction-ID": "p1"}).content,
            post("/v1/models/m:predict", data=gzip.compress(json.dumps({"instances": rows}).encode()),
                 headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}).content,
            post("/v1/models/m:predict", json={"instances": [[0.5] * 3] * 200}).content,   # over the cap
            post("/v1/models/m:predict", data=b"{not json", headers={"Content-Type": "application/json"}).status_code,
            requests.get(proxy_url(sidecar, "/status/503"), timeout=10).status_code,
            requests.get(proxy_url(sidecar, "/reset"), timeout=10).status_code,
            len(requests.get(proxy_url(sidecar, "/big?bytes=300000&chunked=1"), timeout=10).content),  # streamed
        ]
        assert sidecar.pipeline.drain()
        snapshot = sidecar.windows.snapshot("1")
        results[engine] = (answers, _counted(scrape(sidecar)), snapshot.n, sorted(snapshot.prediction_ids))
    (fast_answers, fast_counts, fast_n, fast_ids), (aio_answers, aio_counts, aio_n, aio_ids) = \
        results["fast"], results["aiohttp"]
    assert fast_answers == aio_answers
    assert fast_n == aio_n >= 4 and len(fast_ids) == len(aio_ids)   # generated ids differ, their number not
    assert "p1" in fast_ids and "p1" in aio_ids
    differ = {k: (fast_counts.get(k), aio_counts.get(k)) for k in fast_counts.keys() | aio_counts.keys()
              if fast_counts.get(k) != aio_counts.get(k)}
    assert not differ, differ
    assert sample_of(fast_counts, "inferwatch_upstream_errors_total") == 1
    assert sample_of(fast_counts, "inferwatch_unmonitored_bodies_total") >= 1


def sample_of(counts: dict[tuple, float], name: str) -> float:
    return sum(v for (n, _), v in counts.items() if n == name)
