"""The transparent proxy: forward every request to the model server, measure it, queue it.

Runs on an asyncio event loop (aiohttp server and pooled client, see docs/design.md). The
request path does as little as possible: forward, observe a few metrics, hand the bodies to
the pipeline's queue. Monitoring failures are counted and never change the response.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from prometheus_client import Counter, Histogram
from yarl import URL

from inferwatch.config import ModelConfig, ProxyConfig, UpstreamConfig
from inferwatch.exposition.metrics import OTHER, Metrics, normalize_method
from inferwatch.pipeline.worker import Exchange, Pipeline
from .connections import ProtocolLog
from .failures import Throttle, exception_text, failure_detail, held_note, upstream_failure
from .routes import Router
from .shadow import MirroredRequest, ShadowMirror

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


class UpstreamResponse(web.Response):
    """The model server's answer; ``absent`` names the headers of ADDED_BY_AIOHTTP it did not
    send, removed again by ``drop_added_headers`` after aiohttp added them."""

    absent: tuple[str, ...] = ()


async def drop_added_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """``on_response_prepare``: runs after aiohttp set its default headers, before they are sent."""
    if isinstance(response, UpstreamResponse):
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
        self._observers_by_endpoint: dict[str, tuple[Histogram, Histogram, Histogram]] = {}
        self._request_counters: dict[tuple[str, str, int], Counter] = {}
        self._in_flight = metrics.requests_in_flight.labels(self.model, self.version)
        self.up = metrics.upstream_up.labels(self.model)
        self.up_value = 0.0
        self.up.set(0)
        self._probe_task: asyncio.Task | None = None
        self.mirror = mirror  # challengers that get a copy of sampled inference requests
        # One slot per upstream.max_connections, taken before the request: waiting for one is
        # the pool wait, bounded and counted apart (reason pool_timeout) from connect and read.
        self._slots: asyncio.Semaphore | None = None
        self._pool_timeout = min(upstream.pool_timeout_seconds, upstream.timeout_seconds)
        self._timeout = aiohttp.ClientTimeout(total=upstream.timeout_seconds,
                                              sock_connect=upstream.connect_timeout_seconds)
        self._failure_log = Throttle()

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

    def _observers(self, endpoint: str) -> tuple[Histogram, Histogram, Histogram]:
        children = self._observers_by_endpoint.get(endpoint)
        if children is None:
            m, labels = self.metrics, (self.model, self.version, endpoint)
            children = (m.request_duration.labels(*labels), m.request_size.labels(*labels),
                        m.response_size.labels(*labels))
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
        prediction_id = request.headers.get(PREDICTION_ID_HEADER) or uuid.uuid4().hex
        # Forwarded byte for byte and routed on the same raw bytes (routes.py): what the model
        # server serves is what is monitored.
        target = origin_form(request.raw_path)
        if target is None:
            self._count(OTHER, request.method, 400)
            return error_response(400, "bad_request_target", "the request target must be a path", prediction_id)
        route = self.router.match(target.partition("?")[0])
        method = request.method
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self._count(route.endpoint, method, 413)
            return error_response(413, "request_too_large",
                                  f"request body exceeds proxy.max_body_bytes ({self.config.max_body_bytes})",
                                  prediction_id)
        headers = upstream_request_headers(request, prediction_id)
        slots = self._slots
        assert slots is not None, "the proxy has not started"
        self._in_flight.inc()
        start = time.perf_counter()
        try:
            timeout = self._timeout
            if slots.locked():  # every connection busy: the pool wait, bounded on its own
                try:
                    await asyncio.wait_for(slots.acquire(), self._pool_timeout)
                except asyncio.TimeoutError:
                    return self._failed(route.endpoint, method, prediction_id, 504, "pool_timeout")
                # what is left of timeout_seconds for connecting and the answer
                left = self.upstream_config.timeout_seconds - (time.perf_counter() - start)
                timeout = aiohttp.ClientTimeout(total=max(left, 0.001), sock_connect=timeout.sock_connect)
            else:
                await slots.acquire()  # free: returns at once
            try:
                async with self.client.request(method, URL(self.upstream_url + target, encoded=True),
                                                headers=headers, data=body if body else None,
                                                allow_redirects=False, timeout=timeout) as upstream:
                    response_body = await upstream.read()
                    status, reason, upstream_headers = upstream.status, upstream.reason, upstream.headers
            finally:
                slots.release()
        except (asyncio.TimeoutError, aiohttp.ClientError, ConnectionResetError) as exc:
            code, failure = upstream_failure(exc)
            return self._failed(route.endpoint, method, prediction_id, code, failure, exc)
        finally:
            self._in_flight.dec()
        latency = time.perf_counter() - start

        response = UpstreamResponse(status=status, reason=reason, body=response_body,
                                    headers=forward_headers(upstream_headers, {PREDICTION_ID_HEADER: prediction_id}))
        absent = tuple(name for name in ADDED_BY_AIOHTTP if name not in upstream_headers)
        if absent:
            response.absent = absent
        try:  # fail open: nothing below may change the response
            self._count(route.endpoint, method, status)
            duration, req_size, resp_size = self._observers(route.endpoint)
            duration.observe(latency)
            req_size.observe(len(body))
            resp_size.observe(len(response_body))
            # Requests the model server refused are decoded too (their payload problems count),
            # but only 2xx answers become events.
            if route.inference and method in self.prediction_methods:
                self.pipeline.submit_exchange(Exchange(
                    model_version=self.version,
                    endpoint=route.endpoint,
                    status=status,
                    prediction_id=prediction_id,
                    timestamp=time.time(),
                    latency_seconds=latency,
                    request_body=body,
                    response_body=response_body,
                    request_content_type=request.headers.get("Content-Type"),
                    response_content_type=upstream_headers.get("Content-Type"),
                    request_content_encoding=request.headers.get("Content-Encoding"),
                    response_content_encoding=upstream_headers.get("Content-Encoding"),
                ))
                if self.mirror is not None:  # a copy for each challenger, after the champion answered
                    self.mirror.offer(MirroredRequest(
                        method, target, headers, body, prediction_id, self.version, route.endpoint,
                        request.headers.get("Content-Type"), request.headers.get("Content-Encoding")))
        except Exception:  # noqa: BLE001
            log.exception("monitoring failed on the request path")
            self.metrics.monitoring_errors.labels(self.model, "proxy").inc()
        return response

    def _failed(self, endpoint: str, method: str, prediction_id: str, status: int, reason: str,
                exc: BaseException | None = None) -> web.Response:
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
        return error_response(status, error, failure_detail(reason, self.upstream_config), prediction_id)
