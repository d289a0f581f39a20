"""Bodies that pass through the proxy as streams, and the bounded copies kept of them for monitoring.

The proxy relays bytes as they arrive; what it keeps for the pipeline is a copy bounded twice:
per body by ``proxy.max_monitored_body_bytes`` and across every request in flight by
``proxy.monitoring_budget_bytes`` (one ``ByteBudget``). Past either bound a body streams through
unmonitored and the skip is counted, so the sidecar's memory follows its configuration, not the
size or number of the bodies (docs/design.md, "Where the monitoring copy is bounded").

Everything here runs on the proxy's event loop thread: no locks.
"""

from __future__ import annotations

import asyncio
import time
from itertools import accumulate
from typing import AsyncIterator

from aiohttp import web


class Deadline:
    """``asyncio.timeout_at`` for Python 3.10: at ``when`` (loop time; None: never) the task is
    cancelled, and the cancellation leaves the block as ``asyncio.TimeoutError``. ``reschedule``
    moves it, once per chunk: one timer handle, as aiohttp's own read timeout costs."""

    def __init__(self, when: float | None):
        self._when = when
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task | None = None
        self.expired = False

    async def __aenter__(self) -> "Deadline":
        self._task = asyncio.current_task()
        self.reschedule(self._when)
        return self

    def reschedule(self, when: float | None) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if when is not None:
            self._handle = asyncio.get_running_loop().call_at(when, self._expire)

    def _expire(self) -> None:
        self.expired = True
        if self._task is not None:
            self._task.cancel()

    async def __aexit__(self, exc_type, exc, tb) -> None:
        self.reschedule(None)
        if self.expired and exc_type is asyncio.CancelledError:
            raise asyncio.TimeoutError from exc


class ByteBudget:
    """Bytes of monitoring copies held at once by all requests in flight."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0

    def take(self, n: int) -> bool:
        if self.used + n > self.limit:
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        self.used -= n


class MonitorCopy:
    """The monitoring copy of one body, up to ``cap`` bytes taken from ``budget``.

    Chunks are kept by reference (aiohttp hands us immutable ``bytes``): no copy per chunk; the
    one join happens when the exchange is handed to the pipeline. ``reason`` says why the copy
    stopped (``too_large``, ``budget``); ``skipped`` counts the bytes not kept.

    Given ``started`` (the proxy's ``perf_counter`` start), ``arrivals`` holds each kept chunk's
    arrival in seconds after it, parallel to ``chunks`` (one clock read and one append a chunk):
    time to first token and per output token are read from it in the worker.
    """

    __slots__ = ("cap", "budget", "chunks", "kept", "skipped", "reason", "started", "arrivals")

    def __init__(self, cap: int, budget: ByteBudget, started: float | None = None):
        self.cap = cap
        self.budget = budget
        self.chunks: list[bytes] = []
        self.kept = 0
        self.skipped = 0
        self.reason: str | None = None
        self.started = started
        self.arrivals: list[float] = []

    def add(self, chunk: bytes) -> None:
        if self.reason is None:
            room = self.cap - self.kept
            if len(chunk) > room:
                self.reason = "too_large"
                if room > 0 and self.budget.take(room):  # what fits is kept: an event stream's first events
                    self.chunks.append(chunk[:room])
                    self.kept += room
                    if self.started is not None:
                        self.arrivals.append(time.perf_counter() - self.started)
                    chunk = chunk[room:]
            elif not self.budget.take(len(chunk)):
                self.reason = "budget"
            else:
                self.chunks.append(chunk)
                self.kept += len(chunk)
                if self.started is not None:
                    self.arrivals.append(time.perf_counter() - self.started)
                return
        self.skipped += len(chunk)

    @property
    def truncated(self) -> bool:
        return self.reason is not None

    def body(self) -> bytes:
        return self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)

    def timeline(self) -> list[tuple[int, float]] | None:
        """(end byte in ``body()``, arrival) of each kept chunk; None when arrivals were not kept."""
        if not self.arrivals:
            return None
        return list(zip(accumulate(map(len, self.chunks)), self.arrivals))

    def release(self) -> None:
        """Give the bytes back to the budget (the pipeline's queue bounds them from here on)."""
        self.budget.give(self.kept)
        self.chunks = []
        self.kept = 0


class BodyTooLarge(Exception):
    """A streamed request body went past ``proxy.max_body_bytes``."""


class RequestBody:
    """The client's body: ``monitored`` (whole, within the caps) or a stream to the upstream.

    ``read`` keeps up to ``cap`` bytes taken from ``budget``; a body that ends within it is
    monitored and sent as bytes; a longer one (or one the budget has no room for) is sent as a
    stream, the part already read first, and is not monitored (``reason`` says why).
    """

    def __init__(self, cap: int, budget: ByteBudget, max_bytes: int):
        self.cap = cap
        self.budget = budget
        self.max_bytes = max_bytes
        self.monitored: bytes | None = None
        self.reason: str | None = None
        self.kept = 0  # taken from the budget
        self.size = 0  # bytes sent to the upstream (complete once the upstream request is done)
        self._head: list[bytes] = []
        self._request: web.Request | None = None

    async def read(self, request: web.Request) -> None:
        declared = request.content_length
        if declared is not None and declared > self.max_bytes:
            raise BodyTooLarge
        if not request.body_exists:
            self.monitored = b""
            return
        if declared is not None and declared > self.cap:  # known to be too large: stream it all
            self.reason = "too_large"
        content = request.content
        while self.reason is None:
            chunk = await content.readany()
            if not chunk:
                head = self._head
                self.monitored = head[0] if len(head) == 1 else b"".join(head)
                self._head = []
                self.size = len(self.monitored)
                return
            self._head.append(chunk)
            if self.kept + len(chunk) > self.cap:
                self.reason = "too_large"
            elif not self.budget.take(len(chunk)):
                self.reason = "budget"
            else:
                self.kept += len(chunk)
        self.release()  # streamed: nothing is held for monitoring
        self._request = request

    def release(self) -> None:
        self.budget.give(self.kept)
        self.kept = 0

    def data(self) -> bytes | AsyncIterator[bytes] | None:
        """What the upstream request sends."""
        if self.monitored is not None:
            return self.monitored or None
        return self._stream()

    async def _stream(self) -> AsyncIterator[bytes]:
        head, self._head = self._head, []
        for chunk in head:
            self.size += len(chunk)
            yield chunk
        assert self._request is not None
        async for chunk in self._request.content.iter_any():
            self.size += len(chunk)
            if self.size > self.max_bytes:
                raise BodyTooLarge
            yield chunk
