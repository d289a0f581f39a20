"""Client connections on an aiohttp port: header and idle timeouts, a connection limit, and log
lines that stay few under a flood.

aiohttp's server has neither a header timeout nor a connection limit, so slow or idle clients
hold sockets (and, past ``ulimit -n``, stop every accept). :class:`ConnectionGuard` wraps the
server's protocol factory and watches each connection:

- a new connection must deliver a complete request head within ``header_timeout`` (nginx's
  ``client_header_timeout``); between requests it may stay idle ``idle_timeout``, and once the
  next request's first byte arrives its head must be complete within ``header_timeout``;
- at ``max_connections`` the connection that has waited longest without a request is closed to
  make room (so idle or slow clients cannot lock out a probe); when every connection is busy
  with a request the new one is refused.

A connection is busy from the moment its handler runs (``middleware``, so the head is parsed)
until the handler returns; busy connections are left to the handler's own timeouts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CollectorRegistry, Counter, Gauge

from .failures import Throttle, held_note, malformed_reason

if TYPE_CHECKING:
    from inferwatch.config import ProxyConfig

log = logging.getLogger(__name__)

# Reasons for inferwatch_connections_closed_total; idle_timeout is ordinary keep-alive expiry
# and is only counted, the others are logged (rate-limited) as signs of slow clients or a flood.
LOGGED_REASONS = ("header_timeout", "body_timeout", "evicted", "refused")


class ConnectionStats:
    """The connection metric families, one set per registry, shared by the proxy and admin ports."""

    def __init__(self, registry: CollectorRegistry):
        self.open = Gauge("inferwatch_connections_open", "Client connections open now, by port (proxy or admin).",
                          ["port"], registry=registry)
        self.closed = Counter(
            "inferwatch_connections_closed",
            "Client connections closed by the sidecar: header_timeout, idle_timeout, body_timeout, evicted "
            "(the longest-waiting idle one, at max_connections) or refused (at max_connections, all busy).",
            ["port", "reason"], registry=registry)


class RateLimitedLog:
    """``warning`` at most once per ``interval`` seconds per key (``failures.Throttle``); the next
    line allowed says how many were held back."""

    def __init__(self, logger: logging.Logger, interval: float = 60.0):
        self.logger = logger
        self.throttle = Throttle(interval)

    def warning(self, key: str, message: str, *args: Any) -> bool:
        held = self.throttle.allow(key)
        if held is None:
            return False
        self.logger.warning(message + held_note(held), *args)
        return True


class _Connection:
    __slots__ = ("transport", "fresh", "busy", "waiting_since", "first_byte")

    def __init__(self, transport: asyncio.Transport, now: float):
        self.transport = transport
        self.fresh = True          # no request yet: the head is due header_timeout after accept
        self.busy = False
        self.waiting_since = now
        self.first_byte: float | None = None


class _GuardedProtocol(asyncio.Protocol):
    """Forwards every event to aiohttp's protocol; tells the guard about opens, bytes and closes."""

    def __init__(self, inner: asyncio.Protocol, guard: "ConnectionGuard"):
        self.inner = inner
        self.guard = guard
        self.connection: _Connection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.connection = self.guard._admit(cast(asyncio.Transport, transport))
        if self.connection is not None:
            self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        connection = self.connection
        if connection is None:
            return
        if not connection.busy and connection.first_byte is None:
            connection.first_byte = time.monotonic()
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.connection is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.connection is not None:
            self.guard._forget(self.connection)
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class ConnectionGuard:
    """Timeouts and a connection limit for one port (``port`` names it in metrics and logs)."""

    def __init__(self, port: str, *, header_timeout: float, idle_timeout: float, max_connections: int,
                 stats: ConnectionStats, log_interval: float = 60.0):
        self.port = port
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.stats = stats
        self.logs = RateLimitedLog(log, log_interval)
        self._connections: dict[asyncio.BaseTransport, _Connection] = {}
        self._open = stats.open.labels(port)
        self._closed = {reason: stats.closed.labels(port, reason)
                        for reason in ("idle_timeout", *LOGGED_REASONS)}
        self._sweeper: asyncio.TimerHandle | None = None

    # --- wiring -------------------------------------------------------------------------------

    def protocol_factory(self, factory: Callable[[], Any]) -> Callable[[], asyncio.Protocol]:
        """Wrap aiohttp's protocol factory (``AppRunner.server``) for ``loop.create_server``."""
        return lambda: _GuardedProtocol(factory(), self)

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        connection = self._connections.get(request.transport) if request.transport is not None else None
        if connection is None:
            return await handler(request)
        self.busy(request.transport)
        try:
            return await handler(request)
        finally:
            self.idle(request.transport)

    def busy(self, transport: Any) -> None:
        """A request's head is parsed and its handler runs: the handler's timeouts apply now."""
        connection = self._connections.get(transport)
        if connection is not None:
            connection.busy = True
            connection.fresh = False

    def idle(self, transport: Any) -> None:
        """The answer is written: the connection waits for the next request (idle_timeout)."""
        connection = self._connections.get(transport)
        if connection is not None:
            connection.busy = False
            connection.waiting_since = time.monotonic()
            connection.first_byte = None

    async def serve(self, runner: web.AppRunner, host: str, port: int, *, ssl_context: Any = None,
                    backlog: int = 1024) -> tuple[asyncio.base_events.Server, int]:
        """Listen on ``host:port`` with the guarded factory; returns the server and the bound port."""
        loop = asyncio.get_running_loop()
        assert runner.server is not None, "runner.setup() first"
        server = await loop.create_server(
            self.protocol_factory(runner.server), host, port, ssl=ssl_context, backlog=backlog, reuse_address=True,
            ssl_handshake_timeout=self.header_timeout if ssl_context is not None else None)
        self.start(loop)
        return server, server.sockets[0].getsockname()[1]

    async def serve_protocol(self, factory: Callable[[], asyncio.Protocol], host: str, port: int, *,
                             backlog: int = 1024, reuse_port: bool = False) -> tuple[asyncio.base_events.Server, int]:
        """``serve`` for a plain protocol factory (the fast data plane's ``http1`` server)."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(self.protocol_factory(factory), host, port, backlog=backlog,
                                          reuse_address=True, reuse_port=reuse_port or None)
        self.start(loop)
        return server, server.sockets[0].getsockname()[1]

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._sweeper = loop.call_later(self._sweep_interval(), self._sweep)

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def count(self, reason: str) -> None:
        """Count (and, for the logged reasons, log at most once a minute) a connection closed for ``reason``."""
        self._closed[reason].inc()
        if reason in LOGGED_REASONS:
            self.logs.warning(reason, "%s port: closed a connection (%s; limits: head within %gs, %d connections)",
                              self.port, reason, self.header_timeout, self.max_connections)

    # --- bookkeeping (on the event loop) ------------------------------------------------------

    def _admit(self, transport: asyncio.Transport) -> _Connection | None:
        if len(self._connections) >= self.max_connections:
            idle = [c for c in self._connections.values() if not c.busy]
            if not idle:
                self.count("refused")
                transport.abort()
                return None
            self._close(min(idle, key=lambda c: c.waiting_since), "evicted")
        connection = _Connection(transport, time.monotonic())
        self._connections[transport] = connection
        self._open.inc()
        return connection

    def _forget(self, connection: _Connection) -> None:
        if self._connections.pop(connection.transport, None) is not None:
            self._open.dec()

    def _close(self, connection: _Connection, reason: str) -> None:
        self._forget(connection)
        self.count(reason)
        connection.transport.abort()   # nothing owed to a client that has not sent a request

    def _deadline(self, connection: _Connection) -> tuple[float, str]:
        if connection.fresh:
            return connection.waiting_since + self.header_timeout, "header_timeout"
        if connection.first_byte is not None:
            return connection.first_byte + self.header_timeout, "header_timeout"
        return connection.waiting_since + self.idle_timeout, "idle_timeout"

    def _sweep_interval(self) -> float:
        return min(1.0, self.header_timeout / 4, self.idle_timeout / 4)

    def _sweep(self) -> None:
        now = time.monotonic()
        for connection in list(self._connections.values()):
            if connection.busy:
                continue
            deadline, reason = self._deadline(connection)
            if now >= deadline:
                self._close(connection, reason)
        self._sweeper = asyncio.get_running_loop().call_later(self._sweep_interval(), self._sweep)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed (a faster one), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def proxy_guard(p: "ProxyConfig", stats: ConnectionStats) -> ConnectionGuard:
    """The proxy port's guard from the ``proxy`` section: the sidecar's, or a proxy worker's."""
    return ConnectionGuard("proxy", header_timeout=p.header_timeout_seconds, idle_timeout=p.idle_timeout_seconds,
                           max_connections=p.max_connections, stats=stats)


def limited_exception_handler(port: str, interval: float = 60.0) -> Callable[[asyncio.AbstractEventLoop, dict], None]:
    """A loop exception handler that logs each kind of loop error (e.g. ``accept()`` out of file
    descriptors, which asyncio reports on every retry) at most once per ``interval``."""
    limited = RateLimitedLog(log, interval)

    def handle(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        message = str(context.get("message", "event loop error"))
        exc = context.get("exception")
        limited.warning(message, "%s port: %s (%s)", port, message, type(exc).__name__ if exc else "no exception")

    return handle


class ProtocolLog:
    """The ``logger`` of aiohttp's protocol on a port: a request its parser refused (its log line
    would quote the bad header line, ``Authorization: Bearer ...`` and all) is counted by reason
    (``count``, into inferwatch_malformed_requests_total) and logged without the request's bytes,
    once a minute per reason at most; anything else goes to ``aiohttp.server`` unchanged."""

    def __init__(self, port: str, count: Callable[[str], None], interval: float = 60.0):
        self.port = port
        self._count = count
        self._limited = RateLimitedLog(log, interval)
        self._server = logging.getLogger("aiohttp.server")

    def _malformed_request(self, args: tuple, kwargs: dict) -> bool:
        exc = kwargs.get("exc_info")
        if not isinstance(exc, HttpProcessingError):
            return False
        reason = malformed_reason(exc)
        try:
            self._count(reason)
        except Exception:  # noqa: BLE001 - a metric must not break aiohttp's error path
            pass
        self._limited.warning(reason, "%s port: refused a malformed HTTP request with 400 (reason %s)",
                              self.port, reason)
        return True

    def exception(self, *args: Any, **kwargs: Any) -> None:
        if not self._malformed_request(args, kwargs):
            self._server.exception(*args, **kwargs)

    def debug(self, *args: Any, **kwargs: Any) -> None:
        if not self._malformed_request(args, kwargs):
            self._server.debug(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)
