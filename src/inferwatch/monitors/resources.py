"""Resource metrics of the model server: its process tree (psutil) and its GPUs (NVML).

Both are custom collectors: values are read at scrape time, so they cost nothing between
scrapes and are never stale. A missing process is ``inferwatch_model_process_up 0``, a missing
GPU driver is simply no GPU metrics. Both run inside the sidecar's ``CollectorSet``
(``inferwatch.exposition.collectors``), which isolates an unexpected error and exports
``inferwatch_collector_success``: each sets ``last_success`` to False when it could not read
everything it was configured to read (a process it may not inspect, a GPU it cannot query).
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from typing import Any, Callable, Iterable, Iterator

import psutil
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

log = logging.getLogger(__name__)

REDISCOVER_INTERVAL_SECONDS = 10.0
_MODEL = ["model"]


def _read_pidfile(path: str) -> int | None:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            text = fh.read(64).strip()
        return int(text.split()[0]) if text else None
    except (OSError, ValueError):
        return None


def _start_time(proc: psutil.Process) -> float:
    try:
        return proc.create_time()  # cached by psutil after the first call
    except psutil.Error:
        return 0.0


class ModelProcessCollector:
    """CPU, memory, threads and fds of the model server's process and its children.

    The server is found by ``pid``, else by ``pidfile`` (re-read every scrape, so a restarted
    server is followed), else by ``match``, a regex searched in the process name and the
    space-joined command line. With ``match``, only the top-most matching processes count as
    roots (a gunicorn master, not each of its matching workers); the sidecar itself and its
    ancestors (e.g. a shell whose command line mentions the server) are never matched.
    Every root's descendants are summed into the same series.
    """

    def __init__(self, model: str, *, pid: int = 0, pidfile: str = "", match: str = "",
                 self_pid: int | None = None, rediscover_interval: float = REDISCOVER_INTERVAL_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.model = model
        self.pid = pid
        self.pidfile = pidfile
        self._pattern = re.compile(match) if match and not (pid or pidfile) else None
        self.self_pid = os.getpid() if self_pid is None else self_pid
        self.rediscover_interval = rediscover_interval
        self._clock = clock
        self._lock = threading.Lock()  # the admin server scrapes from several threads
        self._roots: list[psutil.Process] = []
        # Roots and descendants, kept between scrapes so a refresh only adds what is new.
        self._procs: dict[int, psutil.Process] = {}
        self._last_refresh = -math.inf
        self._tracked: frozenset[int] = frozenset()
        # See _cpu_total(): the counter is clamped per identity of the root processes.
        self._cpu_identity: frozenset[tuple[int, float]] | None = None
        self._cpu_high = 0.0
        self.last_success = True  # read every process it found, fully (CollectorSet reads it)

    @property
    def configured(self) -> bool:
        return bool(self.pid or self.pidfile or self._pattern)

    def tracked_pids(self) -> frozenset[int]:
        """Pids summed at the last scrape (used to attribute GPU memory to the model)."""
        return self._tracked

    # --- discovery ------------------------------------------------------------------------

    def _skip_pids(self) -> set[int]:
        skip = {self.self_pid}
        try:
            skip.update(p.pid for p in psutil.Process(self.self_pid).parents())
        except psutil.Error:
            pass
        return skip

    def _find_roots(self, pidfile_pid: int | None) -> list[psutil.Process]:
        want = self.pid or pidfile_pid
        if want:
            try:
                return [psutil.Process(want)]
            except psutil.Error:
                return []
        if self._pattern is None:
            return []
        skip = self._skip_pids()
        matched: dict[int, psutil.Process] = {}
        parent_of: dict[int, int] = {}
        for proc in psutil.process_iter(["name", "cmdline", "ppid"]):
            info = proc.info
            if proc.pid in skip:
                continue
            name = info.get("name") or ""
            cmdline = " ".join(info.get("cmdline") or ())
            if self._pattern.search(name) or (cmdline and self._pattern.search(cmdline)):
                matched[proc.pid] = proc
                parent_of[proc.pid] = info.get("ppid") or 0

        def has_matched_ancestor(pid: int) -> bool:
            seen = set()
            parent = parent_of.get(pid, 0)
            while parent and parent not in seen:
                if parent in matched:
                    return True
                seen.add(parent)
                parent = parent_of.get(parent, 0)
            return False

        return [proc for pid, proc in sorted(matched.items()) if not has_matched_ancestor(pid)]

    def _refresh(self) -> None:
        """Re-find roots and descendants when something changed, at most every interval otherwise."""
        now = self._clock()
        pidfile_pid = _read_pidfile(self.pidfile) if (self.pidfile and not self.pid) else None
        alive = bool(self._roots) and all(root.is_running() for root in self._roots)
        moved = bool(self.pidfile and not self.pid) and pidfile_pid != (self._roots[0].pid if self._roots else None)
        due = now - self._last_refresh >= self.rediscover_interval
        # By pid or pidfile, finding the root is one syscall; by regex it walks every process,
        # so a vanished root is looked for again only once per interval.
        if not (moved or due or (not alive and self._pattern is None)):
            return
        if moved or not alive or (due and self._pattern is not None):
            self._roots = self._find_roots(pidfile_pid)
        self._last_refresh = now
        fresh: dict[int, psutil.Process] = {}
        for root in self._roots:
            try:
                family = [root, *root.children(recursive=True)]
            except psutil.Error:
                family = [root]
            for proc in family:
                cached = self._procs.get(proc.pid)
                # Process equality includes the start time, so a reused pid is a new object.
                fresh[proc.pid] = cached if cached is not None and cached == proc else proc
        self._procs = fresh

    # --- collection -----------------------------------------------------------------------

    def _families(self) -> dict[str, GaugeMetricFamily | CounterMetricFamily]:
        return {
            "up": GaugeMetricFamily(
                "inferwatch_model_process_up",
                "1 if the model server's process was found and readable, 0 if not.", labels=_MODEL),
            "cpu": CounterMetricFamily(
                "inferwatch_model_process_cpu_seconds",
                "User and system CPU time of the model server's processes, including exited children, "
                "in seconds.", labels=_MODEL),
            "rss": GaugeMetricFamily(
                "inferwatch_model_process_resident_memory_bytes",
                "Resident memory of the model server's processes, summed (pages shared by forked "
                "workers count once per process), in bytes.", labels=_MODEL),
            "vms": GaugeMetricFamily(
                "inferwatch_model_process_virtual_memory_bytes",
                "Virtual memory of the model server's processes, summed, in bytes.", labels=_MODEL),
            "threads": GaugeMetricFamily(
                "inferwatch_model_process_threads",
                "OS threads of the model server's processes, summed.", labels=_MODEL),
            "fds": GaugeMetricFamily(
                "inferwatch_model_process_open_fds",
                "Open file descriptors of the model server's processes, summed.", labels=_MODEL),
            "start": GaugeMetricFamily(
                "inferwatch_model_process_start_time_seconds",
                "Start time of the model server's oldest process since the Unix epoch, in seconds.",
                labels=_MODEL),
            "count": GaugeMetricFamily(
                "inferwatch_model_processes",
                "Processes summed into the inferwatch_model_process_* metrics (the server and its "
                "children).", labels=_MODEL),
        }

    def describe(self) -> list[Metric]:
        # Lets the registry check names without running a scrape at registration.
        if not self.configured:
            return []
        return list(self._families().values())

    def _cpu_total(self, cpu: float) -> float:
        # Time of reaped children moves into the parent's children_* fields, so the sum is
        # continuous except between a worker's exit and its reaping; clamp that dip so the
        # counter never decreases while the same server runs. A new server is a true reset.
        identity = frozenset((root.pid, _start_time(root)) for root in self._roots)
        if identity != self._cpu_identity:
            self._cpu_identity, self._cpu_high = identity, cpu
        self._cpu_high = max(self._cpu_high, cpu)
        return self._cpu_high

    def _collect_process(self) -> tuple[list[Metric], bool]:
        self._refresh()
        fams = self._families()
        ok = True
        count = 0
        cpu = rss = vms = threads = fds = 0.0
        fds_ok = hasattr(psutil.Process, "num_fds")  # POSIX only
        start = math.inf
        read: list[int] = []
        for pid, proc in list(self._procs.items()):
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    mem = proc.memory_info()
                    n_threads = proc.num_threads()
                    created = proc.create_time()
                    n_fds = 0
                    if fds_ok:
                        try:
                            n_fds = proc.num_fds()
                        except psutil.AccessDenied:
                            # A server run as another user: the rest is still readable.
                            fds_ok, ok = False, False
            except psutil.NoSuchProcess:  # includes zombies
                self._procs.pop(pid, None)
                continue
            except psutil.AccessDenied:
                ok = False
                continue
            count += 1
            read.append(pid)
            cpu += times.user + times.system + getattr(times, "children_user", 0.0) \
                + getattr(times, "children_system", 0.0)
            rss += mem.rss
            vms += mem.vms
            threads += n_threads
            fds += n_fds
            start = min(start, created)
        self._tracked = frozenset(read)
        labels = [self.model]
        fams["up"].add_metric(labels, 1.0 if count else 0.0)
        if not count:
            return [fams["up"]], ok
        fams["cpu"].add_metric(labels, self._cpu_total(cpu))
        fams["rss"].add_metric(labels, rss)
        fams["vms"].add_metric(labels, vms)
        fams["threads"].add_metric(labels, threads)
        fams["start"].add_metric(labels, start)
        fams["count"].add_metric(labels, count)
        if fds_ok:
            fams["fds"].add_metric(labels, fds)
        else:
            del fams["fds"]
        return list(fams.values()), ok

    def collect(self) -> Iterator[Metric]:
        if not self.configured:
            return
        with self._lock:
            self.last_success = False  # until this scrape has read what it could
            families, self.last_success = self._collect_process()
        yield from families


class GPUCollector:
    """Per-GPU utilization and memory through NVML (``pip install inferwatch[gpu]``).

    Without the ``pynvml`` module or a working driver, ``available`` is False and the
    collector yields nothing. ``nvml`` injects a stand-in module (tests). With ``process``,
    the GPU memory used by the model server's processes is exported too. ``last_success`` is
    False after a scrape that could not count the GPUs or reach one of them (a value a device
    does not support is skipped, not a failure).
    """

    def __init__(self, model: str, *, nvml: Any = None, process: ModelProcessCollector | None = None):
        self.model = model
        self.process = process
        self.available = False
        self._nvml: Any = None
        self.last_success = True
        try:
            if nvml is None:
                import pynvml as nvml  # type: ignore[no-redef]  # rebinds the parameter: the real module
            nvml.nvmlInit()
        except Exception as exc:  # ImportError, or NVMLError when there is no GPU/driver
            log.debug("GPU metrics disabled: %s", exc)
            return
        self._nvml = nvml
        self.available = True

    def close(self) -> None:
        if self.available:
            self.available = False
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass

    def _families(self) -> dict[str, GaugeMetricFamily]:
        labels = ["model", "gpu"]
        return {
            "util": GaugeMetricFamily(
                "inferwatch_gpu_utilization_ratio",
                "Share of the driver's last sample period in which a kernel ran on the GPU (0-1).", labels=labels),
            "used": GaugeMetricFamily(
                "inferwatch_gpu_memory_used_bytes", "GPU memory in use by all processes, in bytes.", labels=labels),
            "total": GaugeMetricFamily(
                "inferwatch_gpu_memory_total_bytes", "Total GPU memory, in bytes.", labels=labels),
            "proc": GaugeMetricFamily(
                "inferwatch_model_process_gpu_memory_used_bytes",
                "GPU memory used by the model server's processes, in bytes (absent when the driver "
                "does not report it, e.g. across PID namespaces).", labels=labels),
        }

    def describe(self) -> list[Metric]:
        return list(self._families().values()) if self.available else []

    def collect(self) -> Iterator[Metric]:
        if not self.available:
            return
        nvml = self._nvml
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except Exception as exc:
            log.debug("nvmlDeviceGetCount failed: %s", exc)
            self.last_success = False
            return
        reached = True
        fams = self._families()
        pids = self.process.tracked_pids() if self.process is not None else frozenset()
        for index in range(count):
            labels = [self.model, str(index)]
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
            except Exception:
                reached = False
                continue
            # Each query may be unsupported on some devices: skip just that value.
            try:
                fams["util"].add_metric(labels, nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0)
            except Exception:
                pass
            try:
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                fams["used"].add_metric(labels, float(memory.used))
                fams["total"].add_metric(labels, float(memory.total))
            except Exception:
                pass
            if pids:
                try:
                    used = _process_gpu_memory(nvml.nvmlDeviceGetComputeRunningProcesses(handle), pids)
                except Exception:
                    used = None
                if used is not None:
                    fams["proc"].add_metric(labels, used)
        self.last_success = reached
        for family in fams.values():
            if family.samples:
                yield family


def _process_gpu_memory(running: Iterable[Any], pids: frozenset[int]) -> float | None:
    """Sum ``usedGpuMemory`` of our pids; None when none of them is on this GPU (or unreported)."""
    total, seen = 0.0, False
    for info in running:
        used = getattr(info, "usedGpuMemory", None)  # None = not available (pynvml's mapping)
        if info.pid in pids and used is not None:
            total += used
            seen = True
    return total if seen else None


__all__ = ["ModelProcessCollector", "GPUCollector", "REDISCOVER_INTERVAL_SECONDS"]
