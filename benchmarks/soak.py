"""Soak: proxy and push load for a given time, drift every few seconds, SIGTERM and restart.

    .venv/bin/python benchmarks/soak.py --minutes 10

A model server (tests/upstream_server.py) and ``inferwatch run`` with a large queue, the
prediction log at sample rate 1 and drift evaluated every ``--drift-seconds``. Threads send
proxied predictions (latency measured at the client) and pushed batches; every
``--restart-seconds`` the sidecar gets SIGTERM under that load and is started again. After each
stop, every event it acknowledged (a 200 from the proxy, ``accepted`` from /v1/events) is looked
up in that run's prediction log: what is missing is *lost*. Prints one line a minute: the
sidecar's RSS (peak), the proxy's p50/p99, events acknowledged and lost, restarts and their
exit codes; then the totals. Exits 1 when anything acknowledged was lost.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).parent))
from _harness import PYTHON, BenchmarkError, Processes, SidecarProcess, install_signal_handlers  # noqa: E402

UPSTREAM = Path(__file__).parent.parent / "tests" / "upstream_server.py"
FEATURES = [f"f{i}" for i in range(10)]


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Generation:
    """One sidecar process from start to exit, and what it acknowledged."""

    def __init__(self, procs: Processes, upstream: str, index: int, drift_seconds: float):
        self.log_path = procs.tmp / f"predictions-{index}.jsonl"
        extra = (f"queue:\n  max_items: 100000\n  max_bytes: 1073741824\n"
                 f"prediction_log:\n  path: {self.log_path}\n  sample_rate: 1.0\n  max_bytes: 4294967296\n"
                 f"reference:\n  warmup_events: 1000\n"
                 f"drift:\n  interval_seconds: {drift_seconds}\n"
                 f"shutdown:\n  readiness_delay_seconds: 0.5\n  drain_timeout_seconds: 25\n")
        self.name = f"sidecar-{index}"
        self.sidecar = SidecarProcess(procs, upstream, name=self.name, extra_config=extra)
        self.acked: set[str] = set()
        self.lock = threading.Lock()

    def ack(self, ids) -> None:
        with self.lock:
            self.acked.update(ids)

    def logged(self) -> set[str]:
        ids: set[str] = set()
        for path in sorted(self.log_path.parent.glob(self.log_path.name + "*")):
            with path.open() as lines:
                ids.update(json.loads(line)["prediction_id"] for line in lines)
        return ids


class Minute:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.rss_peak = 0
        self.acked = 0
        self.lost = 0
        self.restarts: list[int] = []


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--restart-seconds", type=float, default=40.0, help="SIGTERM and restart this often")
    parser.add_argument("--drift-seconds", type=float, default=3.0, help="drift.interval_seconds")
    parser.add_argument("--proxy-threads", type=int, default=2)
    parser.add_argument("--push-threads", type=int, default=2)
    parser.add_argument("--push-batch", type=int, default=200, help="events per pushed request")
    parser.add_argument("--push-interval", type=float, default=0.02, help="seconds between a thread's pushes")
    args = parser.parse_args(argv)
    install_signal_handlers()

    procs = Processes("inferwatch-soak-")
    stop = threading.Event()
    current: dict[str, Generation] = {}
    minutes: list[Minute] = [Minute()]
    lock = threading.Lock()

    def proxy_load(t: int) -> None:
        session = requests.Session()
        i = 0
        while not stop.is_set():
            gen = current.get("gen")
            if gen is None or gen.sidecar.proxy is None:
                time.sleep(0.01)
                continue
            pid = f"x{t}-{i}"
            i += 1
            body = {"instances": [[(i * 7 + k) % 13 + (i % 97) / 97 for k in range(len(FEATURES))]]}
            start = time.perf_counter()
            try:
                r = session.post(gen.sidecar.proxy + "/v1/models/m:predict", json=body,
                                 headers={"X-Prediction-ID": pid}, timeout=30)
            except requests.RequestException:
                session = requests.Session()
                time.sleep(0.01)
                continue
            elapsed = time.perf_counter() - start
            if r.status_code == 200:
                gen.ack([pid])
                with lock:
                    minutes[-1].latencies.append(elapsed)
                    minutes[-1].acked += 1

    def push_load(t: int) -> None:
        session = requests.Session()
        i = 0
        while not stop.is_set():
            gen = current.get("gen")
            if gen is None:
                time.sleep(0.01)
                continue
            prefix = f"p{t}-{i}"
            i += 1
            events = [{"prediction_id": f"{prefix}-{j}",
                       "features": {f: ((i + j) * 7 + k) % 13 for k, f in enumerate(FEATURES)},
                       "prediction": j % 2} for j in range(args.push_batch)]
            try:
                r = session.post(gen.sidecar.admin + "/v1/events", json={"events": events}, timeout=30)
            except requests.RequestException:
                session = requests.Session()
                time.sleep(0.01)
                continue
            accepted = r.json().get("accepted", 0) if r.status_code == 200 else 0
            if accepted == len(events):
                gen.ack(e["prediction_id"] for e in events)
                with lock:
                    minutes[-1].acked += accepted
            elif accepted:
                print(f"partial acceptance ({accepted} of {len(events)}): not attributable", file=sys.stderr)
            time.sleep(args.push_interval)

    threads = [threading.Thread(target=proxy_load, args=(t,), daemon=True) for t in range(args.proxy_threads)]
    threads += [threading.Thread(target=push_load, args=(t,), daemon=True) for t in range(args.push_threads)]
    totals = {"acked": 0, "lost": 0, "restarts": 0, "nonzero_exits": 0}
    try:
        upstream_proc = procs.start([PYTHON, str(UPSTREAM)], name="upstream", stdout=subprocess.PIPE, text=True)
        upstream = f"http://127.0.0.1:{int(upstream_proc.stdout.readline())}"
        index = 0
        current["gen"] = Generation(procs, upstream, index, args.drift_seconds)
        for thread in threads:
            thread.start()
        began = time.monotonic()
        end = began + args.minutes * 60
        next_minute = began + 60
        next_restart = began + args.restart_seconds
        print(f"soak: {args.minutes:g} min, SIGTERM every {args.restart_seconds:g}s, drift every "
              f"{args.drift_seconds:g}s, {args.proxy_threads} proxy + {args.push_threads} push threads")
        print(f"{'min':>3} {'rss_peak_MiB':>12} {'p50_ms':>7} {'p99_ms':>7} {'proxied':>8} {'acked':>9} "
              f"{'lost':>6} restarts(exit codes)", flush=True)

        def report(number: int, m: Minute) -> None:
            print(f"{number:>3} {m.rss_peak / 2**20:>12.1f} {percentile(m.latencies, 0.5) * 1000:>7.2f} "
                  f"{percentile(m.latencies, 0.99) * 1000:>7.2f} {len(m.latencies):>8} {m.acked:>9} "
                  f"{m.lost:>6} {len(m.restarts)}{m.restarts if m.restarts else ''}", flush=True)

        while True:
            now = time.monotonic()
            gen = current["gen"]
            with lock:
                minutes[-1].rss_peak = max(minutes[-1].rss_peak, rss_bytes(gen.sidecar.pid))
            if now >= next_restart or now >= end:
                # SIGTERM under load; the load threads keep sending (to a port that closes).
                gen.sidecar.proc.terminate()
                code = gen.sidecar.proc.wait(60)
                logged = gen.logged()
                with gen.lock:
                    lost = len(gen.acked - logged)
                    acked = len(gen.acked)
                totals["acked"] += acked
                totals["lost"] += lost
                totals["restarts"] += 1
                totals["nonzero_exits"] += code != 0
                summary = [line for line in procs.stderr_of(gen.name).splitlines() if "shutdown:" in line]
                with lock:
                    minutes[-1].lost += lost
                    minutes[-1].restarts.append(code)
                if lost or code:
                    print(f"    restart {index}: {acked} acknowledged, {lost} lost, exit {code}: "
                          f"{summary[-1] if summary else '(no shutdown line)'}", flush=True)
                procs.children.remove(gen.sidecar.proc)
                for path in gen.log_path.parent.glob(gen.log_path.name + "*"):
                    path.unlink()
                if now >= end:
                    break
                index += 1
                current["gen"] = Generation(procs, upstream, index, args.drift_seconds)
                next_restart = time.monotonic() + args.restart_seconds
            if now >= next_minute:
                with lock:
                    finished = minutes[-1]
                    minutes.append(Minute())
                report(len(minutes) - 1, finished)
                next_minute += 60
            time.sleep(0.5)
        stop.set()
        if minutes[-1].latencies or minutes[-1].restarts:
            report(len(minutes), minutes[-1])
        print(f"total: {totals['acked']} acknowledged, {totals['lost']} lost, {totals['restarts']} SIGTERMs, "
              f"{totals['nonzero_exits']} non-zero exits", flush=True)
        return 1 if totals["lost"] else 0
    except (BenchmarkError, KeyboardInterrupt) as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 2
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
        procs.close()


if __name__ == "__main__":
    sys.exit(main())
