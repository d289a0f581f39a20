"""The fast data plane (``proxy.engine: fast``): the same proxy on ``http1`` and ``upstream_pool``.

``Proxy`` keeps everything that decides what is measured and monitored (routes, the caps and the
budget, the metrics, the exchange handed to the pipeline, the failure answers); this subclass
only replaces aiohttp's server and client on the request path with the two ``asyncio.Protocol``
modules beside it, which parse with ``httptools`` and write the bytes they were given: the
upstream's status line reason, header names and values and body pass through as received.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from inferwatch.config import ModelConfig, ProxyConfig, UpstreamConfig
from inferwatch.exposition.metrics import OTHER, Metrics
from .http1 import HttpServer, ServerRequest, error_answer
from .proxy import HOP_BY_HOP, PREDICTION_ID_HEADER, Proxy, _Relay, origin_form
from .shadow import ShadowMirror
from .streaming import BodyTooLarge, Deadline, MonitorCopy, RequestBody
from .upstream_pool import UpstreamConnection, UpstreamError, UpstreamHead, UpstreamPool

if TYPE_CHECKING:  # for annotations only: the pipeline (numpy, scipy) is not needed to relay
    from inferwatch.pipeline.worker import Pipeline

log = logging.getLogger(__name__)

_HOP_BY_HOP = frozenset(h.encode() for h in HOP_BY_HOP) | {b"expect"}
_ID_LOWER = PREDICTION_ID_HEADER.lower().encode()
_FORWARDED = (b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto")
_NO_BODY_METHODS = frozenset(("GET", "HEAD", "OPTIONS", "TRACE", "DELETE", "CONNECT"))
IDEMPOTENT = frozenset(("GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"))
_REASONS = {400: "Bad Request", 413: "Request Entity Too Large", 502: "Bad Gateway", 504: "Gateway Timeout"}
# A request body below this is written with its head in one system call (copying it costs less);
# a larger one is written after the head, uncopied.
JOIN_BELOW = 64 * 1024


class FastProxy(Proxy):
    """``Proxy`` with its request path on the ``http1`` server and ``upstream_pool`` client."""

    def __init__(self, model: ModelConfig, config: ProxyConfig, upstream: UpstreamConfig, metrics: Metrics,
                 pipeline: Pipeline, mirror: ShadowMirror | None = None):
        super().__init__(model, config, upstream, metrics, pipeline, mirror)
        self.pool = UpstreamPool(self.upstream_url, upstream.connect_timeout_seconds, upstream.max_connections)

    async def cleanup(self, app: Any = None) -> None:
        self.pool.close()
        await super().cleanup(app)

    def make_server(self, on_busy=None, on_idle=None) -> HttpServer:
        malformed = self.metrics.malformed_requests
        return HttpServer(self.handle_fast, self._log_malformed(lambda reason: malformed.labels(self.model, reason).inc()),
                          on_busy, on_idle, self._unexpected)

    def _log_malformed(self, count):
        from .connections import RateLimitedLog

        limited = RateLimitedLog(log, 60.0)

        def on_malformed(reason: str) -> None:
            count(reason)
            limited.warning(reason, "proxy port: refused a malformed HTTP request with 400 (reason %s)", reason)

        return on_malformed

    def _unexpected(self) -> None:
        log.exception("the fast proxy failed on a request")
        self.metrics.monitoring_errors.labels(self.model, "proxy").inc()

    # --- the request path -----------------------------------------------------------------

    async def handle_fast(self, request: ServerRequest) -> None:
        headers = request.headers
        prediction_id = headers.get(PREDICTION_ID_HEADER) or self.ids.next()
        target = origin_form(request.raw_path)
        if target is None:
            self._count(OTHER, request.method, 400)
            self._error(request, 400, "bad_request_target", "the request target must be a path", prediction_id)
            return
        ex = self._relay(request.method, target, prediction_id)
        body = self._request_body(ex)
        try:
            try:
                await body.read(request)  # type: ignore[arg-type]
            except BodyTooLarge:
                self._too_large_fast(request, ex)
                return
            except ConnectionError:
                self.metrics.client_disconnects.labels(self.model, self.version).inc()
                return
            self._body_read(ex, body, headers)
            await self._forward_fast(request, target, body, ex)
        finally:
            self._release(ex, body)

    def _error(self, request: ServerRequest, status: int, error: str, detail: str, prediction_id: str) -> None:
        extra = b"X-Prediction-ID: " + prediction_id.encode("latin-1") + b"\r\n"
        if not request.keep_alive or not request.content.done:
            extra += b"Connection: close\r\n"
        try:
            request.connection.send(error_answer(status, _REASONS.get(status, "Error"), error, detail, extra))
        except ConnectionError:
            self.metrics.client_disconnects.labels(self.model, self.version).inc()

    def _too_large_fast(self, request: ServerRequest, ex: _Relay) -> None:
        self._error(request, 413, "request_too_large", self._too_large_detail(ex), ex.prediction_id)

    def _failed_fast(self, request: ServerRequest, ex: _Relay, status: int, reason: str,
                     exc: BaseException | None = None) -> None:
        error, detail = self._failure(ex.endpoint, ex.method, status, reason, exc)
        self._error(request, status, error, detail, ex.prediction_id)

    def _upstream_head(self, request: ServerRequest, target: str, prediction_id: str, length: int | None) -> bytes:
        """The request head for the model server: the client's lines minus hop-by-hop ones (bytes
        as received), then our Host, X-Prediction-ID, X-Forwarded-* and framing."""
        parts = [request.method.encode(), b" ", (self.pool.prefix + target).encode("ascii"), b" HTTP/1.1\r\nHost: ",
                 self.pool.authority.encode("latin-1"), b"\r\n"]
        chain: list[bytes] = []
        forwarded_host = forwarded_proto = False
        for name, value in request.headers.lines:
            lower = name.lower()
            if lower in _HOP_BY_HOP or lower == _ID_LOWER:
                continue
            if lower in _FORWARDED:
                if lower == b"x-forwarded-for":
                    chain.append(value)
                    continue
                if lower == b"x-forwarded-host":
                    forwarded_host = True
                else:
                    forwarded_proto = True
            parts += (name, b": ", value, b"\r\n")
        peer = request.remote.encode("latin-1")
        parts += (b"X-Prediction-ID: ", prediction_id.encode("latin-1"), b"\r\nX-Forwarded-For: ",
                  b", ".join((*chain, peer) if peer else chain) if chain else peer, b"\r\n")
        if not forwarded_host:
            parts += (b"X-Forwarded-Host: ", request.host.encode("latin-1"), b"\r\n")
        if not forwarded_proto:
            parts.append(b"X-Forwarded-Proto: http\r\n")
        if length is not None:
            if length or request.method not in _NO_BODY_METHODS:
                parts += (b"Content-Length: ", str(length).encode(), b"\r\n")
        else:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    async def _send_request(self, connection: UpstreamConnection, head: bytes, body: RequestBody, method: str,
                            chunked: bool) -> None:
        if body.monitored is not None:
            if len(body.monitored) < JOIN_BELOW:  # one system call for the whole request
                connection.begin(head + body.monitored, method)
            else:
                connection.begin(head, method)
                connection.write(body.monitored)
            return
        connection.begin(head, method)
        stream = body.data()
        assert not isinstance(stream, (bytes, type(None)))
        async for chunk in stream:
            connection.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
            await connection.drain()
        if chunked:
            connection.write(b"0\r\n\r\n")

    async def _exchange(self, request: ServerRequest, target: str, body: RequestBody, ex: _Relay
                        ) -> tuple[UpstreamConnection, UpstreamHead]:
        """Send the request and wait for the answer's head. A pooled connection that fails before any
        byte of an answer may have been closed by the model server while idle: an idempotent request
        is sent again once on a new connection (RFC 9112 9.3.1, as aiohttp's client does); a POST is
        not, since the model server may have run it."""
        if body.monitored is not None:
            length: int | None = len(body.monitored)
        else:
            length = request.content_length
        head = self._upstream_head(request, target, ex.prediction_id, length)
        connection = await self.pool.acquire()
        while True:
            try:
                await self._send_request(connection, head, body, ex.method, length is None)
                return connection, await connection.head()
            except UpstreamError as exc:
                connection.abort()
                if not (connection.used and not connection.got_bytes and body.monitored is not None
                        and ex.method in IDEMPOTENT and exc.reason in ("reset", "protocol")):
                    raise
                connection = await self.pool.connect()
            except BaseException:
                connection.abort()
                raise

    async def _forward_fast(self, request: ServerRequest, target: str, body: RequestBody, ex: _Relay) -> None:
        slots = self._slots
        assert slots is not None, "the proxy has not started"
        loop = asyncio.get_running_loop()
        self._in_flight.inc()
        start = time.perf_counter()
        u = self.upstream_config
        copy: MonitorCopy | None = None
        client = request.connection
        started = False  # the answer's head went to the client
        connection: UpstreamConnection | None = None
        try:
            async with Deadline(loop.time() + u.timeout_seconds) as deadline:
                if slots.locked():
                    try:
                        await asyncio.wait_for(slots.acquire(), self._pool_timeout)
                    except asyncio.TimeoutError:
                        self._failed_fast(request, ex, 504, "pool_timeout")
                        return
                else:
                    await slots.acquire()
                try:
                    connection, upstream = await self._exchange(request, target, body, ex)
                    ex.first_byte = time.perf_counter()
                    ex.status = upstream.status
                    ex.upstream_headers = upstream
                    copy = self._whole_copy(ex, upstream.content_length)
                    if copy is not None:
                        data = await connection.read_all()
                        copy.chunks.append(data)
                        deadline.reschedule(None)
                        ex.size = len(data)
                        connection.finish()
                        connection = None
                        started = True
                        try:
                            client.send(self._response_head(request, upstream, ex.prediction_id, True) + data)
                        except ConnectionError:
                            ex.client_gone = True
                    else:
                        first = await connection.read()
                        deadline.reschedule(None)
                        if ex.monitored:
                            copy = ex.copy = MonitorCopy(self.config.max_monitored_body_bytes, self.budget, start)
                        framed = upstream.content_length is not None or request.method == "HEAD" \
                            or upstream.status in (204, 304) or not request_chunkable(request)
                        started = True
                        client.send(self._response_head(request, upstream, ex.prediction_id, framed))
                        chunk = first
                        while chunk:
                            ex.size += len(chunk)
                            if copy is not None:
                                copy.add(chunk)
                            try:
                                client.send(chunk if framed else b"%x\r\n%b\r\n" % (len(chunk), chunk))
                                await client.drain()
                            except ConnectionError:
                                ex.client_gone = True
                                break
                            deadline.reschedule(loop.time() + u.read_timeout_seconds)
                            chunk = await connection.read()
                            deadline.reschedule(None)
                        if not ex.client_gone:
                            connection.finish()
                            connection = None
                            if not framed:
                                try:
                                    client.send(b"0\r\n\r\n")
                                except ConnectionError:  # the answer was all sent: still monitored
                                    self.metrics.client_disconnects.labels(self.model, self.version).inc()
                finally:
                    slots.release()
                    if connection is not None:
                        connection.abort()  # cut or unread: never back to the pool
        except BodyTooLarge:
            self._too_large_fast(request, ex)
            return
        except (asyncio.TimeoutError, UpstreamError, ConnectionError) as exc:
            if not started:
                if copy is not None:
                    copy.release()
                if isinstance(exc, ConnectionError):  # the client went away while its body streamed
                    self.metrics.client_disconnects.labels(self.model, self.version).inc()
                    return
                reason = exc.reason if isinstance(exc, UpstreamError) else "timeout"
                self._failed_fast(request, ex, 502 if isinstance(exc, UpstreamError) and reason != "connect_timeout"
                                  else 504, reason, exc)
                return
            ex.failure = "read_timeout" if isinstance(exc, asyncio.TimeoutError) else \
                (exc.reason if isinstance(exc, UpstreamError) else "reset")
            client.close()  # the bytes sent stay sent; the client sees the stream cut
        finally:
            self._in_flight.dec()
        if ex.client_gone:
            self.metrics.client_disconnects.labels(self.model, self.version).inc()
        if copy is not None and not ex.monitored:
            copy.release()
            copy = None
        self._observe(request, body, ex, copy, start)  # type: ignore[arg-type]

    def _response_head(self, request: ServerRequest, upstream: UpstreamHead, prediction_id: str, framed: bool) -> bytes:
        parts = [b"HTTP/1.1 %d " % upstream.status, upstream.reason, b"\r\n"]
        status = upstream.status
        bodiless = request.method == "HEAD" or status in (204, 304)
        for name, value in upstream.headers:
            lower = name.lower()
            if lower == b"content-length":
                if status != 204 and (framed or bodiless):
                    parts += (name, b": ", value, b"\r\n")
                continue
            if lower in _HOP_BY_HOP or lower == _ID_LOWER:
                continue
            parts += (name, b": ", value, b"\r\n")
        parts += (b"X-Prediction-ID: ", prediction_id.encode("latin-1"), b"\r\n")
        if not framed and not bodiless:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        if not request.keep_alive:
            parts.append(b"Connection: close\r\n")
        elif request.version == "1.0":
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)


def request_chunkable(request: ServerRequest) -> bool:
    """An answer of unknown length can be chunked for an HTTP/1.1 client; a 1.0 one gets it
    delimited by the close of the connection."""
    if request.version == "1.1":
        return True
    request.keep_alive = False
    return False


class FastRunner:
    """What ``web.AppRunner`` is to the aiohttp engine: starts the proxy on a port behind the
    ``ConnectionGuard`` and, at shutdown, lets the answers in flight finish before closing."""

    def __init__(self, proxy: FastProxy, guard: Any, shutdown_timeout: float = 60.0):
        self.proxy = proxy
        self.guard = guard
        self.shutdown_timeout = shutdown_timeout
        self.server: HttpServer | None = None

    async def serve(self, host: str, port: int, reuse_port: bool = False) -> tuple[Any, int]:
        await self.proxy.startup()
        self.server = self.proxy.make_server(self.guard.busy, self.guard.idle)
        return await self.guard.serve_protocol(self.server.protocol, host, port, reuse_port=reuse_port)

    async def cleanup(self) -> None:
        if self.server is not None:
            await self.server.shutdown(self.shutdown_timeout)
        await self.proxy.cleanup()
