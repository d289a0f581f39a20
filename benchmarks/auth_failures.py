#!/usr/bin/env python
"""What do wrong basic-auth passwords on the admin port cost the proxy's latency?

    .venv/bin/python benchmarks/auth_failures.py             # ~40 s
    .venv/bin/python benchmarks/auth_failures.py --seconds 5

An in-process sidecar (proxy and admin port on 127.0.0.1) in front of proxy_overhead.py's model
server (aiohttp, 2 ms, its own process). One client sends KServe v1 predictions through the
proxy, one at a time, while an attacker thread sends basic-auth requests with wrong passwords
(pbkdf2, the default 200,000 iterations) to the admin port at ``--rate`` per second:

- ``quiet``: no attacker;
- ``no budget``: admin.failed_auth.burst so large that every attempt costs a hash (the old behaviour);
- ``budget``: the default admin.failed_auth (10 failures, then 10 a minute): past the burst the
  attacker gets 429 without a hash.

Prints the proxy's p50/p99 per phase and how many hashes the attacker cost. A benchmark that
prints figures, not a test: nothing here asserts a bound.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def post(conn: http.client.HTTPConnection, path: str, body: bytes, headers: dict[str, str]) -> int:
    # http.client sends headers and a bytes body in one write: no Nagle / delayed-ACK stall.
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **headers})
    response = conn.getresponse()
    response.read()
    return response.status


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def phase(name: str, upstream_url: str, seconds: float, rate: float, burst: int | None) -> None:
    from inferwatch.config import load_config
    from inferwatch.sidecar import Sidecar
    from inferwatch.support import auth

    values = {"upstream.url": upstream_url, "proxy.listen_address": "127.0.0.1", "proxy.port": 0,
              "admin.listen_address": "127.0.0.1", "admin.port": 0, "model.name": "m", "model.version": "1",
              "admin.write_auth": {"basic_users": {"pusher": auth.hash_password("right")}}}
    if burst is not None:
        values["admin.failed_auth"] = {"burst": burst}
    sidecar = Sidecar(load_config(None, values)).start()
    stop = threading.Event()
    codes: dict[int, int] = {}
    hashes_before = auth.hashes.failure

    def attack() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", sidecar.admin_port, timeout=10)
        i = 0
        next_at = time.monotonic()
        while not stop.wait(max(0.0, next_at - time.monotonic())):
            next_at += 1.0 / rate
            i += 1
            header = "Basic " + base64.b64encode(f"pusher:guess{i}".encode()).decode()
            code = post(conn, "/v1/events", b'{"events": []}', {"Authorization": header})
            codes[code] = codes.get(code, 0) + 1

    attacker = threading.Thread(target=attack, daemon=True)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", sidecar.proxy_port, timeout=10)
        path = "/v1/models/m:predict"
        body = json.dumps({"instances": [[1.0, 2.0, 3.0]]}).encode()
        for _ in range(20):   # warm up
            post(conn, path, body, {})
        if burst is not None or name != "quiet":
            attacker.start()
        latencies: list[float] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            t = time.perf_counter()
            post(conn, path, body, {})
            latencies.append(time.perf_counter() - t)
            time.sleep(0.005)
    finally:
        stop.set()
        if attacker.is_alive():
            attacker.join(10)
        sidecar.stop()
    hashes = auth.hashes.failure - hashes_before
    print(f"{name:<10} {len(latencies):>8} {statistics.median(latencies) * 1000:>9.2f} "
          f"{percentile(latencies, 0.99) * 1000:>9.2f} {sum(codes.values()):>9} {hashes:>7}  "
          f"{', '.join(f'{k}: {v}' for k, v in sorted(codes.items())) or '-'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="per phase")
    parser.add_argument("--rate", type=float, default=17.0, help="wrong passwords per second")
    args = parser.parse_args()
    # proxy_overhead.py's aiohttp model server: answers in well under a millisecond
    upstream = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "proxy_overhead.py"), "_upstream",
                                 "--delay", "0.002"], stdout=subprocess.PIPE, text=True)
    try:
        upstream_url = f"http://127.0.0.1:{int(upstream.stdout.readline())}"
        print(f"proxy latency while wrong basic-auth passwords arrive at {args.rate:g}/s "
              f"({args.seconds:g} s per phase)")
        print(f"{'phase':<10} {'requests':>8} {'p50 ms':>9} {'p99 ms':>9} {'attempts':>9} {'hashes':>7}  answers")
        phase("quiet", upstream_url, args.seconds, args.rate, None)
        phase("no budget", upstream_url, args.seconds, args.rate, 10**9)
        phase("budget", upstream_url, args.seconds, args.rate, None)
    finally:
        upstream.terminate()
        upstream.wait(10)


if __name__ == "__main__":
    main()
