"""``proxy.workers: N``: N proxy processes on one port, handing their exchanges to one monitoring process.

One process carries the proxy's event loop and the monitoring worker on one GIL, so it relays at
most about 5,000 requests a second whatever the cores (docs/design.md, "The data plane"). With
``proxy.workers`` above 1 the sidecar's own process keeps everything but the proxy port:

- it reserves the port (a socket bound with ``SO_REUSEPORT`` that never listens), starts N worker
  processes that listen on it with ``SO_REUSEPORT`` (the kernel spreads connections over them)
  and listens for them on a Unix socket in a directory only its user can enter;
- a worker runs the ``fast`` engine's proxy; its pipeline is a ``HandoffSender``, which batches
  the exchanges (and shadow copies) of a few milliseconds into one frame to the sidecar, where they
  enter the one pipeline: windows and monitors see what a single process would have seen;
- a worker's request-path metrics live in its own registry and go to the sidecar as cumulative
  snapshots (every ``SNAPSHOT_SECONDS``, and a last one when it stops), which ``MetricMerger``
  adds into the sidecar's own families as deltas: ``/metrics`` shows one set of series whatever N
  is, counters equal to a single process's, gauges (in flight, connections open, bytes held)
  summed over the workers.

A worker that exits unexpectedly is started again and counted. On shutdown the sidecar tells each
worker to stop: it closes its listener, lets the answers in flight finish, sends what it holds and
a last snapshot, and exits; the sidecar drains its queue only after that.

Frames are pickles (4-byte length first) on a socket in a private directory: both ends are this
program, started by the same user.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from inferwatch.config import Config
from inferwatch.exposition.metrics import Metrics
from inferwatch.exposition.worker_metrics import MetricMerger, MetricSnapshots, metric_families
from inferwatch.pipeline.items import Exchange

log = logging.getLogger(__name__)

SNAPSHOT_SECONDS = 0.5
# Exchanges leave for the sidecar at most this often (or at FLUSH_BYTES of bodies): one write and
# one wake-up of the sidecar per few requests, not per request. The monitoring worker itself
# polls every 100 ms (pipeline/handoff.py), so nothing is seen later for it.
FLUSH_SECONDS = 0.005
FLUSH_BYTES = 256 * 1024
START_TIMEOUT_SECONDS = 25.0
# How long a worker that will not stop is given after its drain time, before it is killed.
STOP_GRACE_SECONDS = 5.0
# A worker that exits within STABLE_SECONDS of its start is started again after a delay that
# doubles each time, up to MAX_RESTART_DELAY_SECONDS: a crash loop costs little CPU and log.
STABLE_SECONDS = 10.0
MAX_RESTART_DELAY_SECONDS = 30.0
_LENGTH = struct.Struct("!I")


def frame(message: Any) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


class FrameReader:
    """Splits a byte stream into the messages ``frame`` wrote."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        self.buffer += data
        messages = []
        while len(self.buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self.buffer)
            end = _LENGTH.size + length
            if len(self.buffer) < end:
                break
            messages.append(pickle.loads(self.buffer[_LENGTH.size:end]))
            del self.buffer[:end]
        return messages


# --- the worker's side -----------------------------------------------------------------------

class HandoffSender(asyncio.Protocol):
    """The pipeline (and shadow mirror) of a worker's proxy: what it is given leaves for the
    sidecar in one frame every ``FLUSH_SECONDS``. Past ``max_pending_bytes`` unsent (the sidecar is behind),
    exchanges are dropped and counted (``events_dropped``, reason ``handoff_full``)."""

    def __init__(self, max_pending_bytes: int, on_dropped: Callable[[Exchange], None],
                 on_stop: Callable[[float], None]):
        self.max_pending_bytes = max_pending_bytes
        self.on_dropped = on_dropped
        self.on_stop = on_stop
        self.transport: asyncio.WriteTransport | None = None
        self.exchanges: list[Exchange] = []
        self.mirrored: list[Any] = []
        self.pending_bytes = 0
        self.scheduled: asyncio.TimerHandle | None = None
        self.reader = FrameReader()
        self.closed = asyncio.get_running_loop().create_future()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        for message in self.reader.feed(data):
            if message[0] == "stop":
                self.on_stop(message[1])

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.closed.done():
            self.closed.set_result(None)
        self.on_stop(0.0)  # the sidecar is gone: nothing could be monitored any more

    # what the proxy calls
    def submit_exchange(self, exchange: Exchange) -> None:
        transport = self.transport
        if transport is None or transport.is_closing() or transport.get_write_buffer_size() > self.max_pending_bytes:
            self.on_dropped(exchange)
            return
        self.exchanges.append(exchange)
        self._schedule(len(exchange.request_body) + len(exchange.response_body or b""))

    def offer(self, request: Any) -> None:
        if self.transport is not None:
            self.mirrored.append(request)
            self._schedule(len(request.body))

    async def startup(self) -> None:  # the proxy's mirror hooks: the sidecar's mirror does the sending
        pass

    async def cleanup(self) -> None:
        pass

    def _schedule(self, nbytes: int) -> None:
        self.pending_bytes += nbytes
        if self.pending_bytes >= FLUSH_BYTES:
            self.flush()
        elif self.scheduled is None:
            self.scheduled = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        if self.scheduled is not None:
            self.scheduled.cancel()
            self.scheduled = None
        self.pending_bytes = 0
        if not (self.exchanges or self.mirrored):
            return
        exchanges, mirrored = self.exchanges, self.mirrored
        self.exchanges, self.mirrored = [], []
        self.send(("batch", exchanges, mirrored))

    def send(self, message: Any) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame(message))


@dataclass
class WorkerSpec:
    """What a worker process is started with (pickled to it)."""

    cfg: Config
    index: int
    port: int
    handoff_path: str
    log_level: int


def main() -> None:
    """``python -m inferwatch.serving.workers``: a worker process, its ``WorkerSpec`` pickled on stdin.
    A fresh interpreter rather than multiprocessing's spawn, which would import the embedding
    program's ``__main__`` again."""
    spec = pickle.load(sys.stdin.buffer)
    sys.stdin.close()
    run_worker(spec)


def run_worker(spec: WorkerSpec) -> None:
    """A worker process's main: the proxy on the shared port until the sidecar says stop."""
    # The sidecar decides when workers stop (a Ctrl-C reaches the whole process group).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=spec.log_level,
                        format=f"%(asctime)s %(levelname)s inferwatch proxy worker {spec.index}: %(message)s")
    from .connections import new_event_loop

    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(_serve_worker(spec))
    finally:
        loop.close()


async def _serve_worker(spec: WorkerSpec) -> None:
    from .connections import ConnectionStats, limited_exception_handler, proxy_guard
    from .fast_proxy import FastProxy, FastRunner

    cfg, p = spec.cfg, spec.cfg.proxy
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(limited_exception_handler("proxy"))
    registry = CollectorRegistry()
    metrics = Metrics.for_model(cfg.model, cfg.limits, registry, sidecar_process_metrics=False)
    stats = ConnectionStats(registry)
    stop_requested: asyncio.Future[float] = loop.create_future()

    def on_stop(timeout: float) -> None:
        if not stop_requested.done():
            stop_requested.set_result(timeout)

    def on_dropped(exchange: Exchange) -> None:
        metrics.events_dropped.labels(cfg.model.name, exchange.model_version, "handoff_full").inc()

    _, handoff = await loop.create_unix_connection(
        lambda: HandoffSender(cfg.queue.max_bytes, on_dropped, on_stop), spec.handoff_path)
    proxy = FastProxy(cfg.model, p, cfg.upstream, metrics, handoff,  # type: ignore[arg-type]
                      handoff if cfg.shadow.enabled else None)  # type: ignore[arg-type]
    proxy.probe_upstream = False  # the sidecar probes, once for all workers
    guard = proxy_guard(p, stats)
    runner = FastRunner(proxy, guard)
    server, _ = await runner.serve(p.listen_address, spec.port, reuse_port=True)
    snapshots = MetricSnapshots(metric_families(metrics, stats))
    handoff.send(("hello", spec.index, os.getpid()))

    async def send_snapshots() -> None:
        while True:
            await asyncio.sleep(SNAPSHOT_SECONDS)
            changed = snapshots.changed()
            if changed:  # an idle worker sends nothing
                handoff.send(("metrics", changed))

    snapshot_task = loop.create_task(send_snapshots())
    timeout = await stop_requested
    server.close()  # no new connections; the answers in flight finish within the drain time
    guard.stop()
    runner.shutdown_timeout = timeout
    await runner.cleanup()
    snapshot_task.cancel()
    handoff.flush()
    handoff.send(("metrics", snapshots.changed()))
    handoff.send(("bye",))
    if handoff.transport is not None:
        handoff.transport.close()  # after what is buffered is written
        await asyncio.wait_for(handoff.closed, timeout + STOP_GRACE_SECONDS)


# --- the sidecar's side ------------------------------------------------------------------------

@dataclass
class _Worker:
    index: int
    process: subprocess.Popen
    started: float = field(default_factory=time.monotonic)
    pid: int | None = None
    transport: asyncio.WriteTransport | None = None
    done: asyncio.Future | None = None  # set when its hand-off connection closes
    delay: float = 0.0                  # how long it waited before it was started (crash-loop back-off)
    restart_at: float | None = None     # exited: when it is started again


class _HandoffReceiver(asyncio.Protocol):
    def __init__(self, workers: "ProxyWorkers"):
        self.workers = workers
        self.reader = FrameReader()
        self.worker: _Worker | None = None
        self.transport: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.reader.feed(data)
        except Exception:  # noqa: BLE001 - a torn frame: this worker's hand-off is unusable
            log.exception("a proxy worker's hand-off could not be read")
            self.workers.monitoring_error()
            if self.transport is not None:
                self.transport.close()
            return
        for message in messages:
            self.workers.receive(self, message)

    def connection_lost(self, exc: Exception | None) -> None:
        self.workers.disconnected(self)


class ProxyWorkers:
    """Starts, supervises and stops the worker processes; receives their hand-offs (on the
    sidecar's proxy loop)."""

    def __init__(self, cfg: Config, metrics: Metrics, families: dict[str, MetricWrapperBase],
                 submit: Callable[[Exchange], Any], mirror: Any = None):
        self.cfg = cfg
        self.count = cfg.proxy.workers
        self.metrics = metrics
        self.merger = MetricMerger(families)
        self.submit = submit
        self.mirror = mirror
        self.workers: dict[int, _Worker] = {}
        self.port = 0
        self.stopping = False
        self._reserved: socket.socket | None = None
        self._directory = ""
        self._server: asyncio.AbstractServer | None = None
        self._hellos: dict[int, asyncio.Future] = {}
        self._supervisor: asyncio.TimerHandle | None = None
        self._running = metrics.proxy_workers.labels(cfg.model.name)
        self._restarts = metrics.proxy_worker_restarts.labels(cfg.model.name)

    def monitoring_error(self) -> None:
        self.metrics.monitoring_errors.labels(self.cfg.model.name, "proxy").inc()

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.workers.values() if w.pid is not None]

    def running_pids(self) -> list[int]:
        """Workers that said hello and have not exited (any thread may ask)."""
        return [w.pid for w in list(self.workers.values()) if w.pid is not None and w.process.poll() is None]

    async def start(self) -> int:
        """Reserve the port, start the workers, return the port once every one listens on it."""
        p = self.cfg.proxy
        family = socket.AF_INET6 if ":" in p.listen_address else socket.AF_INET
        reserved = socket.socket(family, socket.SOCK_STREAM)
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            reserved.bind((p.listen_address, p.port))
        except OSError:
            reserved.close()
            raise
        self._reserved = reserved
        self.port = reserved.getsockname()[1]
        self._directory = tempfile.mkdtemp(prefix="inferwatch-workers-")  # 0700: only our user
        path = os.path.join(self._directory, "handoff.sock")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _HandoffReceiver(self), path)
        for index in range(self.count):
            self._spawn(index)
        try:
            await self._listening()
        except BaseException:
            await self.stop(0.0)
            raise
        self._supervisor = loop.call_later(0.5, self._supervise)
        return self.port

    async def _listening(self) -> None:
        """Until every worker said hello; a worker that exits first is an error naming its code
        (its traceback is on the sidecar's stderr, which it shares)."""
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not all(hello.done() for hello in self._hellos.values()):
            for worker in self.workers.values():
                code = worker.process.poll()
                if code is not None and not self._hellos[worker.index].done():
                    raise RuntimeError(f"proxy worker {worker.index} exited with code {code} before it listened "
                                       f"on port {self.port} (its error is logged above)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"proxy workers did not listen on port {self.port} within {START_TIMEOUT_SECONDS:g}s")
            await asyncio.wait(list(self._hellos.values()), timeout=0.05)

    def _spawn(self, index: int, delay: float = 0.0) -> None:
        spec = WorkerSpec(self.cfg, index, self.port, os.path.join(self._directory, "handoff.sock"),
                          logging.getLogger("inferwatch").getEffectiveLevel())
        process = subprocess.Popen([sys.executable, "-m", "inferwatch.serving.workers"], stdin=subprocess.PIPE,
                                   start_new_session=True)  # a Ctrl-C reaches the sidecar, which stops them
        assert process.stdin is not None
        process.stdin.write(pickle.dumps(spec))
        process.stdin.close()
        self._hellos[index] = asyncio.get_running_loop().create_future()
        self.workers[index] = _Worker(index, process, delay=delay)

    def _supervise(self) -> None:
        """A worker that exited without being told to is started again (counted, logged), at
        once after a stable run, else after a growing delay."""
        self._supervisor = None
        if self.stopping:
            return
        now = time.monotonic()
        for index, worker in list(self.workers.items()):
            code = worker.process.poll()
            if code is None or worker.restart_at is not None and now < worker.restart_at:
                continue
            if worker.restart_at is None:  # just found exited
                delay = 0.0 if now - worker.started > STABLE_SECONDS else \
                    min(max(2 * worker.delay, 0.5), MAX_RESTART_DELAY_SECONDS)
                log.error("proxy worker %d (pid %s) exited with code %s; starting it again%s", index, worker.pid,
                          code, f" in {delay:g}s" if delay else "")
                self._restarts.inc()
                if worker.pid is not None:
                    self.merger.forget(worker.pid)
                worker.pid, worker.delay, worker.restart_at = None, delay, now + delay
                if delay:
                    continue
            hello = self._hellos.get(index)
            if hello is not None and not hello.done():
                hello.cancel()
            self._spawn(index, worker.delay)
        self._running.set(len(self.running_pids()))
        self._supervisor = asyncio.get_running_loop().call_later(0.5, self._supervise)

    # hand-offs (on the loop)
    def receive(self, receiver: _HandoffReceiver, message: Any) -> None:
        kind = message[0]
        if kind == "batch":
            for exchange in message[1]:
                try:
                    self.submit(exchange)
                except Exception:  # noqa: BLE001 - fail open, as on the single-process request path
                    log.exception("monitoring failed on a proxy worker's exchange")
                    self.monitoring_error()
            if self.mirror is not None:
                for request in message[2]:
                    self.mirror.offer(request)
        elif kind == "metrics":
            worker = receiver.worker
            if worker is not None and worker.pid is not None:
                try:
                    self.merger.apply(worker.pid, message[1])
                except Exception:  # noqa: BLE001
                    log.exception("a proxy worker's metrics could not be merged")
                    self.monitoring_error()
        elif kind == "hello":
            _, index, pid = message
            worker = self.workers.get(index)
            if worker is None:
                return
            worker.pid, worker.transport = pid, receiver.transport
            worker.done = asyncio.get_running_loop().create_future()
            receiver.worker = worker
            hello = self._hellos.get(index)
            if hello is not None and not hello.done():
                hello.set_result(pid)
            self._running.set(len(self.running_pids()))
            if self.stopping:  # started while the others were told to stop
                receiver.transport.write(frame(("stop", 0.0)))  # type: ignore[union-attr]

    def disconnected(self, receiver: _HandoffReceiver) -> None:
        worker = receiver.worker
        if worker is not None:
            if worker.done is not None and not worker.done.done():
                worker.done.set_result(None)
            worker.transport = None

    async def stop(self, timeout: float) -> None:
        """Every worker finishes its answers in flight within ``timeout`` and hands off what it
        holds; then the processes are joined (killed past a grace period)."""
        self.stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            self._supervisor = None
        for worker in self.workers.values():
            if worker.transport is not None and not worker.transport.is_closing():
                worker.transport.write(frame(("stop", timeout)))
        waits = [w.done for w in self.workers.values() if w.done is not None]
        if waits:
            await asyncio.wait(waits, timeout=timeout + STOP_GRACE_SECONDS)
        loop = asyncio.get_running_loop()
        for worker in self.workers.values():
            process = worker.process
            try:
                await loop.run_in_executor(None, process.wait, STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                log.error("proxy worker %d (pid %s) did not stop; killed", worker.index, worker.pid)
                process.kill()
                await loop.run_in_executor(None, process.wait)
        self._running.set(0)
        if self._server is not None:
            self._server.close()
        if self._reserved is not None:
            self._reserved.close()
        if self._directory:
            shutil.rmtree(self._directory, ignore_errors=True)


if __name__ == "__main__":
    main()
