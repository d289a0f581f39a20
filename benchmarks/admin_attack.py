"""Probe and scrape latency on the admin port, quiet and under slow and idle clients.

    .venv/bin/python benchmarks/admin_attack.py [--seconds 20] [--slow 50] [--idle 50]

Starts a sidecar in push mode (in this process, its own threads), measures ``/healthz`` and
``/metrics`` once quiet, then while ``--slow`` clients send one byte of a request head every
second and ``--idle`` clients hold connections without a byte, and prints p50/p99/max per
endpoint and how many probes failed. All traffic is on loopback; it stops by itself.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import threading
import time

import requests

from inferwatch.config import load_config
from inferwatch.sidecar import Sidecar

HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 1000


def trickle(port: int, count: int, stop: threading.Event) -> None:
    sockets = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]
    try:
        for i in range(len(HEAD)):
            for s in sockets:
                try:
                    s.sendall(HEAD[i:i + 1])
                except OSError:
                    pass
            if stop.wait(1.0):
                return
    finally:
        for s in sockets:
            s.close()


def measure(url: str, seconds: float) -> tuple[list[float], int]:
    latencies, failed = [], 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        start = time.perf_counter()
        try:
            ok = requests.get(url, timeout=5).status_code == 200
        except requests.RequestException:
            ok = False
        if ok:
            latencies.append(time.perf_counter() - start)
        else:
            failed += 1
        time.sleep(0.2)
    return latencies, failed


def report(label: str, path: str, latencies: list[float], failed: int) -> None:
    if not latencies:
        print(f"{label:8} {path:9} no answer ({failed} failed)")
        return
    ms = sorted(x * 1000 for x in latencies)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(f"{label:8} {path:9} n={len(ms):4} p50={statistics.median(ms):7.2f} ms  p99={p99:7.2f} ms  "
          f"max={ms[-1]:7.2f} ms  failed={failed}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measuring time per phase and endpoint")
    parser.add_argument("--slow", type=int, default=50)
    parser.add_argument("--idle", type=int, default=50)
    args = parser.parse_args()
    cfg = load_config(None, {"upstream.url": "http://127.0.0.1:9", "proxy.enabled": False,
                             "admin.listen_address": "127.0.0.1", "admin.port": 0})
    sidecar = Sidecar(cfg).start()
    stop = threading.Event()
    idle: list[socket.socket] = []
    try:
        base = f"http://127.0.0.1:{sidecar.admin_port}"
        for path in ("/healthz", "/metrics"):
            report("quiet", path, *measure(base + path, args.seconds / 2))
        thread = threading.Thread(target=trickle, args=(sidecar.admin_port, args.slow, stop), daemon=True)
        thread.start()
        idle = [socket.create_connection(("127.0.0.1", sidecar.admin_port), timeout=5) for _ in range(args.idle)]
        time.sleep(1.0)
        print(f"attack: {args.slow} slow clients (a header byte a second), {args.idle} idle; "
              f"admin.header_timeout_seconds={cfg.admin.header_timeout_seconds:g}, "
              f"max_connections={cfg.admin.max_connections}")
        for path in ("/healthz", "/metrics"):
            report("attacked", path, *measure(base + path, args.seconds / 2))
    finally:
        stop.set()
        for s in idle:
            s.close()
        sidecar.stop()


if __name__ == "__main__":
    main()
