"""The transparent proxy: forward every request to the model server, measure it, queue it.

Runs on an asyncio event loop (aiohttp server and pooled client, see docs/design.md). The
request path does as little as possible: forward, observe a few metrics, hand the bodies to
the pipeline's queue. Monitoring failures are counted and never change the response.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from prometheus_client import Counter, Histogram
from yarl import URL

from inferwatch.config import ModelConfig, ProxyConfig, UpstreamConfig
from inferwatch.exposition.metrics import OTHER, Metrics, normalize_method
from inferwatch.pipeline.items import Exchange
from .connections import ProtocolLog
from .failures import Throttle, exception_text, failure_detail, held_note, upstream_failure
from inferwatch.ingest.codecs import v2_request_id
from .routes import V2_INFER_ROUTES, Router
from .shadow import MirroredRequest, ShadowMirror
from .streaming import BodyTooLarge, ByteBudget, Deadline, MonitorCopy, RequestBody

if TYPE_CHECKING:  # for annotations only: the pipeline (numpy, scipy) is not needed to relay
    from inferwatch.pipeline.worker import Pipeline

log = logging.getLogger(__name__)

PREDICTION_ID_HEADER = "X-Prediction-ID"
# RFC 9110 7.6.1: connection-specific headers are not forwarded; Content-Length and Host are
# recomputed for the next hop.
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer",
        "Transfer-Encoding", "Upgrade", "Content-Length", "Host",
    )
)


# aiohttp adds these to a response that lacks them; a proxied answer gets none the model server
# did not send (nginx and Envoy pass the upstream's Server and Date and add none of their own).
ADDED_BY_AIOHTTP = ("Date", "Server", "Content-Type")


def forward_headers(headers, extra: dict[str, str] | None = None) -> CIMultiDict:
    out = CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in HOP_BY_HOP)
    for k, v in (extra or {}).items():
        out[k] = v
    return out


def upstream_request_headers(request: web.Request, prediction_id: str) -> CIMultiDict:
    """The client's headers for the model server, as nginx and Envoy (not at the edge) send them:
    ``X-Forwarded-For`` is the client's list with its peer appended; ``X-Forwarded-Host`` and
    ``-Proto`` are kept when a proxy before us set them, else ours (docs/design.md)."""
    out = forward_headers(request.headers)
    # The client's Expect: 100-continue was answered by this hop (the body is read before it is
    # forwarded); passed on, aiohttp's client would wait for a 100 many model servers never send.
    out.popall("Expect", None)
    out[PREDICTION_ID_HEADER] = prediction_id
    peer = request.remote or ""
    chain = request.headers.getall("X-Forwarded-For", ())
    out["X-Forwarded-For"] = ", ".join((*chain, peer) if peer else chain) if chain else peer
    if "X-Forwarded-Host" not in out:
        out["X-Forwarded-Host"] = request.host
    if "X-Forwarded-Proto" not in out:
        out["X-Forwarded-Proto"] = request.scheme
    return out


def origin_form(target: str) -> str | None:
    """The request target to forward, byte for byte: origin-form (``/path?query``) as it came;
    absolute-form (``http://host/path?query``, what clients send to a forward proxy) without its
    scheme and host; None for the asterisk and authority forms, which have no path."""
    if target[:1] == "/":
        return target
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        return None
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    tail = rest[cut:]
    return tail if tail[:1] == "/" else "/" + tail


class PredictionIds:
    """X-Prediction-ID values: 32 hex digits, a random per-process half and a counter half.

    Unique like ``uuid4().hex`` (the random half tells processes and restarts apart, the counter
    the requests of one process) at a fraction of its cost: no ``os.urandom`` call per request."""

    def __init__(self) -> None:
        self.prefix = os.urandom(8).hex()
        self._counter = itertools.count(int.from_bytes(os.urandom(4), "big"))

    def next(self) -> str:
        return f"{self.prefix}{next(self._counter) & 0xFFFFFFFFFFFFFFFF:016x}"


class UpstreamResponse(web.Response):
    """The model server's answer, whole; ``absent`` names the headers of ADDED_BY_AIOHTTP it did
    not send, removed again by ``drop_added_headers`` after aiohttp added them."""

    absent: tuple[str, ...] = ()


class UpstreamStream(web.StreamResponse):
    """The model server's answer, relayed chunk by chunk as it arrives; ``absent`` as above."""

    absent: tuple[str, ...] = ()


@dataclass(slots=True)
class _Relay:
    """One proxied request on its way: what the metrics and the exchange need at the end."""

    endpoint: str
    method: str
    prediction_id: str
    monitored: bool
    status: int = 0
    size: int = 0  # response bytes relayed
    first_byte: float = 0.0  # perf_counter of the answer's first bytes
    upstream_headers: Any = None
    failure: str | None = None  # the upstream failed mid-stream: the upstream_errors reason
    client_gone: bool = False
    copy: MonitorCopy | None = None  # the response's monitoring copy


async def drop_added_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """``on_response_prepare``: runs after aiohttp set its default headers, before they are sent."""
    if isinstance(response, (UpstreamResponse, UpstreamStream)):
        for name in response.absent:
            response.headers.popall(name, None)


def error_response(status: int, error: str, detail: str, prediction_id: str) -> web.Response:
    return web.json_response(
        {"error": error, "detail": detail, "source": "inferwatch"},
        status=status,
        headers={PREDICTION_ID_HEADER: prediction_id},
    )


class Proxy:
    """The ``proxy`` section's server in front of the ``upstream`` section's model server."""

    def __init__(self, model: ModelConfig, config: ProxyConfig, upstream: UpstreamConfig, metrics: Metrics,
                 pipeline: Pipeline, mirror: ShadowMirror | None = None):
        self.config = config
        self.upstream_config = upstream
        self.metrics = metrics
        self.pipeline = pipeline
        self.router = Router(config.routes)
        self.upstream_url = upstream.url.rstrip("/")
        self.model = model.name
        self.version = metrics.version_label(model.version, model.version)
        self.prediction_methods = frozenset(m.upper() for m in config.prediction_methods)
        self.session: aiohttp.ClientSession | None = None
        # Labelled children cached per endpoint, and per (endpoint, method, code): all bounded.
        self._observers_by_endpoint: dict[str, tuple[Histogram, Histogram, Histogram, Histogram]] = {}
        self._request_counters: dict[tuple[str, str, int], Counter] = {}
        self._in_flight = metrics.requests_in_flight.labels(self.model, self.version)
        self.up = metrics.upstream_up.labels(self.model)
        self.up_value = 0.0
        self.up.set(0)
        self._probe_task: asyncio.Task | None = None
        self.probe_upstream = True  # a proxy worker process leaves the probe to the sidecar (workers.py)
        self.mirror = mirror  # challengers that get a copy of sampled inference requests
        # One slot per upstream.max_connections, taken before the request: waiting for one is
        # the pool wait, bounded and counted apart (reason pool_timeout) from connect and read.
        self._slots: asyncio.Semaphore | None = None
        self._pool_timeout = min(upstream.pool_timeout_seconds, upstream.timeout_seconds)
        # No total: the proxy bounds the wait for an answer to start and the gaps within it.
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=upstream.connect_timeout_seconds)
        # Monitoring copies held by requests in flight (streaming.py), exported as a gauge.
        self.budget = ByteBudget(config.monitoring_budget_bytes)
        metrics.monitoring_bytes_in_flight.labels(self.model).set_function(lambda: self.budget.used)
        self._failure_log = Throttle()
        self.ids = PredictionIds()

    # --- lifecycle (called on the event loop) ------------------------------------------------

    async def startup(self, app: web.Application | None = None) -> None:
        u = self.upstream_config
        self._slots = asyncio.Semaphore(u.max_connections)
        # The slots bound the requests; the one more is the health probe's, so a busy pool never
        # delays a probe (nor a probe a request).
        connector = aiohttp.TCPConnector(limit=u.max_connections + 1, ttl_dns_cache=300, enable_cleanup_closed=True)
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            auto_decompress=False,  # bodies pass through byte for byte; the worker decompresses
            # A proxy keeps no cookies: a jar would store one client's Set-Cookie and send it on
            # every later client's request to the same (named) upstream.
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
        )
        if self.probe_upstream:
            self._probe_task = asyncio.get_running_loop().create_task(self._probe_loop())
        if self.mirror is not None:
            await self.mirror.startup()

    async def cleanup(self, app: web.Application | None = None) -> None:
        if self._probe_task is not None:
            self._probe_task.cancel()
        if self.mirror is not None:
            await self.mirror.cleanup()
        if self.session is not None:
            await self.session.close()

    @property
    def client(self) -> aiohttp.ClientSession:
        """The pooled session to the model server (made by ``startup``)."""
        if self.session is None:
            raise RuntimeError("the proxy has not started: no client session yet")
        return self.session

    def make_app(self) -> web.Application:
        malformed = self.metrics.malformed_requests
        # aiohttp's log line for a request its parser refused quotes the bad line (Authorization
        # and all): counted and logged without it instead.
        protocol_log = ProtocolLog("proxy", lambda reason: malformed.labels(self.model, reason).inc())
        app = web.Application(client_max_size=self.config.max_body_bytes,
                              handler_args={"max_field_size": 65536, "auto_decompress": False,
                                            "logger": protocol_log})
        app.on_response_prepare.append(drop_added_headers)
        app.on_startup.append(self.startup)
        app.on_cleanup.append(self.cleanup)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    # --- health probe -------------------------------------------------------------------

    async def probe_once(self) -> bool:
        url = self.upstream_url + self.upstream_config.health_path
        start = time.perf_counter()
        ok = False
        try:
            timeout = aiohttp.ClientTimeout(total=min(self.upstream_config.timeout_seconds, 5.0))
            async with self.client.get(url, timeout=timeout, allow_redirects=False) as resp:
                await resp.read()
                ok = resp.status < 500
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            ok = False
        self.metrics.upstream_probe_duration.labels(self.model).set(time.perf_counter() - start)
        self.up_value = 1.0 if ok else 0.0
        self.up.set(self.up_value)
        return ok

    async def _probe_loop(self) -> None:
        while True:
            try:
                await self.probe_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001
                self.metrics.monitoring_errors.labels(self.model, "probe").inc()
            await asyncio.sleep(self.upstream_config.health_interval_seconds)

    # --- the request path -----------------------------------------------------------------

    def _observers(self, endpoint: str) -> tuple[Histogram, Histogram, Histogram, Histogram]:
        children = self._observers_by_endpoint.get(endpoint)
        if children is None:
            m, labels = self.metrics, (self.model, self.version, endpoint)
            children = (m.request_duration.labels(*labels), m.request_size.labels(*labels),
                        m.response_size.labels(*labels), m.time_to_first_byte.labels(*labels))
            self._observers_by_endpoint[endpoint] = children
        return children

    def _count(self, endpoint: str, method: str, code: int) -> None:
        method = normalize_method(method)  # before keying: the cache must stay bounded too
        key = (endpoint, method, code)
        child = self._request_counters.get(key)
        if child is None:
            child = self.metrics.requests.labels(self.model, self.version, endpoint, method, str(code))
            self._request_counters[key] = child
        child.inc()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        prediction_id = request.headers.get(PREDICTION_ID_HEADER) or self.ids.next()
        # Forwarded byte for byte and routed on the same raw bytes (routes.py): what the model
        # server serves is what is monitored.
        target = origin_form(request.raw_path)
        if target is None:
            self._count(OTHER, request.method, 400)
            return error_response(400, "bad_request_target", "the request target must be a path", prediction_id)
        exchange = self._relay(request.method, target, prediction_id)
        body = self._request_body(exchange)
        try:
            try:
                await body.read(request)
            except BodyTooLarge:
                return self._too_large(exchange)
            self._body_read(exchange, body, request.headers)
            return await self._forward(request, target, body, exchange)
        finally:
            self._release(exchange, body)

    # The request's set-up, shared by both engines (fast_proxy.py): plain calls, nothing awaited.

    def _relay(self, method: str, target: str, prediction_id: str) -> "_Relay":
        """The request's record: its route, and whether it is monitored (route and method)."""
        route = self.router.match(target.partition("?")[0])
        return _Relay(route.endpoint, method, prediction_id, route.inference and method in self.prediction_methods)

    def _request_body(self, ex: "_Relay") -> RequestBody:
        return RequestBody(self.config.max_monitored_body_bytes if ex.monitored else 0, self.budget,
                           self.config.max_body_bytes)

    def _body_read(self, ex: "_Relay", body: RequestBody, headers: Any) -> None:
        """Once the body is read: one that cannot be monitored is counted and the request relayed
        unmonitored; the client's own v2 request id joins its labels (a bounded prefix scan, no parse)."""
        if body.reason is not None and ex.monitored:
            self._skipped(ex, "request", body.reason, 0)
            ex.monitored = False
        if body.monitored is not None and ex.endpoint in V2_INFER_ROUTES and PREDICTION_ID_HEADER not in headers:
            ex.prediction_id = v2_request_id(body.monitored) or ex.prediction_id

    @staticmethod
    def _release(ex: "_Relay", body: RequestBody) -> None:
        """Whatever happened (cancelled too), the copies go back to the budget; twice is a no-op."""
        body.release()
        if ex.copy is not None:
            ex.copy.release()

    def _whole_copy(self, ex: "_Relay", length: int | None) -> MonitorCopy | None:
        """A copy for an answer small enough to read whole (its length known, within the cap and the
        budget), taken from the budget at once; None: the answer is relayed chunk by chunk."""
        if length is not None and length <= self.config.max_monitored_body_bytes and self.budget.take(length):
            copy = ex.copy = MonitorCopy(length, self.budget)
            copy.kept = length
            return copy
        return None

    async def _forward(self, request: web.Request, target: str, body: RequestBody, ex: "_Relay") -> web.StreamResponse:
        headers = upstream_request_headers(request, ex.prediction_id)
        if body.monitored is None and request.content_length is not None:
            headers["Content-Length"] = str(request.content_length)  # streamed in the client's framing
        slots = self._slots
        assert slots is not None, "the proxy has not started"
        loop = asyncio.get_running_loop()
        self._in_flight.inc()
        start = time.perf_counter()
        u = self.upstream_config
        copy: MonitorCopy | None = None
        response: web.StreamResponse | None = None
        try:
            # timeout_seconds bounds the wait for the answer to start (pool, connect, head and
            # first bytes); after that only read_timeout_seconds between chunks (a stream moves).
            async with Deadline(loop.time() + u.timeout_seconds) as deadline:
                if slots.locked():  # every connection busy: the pool wait, bounded on its own
                    try:
                        await asyncio.wait_for(slots.acquire(), self._pool_timeout)
                    except asyncio.TimeoutError:
                        return self._failed(ex.endpoint, ex.method, ex.prediction_id, 504, "pool_timeout")
                else:
                    await slots.acquire()  # free: returns at once
                try:
                    async with self.client.request(ex.method, URL(self.upstream_url + target, encoded=True),
                                                    headers=headers, data=body.data(),
                                                    allow_redirects=False) as upstream:
                        ex.first_byte = time.perf_counter()
                        copy = self._whole_copy(ex, upstream.content_length)
                        if copy is not None:
                            # small and whole: answered as one response, as before streaming
                            first = await upstream.read()
                            copy.chunks.append(first)
                            deadline.reschedule(None)
                            return await self._answer(request, body, ex, upstream, copy, start)
                        first = await upstream.content.readany()
                        deadline.reschedule(None)
                        if ex.monitored:
                            copy = ex.copy = MonitorCopy(self.config.max_monitored_body_bytes, self.budget, start)
                        response = await self._start_stream(request, ex, upstream)
                        chunk = first
                        while chunk:
                            ex.size += len(chunk)
                            if copy is not None:
                                copy.add(chunk)
                            try:
                                await response.write(chunk)
                            except ConnectionError:  # the client went away: the upstream request ends here
                                ex.client_gone = True
                                upstream.close()  # closes its connection (never back to the pool)
                                break
                            deadline.reschedule(loop.time() + u.read_timeout_seconds)
                            chunk = await upstream.content.readany()
                            deadline.reschedule(None)
                finally:
                    slots.release()
        except (asyncio.TimeoutError, aiohttp.ClientError, ConnectionResetError) as exc:
            if body.size > self.config.max_body_bytes:
                return self._too_large(ex)
            if response is None:
                code, failure = upstream_failure(exc)
                if copy is not None:
                    copy.release()
                return self._failed(ex.endpoint, ex.method, ex.prediction_id, code, failure, exc)
            # Mid-stream: the bytes sent stay sent; the client sees the stream cut, never completed.
            ex.failure = "read_timeout" if isinstance(exc, asyncio.TimeoutError) else upstream_failure(exc)[1]
            if request.transport is not None:
                request.transport.close()
        finally:
            self._in_flight.dec()
        assert response is not None
        try:
            if ex.client_gone:
                self.metrics.client_disconnects.labels(self.model, self.version).inc()
            elif ex.failure is None:
                await response.write_eof()
        except ConnectionError:
            # Every byte of the answer was written; only the stream's end was lost. A client that
            # stops at its last event (the openai client closes right after `[DONE]`) got its whole
            # answer, so it is still monitored: counted as a disconnect, not as gone.
            self.metrics.client_disconnects.labels(self.model, self.version).inc()
        self._observe(request, body, ex, copy, start)
        return response

    async def _start_stream(self, request: web.Request, ex: "_Relay", upstream: aiohttp.ClientResponse
                            ) -> web.StreamResponse:
        response = UpstreamStream(status=upstream.status, reason=upstream.reason,
                                  headers=forward_headers(upstream.headers, {PREDICTION_ID_HEADER: ex.prediction_id}))
        response.absent = tuple(name for name in ADDED_BY_AIOHTTP if name not in upstream.headers)
        if upstream.content_length is not None:  # framing as the upstream chose: length or chunked
            response.content_length = upstream.content_length
        ex.status = upstream.status
        ex.upstream_headers = upstream.headers
        await response.prepare(request)
        return response

    async def _answer(self, request: web.Request, body: RequestBody, ex: "_Relay", upstream: aiohttp.ClientResponse,
                      copy: MonitorCopy, start: float) -> web.StreamResponse:
        """A small answer read whole (within the caps): sent as one response, as before streaming;
        its bytes stay on the budget until written."""
        ex.status = upstream.status
        ex.upstream_headers = upstream.headers
        ex.size = copy.kept
        response = UpstreamResponse(status=upstream.status, reason=upstream.reason, body=copy.chunks[0],
                                    headers=forward_headers(upstream.headers,
                                                            {PREDICTION_ID_HEADER: ex.prediction_id}))
        absent = tuple(name for name in ADDED_BY_AIOHTTP if name not in upstream.headers)
        if absent:
            response.absent = absent
        if request.method == "HEAD" and upstream.content_length is not None:
            # the length of what a GET would answer (RFC 9110 9.3.2), not of the empty body
            response.headers["Content-Length"] = str(upstream.content_length)
        try:
            await response.prepare(request)
            await response.write_eof()
        except ConnectionError:
            ex.client_gone = True
            self.metrics.client_disconnects.labels(self.model, self.version).inc()
        if not ex.monitored:
            copy.release()
        self._observe(request, body, ex, copy if ex.monitored else None, start)
        return response

    def _observe(self, request: web.Request, body: RequestBody, ex: "_Relay", copy: MonitorCopy | None,
                 start: float) -> None:
        """Metrics and the exchange for the pipeline, once the answer is relayed (or cut)."""
        latency = time.perf_counter() - start
        try:  # fail open: nothing below may change the response
            if ex.failure is not None:
                self.metrics.upstream_errors.labels(self.model, self.version, ex.failure).inc()
            self._count(ex.endpoint, ex.method, ex.status)
            duration, req_size, resp_size, ttfb = self._observers(ex.endpoint)
            duration.observe(latency)
            if ex.first_byte:
                ttfb.observe(ex.first_byte - start)
            req_size.observe(body.size)
            resp_size.observe(ex.size)
            if copy is not None and copy.reason is not None:
                self._skipped(ex, "response", copy.reason, copy.skipped)
            # Requests the model server refused are decoded too (their payload problems count),
            # but only 2xx answers become events.
            if ex.monitored and copy is not None and body.monitored is not None and not ex.client_gone:
                headers = ex.upstream_headers
                self.pipeline.submit_exchange(Exchange(
                    model_version=self.version,
                    endpoint=ex.endpoint,
                    status=ex.status,
                    prediction_id=ex.prediction_id,
                    timestamp=time.time(),
                    latency_seconds=latency,
                    request_body=body.monitored,
                    response_body=copy.body(),
                    request_content_type=request.headers.get("Content-Type"),
                    response_content_type=headers.get("Content-Type"),
                    request_content_encoding=request.headers.get("Content-Encoding"),
                    response_content_encoding=headers.get("Content-Encoding"),
                    response_truncated=copy.truncated or ex.failure is not None,
                    upstream_failed=ex.failure is not None,
                    response_timeline=copy.timeline(),
                ))
                if self.mirror is not None:  # a copy for each challenger, after the champion answered
                    self.mirror.offer(MirroredRequest(
                        ex.method, origin_form(request.raw_path) or "/", upstream_request_headers(request, ex.prediction_id),
                        body.monitored, ex.prediction_id, self.version, ex.endpoint,
                        request.headers.get("Content-Type"), request.headers.get("Content-Encoding")))
        except Exception:  # noqa: BLE001
            log.exception("monitoring failed on the request path")
            self.metrics.monitoring_errors.labels(self.model, "proxy").inc()
        finally:
            if copy is not None:
                copy.release()  # the queue's byte bound holds the copy from here on

    def _skipped(self, ex: "_Relay", which: str, reason: str, nbytes: int) -> None:
        try:
            self.metrics.unmonitored_bodies.labels(self.model, self.version, which, reason).inc()
            if nbytes:
                self.metrics.unmonitored_bytes.labels(self.model, self.version, which).inc(nbytes)
        except Exception:  # noqa: BLE001
            self.metrics.monitoring_errors.labels(self.model, "proxy").inc()

    def _too_large(self, ex: "_Relay") -> web.Response:
        return error_response(413, "request_too_large", self._too_large_detail(ex), ex.prediction_id)

    def _too_large_detail(self, ex: "_Relay") -> str:
        """Count a request refused for its body's size (either engine): the detail for the client."""
        self._count(ex.endpoint, ex.method, 413)
        return f"request body exceeds proxy.max_body_bytes ({self.config.max_body_bytes})"

    def _failed(self, endpoint: str, method: str, prediction_id: str, status: int, reason: str,
                exc: BaseException | None = None) -> web.Response:
        error, detail = self._failure(endpoint, method, status, reason, exc)
        return error_response(status, error, detail, prediction_id)

    def _failure(self, endpoint: str, method: str, status: int, reason: str,
                 exc: BaseException | None = None) -> tuple[str, str]:
        """Count and log (throttled) a request the model server did not answer: (error, detail)."""
        try:
            self.metrics.upstream_errors.labels(self.model, self.version, reason).inc()
            self._count(endpoint, method, status)
            held = self._failure_log.allow(reason)
            if held is not None:  # the upstream's words go here, bounded, never to the client
                log.warning("no answer from the model server (%s): %s%s", reason,
                            exception_text(exc) if exc is not None else "no free connection", held_note(held))
        except Exception:  # noqa: BLE001
            self.metrics.monitoring_errors.labels(self.model, "proxy").inc()
        error = "upstream_timeout" if status == 504 else "upstream_unavailable"
        return error, failure_detail(reason, self.upstream_config)
