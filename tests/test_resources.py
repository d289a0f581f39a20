"""Model-process and GPU collectors against real processes and a fake NVML."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import types
import uuid

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from inferwatch.exposition.collectors import CollectorSet
from inferwatch.monitors.resources import GPUCollector, ModelProcessCollector

SLEEPER = "import time; time.sleep(30)"
# A parent with two children (a server and its workers); every command line carries the marker.
FORKER = (
    "import subprocess, sys, time\n"
    "kids = [subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)', sys.argv[1]]) for _ in range(2)]\n"
    "time.sleep(30)\n"
)
# A parent whose child burns CPU, exits and is reaped; the parent's children_* times take it over.
BURNER = (
    "import subprocess, sys, time\n"
    "print('ready', flush=True)\n"
    "sys.stdin.readline()\n"
    "subprocess.run([sys.executable, '-c', 'import time\\nt = time.process_time()\\n"
    "while time.process_time() - t < 0.3: pass'])\n"
    "print('done', flush=True)\n"
    "time.sleep(30)\n"
)


def spawn(code: str, marker: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, marker], **kwargs)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


@pytest.fixture
def marker():
    return f"inferwatch-test-{uuid.uuid4().hex}"


@pytest.fixture
def sleeper(marker):
    proc = spawn(SLEEPER, marker)
    yield proc
    stop(proc)


def scrape(collector) -> dict[str, dict]:
    """{metric family name: {sample name: value}} plus labels of the first sample, of a scrape
    through a CollectorSet as in the sidecar (which adds the collector's success and duration)."""
    collectors = CollectorSet()
    collectors.add("model_process", collector)
    out: dict[str, dict] = {}
    for family in collectors.collect():
        out[family.name] = {"type": family.type, **{s.name: s.value for s in family.samples},
                            "labels": family.samples[0].labels if family.samples else {}}
    return out


def value(metrics: dict, family: str) -> float:
    fam = metrics[family]
    return fam[family + ("_total" if fam["type"] == "counter" else "")]


def assert_sane(metrics: dict, count: int = 1) -> None:
    assert value(metrics, "inferwatch_model_process_up") == 1
    assert value(metrics, "inferwatch_model_processes") == count
    assert value(metrics, "inferwatch_model_process_threads") >= count
    assert value(metrics, "inferwatch_model_process_resident_memory_bytes") > 0
    assert value(metrics, "inferwatch_model_process_virtual_memory_bytes") >= \
        value(metrics, "inferwatch_model_process_resident_memory_bytes")
    assert value(metrics, "inferwatch_model_process_open_fds") >= 3 * count
    assert value(metrics, "inferwatch_model_process_cpu_seconds") >= 0
    assert abs(value(metrics, "inferwatch_model_process_start_time_seconds") - time.time()) < 120
    assert metrics["inferwatch_model_process_up"]["labels"] == {"model": "m"}
    assert value(metrics, "inferwatch_collector_success") == 1
    assert metrics["inferwatch_collector_success"]["labels"] == {"collector": "model_process"}
    assert value(metrics, "inferwatch_collector_duration_seconds") >= 0


def assert_down(metrics: dict) -> None:
    assert value(metrics, "inferwatch_model_process_up") == 0
    assert "inferwatch_model_process_resident_memory_bytes" not in metrics
    assert "inferwatch_model_process_cpu_seconds" not in metrics
    assert "inferwatch_model_processes" not in metrics
    assert value(metrics, "inferwatch_collector_success") == 1


def test_by_pid(sleeper):
    collector = ModelProcessCollector("m", pid=sleeper.pid)
    first = scrape(collector)
    assert_sane(first)
    assert collector.tracked_pids() == {sleeper.pid}
    second = scrape(collector)
    assert value(second, "inferwatch_model_process_cpu_seconds") >= value(first, "inferwatch_model_process_cpu_seconds")


def test_exited_process_is_down(sleeper):
    collector = ModelProcessCollector("m", pid=sleeper.pid)
    assert_sane(scrape(collector))
    stop(sleeper)
    assert_down(scrape(collector))
    assert collector.tracked_pids() == frozenset()


def test_missing_pid_is_down():
    with subprocess.Popen([sys.executable, "-c", "pass"]) as proc:
        proc.wait(10)
    assert_down(scrape(ModelProcessCollector("m", pid=proc.pid)))


def test_pidfile_followed_across_restart(tmp_path, marker):
    pidfile = tmp_path / "server.pid"
    collector = ModelProcessCollector("m", pidfile=str(pidfile))
    assert_down(scrape(collector))  # no file yet
    first = spawn(SLEEPER, marker)
    second = None
    try:
        pidfile.write_text(f"{first.pid}\n")
        metrics = scrape(collector)
        assert_sane(metrics)
        assert collector.tracked_pids() == {first.pid}
        started = value(metrics, "inferwatch_model_process_start_time_seconds")
        time.sleep(0.05)
        stop(first)  # the server restarts under a new pid
        second = spawn(SLEEPER, marker)
        pidfile.write_text(f"{second.pid}\n")
        metrics = scrape(collector)
        assert_sane(metrics)
        assert collector.tracked_pids() == {second.pid}
        assert value(metrics, "inferwatch_model_process_start_time_seconds") > started
        pidfile.write_text("garbage")
        assert_down(scrape(collector))
    finally:
        stop(first)
        if second is not None:
            stop(second)


def test_match_regex(sleeper, marker):
    collector = ModelProcessCollector("m", match=f"time\\.sleep.*{marker}", rediscover_interval=0)
    assert_sane(scrape(collector))
    assert collector.tracked_pids() == {sleeper.pid}


def test_match_skips_self(sleeper, marker):
    # Pretend the sleeper is the sidecar: it must not monitor itself.
    collector = ModelProcessCollector("m", match=marker, self_pid=sleeper.pid)
    assert_down(scrape(collector))
    assert ModelProcessCollector("m", match=marker).configured


def test_match_sums_parent_and_children(marker):
    parent = spawn(FORKER, marker)
    try:
        collector = ModelProcessCollector("m", match=marker, rediscover_interval=0)
        # Every process matches; the parent is the only root and its children are summed once.
        metrics = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            metrics = scrape(collector)
            if metrics.get("inferwatch_model_processes", {}).get("inferwatch_model_processes") == 3:
                break
            time.sleep(0.05)
        assert_sane(metrics, count=3)
        assert parent.pid in collector.tracked_pids()
        # By pid, the same tree.
        assert_sane(scrape(ModelProcessCollector("m", pid=parent.pid)), count=3)
    finally:
        import psutil

        try:
            kids = psutil.Process(parent.pid).children(recursive=True)
        except psutil.Error:
            kids = []
        for kid in kids:
            kid.kill()
        stop(parent)


def test_cpu_of_exited_children_is_kept(marker):
    parent = spawn(BURNER, marker, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline().strip() == "ready"
        collector = ModelProcessCollector("m", pid=parent.pid, rediscover_interval=0)
        before = value(scrape(collector), "inferwatch_model_process_cpu_seconds")
        parent.stdin.write("go\n")
        parent.stdin.flush()
        seen = [before]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # scrape while the child runs, exits and is reaped
            seen.append(value(scrape(collector), "inferwatch_model_process_cpu_seconds"))
            if len(seen) > 2 and seen[-1] - before >= 0.3:
                break
            time.sleep(0.02)
        assert parent.stdout.readline().strip() == "done"
        seen.append(value(scrape(collector), "inferwatch_model_process_cpu_seconds"))
        assert seen == sorted(seen), "the CPU counter decreased"
        assert seen[-1] - before >= 0.25
    finally:
        stop(parent)


def test_unconfigured_yields_nothing():
    collector = ModelProcessCollector("m")
    assert not collector.configured
    assert list(collector.collect()) == []
    assert collector.describe() == []


def test_rediscovery_is_throttled(marker):
    now = [1000.0]
    collector = ModelProcessCollector("m", match=marker, clock=lambda: now[0], rediscover_interval=10)
    assert_down(scrape(collector))
    proc = spawn(SLEEPER, marker)
    try:
        assert_down(scrape(collector))  # looked less than 10 s ago: not looked for again yet
        now[0] += 11
        assert_sane(scrape(collector))
    finally:
        stop(proc)


def test_collect_never_raises(sleeper, monkeypatch):
    collector = ModelProcessCollector("m", pid=sleeper.pid)

    def broken():
        raise RuntimeError("boom")

    monkeypatch.setattr(collector, "_refresh", broken)
    metrics = scrape(collector)
    assert value(metrics, "inferwatch_collector_success") == 0
    assert "inferwatch_model_process_up" not in metrics


# --- GPU -------------------------------------------------------------------------------------


def fake_nvml(pid: int) -> types.SimpleNamespace:
    gib = 1024**3

    class NVMLError(Exception):
        pass

    def utilization(handle):
        if handle == 1:
            raise NVMLError("Not Supported")
        return types.SimpleNamespace(gpu=37, memory=5)

    return types.SimpleNamespace(
        calls=[],
        NVMLError=NVMLError,
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetUtilizationRates=utilization,
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(total=16 * gib, used=(h + 1) * gib, free=0),
        nvmlDeviceGetComputeRunningProcesses=lambda h: (
            [types.SimpleNamespace(pid=pid, usedGpuMemory=512 * 1024**2),
             types.SimpleNamespace(pid=1, usedGpuMemory=gib)] if h == 0 else
            [types.SimpleNamespace(pid=pid, usedGpuMemory=None)]),
    )


def test_gpu_absent(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails as if not installed
    gpu = GPUCollector("m")
    assert not gpu.available
    assert list(gpu.collect()) == []
    assert gpu.describe() == []
    gpu.close()

    def init():
        raise RuntimeError("NVML Shared Library Not Found")

    broken = GPUCollector("m", nvml=types.SimpleNamespace(nvmlInit=init))
    assert not broken.available
    assert list(broken.collect()) == []


def test_gpu_fake_two_devices(sleeper):
    process = ModelProcessCollector("m", pid=sleeper.pid)
    list(process.collect())  # learns the pids
    gpu = GPUCollector("m", nvml=fake_nvml(sleeper.pid), process=process)
    assert gpu.available
    families = {f.name: {s.labels["gpu"]: s.value for s in f.samples} for f in gpu.collect()}
    assert families["inferwatch_gpu_utilization_ratio"] == {"0": 0.37}  # gpu 1: not supported
    assert families["inferwatch_gpu_memory_used_bytes"] == {"0": 1024**3, "1": 2 * 1024**3}
    assert families["inferwatch_gpu_memory_total_bytes"] == {"0": 16 * 1024**3, "1": 16 * 1024**3}
    # Only the model's pid counts, and gpu 1 does not report per-process memory.
    assert families["inferwatch_model_process_gpu_memory_used_bytes"] == {"0": 512 * 1024**2}
    for family in gpu.collect():
        assert all(s.labels["model"] == "m" for s in family.samples)
    gpu.close()
    assert list(gpu.collect()) == []


def test_gpu_unreachable_is_not_a_success(sleeper):
    nvml = fake_nvml(sleeper.pid)
    collectors = CollectorSet()
    gpu = GPUCollector("m", nvml=nvml)
    collectors.add("gpu", gpu)

    def success() -> float:
        families = {f.name: f for f in collectors.collect()}
        return families["inferwatch_collector_success"].samples[0].value

    def lost(*args):
        raise nvml.NVMLError("GPU is lost")

    assert success() == 1  # gpu 1 does not support utilization: skipped, still a success
    nvml.nvmlDeviceGetHandleByIndex = lost
    assert success() == 0 and gpu.last_success is False
    nvml.nvmlDeviceGetHandleByIndex = lambda i: i
    assert success() == 1
    nvml.nvmlDeviceGetCount = lost
    assert success() == 0


def test_exposition_parses(sleeper):
    registry = CollectorRegistry(auto_describe=True)
    process = ModelProcessCollector("m", pid=sleeper.pid)
    collectors = CollectorSet()
    collectors.add("model_process", process)
    collectors.add("gpu", GPUCollector("m", nvml=fake_nvml(sleeper.pid), process=process))
    registry.register(collectors)
    registry.register(ModelProcessCollector("m"))  # unconfigured: registers, exports nothing
    text = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["inferwatch_model_process_cpu_seconds"].type == "counter"
    assert families["inferwatch_model_process_cpu_seconds"].samples[0].name == "inferwatch_model_process_cpu_seconds_total"
    for name in ("process_up", "process_resident_memory_bytes", "process_virtual_memory_bytes", "process_threads",
                 "process_open_fds", "process_start_time_seconds", "processes"):
        family = families[f"inferwatch_model_{name}"]
        assert family.type == "gauge" and family.documentation
        assert family.samples[0].labels == {"model": "m"}
    assert families["inferwatch_collector_success"].samples[0].value == 1
    assert {s.labels["gpu"] for s in families["inferwatch_gpu_memory_total_bytes"].samples} == {"0", "1"}
    assert all(f.documentation for f in families.values())
    assert os.getpid() not in process.tracked_pids()
