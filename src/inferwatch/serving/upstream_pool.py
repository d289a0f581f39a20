"""The fast data plane's client: keep-alive HTTP/1.1 connections to the model server, pooled.

One ``UpstreamConnection`` (an ``asyncio.Protocol`` with an ``httptools`` response parser) carries
one exchange at a time: the request head and body are written as given, the answer's head is
handed over once parsed and its body chunk by chunk as it arrives, with the transport paused
while the proxy has not taken what is buffered (so a fast model server and a slow client never
fill memory). A connection whose answer ended cleanly and may be kept alive goes back to the
pool; any other is closed. Timeouts are the caller's (``streaming.Deadline``); the limit on
connections is the caller's too (the proxy's slots), the pool only keeps the idle ones.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from urllib.parse import urlsplit

import httptools

from .write_flow import WriteFlow

# Body bytes held for the proxy before the model server's socket is paused.
HIGH_WATER = 256 * 1024


class UpstreamError(Exception):
    """No complete answer: ``reason`` is the ``reason`` of inferwatch_upstream_errors_total."""

    def __init__(self, reason: str, text: str = ""):
        super().__init__(text or reason)
        self.reason = reason


class UpstreamHead:
    __slots__ = ("status", "reason", "headers", "content_length", "chunked", "content_type", "content_encoding")

    def __init__(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.content_length: int | None = None
        self.chunked = False
        self.content_type: str | None = None
        self.content_encoding: str | None = None
        for name, value in headers:
            lower = name.lower()
            if lower == b"content-length":
                self.content_length = int(value)
            elif lower == b"transfer-encoding":
                self.chunked = b"chunked" in value.lower()
            elif lower == b"content-type" and self.content_type is None:
                self.content_type = value.decode("latin-1")
            elif lower == b"content-encoding" and self.content_encoding is None:
                self.content_encoding = value.decode("latin-1")

    def get(self, name: str) -> str | None:
        """The first value of header ``name`` (the pipeline's content type and encoding)."""
        lower = name.lower()
        if lower == "content-type":
            return self.content_type
        if lower == "content-encoding":
            return self.content_encoding
        wanted = lower.encode("latin-1")
        for key, value in self.headers:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None


class UpstreamConnection(WriteFlow, asyncio.Protocol):
    """One keep-alive connection; ``begin`` starts an exchange, ``head`` and ``read`` follow it."""

    def __init__(self, pool: "UpstreamPool"):
        self.pool = pool
        self.loop = asyncio.get_running_loop()  # kept: get_running_loop() is a getpid() call on 3.11
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.used = False  # carried an exchange before: a failure before any answer byte may be a stale socket
        self._parser: httptools.HttpResponseParser | None = None
        self._head_method = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._head: UpstreamHead | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._complete = False
        self._got_bytes = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future | None = None
        self._paused = False
        self._can_write: asyncio.Future | None = None
        self._keep_alive = True

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:  # bytes while idle: the connection can no longer be trusted
            self._fail(UpstreamError("protocol", "bytes from the model server between answers"))
            return
        self._got_bytes = True
        try:
            parser.feed_data(data)
        except httptools.HttpParserError as exc:  # the bytes go to the log (bounded there), never to the client
            self._fail(UpstreamError("protocol", f"invalid HTTP from the model server ({exc}): {data[:400]!r}"))
            return
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamError("protocol", "the model server switched protocols"))
            return
        if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        # An answer without length or chunks ends when the model server closes.
        if self._head is not None and not self._complete and self._head.content_length is None \
                and not self._head.chunked and not self._head_method:
            self._complete = True
            self._keep_alive = False
            self._wake()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._forget(self)
        if not self._complete and self._parser is not None:
            self.eof_received()
            if not self._complete:
                self._fail(UpstreamError("reset", "the model server closed the connection"))
        self._wake_writers()

    # --- httptools callbacks -----------------------------------------------------------------

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None
        status = parser.get_status_code()
        if 100 <= status < 200 and status != 101:  # an interim answer (100, 103): the real one follows
            self._headers = []
            self._reason = b""
            return
        try:
            self._head = UpstreamHead(status, self._reason, self._headers)
        except ValueError:
            self._fail(UpstreamError("protocol", "invalid Content-Length from the model server"))
            return
        self._keep_alive = parser.should_keep_alive()
        if self._head_method or status in (204, 304):  # no body follows, whatever the headers say
            self._complete = True

    def on_body(self, body: bytes) -> None:
        if self._complete:
            return
        self._chunks.append(body)
        self._buffered += len(body)

    def on_message_complete(self) -> None:
        if self._head is not None:
            self._complete = True

    # --- the exchange ------------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if self._error is None:
            self._error = error
        self._keep_alive = False
        if self.transport is not None:
            self.transport.close()
        self._wake()

    def begin(self, head: bytes, method: str) -> None:
        """Start an exchange: a fresh parser, then the request head (and any body bytes in it)."""
        self._parser = httptools.HttpResponseParser(self)
        self._head_method = method == "HEAD"
        self._headers = []
        self._reason = b""
        self._head = None
        self._chunks.clear()
        self._buffered = 0
        self._complete = False
        self._got_bytes = False
        self._error = None
        self._keep_alive = True
        assert self.transport is not None
        self.transport.write(head)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the model server's socket buffer is full (a large streamed request)."""
        if self._can_write is not None:
            await self._can_write
        if self._error is not None:
            raise self._error
        if self.closed:
            raise UpstreamError("reset", "the model server closed the connection")

    async def _wait(self) -> None:
        self._waiter = self.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def head(self) -> UpstreamHead:
        while self._head is None:
            if self._error is not None:
                raise self._error
            await self._wait()
        return self._head

    @property
    def got_bytes(self) -> bool:
        return self._got_bytes

    async def read(self) -> bytes:
        """The next body chunk as received; b"" at the end of the answer."""
        while True:
            chunks = self._chunks
            if chunks:
                if len(chunks) == 1:
                    data = chunks.popleft()
                else:
                    data = b"".join(chunks)
                    chunks.clear()
                self._buffered = 0
                if self._paused and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                return data
            if self._complete:
                return b""
            if self._error is not None:
                raise self._error
            await self._wait()

    async def read_all(self) -> bytes:
        parts = []
        while chunk := await self.read():
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def finish(self) -> None:
        """The exchange is over: back to the pool if the answer ended cleanly, else closed."""
        self._parser = None
        self.used = True
        if self._complete and self._keep_alive and self._error is None and not self.closed and not self._chunks:
            self.pool._give_back(self)
        else:
            self.abort()

    def abort(self) -> None:
        self._parser = None
        self._keep_alive = False
        if self.transport is not None and not self.closed:
            self.transport.abort()  # unread answer bytes or a cut exchange: never reused
        self.pool._forget(self)


class UpstreamPool:
    """Idle keep-alive connections to the ``upstream.url`` model server."""

    def __init__(self, url: str, connect_timeout: float, max_idle: int):
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.secure = parts.scheme == "https"
        self.port = parts.port or (443 if self.secure else 80)
        self.prefix = parts.path.rstrip("/")
        # The Host header of the upstream request, as aiohttp's client sends it: the URL's authority.
        default = 443 if self.secure else 80
        self.authority = (parts.hostname or "") + ("" if parts.port in (None, default) else f":{parts.port}")
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self._idle: list[UpstreamConnection] = []
        self._ssl = ssl.create_default_context() if self.secure else None

    async def acquire(self) -> UpstreamConnection:
        idle = self._idle
        while idle:
            connection = idle.pop()
            if not connection.closed:
                return connection
        return await self.connect()

    async def connect(self) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(lambda: UpstreamConnection(self), self.host, self.port, ssl=self._ssl),
                self.connect_timeout)
        except asyncio.TimeoutError:
            raise UpstreamError("connect_timeout", f"connect to {self.host}:{self.port} timed out") from None
        except OSError as exc:
            raise UpstreamError("connection", f"cannot connect: {exc}") from exc
        return protocol

    def _give_back(self, connection: UpstreamConnection) -> None:
        if len(self._idle) < self.max_idle:
            self._idle.append(connection)
        else:
            connection.abort()

    def _forget(self, connection: UpstreamConnection) -> None:
        try:
            self._idle.remove(connection)
        except ValueError:
            pass

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            if connection.transport is not None:
                connection.transport.close()
