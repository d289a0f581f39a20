#!/usr/bin/env python
"""Streamed chat completions direct vs through the sidecar: the time to first token it adds, and
its CPU per streamed token.

    .venv/bin/python benchmarks/genai_streams.py            # ~2 minutes
    .venv/bin/python benchmarks/genai_streams.py --quick    # one round, ~40 s

Two processes besides this one, on 127.0.0.1: an OpenAI-compatible model server
(tests/genai_upstream.py: a role chunk, then one `data:` chunk per token ``--token-ms`` apart after
``--prefill-ms``, a finish chunk, the usage chunk, ``[DONE]``, as vLLM streams) and the sidecar
(``python -m inferwatch run``, `genai` on by default) in front of it. This process is the client
(aiohttp): at each concurrency it keeps that many streams of ``--tokens`` chunks in flight,
direct and through the sidecar, interleaved, ``--rounds`` times: once with the clients' starts
spread over a stream's length (``steady``: streams begin and end at an even pace, as users' do),
once all at once (``burst``: 64 requests in the same millisecond, the worst case for a proxy that
handles requests one after another on one loop).

Columns: ``TTFT`` is the client's time to first token, from sending the request to reading the
first chunk with generated content, p50/p99 over every stream of every round; ``+p50``/``+p99``
the sidecar's minus direct's; ``stream`` the median whole-stream time; ``CPU us/tok`` the CPU
(user + system, psutil) of the hop per streamed token: the model server's for ``direct``, the
sidecar's (proxy loop, monitoring worker decoding every chunk, admin) for ``inferwatch``, less
its idle CPU (health checks, drift evaluations), measured for 3 s before the rows.
``metric`` is the sidecar's own mean TTFT (inferwatch_genai_server_time_to_first_token_seconds
sum / count) beside the client's mean through it: the proxy starts its clock when the request
arrives, the client before it sends, so the metric is a little lower.

This is a benchmark that prints figures, not a test: nothing here asserts a target.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (  # noqa: E402
    PYTHON, BenchmarkError, Processes, SidecarProcess, install_signal_handlers, machine, median, percentile,
    run_main,
)

UPSTREAM = Path(__file__).resolve().parent.parent / "tests" / "genai_upstream.py"
IDLE_SECONDS = 3.0
FIRST_CONTENT = b'"content": "w'  # genai_upstream's token deltas ("w0 ", "w1 " ...); the role chunk's is ""


def cpu_seconds(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


async def one_stream(session, url: str, body: bytes) -> tuple[float, float]:
    """(time to first token, whole stream) as this client sees them."""
    start = time.perf_counter()
    first = None
    tail = b""
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
        if response.status != 200:
            raise BenchmarkError(f"{url}: HTTP {response.status}")
        async for data in response.content.iter_any():
            if first is None and FIRST_CONTENT in tail + data:
                first = time.perf_counter() - start
            tail = data[-len(FIRST_CONTENT):]
    total = time.perf_counter() - start
    if first is None:
        raise BenchmarkError(f"{url}: no content chunk")
    return first, total


async def run_round(url: str, concurrency: int, streams: int, body: bytes,
                    stagger: float) -> list[tuple[float, float]]:
    """``streams`` streams, ``concurrency`` in flight. ``stagger`` > 0: client i starts after
    i / concurrency of it (a stream's length), so streams start and end at a steady pace, as users'
    do; 0: every client starts at once (a burst)."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=300)
    results: list[tuple[float, float]] = []
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        left = [streams]

        async def client(i: int) -> None:
            await asyncio.sleep(stagger * i / concurrency)
            while left[0] > 0:
                left[0] -= 1
                results.append(await one_stream(session, url, body))

        await asyncio.gather(*(client(i) for i in range(concurrency)))
    return results


def sidecar_ttft(admin: str) -> tuple[float, float]:
    """(sum, count) of the sidecar's time-to-first-token histogram."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(admin + "/metrics", timeout=10) as response:
        text = response.read().decode()
    total = count = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "inferwatch_genai_server_time_to_first_token_seconds_sum":
                total += s.value
            elif s.name == "inferwatch_genai_server_time_to_first_token_seconds_count":
                count += s.value
    return total, count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,64", help="comma-separated streams in flight (default 1,64)")
    parser.add_argument("--tokens", type=int, default=200, help="content chunks per stream (default 200)")
    parser.add_argument("--prefill-ms", type=float, default=50.0, help="before the first token (default 50)")
    parser.add_argument("--token-ms", type=float, default=10.0, help="between tokens (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per target and concurrency (default 3)")
    parser.add_argument("--quick", action="store_true", help="one round")
    args = parser.parse_args()
    install_signal_handlers()
    rounds = 1 if args.quick else args.rounds
    levels = [int(c) for c in args.concurrency.split(",")]
    procs = Processes(prefix="inferwatch-genai-bench-")
    try:
        upstream = procs.start([PYTHON, str(UPSTREAM), "0", str(args.prefill_ms / 1000), str(args.token_ms / 1000),
                                str(args.tokens)], name="llm", stdout=subprocess.PIPE)
        assert upstream.stdout is not None
        line = upstream.stdout.readline().decode()
        if not line.startswith("listening "):
            raise BenchmarkError(f"model server did not start:\n{procs.stderr_of('llm')}")
        llm_url = line.split()[1]
        sidecar = SidecarProcess(procs, llm_url, name="sidecar")
        targets = {"direct": (llm_url, upstream.pid), "inferwatch": (sidecar.proxy, sidecar.pid)}
        body = json.dumps({"model": "stub-llm", "stream": True, "stream_options": {"include_usage": True},
                           "max_tokens": args.tokens,
                           "messages": [{"role": "system", "content": "You are terse."},
                                        {"role": "user", "content": "Explain drift in two hundred words."}]}).encode()
        for name, (base, _) in targets.items():  # warm both paths (connections, imports, the sidecar's worker)
            asyncio.run(run_round(f"{base}/v1/chat/completions", 4, 8, body, 0.0))
        time.sleep(1.0)
        idle_start = cpu_seconds(sidecar.pid)
        time.sleep(IDLE_SECONDS)  # the sidecar's own background (health checks, drift, scrapes): not per token
        idle_rate = (cpu_seconds(sidecar.pid) - idle_start) / IDLE_SECONDS
        stream_seconds = (args.prefill_ms + args.token_ms * args.tokens) / 1000
        print(f"genai_streams: {machine()}; streams of {args.tokens} chunks, first token after "
              f"{args.prefill_ms:g} ms, then one every {args.token_ms:g} ms; {rounds} round(s) per row; "
              f"sidecar idle CPU {idle_rate * 100:.1f}% of a core (subtracted)")
        print(f"{'conc':>4} {'start':<6} {'target':<10} {'streams':>7} {'TTFT p50':>9} {'TTFT p99':>9} "
              f"{'+p50 ms':>8} {'+p99 ms':>8} {'stream s':>9} {'CPU us/tok':>10} {'metric ms':>11}")
        rows = [(c, "steady") for c in levels] + [(c, "burst") for c in levels if c > 1]
        for concurrency, start in rows:
            stagger = stream_seconds if start == "steady" and concurrency > 1 else 0.0
            streams = max(2 * concurrency, 8)
            samples: dict[str, list[tuple[float, float]]] = {name: [] for name in targets}
            cpu: dict[str, float] = {name: 0.0 for name in targets}
            before_metric = sidecar_ttft(sidecar.admin)
            for _ in range(rounds):
                for name, (base, pid) in targets.items():
                    cpu_start, began = cpu_seconds(pid), time.perf_counter()
                    samples[name] += asyncio.run(run_round(f"{base}/v1/chat/completions", concurrency, streams,
                                                           body, stagger))
                    if name == "inferwatch":  # the worker decodes after a stream ends: let it drain
                        time.sleep(0.5)
                        cpu[name] -= idle_rate * (time.perf_counter() - began)
                    cpu[name] += cpu_seconds(pid) - cpu_start
            after_metric = sidecar_ttft(sidecar.admin)
            metric_count = after_metric[1] - before_metric[1]
            metric_mean = (after_metric[0] - before_metric[0]) / metric_count if metric_count else float("nan")
            base_p50 = base_p99 = 0.0
            for name, got in samples.items():
                ttft = sorted(s[0] for s in got)
                p50, p99 = percentile(ttft, 50), percentile(ttft, 99)
                tokens = len(got) * args.tokens
                added = ("-", "-") if name == "direct" else (f"{(p50 - base_p50) * 1000:.2f}",
                                                               f"{(p99 - base_p99) * 1000:.2f}")
                if name == "direct":
                    base_p50, base_p99 = p50, p99
                client_mean = sum(ttft) / len(ttft)
                metric = "-" if name == "direct" else f"{metric_mean * 1000:.1f}/{client_mean * 1000:.1f}"
                print(f"{concurrency:>4} {start:<6} {name:<10} {len(got):>7} {p50 * 1000:>7.1f}ms {p99 * 1000:>7.1f}ms "
                      f"{added[0]:>8} {added[1]:>8} {median([s[1] for s in got]):>9.2f} "
                      f"{cpu[name] / tokens * 1e6:>10.1f} {metric:>11}", flush=True)
        print("steady: clients start spread over one stream's length; burst: all at once. metric ms: the "
              "sidecar's mean TTFT / the client's mean through it, same streams")
        return 0
    finally:
        procs.close()


if __name__ == "__main__":
    run_main(main)
