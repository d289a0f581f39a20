"""A real model server for tests, run as its own process: ``python tests/upstream_server.py``.

It prints its port on the first line of stdout. Routes:
- POST /v1/models/{m}:predict   KServe v1: one prediction per instance
- POST /v2/models/{m}/infer     Open Inference Protocol v2
- POST /invocations             MLflow
- POST /records                 a custom format: rows at data.rows, scores answered at result.scores
- POST /echo/...                echoes method, path, query, headers and body as JSON
- GET  /slow?seconds=S          sleeps, then answers
- GET  /reset                   closes the connection without answering
- GET  /status/{code}           answers with that status code
- GET  /bare                    answers with no Server, Date or Content-Type header
- GET  /garbage                 answers with a malformed header line (upstream-secret inside) and closes
- GET  /                        health

Every answer carries ``X-Request-Target``: the request target exactly as it arrived (from the
request line: ``self.path`` is already reduced, ``//x`` to ``/x``).

``--offset X`` adds X to every KServe v1 prediction: a second process with an offset is a
challenger that answers differently (shadow tests).
"""

from __future__ import annotations

import argparse
import base64
import json
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    delay = 0.0
    offset = 0.0

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json", headers: dict | None = None):
        self.send_response(status)
        self.send_header("X-Request-Target", self._target())
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _target(self) -> str:
        return self.requestline.split(" ")[1] if self.requestline.count(" ") >= 2 else ""

    def _json(self, status: int, obj, headers: dict | None = None):
        self._send(status, json.dumps(obj).encode(), headers=headers)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/":
            return self._json(200, {"status": "ok"})
        if url.path == "/slow":
            time.sleep(float(parse_qs(url.query).get("seconds", ["1"])[0]))
            return self._json(200, {"slept": True})
        if url.path == "/reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.connection.close()
            self.close_connection = True
            return None
        if url.path == "/bare":  # send_response_only: no Server, no Date
            self.send_response_only(200)
            self.send_header("Content-Length", "4")
            self.end_headers()
            self.wfile.write(b"bare")
            return None
        if url.path == "/garbage":
            self.wfile.write(b"HTTP/1.1 200 OK\r\n" + b"upstream-secret " * 1000 + b"\r\n\r\n")
            self.close_connection = True
            return None
        if url.path.startswith("/status/"):
            return self._json(int(url.path.rsplit("/", 1)[1]), {"status": "as requested"})
        if url.path.startswith("/echo"):
            return self._echo(b"")
        return self._json(404, {"error": "not found"})

    do_HEAD = do_GET

    def _echo(self, body: bytes):
        url = urlsplit(self.path)
        return self._json(200, {"method": self.command, "path": url.path, "query": url.query,
                                "headers": dict(self.headers.items()),
                                "body_b64": base64.b64encode(body).decode()},
                          headers={"X-Upstream": "yes", "Set-Cookie": "a=1"})

    def do_POST(self):
        url = urlsplit(self.path)
        body = self._body()
        if self.delay:
            time.sleep(self.delay)
        if url.path.startswith("/echo"):
            return self._echo(body)
        try:
            payload = json.loads(body) if body else None
        except ValueError:
            return self._json(400, {"error": "invalid json"})
        if url.path.endswith(":predict"):
            rows = payload.get("instances") or payload.get("inputs") or [] if isinstance(payload, dict) else []
            return self._json(200, {"predictions": [0.25 + 0.5 * (i % 2) + self.offset for i in range(len(rows))]})
        if url.path.endswith("/infer"):
            tensor = (payload or {}).get("inputs", [{}])[0]
            n = (tensor.get("shape") or [0])[0]
            return self._json(200, {"model_name": "m", "model_version": "2", "outputs": [
                {"name": "score", "shape": [n], "datatype": "FP32", "data": [0.5] * n}]})
        if url.path == "/records":
            rows = ((payload or {}).get("data") or {}).get("rows") or []
            return self._json(200, {"result": {"scores": [round(0.1 * (i + 1), 1) for i in range(len(rows))]}})
        if url.path == "/invocations":
            rows = (payload or {}).get("dataframe_records") or []
            return self._json(200, {"predictions": [1] * len(rows)})
        return self._json(404, {"error": "not found"})

    do_PUT = do_POST
    do_PATCH = do_POST
    do_DELETE = do_POST


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--offset", type=float, default=0.0)
    args = parser.parse_args()
    Handler.delay = args.delay
    Handler.offset = args.offset
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
