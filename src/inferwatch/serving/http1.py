"""The fast data plane's server: HTTP/1.1 on an ``asyncio.Protocol`` with the ``httptools`` parser.

What aiohttp's server did for the proxy, without its web framework: requests parsed as bytes
arrive (``httptools``, the llhttp parser uvicorn uses), answered strictly in order on a
connection (pipelining), kept alive, bodies read as streams with the socket paused while the
proxy has not taken them, ``Expect: 100-continue`` answered when the proxy first reads the body,
and every request whose framing could be read two ways refused before the proxy sees it:
Content-Length with Transfer-Encoding, two Content-Lengths, a Transfer-Encoding that does not end
in chunked (RFC 9112 6.1 and 6.3: request smuggling), control characters in a header, a target
that is not ASCII, a request line over 8190 bytes or a header over 65536 (aiohttp's limits). A
refused request gets 400 with a JSON body and the connection is closed (its framing is unknown).
A request to switch protocols (``Upgrade``, hop-by-hop) is answered as a plain request and its
connection closed after the answer: the proxy relays HTTP/1.1 only.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import deque
from typing import Any, Awaitable, Callable, Iterator

import httptools

from .write_flow import WriteFlow

MAX_LINE = 8190  # request line (aiohttp's max_line_size)
MAX_FIELD = 65536  # one header line (the proxy's max_field_size under aiohttp)
MAX_HEAD = 1024 * 1024  # a whole request head
MAX_HEADERS = 256
# Request body bytes buffered for the proxy before the client's socket is paused.
HIGH_WATER = 256 * 1024

_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Malformed(Exception):
    """A request the server refuses: ``reason`` is inferwatch_malformed_requests_total's label."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class RawHeaders:
    """The request's header lines as received (bytes), with the few look-ups the proxy makes."""

    __slots__ = ("lines",)

    def __init__(self, lines: list[tuple[bytes, bytes]]):
        self.lines = lines

    def get(self, name: str, default: str | None = None) -> str | None:
        wanted = name.lower().encode("latin-1")
        for key, value in self.lines:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return default

    def getall(self, name: str, default: Any = ()) -> Any:
        wanted = name.lower().encode("latin-1")
        found = [value.decode("latin-1") for key, value in self.lines if key.lower() == wanted]
        return found or default

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def items(self) -> Iterator[tuple[str, str]]:
        for key, value in self.lines:
            yield key.decode("latin-1"), value.decode("latin-1")


class Body:
    """The request body as the proxy reads it, ``readany``/``iter_any`` like aiohttp's stream."""

    __slots__ = ("connection", "chunks", "buffered", "done", "error", "waiter", "expect_continue")

    def __init__(self, connection: "HttpServerProtocol", expect_continue: bool):
        self.connection = connection
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.done = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future | None = None
        self.expect_continue = expect_continue

    def feed(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.buffered += len(chunk)
        self._wake()

    def finish(self, error: BaseException | None = None) -> None:
        if not self.done:
            self.done = True
            self.error = error
            self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def readany(self) -> bytes:
        if self.expect_continue:  # the client waits for our word before it sends the body
            self.expect_continue = False
            if not self.done:
                self.connection.send(_CONTINUE)
        while True:
            if self.chunks:
                chunks = self.chunks
                data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self.buffered = 0
                self.connection.body_taken()
                return data
            if self.done:
                if self.error is not None:
                    raise self.error
                return b""
            self.waiter = self.connection.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None

    async def iter_any(self):
        while chunk := await self.readany():
            yield chunk


class ServerRequest:
    """One parsed request: what ``proxy.Proxy`` reads of aiohttp's ``web.Request``, and no more."""

    __slots__ = ("method", "raw_path", "version", "headers", "content_length", "chunked", "keep_alive",
                 "content", "connection", "remote", "host", "error")
    scheme = "http"

    def __init__(self, connection: "HttpServerProtocol", method: str, raw_path: str, version: str,
                 lines: list[tuple[bytes, bytes]], keep_alive: bool):
        self.connection = connection
        self.method = method
        self.raw_path = raw_path
        self.version = version
        self.headers = RawHeaders(lines)
        self.keep_alive = keep_alive
        self.remote = connection.peer
        self.content_length: int | None = None
        self.chunked = False
        self.error: Malformed | None = None
        host = b""
        expect = False
        lengths: list[bytes] = []
        encodings: list[bytes] = []
        for name, value in lines:
            if _BAD_VALUE.search(value) or not _TOKEN.fullmatch(name):
                raise Malformed("header", "a header line is malformed")
            lower = name.lower()
            if lower == b"content-length":
                lengths.append(value.strip())
            elif lower == b"transfer-encoding":
                encodings.append(value.strip().lower())
            elif lower == b"host" and not host:
                host = value
            elif lower == b"expect" and value.strip().lower() == b"100-continue":
                expect = True
        if encodings:  # RFC 9112 6.1: chunked must be last; 6.3: with Content-Length, refuse
            if lengths:
                raise Malformed("header", "both Content-Length and Transfer-Encoding: the body's length is ambiguous")
            codings = [c.strip() for e in encodings for c in e.split(b",")]
            if codings[-1] != b"chunked" or codings.count(b"chunked") != 1:
                raise Malformed("header", "Transfer-Encoding must end in chunked, once")
            self.chunked = True
        elif lengths:
            if len(set(lengths)) != 1 or not lengths[0].isdigit():
                raise Malformed("header", "Content-Length is not one decimal number")
            self.content_length = int(lengths[0])
        self.host = host.decode("latin-1")
        self.content = Body(connection, expect and version == "1.1")
        if not self.body_exists:
            self.content.done = True

    @property
    def body_exists(self) -> bool:
        return self.chunked or bool(self.content_length)

    @property
    def transport(self) -> asyncio.Transport | None:
        return self.connection.transport


Handler = Callable[[ServerRequest], Awaitable[None]]


def error_answer(status: int, reason: str, error: str, detail: str, extra: bytes = b"") -> bytes:
    body = json.dumps({"error": error, "detail": detail, "source": "inferwatch"}).encode()
    return (b"HTTP/1.1 %d %s\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: %d\r\n%s\r\n"
            % (status, reason.encode(), len(body), extra)) + body


class HttpServerProtocol(WriteFlow, asyncio.Protocol):
    """One client connection: parse, queue in order, answer one at a time through ``handler``."""

    def __init__(self, handler: Handler, on_malformed: Callable[[str], None], server: "HttpServer"):
        self.handler = handler
        self.on_malformed = on_malformed
        self.server = server
        self.transport: asyncio.Transport | None = None
        # Kept, not looked up per call: on Python 3.11 every get_running_loop() is a getpid() system call.
        self.loop = asyncio.get_running_loop()
        self.peer = ""
        self.parser = httptools.HttpRequestParser(self)
        self.closed = False
        self.pending: deque[ServerRequest | Malformed] = deque()
        self.current: ServerRequest | None = None  # the request whose body the parser is reading
        self.last: ServerRequest | None = None  # the last request parsed
        self.task: asyncio.Task | None = None
        self.refused = False  # a malformed request: parse no more
        self._url = b""
        self._lines: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._in_head = False
        self._paused_reading = False
        self._can_write: asyncio.Future | None = None

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else ""
        self.server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
            if self._in_head and self._head_bytes > MAX_HEAD:
                raise Malformed("too_long", "the request head is too long")
        except Malformed as exc:
            self._refuse(exc)
        except httptools.HttpParserInvalidMethodError:
            self._refuse(Malformed("method", "the request method is invalid"))
        except httptools.HttpParserInvalidURLError:
            self._refuse(Malformed("url", "the request target is invalid"))
        except httptools.HttpParserUpgrade:
            # A request to switch protocols (WebSocket): answered as a plain request, since Upgrade is
            # hop-by-hop and never forwarded, then the connection closes: what follows is not HTTP/1.1.
            self.refused = True
            if self.last is not None:
                self.last.keep_alive = False
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            self._refuse(cause if isinstance(cause, Malformed) else Malformed("malformed", "the request is malformed"))
        except httptools.HttpParserError:
            self._refuse(Malformed("malformed", "the request is malformed"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self.current is not None:  # a body cut short: the proxy's read fails
            self.current.content.finish(ConnectionResetError("the client closed the connection"))
        self._wake_writers()

    # --- httptools callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._lines = []
        self._in_head = True
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_LINE:
            raise Malformed("too_long", "the request line is too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) + len(value) > MAX_FIELD:
            raise Malformed("too_long", "a header line is too long")
        if len(self._lines) >= MAX_HEADERS:
            raise Malformed("too_long", "too many header lines")
        self._lines.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        url = self._url
        if not url or any(b < 0x21 or b > 0x7e for b in url):
            raise Malformed("url", "the request target must be printable ASCII")
        parser = self.parser
        request = ServerRequest(self, parser.get_method().decode("latin-1"), url.decode("ascii"),
                                parser.get_http_version(), self._lines, parser.should_keep_alive())
        self.current = self.last = request
        self._enqueue(request)

    def on_body(self, body: bytes) -> None:
        request = self.current
        if request is not None:
            request.content.feed(body)
            if request.content.buffered > HIGH_WATER and not self._paused_reading and self.transport is not None:
                self._paused_reading = True
                self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self.current is not None:
            self.current.content.finish()
            self.current = None

    # --- in order, one at a time -------------------------------------------------------------

    def _enqueue(self, item: "ServerRequest | Malformed") -> None:
        self.pending.append(item)
        if self.task is None:
            self.task = self.loop.create_task(self._serve())

    def _refuse(self, exc: Malformed) -> None:
        self.refused = True
        if self.current is not None:
            self.current.content.finish(ConnectionResetError("the request was malformed"))
            self.current = None
        self._enqueue(exc)

    async def _serve(self) -> None:
        try:
            while self.pending and not self.closed:
                item = self.pending.popleft()
                if isinstance(item, Malformed):
                    self._answer_malformed(item)
                    return
                self.server.busy(self)
                try:
                    await self.handler(item)
                except Exception:  # noqa: BLE001 - the handler answers every failure it knows
                    self.server.log_unexpected()
                    self.close()
                    return
                finally:
                    self.server.idle(self)
                if not item.keep_alive or not item.content.done or self.server.closing:
                    self.close()  # the next request's start is unknown, or the client asked to close
                    return
                if item.content.chunks:
                    item.content.chunks.clear()
                    self.body_taken()
        finally:
            self.task = None

    def _answer_malformed(self, exc: Malformed) -> None:
        try:
            self.on_malformed(exc.reason)
        except Exception:  # noqa: BLE001 - a metric must not break the answer
            pass
        self.send(error_answer(400, "Bad Request", "bad_request", exc.detail, b"Connection: close\r\n"))
        self.close()

    # --- writing -----------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionResetError("the client closed the connection")
        assert self.transport is not None
        self.transport.write(data)

    async def drain(self) -> None:
        if self._can_write is not None:
            await self._can_write
        if self.closed:
            raise ConnectionResetError("the client closed the connection")

    def body_taken(self) -> None:
        if self._paused_reading and self.transport is not None and not self.closed:
            self._paused_reading = False
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()  # what was written is still flushed


class HttpServer:
    """The listening side: every connection, for busy/idle bookkeeping and the drain."""

    def __init__(self, handler: Handler, on_malformed: Callable[[str], None],
                 on_busy: Callable[[Any], None] | None = None, on_idle: Callable[[Any], None] | None = None,
                 on_unexpected: Callable[[], None] | None = None):
        self.handler = handler
        self.on_malformed = on_malformed
        self.connections: set[HttpServerProtocol] = set()
        self.closing = False
        self._on_busy = on_busy
        self._on_idle = on_idle
        self._on_unexpected = on_unexpected

    def protocol(self) -> HttpServerProtocol:
        return HttpServerProtocol(self.handler, self.on_malformed, self)

    def busy(self, connection: HttpServerProtocol) -> None:
        if self._on_busy is not None:
            self._on_busy(connection.transport)

    def idle(self, connection: HttpServerProtocol) -> None:
        if self._on_idle is not None:
            self._on_idle(connection.transport)

    def log_unexpected(self) -> None:
        if self._on_unexpected is not None:
            self._on_unexpected()

    async def shutdown(self, timeout: float) -> None:
        """Stop taking requests: idle connections close now, busy ones after their answer."""
        self.closing = True
        for connection in list(self.connections):
            if connection.task is None:
                connection.close()
        tasks = [c.task for c in self.connections if c.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        for connection in list(self.connections):
            connection.close()
