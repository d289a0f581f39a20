#!/usr/bin/env python
"""What does the inferwatch proxy add to a model server's latency, and how much can it carry?

    .venv/bin/python benchmarks/proxy_overhead.py            # ~4 minutes
    .venv/bin/python benchmarks/proxy_overhead.py --quick    # ~1 minute, one repeat

Processes besides this one, all on 127.0.0.1: a model server (aiohttp, answers a KServe v1
``:predict`` after ``asyncio.sleep(delay)``), a sidecar (``python -m inferwatch run``) per
``proxy.engine`` in front of it (``iw-fast``, ``iw-aiohttp``), and nginx (when installed, one
worker) in front of it too, as the floor for any reverse proxy.

1. Closed loop latency, upstream delay 5 ms: a client process (raw asyncio HTTP/1.1, keep-alive,
   one connection per concurrent client) sends KServe v1 bodies of 10 features x 1-4 rows, at
   concurrency 1 and 16, direct / through nginx / through each sidecar, interleaved, ``--repeat``
   times; the table shows the median over repeats of each run's p50, p99 and req/s, and each
   sidecar's CPU per request as a multiple of nginx's.
2. Maximum throughput behind a model server as fast as there is (an nginx answering a fixed
   body): wrk (POST bodies from a Lua script) at 32 connections, or the Python client at
   concurrency 32 when wrk is missing; each sidecar's ceiling as a share of nginx's.

With shadowing (unless ``--no-shadow``), a second sidecar, ``iw+shadow``, mirrors every request to
a challenger (another model server with the same delay) through ``shadow.challengers``: its rows
beside ``iw-<first engine>``'s show what mirroring costs the champion's latency and the sidecar's CPU.
``iw-fast-wN`` is a sidecar with ``proxy.workers: N`` (``--workers``, default 2): N proxy processes
on the port handing their exchanges to the monitoring process; its CPU is all N + 1 processes'.

"CPU us/req" is the CPU (user + system, psutil) of the hop itself per request: the model
server's for ``direct``, nginx's (master + workers) or the sidecar's (all its threads: proxy
loop, monitoring worker, admin) for the others. On a shared 2-core machine it is steadier than
latency, which also moves with whatever else runs.

This is a benchmark that prints figures, not a test: nothing here asserts the targets.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _streaming_row import streaming_phase  # noqa: E402
from _grpc_row import grpc_phase  # noqa: E402
from _harness import (  # noqa: E402
    HOST, PYTHON, BenchmarkError, Processes, SidecarProcess, install_signal_handlers, loop_name, machine, median,
    percentile, run_main, start_nginx, start_nginx_fixed,
)

PREDICT_PATH = "/v1/models/m:predict"
# The fixed-body model server's answer (the throughput phase): one prediction, as a KServe v1 server writes it.
FIXED_ANSWER = '{"predictions": [0.5]}'
THIS = str(Path(__file__).resolve())


def make_bodies(count: int = 64, seed: int = 7) -> list[bytes]:
    """KServe v1 request bodies: 10 numeric features, 1-4 rows each."""
    rng = random.Random(seed)
    bodies = []
    for _ in range(count):
        rows = [[round(rng.gauss(0, 1) * 10 ** rng.randint(0, 3), 4) for _ in range(10)]
                for _ in range(rng.randint(1, 4))]
        bodies.append(json.dumps({"instances": rows}).encode())
    return bodies


# --- the model server (a child process) -----------------------------------------------------


def serve_upstream(delay: float) -> None:
    from aiohttp import web

    async def predict(request: web.Request) -> web.Response:
        obj = json.loads(await request.read())
        rows = obj.get("instances") or obj.get("inputs") or []
        if delay:
            await asyncio.sleep(delay)
        preds = [round(0.5 + 0.01 * (sum(row) % 40) if isinstance(row, list) else 0.5, 4) for row in rows]
        return web.Response(body=json.dumps({"predictions": preds}).encode(), content_type="application/json")

    async def health(request: web.Request) -> web.Response:
        return web.Response(body=b'{"status": "ok"}', content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/models/{name}", predict)
        app.router.add_get("/", health)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, 0))
        site = web.SockSite(runner, sock, backlog=1024)
        await site.start()
        print(sock.getsockname()[1], flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


def start_upstream(procs: Processes, delay: float, name: str) -> tuple[str, int, int]:
    """The model server: (url, port, pid)."""
    proc = procs.start([PYTHON, THIS, "_upstream", "--delay", str(delay)], name=name, stdout=subprocess.PIPE)
    line = proc.stdout.readline()
    if not line:
        raise BenchmarkError(f"upstream did not start:\n{procs.stderr_of(name)}")
    port = int(line)
    return f"http://{HOST}:{port}", port, proc.pid


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (nginx's workers), so far."""
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
    except psutil.NoSuchProcess:
        pass
    return total


def with_cpu(pid: int, run) -> dict:
    """Run a load generator; add the CPU microseconds per request the process ``pid`` spent."""
    before = cpu_seconds(pid)
    result = run()
    result["cpu_us"] = (cpu_seconds(pid) - before) / result["sent"] * 1e6 if result.get("sent") else float("nan")
    return result


# --- the closed-loop client (a child process) -----------------------------------------------


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; responses must carry Content-Length."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None
        self.need: int | None = None
        self.status = 0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if self.need is None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end])
            match = _CONTENT_LENGTH.search(head)
            if match is None:
                waiter.set_exception(BenchmarkError("response without Content-Length"))
                return
            self.status = int(head[9:12])
            self.need = end + 4 + int(match.group(1))
        if len(self.buf) >= self.need:
            del self.buf[:self.need]
            self.need = None
            waiter.set_result(self.status)

    def connection_lost(self, exc) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    def request(self, data: bytes) -> asyncio.Future:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter


async def closed_loop(url: str, concurrency: int, duration: float, requests: int, warmup: float) -> dict:
    host, port = url.split("//", 1)[1].split(":")
    port = int(port)
    loop = asyncio.get_running_loop()
    raw = [
        (f"POST {PREDICT_PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
         f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        for body in make_bodies()
    ]
    conns = []
    for _ in range(concurrency):
        _, conn = await loop.create_connection(_Connection, host, port)
        conns.append(conn)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    state = {"measuring": False, "left": requests}
    perf = time.perf_counter

    async def worker(i: int, conn: _Connection) -> None:
        nonlocal errors
        k = i
        while True:
            if requests and state["measuring"]:
                if state["left"] <= 0:
                    return
                state["left"] -= 1
            elif state.get("stop"):
                return
            data = raw[k % len(raw)]
            k += 1
            start = perf()
            try:
                status = await conn.request(data)
            except Exception:  # noqa: BLE001
                errors += 1
                return
            state["sent"] = state.get("sent", 0) + 1
            if state["measuring"]:
                latencies.append(perf() - start)
                statuses[status] = statuses.get(status, 0) + 1

    tasks = [loop.create_task(worker(i, c)) for i, c in enumerate(conns)]
    await asyncio.sleep(warmup)
    state["measuring"] = True
    t0 = perf()
    if requests:
        await asyncio.gather(*tasks)
    else:
        await asyncio.sleep(duration)
        state["measuring"] = False
        state["stop"] = True
        elapsed = perf() - t0
        await asyncio.gather(*tasks)
    if requests:
        elapsed = perf() - t0
    for conn in conns:
        conn.transport.close()
    latencies.sort()
    n = len(latencies)
    return {
        "n": n, "elapsed": elapsed, "rps": n / elapsed if elapsed else 0.0,
        "p50": percentile(latencies, 50), "p90": percentile(latencies, 90), "p99": percentile(latencies, 99),
        "max": latencies[-1] if latencies else float("nan"),
        "non2xx": sum(v for k, v in statuses.items() if not 200 <= k < 300), "errors": errors,
        "sent": state.get("sent", 0),
    }


def run_client(url: str, concurrency: int, duration: float, requests: int, warmup: float) -> dict:
    out = subprocess.run(
        [PYTHON, THIS, "_client", "--url", url, "--concurrency", str(concurrency), "--duration", str(duration),
         "--requests", str(requests), "--warmup", str(warmup)],
        capture_output=True, text=True, timeout=max(120, duration * 4 + 60) if not requests else 600,
    )
    if out.returncode != 0:
        raise BenchmarkError(f"client failed ({out.returncode}):\n{out.stderr}")
    return json.loads(out.stdout)


# --- wrk ------------------------------------------------------------------------------------


def write_wrk_script(path: Path) -> None:
    bodies = make_bodies()
    lua_bodies = ",\n".join("  [==[" + b.decode() + "]==]" for b in bodies)
    path.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"local bodies = {{\n{lua_bodies}\n}}\n"
        "local i = 0\n"
        "request = function()\n"
        "  i = i % #bodies + 1\n"
        "  return wrk.format(nil, nil, nil, bodies[i])\n"
        "end\n"
    )


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(match.group(1)) * _UNITS[match.group(2)] if match else float("nan")


def run_wrk(url: str, script: Path, connections: int, duration: float, threads: int) -> dict:
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, int(round(duration)))}s", "--latency",
         "-s", str(script), url + PREDICT_PATH],
        capture_output=True, text=True, timeout=duration + 60,
    )
    if out.returncode != 0:
        raise BenchmarkError(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    text = out.stdout
    rps = float(re.search(r"Requests/sec:\s*([\d.]+)", text).group(1))
    sent = re.search(r"(\d+) requests in", text)
    p50 = re.search(r"^\s*50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s*99%\s+(\S+)", text, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {
        "rps": rps, "p50": _seconds(p50.group(1)) if p50 else float("nan"),
        "p99": _seconds(p99.group(1)) if p99 else float("nan"),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "errors": sum(map(int, socket_errors.groups())) if socket_errors else 0,
        "sent": int(sent.group(1)) if sent else 0,
    }


# --- the benchmark --------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return "-" if seconds != seconds else f"{seconds * 1e3:.2f}"


def _sidecar_line(sidecar: SidecarProcess) -> str:
    status = sidecar.status()
    windowed = sum(w["appended_total"] for w in status["windows"].values())
    drops = ", ".join(f"{k}: {v:g}" for k, v in status["drops"].items()) or "none"
    return (f"sidecar monitoring: {status['queue']['processed']} exchanges decoded, {windowed} events windowed, "
            f"queue depth {status['queue']['depth']}, drops: {drops}")


def _shadow_line(sidecar: SidecarProcess) -> str:
    from urllib.request import urlopen

    from prometheus_client.parser import text_string_to_metric_families

    with urlopen(sidecar.admin + "/metrics", timeout=10) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "inferwatch_shadow_requests_total":
                totals[f"code {s.labels['code']}"] = totals.get(f"code {s.labels['code']}", 0) + s.value
            elif s.name in ("inferwatch_shadow_dropped_total", "inferwatch_shadow_comparisons_total") and s.value:
                key = s.labels.get("reason") or s.labels.get("outcome")
                totals[key] = totals.get(key, 0) + s.value
    return "iw+shadow mirroring: " + (", ".join(f"{k}: {v:g}" for k, v in sorted(totals.items())) or "nothing")


def start_targets(args, procs: Processes, delay: float, tag: str, *, fixed: bool = False
                  ) -> tuple[dict[str, tuple[str, int]], SidecarProcess]:
    """direct / nginx / iw-<engine>... / iw+shadow -> (base URL, pid whose CPU is that hop's cost).

    ``fixed``: the model server is an nginx answering a fixed body at once (the ceiling phase),
    else the Python model server answering after ``delay``."""
    if fixed:
        upstream = start_nginx_fixed(procs, FIXED_ANSWER, name=f"upstream-{tag}")
        upstream_port, upstream_pid = int(upstream.rsplit(":", 1)[1]), procs.children[-1].pid
    else:
        upstream, upstream_port, upstream_pid = start_upstream(procs, delay, f"upstream-{tag}")
    targets = {"direct": (upstream, upstream_pid)}
    if not args.no_nginx:
        try:
            url = start_nginx(procs, upstream_port, name=f"nginx-{tag}")
            targets["nginx"] = (url, procs.children[-1].pid)
        except BenchmarkError as exc:
            print(f"(nginx skipped: {exc})", file=sys.stderr)
    sidecars = []
    for engine in args.engines:  # the same sidecar on each data plane (proxy.engine)
        sidecar = SidecarProcess(procs, upstream, name=f"sidecar-{engine}-{tag}", engine=engine)
        targets[f"iw-{engine}"] = (sidecar.proxy, sidecar.pid)
        sidecars.append(sidecar)
    for workers in args.workers:  # proxy.workers: N fast-engine processes feeding one monitoring process
        sidecar = SidecarProcess(procs, upstream, name=f"sidecar-w{workers}-{tag}", engine="fast", workers=workers)
        targets[f"iw-fast-w{workers}"] = (sidecar.proxy, sidecar.pid)
    args.shadow_sidecars = getattr(args, "shadow_sidecars", [])
    if not args.no_shadow:
        if fixed:
            challenger = start_nginx_fixed(procs, FIXED_ANSWER, name=f"challenger-{tag}")
        else:
            challenger, _, _ = start_upstream(procs, delay, f"challenger-{tag}")
        shadowing = SidecarProcess(procs, upstream, name=f"sidecar-shadow-{tag}", engine=args.engines[0],
                                   extra_config=(f"shadow:\n  sample_rate: 1.0\n  challengers:\n"
                                                 f"    - {{name: challenger, url: '{challenger}'}}\n"))
        targets["iw+shadow"] = (shadowing.proxy, shadowing.pid)
        args.shadow_sidecars.append(shadowing)
    return targets, sidecars[0]


def _versus_nginx(targets, cpu: dict[str, float], label: str) -> list[str]:
    """One line per sidecar: its CPU per request as a multiple of nginx's."""
    if "nginx" not in cpu or not cpu["nginx"]:
        return []
    return [f"  {name}: CPU per request {cpu[name] / cpu['nginx']:.1f}x nginx's ({label})"
            for name in targets if name.startswith("iw-") and name in cpu]


def latency_phase(args, procs: Processes) -> list[str]:
    targets, sidecar = start_targets(args, procs, args.delay, "delay")
    results: dict[tuple[int, str], list[dict]] = {}
    for rep in range(args.repeat):
        for conc in args.concurrency:
            for name, (url, pid) in targets.items():
                r = with_cpu(pid, lambda: run_client(url, conc, args.duration, args.requests, args.warmup))
                results.setdefault((conc, name), []).append(r)
                print(f"  [rep {rep + 1}/{args.repeat}] c={conc:<3} {name:<10} p50 {_ms(r['p50'])} ms  "
                      f"p99 {_ms(r['p99'])} ms  {r['rps']:.0f} req/s  {r['cpu_us']:.0f} us CPU/req  (n={r['n']}, "
                      f"non-2xx {r['non2xx']}, errors {r['errors']})", file=sys.stderr, flush=True)
    budget = f"{args.requests} requests" if args.requests else f"{args.duration:g} s"
    lines = [
        f"Closed-loop latency, upstream delay {args.delay * 1e3:g} ms, KServe v1 10 features x 1-4 rows; "
        f"{budget} per run after {args.warmup:g} s warm-up; median of {args.repeat} run(s)",
        f"{'conc':>4}  {'target':<10} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'+p50 ms':>8} {'+p99 ms':>8}"
        f" {'CPU us/req':>10}  {'non-2xx/err':>11}",
    ]
    for conc in args.concurrency:
        base = results[(conc, "direct")]
        base_p50, base_p99 = median([r["p50"] for r in base]), median([r["p99"] for r in base])
        for name in targets:
            runs = results[(conc, name)]
            p50, p99 = median([r["p50"] for r in runs]), median([r["p99"] for r in runs])
            rps = median([r["rps"] for r in runs])
            bad = sum(r["non2xx"] + r["errors"] for r in runs)
            added = ("-", "-") if name == "direct" else (_ms(p50 - base_p50), _ms(p99 - base_p99))
            lines.append(f"{conc:>4}  {name:<10} {_ms(p50):>8} {_ms(p99):>8} {rps:>8.0f} {added[0]:>8} "
                         f"{added[1]:>8} {median([r['cpu_us'] for r in runs]):>10.0f}  {bad:>11}")
    for conc in args.concurrency:
        lines += _versus_nginx(targets, {name: median([r["cpu_us"] for r in results[(conc, name)]])
                                         for name in targets}, f"concurrency {conc}")
    lines.append(_sidecar_line(sidecar))
    lines += [_shadow_line(s) for s in args.shadow_sidecars[-1:]]
    return lines


def throughput_phase(args, procs: Processes) -> list[str]:
    targets, sidecar = start_targets(args, procs, 0.0, "zero", fixed=not args.python_upstream)
    use_wrk = shutil.which("wrk") is not None and not args.no_wrk
    script = procs.tmp / "post.lua"
    if use_wrk:
        write_wrk_script(script)
    results: dict[str, list[dict]] = {}
    for rep in range(args.repeat):
        for name, (url, pid) in targets.items():
            if use_wrk:
                r = with_cpu(pid, lambda: run_wrk(url, script, args.max_connections, args.duration, args.wrk_threads))
            else:
                r = with_cpu(pid, lambda: run_client(url, args.max_connections, args.duration, 0, args.warmup))
            results.setdefault(name, []).append(r)
            print(f"  [rep {rep + 1}/{args.repeat}] max {name:<10} {r['rps']:.0f} req/s  p50 {_ms(r['p50'])} ms  "
                  f"p99 {_ms(r['p99'])} ms  {r['cpu_us']:.0f} us CPU/req  (non-2xx {r['non2xx']}, "
                  f"errors {r['errors']})", file=sys.stderr, flush=True)
    tool = (f"wrk -t{args.wrk_threads} -c{args.max_connections} (Lua POST bodies)" if use_wrk
            else f"Python client, concurrency {args.max_connections}")
    upstream = "the Python model server, delay 0" if args.python_upstream else "an nginx answering a fixed body"
    lines = [
        f"Maximum throughput behind {upstream}, {tool}, {args.duration:g} s per run; "
        f"median (best) of {args.repeat} run(s)",
        f"{'target':<10} {'req/s':>8} {'(best)':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>10}  {'non-2xx/err':>11}",
    ]
    for name in targets:
        runs = results[name]
        lines.append(f"{name:<10} {median([r['rps'] for r in runs]):>8.0f} {max(r['rps'] for r in runs):>8.0f} "
                     f"{_ms(median([r['p50'] for r in runs])):>8} {_ms(median([r['p99'] for r in runs])):>8} "
                     f"{median([r['cpu_us'] for r in runs]):>10.0f}  {sum(r['non2xx'] + r['errors'] for r in runs):>11}")
    if "nginx" in results:
        ceiling = median([r["rps"] for r in results["nginx"]])
        lines += [f"  {name}: ceiling {median([r['rps'] for r in results[name]]) / ceiling:.0%} of nginx's"
                  for name in targets if name.startswith("iw-")]
    lines.append(_sidecar_line(sidecar))
    lines += [_shadow_line(s) for s in args.shadow_sidecars[-1:]]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="role")
    up = sub.add_parser("_upstream", help=argparse.SUPPRESS)
    up.add_argument("--delay", type=float, default=0.0)
    cl = sub.add_parser("_client", help=argparse.SUPPRESS)
    cl.add_argument("--url", required=True)
    cl.add_argument("--concurrency", type=int, default=1)
    cl.add_argument("--duration", type=float, default=10.0)
    cl.add_argument("--requests", type=int, default=0)
    cl.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true", help="3 s runs, 1 repeat, 0.5 s warm-up")
    parser.add_argument("--duration", type=float, default=None, help="seconds per run (default 10; quick 3)")
    parser.add_argument("--requests", type=int, default=0,
                        help="requests per latency run instead of a duration (the throughput phase stays timed)")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up seconds before each run (default 1)")
    parser.add_argument("--repeat", type=int, default=None, help="repeats of every run (default 3; quick 1)")
    parser.add_argument("--delay", type=float, default=0.005, help="model server delay for the latency phase (s)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--max-connections", type=int, default=32, help="connections for the throughput phase")
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--engines", nargs="+", choices=("fast", "aiohttp"), default=["fast", "aiohttp"],
                        help="a sidecar per proxy.engine, the iw-<engine> targets (the first also shadows)")
    parser.add_argument("--workers", type=int, nargs="*", default=[2],
                        help="a fast-engine sidecar with proxy.workers: N for each N, the iw-fast-wN targets "
                             "(its CPU includes the worker processes); none: --workers with no value")
    parser.add_argument("--python-upstream", action="store_true",
                        help="throughput behind the Python model server instead of an nginx with a fixed body")
    parser.add_argument("--no-nginx", action="store_true")
    parser.add_argument("--no-shadow", action="store_true", help="no iw+shadow target (a sidecar mirroring to a challenger)")
    parser.add_argument("--no-wrk", action="store_true", help="use the Python client for the throughput phase")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-streaming", action="store_true", help="no SSE time-to-first-byte row")
    parser.add_argument("--skip-grpc", action="store_true", help="no gRPC ModelInfer row (direct vs the gRPC port)")
    args = parser.parse_args(argv)

    if args.role == "_upstream":
        serve_upstream(args.delay)
        return 0
    if args.role == "_client":
        gc.disable()  # the client's own pauses would show up as latency
        print(json.dumps(asyncio.run(closed_loop(args.url, args.concurrency, args.duration, args.requests,
                                                 args.warmup))))
        return 0

    args.duration = args.duration if args.duration is not None else (3.0 if args.quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0)
    args.repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    install_signal_handlers()
    procs = Processes()
    out: list[str] = [f"machine: {machine()}; sidecar event loop: {loop_name()}"]
    try:
        if not args.skip_latency:
            out += [""] + latency_phase(args, procs)
        if not args.skip_throughput:
            out += [""] + throughput_phase(args, procs)
        if not args.skip_streaming:
            out += [""] + streaming_phase(procs, runs=10 if args.quick else 30)
        if not args.skip_grpc:
            out += [""] + grpc_phase(procs, calls=1000 if args.quick else 5000)
    finally:
        procs.close()
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    run_main(main)
