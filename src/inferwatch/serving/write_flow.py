"""Write flow control shared by the fast data plane's two protocols (``http1``, ``upstream_pool``).

asyncio calls ``pause_writing`` when a transport's send buffer passes its high-water mark and
``resume_writing`` when it drains; the protocol's ``drain`` awaits ``_can_write`` meanwhile. Each
protocol keeps its own ``drain`` (inline, one await per chunk on the hot path) and calls
``_wake_writers`` when its connection is lost, so no writer waits on a socket that is gone.
"""

from __future__ import annotations

import asyncio


class WriteFlow:
    """A mixin for an ``asyncio.Protocol`` that has ``loop`` (its event loop) set."""

    loop: asyncio.AbstractEventLoop
    _can_write: asyncio.Future | None = None  # pending while the transport's buffer is full

    def pause_writing(self) -> None:
        self._can_write = self.loop.create_future()

    def resume_writing(self) -> None:
        self._wake_writers()
        self._can_write = None

    def _wake_writers(self) -> None:
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)
