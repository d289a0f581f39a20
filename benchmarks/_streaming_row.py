"""The streaming row of proxy_overhead.py: time to first byte the sidecar adds to a stream.

The tests' model server (tests/upstream_server.py) sends server-sent events; a client times the
first event's bytes and the whole stream, direct and through the sidecar, and prints medians.
"""

from __future__ import annotations

import http.client
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _harness import Processes, SidecarProcess

TESTS = Path(__file__).resolve().parent.parent / "tests"


def _stream_once(port: int, path: str) -> tuple[float, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    start = time.perf_counter()
    conn.request("GET", path)
    response = conn.getresponse()
    response.read1(65536)  # the first chunk: the comment line the upstream sends at once
    first = time.perf_counter() - start
    while response.read1(65536):
        pass
    total = time.perf_counter() - start
    conn.close()
    return first, total


def streaming_phase(procs: Processes, runs: int = 30) -> list[str]:
    upstream = procs.start([sys.executable, str(TESTS / "upstream_server.py")], name="sse-upstream",
                           stdout=subprocess.PIPE)
    assert upstream.stdout is not None
    port = int(upstream.stdout.readline())
    sidecar = SidecarProcess(procs, f"http://127.0.0.1:{port}", name="sidecar-stream")
    assert sidecar.proxy_port is not None
    path = "/sse?n=5&interval=0.02"
    rows = {}
    for name, target in (("direct", port), ("inferwatch", sidecar.proxy_port)):
        _stream_once(target, path)  # warm
        samples = [_stream_once(target, path) for _ in range(runs)]
        rows[name] = (statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples))
    added = rows["inferwatch"][0] - rows["direct"][0]
    lines = ["streaming (SSE, 5 events 20 ms apart, median of %d):" % runs]
    for name, (first, total) in rows.items():
        lines.append(f"  {name:<10} first byte {first * 1000:.2f} ms  whole stream {total * 1000:.1f} ms")
    lines.append(f"  time to first byte added by the sidecar: {added * 1000:.2f} ms")
    return lines
