"""The gRPC row of proxy_overhead.py: ModelInfer direct vs through the sidecar's gRPC port.

A grpcio model server (tests/grpc_upstream.py, its own process) answers ModelInfer at once; a
sidecar process forwards its gRPC port to it. This process is the client: sequential unary
calls (10 FP32 features x 2 rows), alternating direct and through the sidecar in blocks.
"CPU us/call" is the hop's CPU (psutil, user + system): the model server's for ``direct``, the
sidecar's (proxy loop, gRPC loop, worker decoding every call) for ``inferwatch``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import grpc
import psutil

from _harness import HOST, Processes, SidecarProcess, free_port, percentile

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))
from inferwatch.ingest.grpc_v2 import MODEL_INFER, encode_infer  # noqa: E402

SERVE = ("import sys; sys.path.insert(0, sys.argv[1]); from grpc_upstream import start_upstream; "
         "server, port = start_upstream(); print(port, flush=True); server.wait_for_termination()")


def _block(stub, request: bytes, calls: int) -> list[float]:
    out = []
    for _ in range(calls):
        start = time.perf_counter()
        stub(request, timeout=10)
        out.append(time.perf_counter() - start)
    return out


def grpc_phase(procs: Processes, calls: int = 2000, blocks: int = 10) -> list[str]:
    upstream = procs.start([sys.executable, "-c", SERVE, str(TESTS)], name="grpc-upstream", stdout=subprocess.PIPE)
    assert upstream.stdout is not None
    upstream_port = int(upstream.stdout.readline())
    grpc_port = free_port()
    http = procs.start([sys.executable, str(TESTS / "upstream_server.py")], name="grpc-http-upstream",
                       stdout=subprocess.PIPE)  # the HTTP side, for the sidecar's readiness probe
    assert http.stdout is not None
    http_port = int(http.stdout.readline())
    sidecar = SidecarProcess(procs, f"http://{HOST}:{http_port}", name="sidecar-grpc", extra_config=(
        f"proxy:\n  listen_address: 127.0.0.1\n  grpc_port: {grpc_port}\n  grpc_upstream: '{HOST}:{upstream_port}'\n"))
    request = encode_infer([("x", "FP32", [2, 10], [float(i) for i in range(20)])], model_name="m")
    targets = {"direct": (upstream_port, upstream.pid), "inferwatch": (grpc_port, sidecar.pid)}
    stubs = {name: grpc.insecure_channel(f"{HOST}:{port}").unary_unary(MODEL_INFER)
             for name, (port, _) in targets.items()}
    latencies: dict[str, list[float]] = {name: [] for name in targets}
    cpu: dict[str, float] = {name: 0.0 for name in targets}
    for stub in stubs.values():
        _block(stub, request, 200)  # warm: connections, the sidecar's caches
    per_block = max(calls // blocks, 1)
    for _ in range(blocks):
        for name, (_, pid) in targets.items():
            process = psutil.Process(pid)
            before = sum(process.cpu_times()[:2])
            latencies[name] += _block(stubs[name], request, per_block)
            cpu[name] += sum(process.cpu_times()[:2]) - before
    lines = [f"gRPC ModelInfer, unary, sequential, 10 FP32 features x 2 rows, {per_block * blocks} calls each "
             f"(alternating blocks of {per_block}):"]
    for name, values in latencies.items():
        values.sort()
        lines.append(f"  {name:<10} p50 {percentile(values, 50) * 1e3:.3f} ms  p99 {percentile(values, 99) * 1e3:.3f} ms  "
                     f"CPU {cpu[name] / len(values) * 1e6:.0f} us/call")
    added = percentile(latencies["inferwatch"], 50) - percentile(latencies["direct"], 50)
    lines.append(f"  p50 added by the sidecar: {added * 1e3:.3f} ms")
    return lines


if __name__ == "__main__":  # the gRPC row alone
    procs = Processes()
    try:
        print("\n".join(grpc_phase(procs, calls=int(sys.argv[1]) if len(sys.argv) > 1 else 2000)))
    finally:
        procs.close()
