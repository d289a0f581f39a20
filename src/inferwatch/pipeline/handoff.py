"""The bounded hand-off between the serving path and the monitoring worker."""

from __future__ import annotations

import queue
import threading
import time
from collections import deque


class QueueClosed(Exception):
    """The queue was closed for shutdown: nothing more is acknowledged."""


class HandoffQueue:
    """A bounded queue that producers append to without waking anyone; the worker polls it.

    ``queue.Queue`` notifies a condition on every put. With the proxy's event loop and the
    worker in one process, that made every request cost GIL hand-offs between two threads
    (py-spy under wrk: the loop waiting in ``Condition.notify`` and socket writes, throughput
    a tenth of the upstream's). Here a put is a ``deque.append`` (atomic under the GIL) and the
    worker takes everything queued at once, sleeping ``poll_seconds`` when there is nothing.
    The count bound is checked before the append, so concurrent producers may overshoot it by
    at most one item each. Items also have a size (the bodies they hold): the bytes queued are
    bounded by ``max_bytes`` too, so a burst of large bodies cannot take memory that a count
    alone would allow (10,000 items of 8 MiB). That bookkeeping takes an uncontended lock,
    ~0.1 us. The same lock makes ``close()`` exact: once it returns, no put succeeds, so a
    shutdown that drains the queue afterwards sees everything that was ever acknowledged.

    The poll is 100 ms: the worker's cost is mostly per batch (the window, the guard and the
    output histograms cost a fixed ~100 us a call), so fewer, larger batches take less of the GIL
    from the proxy's loop. From 5 to 20 ms the sidecar's CPU per request at concurrency 16 fell
    about 20%; from 20 to 100 ms the worker's CPU per request at concurrency 1 (160 requests a
    second) fell from 214 to 66 us (docs/design.md, "The data plane"). Monitoring is 100 ms later,
    which nothing downstream can see; a drain or a shutdown wakes the worker at once (``wake``).
    """

    def __init__(self, maxsize: int, max_bytes: int = 0, poll_seconds: float = 0.1):
        self.maxsize = maxsize
        self.max_bytes = max_bytes  # 0 = no byte bound
        self.poll_seconds = poll_seconds
        self._items: deque = deque()
        self._in_hand = 0  # taken by the worker, not yet processed
        self._bytes = 0
        self._bytes_lock = threading.Lock()
        self._wake = threading.Event()  # set by drain and shutdown only: a put never pays a notify
        self.closed = False

    def put_nowait(self, item, nbytes: int = 0) -> None:
        if len(self._items) >= self.maxsize:
            raise queue.Full
        if not self.max_bytes:
            nbytes = 0
        with self._bytes_lock:
            if self.closed:
                raise QueueClosed
            if nbytes and self._bytes + nbytes > self.max_bytes:
                raise queue.Full
            self._bytes += nbytes
            self._items.append((item, nbytes))

    def close(self) -> None:
        """Refuse every later put (``QueueClosed``); what is queued stays for the worker."""
        with self._bytes_lock:
            self.closed = True
        self.wake()

    def wake(self) -> None:
        """End the worker's wait now (a drain, a shutdown) rather than at the next poll."""
        self._wake.set()

    def discard(self) -> list:
        """Remove and return everything still queued (after the worker stopped)."""
        with self._bytes_lock:
            items = [item for item, _ in self._items]
            self._items.clear()
            self._bytes = 0
        return items

    def put_always(self, item) -> None:
        """For the stop marker: never refused."""
        self._items.append((item, 0))
        self.wake()

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def fill(self) -> float:
        """How full the queue is, 0-1: the larger of its count and byte shares."""
        by_count = len(self._items) / self.maxsize if self.maxsize else 0.0
        by_bytes = self._bytes / self.max_bytes if self.max_bytes else 0.0
        return max(by_count, by_bytes)

    def wait_below(self, fill: float, timeout: float, step: float = 0.002) -> None:
        """Backpressure for producers that may wait: sleep (releasing the GIL to the worker) while
        the queue is fuller than ``fill``, at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self.fill() > fill and time.monotonic() < deadline:
            time.sleep(step)

    def qsize(self) -> int:
        return len(self._items)

    @property
    def unfinished_tasks(self) -> int:
        return len(self._items) + self._in_hand

    def take_all(self, limit: int = 1000) -> list:
        """Up to ``limit`` items, oldest first; waits (polling) until there is at least one."""
        items = self._items
        while not items:
            self._wake.wait(self.poll_seconds)
            self._wake.clear()
        taken = [items.popleft() for _ in range(min(len(items), limit))]
        freed = sum(nbytes for _, nbytes in taken)
        if freed:
            with self._bytes_lock:
                self._bytes -= freed
        self._in_hand = len(taken)
        return [item for item, _ in taken]

    def done(self) -> None:
        self._in_hand -= 1


__all__ = ["HandoffQueue", "QueueClosed"]
