"""Shared process plumbing for the benchmarks: start children on loopback, tear them down.

Every child is started by ``Processes.start`` and stopped (SIGTERM, then SIGKILL) by
``Processes.close``, which the benchmarks call from ``finally`` -- also on Ctrl-C and SIGTERM,
which ``install_signal_handlers`` turns into exceptions so the ``finally`` blocks run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"
PYTHON = sys.executable


class BenchmarkError(RuntimeError):
    pass


def install_signal_handlers() -> None:
    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 20.0, ok=lambda status: status < 500) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if ok(resp.status):
                    return
                last = resp.status
        except urllib.error.HTTPError as exc:
            last = exc.code
        except OSError as exc:
            last = exc
        time.sleep(0.05)
    raise BenchmarkError(f"{url} not ready after {timeout:g}s ({last})")


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def loop_name() -> str:
    """The event loop the sidecar will use (it picks uvloop when importable)."""
    import importlib.util

    return "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"


class Processes:
    """Children of this benchmark run, and a temp dir for their files."""

    def __init__(self, prefix: str = "inferwatch-bench-"):
        self.tmp = Path(tempfile.mkdtemp(prefix=prefix))
        self.children: list[subprocess.Popen] = []

    def start(self, argv: list[str], *, name: str, **kwargs) -> subprocess.Popen:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        if "stderr" not in kwargs:
            kwargs["stderr"] = open(self.tmp / f"{name}.stderr", "wb")
        proc = subprocess.Popen(argv, **kwargs)
        proc.bench_name = name  # type: ignore[attr-defined]
        self.children.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, timeout: float = 5.0) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if proc in self.children:
            self.children.remove(proc)

    def stderr_of(self, name: str) -> str:
        path = self.tmp / f"{name}.stderr"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        for proc in reversed(list(self.children)):
            try:
                self.stop(proc)
            except Exception as exc:  # noqa: BLE001 - keep tearing down the rest
                print(f"warning: could not stop {proc.bench_name} (pid {proc.pid}): {exc}", file=sys.stderr)
        import shutil

        shutil.rmtree(self.tmp, ignore_errors=True)


SIDECAR_LINE = re.compile(rb"proxy (?:http://[\d.]+:(\d+)|off).*?metrics on https?://[\d.]+:(\d+)/metrics")


class SidecarProcess:
    """``python -m inferwatch run`` on loopback with ports chosen by the kernel."""

    def __init__(self, procs: Processes, upstream: str | None, *, name: str = "sidecar",
                 extra_config: str = "", env: dict[str, str] | None = None, engine: str | None = None,
                 workers: int = 1):
        cfg = procs.tmp / f"{name}.yaml"
        cfg.write_text(
            "proxy:\n  listen_address: 127.0.0.1\n"
            + ("" if upstream else "  enabled: false\n")
            + (f"  engine: {engine}\n" if engine else "")
            + (f"  workers: {workers}\n" if workers > 1 else "")
            + "admin:\n  listen_address: 127.0.0.1\n"
            "model:\n  name: m\n  version: '1'\n"
            "upstream:\n  health_interval_seconds: 1\n"
            "logging:\n  level: WARNING\n" + extra_config
        )
        argv = [PYTHON, "-m", "inferwatch", "run", "--config", str(cfg), "--proxy-port", "0", "--admin-port", "0"]
        if upstream:
            argv += ["--upstream", upstream]
        self.procs = procs
        self.name = name
        self.proc = procs.start(argv, name=name, stdout=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 30
        match = None
        while time.monotonic() < deadline and match is None:
            if self.proc.poll() is not None:
                raise BenchmarkError(f"sidecar exited ({self.proc.returncode}):\n{procs.stderr_of(name)}")
            match = SIDECAR_LINE.search((procs.tmp / f"{name}.stderr").read_bytes())
            if match is None:
                time.sleep(0.05)
        if match is None:
            raise BenchmarkError(f"sidecar did not start:\n{procs.stderr_of(name)}")
        self.proxy_port = int(match.group(1)) if match.group(1) else None
        self.admin_port = int(match.group(2))
        self.admin = f"http://{HOST}:{self.admin_port}"
        self.proxy = f"http://{HOST}:{self.proxy_port}" if self.proxy_port else None
        wait_http(self.admin + "/readyz", ok=lambda status: status == 200)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def status(self) -> dict:
        return get_json(self.admin + "/v1/status")


def nginx_binary() -> str | None:
    for candidate in ("/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"):
        if os.access(candidate, os.X_OK):
            return candidate
    import shutil

    return shutil.which("nginx")


def start_nginx(procs: Processes, upstream_port: int, *, name: str = "nginx") -> str:
    """nginx as a keep-alive reverse proxy in front of ``upstream_port``; returns its base URL."""
    return _run_nginx(procs, name, f"""    upstream model {{
        server {HOST}:{upstream_port};
        keepalive 256;
    }}""", """            proxy_pass http://model;
            proxy_http_version 1.1;
            proxy_set_header Connection "";""")


def start_nginx_fixed(procs: Processes, body: str, *, name: str = "nginx-fixed") -> str:
    """nginx answering every request with ``body`` (JSON, no quotes inside): the fastest model
    server there is, so what a proxy in front of it reaches is the proxy's own ceiling."""
    return _run_nginx(procs, name, "", f"""            default_type application/json;
            return 200 '{body}';""")


def _run_nginx(procs: Processes, name: str, http_extra: str, location: str) -> str:
    """One nginx worker process (one core), keep-alive without a request limit; its base URL."""
    binary = nginx_binary()
    if binary is None:
        raise BenchmarkError("nginx not installed")
    root = procs.tmp / name
    root.mkdir()
    os.chmod(procs.tmp, 0o755)  # workers may run as an unprivileged user
    os.chmod(root, 0o755)
    port = free_port()
    user = "user root;\n" if os.geteuid() == 0 else ""
    (root / "nginx.conf").write_text(f"""{user}worker_processes 1;
daemon off;
master_process on;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
{http_extra}
    server {{
        listen {HOST}:{port} backlog=1024;
        keepalive_requests 1000000;
        location / {{
{location}
        }}
    }}
}}
""")
    procs.start([binary, "-p", str(root), "-c", str(root / "nginx.conf"), "-e", str(root / "error.log")],
                name=name, stdout=subprocess.DEVNULL)
    url = f"http://{HOST}:{port}"
    wait_http(url + "/", timeout=10)
    return url


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, int(round(q / 100.0 * len(sorted_values) + 0.4999999)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def median(values: list[float]) -> float:
    values = sorted(v for v in values if v == v)
    if not values:
        return float("nan")
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def machine_load() -> str:
    """CPUs and load average: the line the table benchmarks start with (their wall times grow with load)."""
    return f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (shared: wall times are noisy)"


def write_table_files(paths: dict[str, Path], rows: int, cols: int, n_cat: int, *, score: bool = False,
                      chunk: int = 100_000) -> dict[str, Path]:
    """The same synthetic rows (seed 3) written to each of ``paths`` (``parquet`` and/or ``csv``) with
    pyarrow's writers, ``chunk`` rows at a time (one Parquet row group each): ``cols`` columns,
    ``n_cat`` categorical (``k0``..), the rest numeric (``x0``..), the last one ``score`` in [0, 1)
    when ``score``. The training and scored tables of drift.py, batch.py and profile_distributed.py."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    categories = [f"v{i}" for i in range(12)]
    rng = np.random.default_rng(3)
    numeric = cols - n_cat - (1 if score else 0)
    writer = None
    csv_file = open(paths["csv"], "wb") if "csv" in paths else None
    try:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            table = {f"x{i}": np.round(rng.normal(i % 7, 1 + i % 3, n), 4) for i in range(numeric)}
            table.update({f"k{i}": rng.choice(categories, n) for i in range(n_cat)})
            if score:
                table["score"] = np.round(rng.random(n), 4)
            t = pa.table(table)
            if "parquet" in paths:
                if writer is None:
                    writer = pq.ParquetWriter(paths["parquet"], t.schema)
                writer.write_table(t)
            if csv_file is not None:
                pacsv.write_csv(t, csv_file, pacsv.WriteOptions(include_header=start == 0))
    finally:
        if writer is not None:
            writer.close()
        if csv_file is not None:
            csv_file.close()
    return paths


def run_child_json(argv: list[str], what: str, env: dict[str, str] | None = None) -> dict:
    """Run a benchmark's child process to its end: its last line of output is a JSON object of figures."""
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import platform

    return f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}"


def run_main(main) -> None:
    """``raise SystemExit(main())``; Ctrl-C or SIGTERM ends with 130 once ``finally`` blocks stopped the children."""
    try:
        raise SystemExit(main())
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc}); processes stopped", file=sys.stderr)
        raise SystemExit(130) from None
