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

from inferwatch.config import ModelConfig, ProxyConfig, UpstreamConfig
from inferwatch.exposition.metrics import Metrics, normalize_method
from inferwatch.pipeline.worker import Exchange, Pipeline
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


def forward_headers(headers, extra: dict[str, str] | None = None) -> CIMultiDict:
    out = CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in HOP_BY_HOP)
    for k, v in (extra or {}).items():
        out[k] = v
    return out


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

    # --- lifecycle (called on the event loop) ------------------------------------------------

    async def startup(self, app: web.Application | None = None) -> None:
        u = self.upstream_config
        connector = aiohttp.TCPConnector(limit=u.max_connections, ttl_dns_cache=300, enable_cleanup_closed=True)
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=u.timeout_seconds, sock_connect=u.connect_timeout_seconds),
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
        app = web.Application(client_max_size=self.config.max_body_bytes,
                              handler_args={"max_field_size": 65536, "auto_decompress": False})
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
        route = self.router.match(request.path)
        method = request.method
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self._count(route.endpoint, method, 413)
            return error_response(413, "request_too_large",
                                  f"request body exceeds proxy.max_body_bytes ({self.config.max_body_bytes})",
                                  prediction_id)
        headers = forward_headers(request.headers, {
            PREDICTION_ID_HEADER: prediction_id,
            "X-Forwarded-For": request.remote or "",
            "X-Forwarded-Host": request.host,
            "X-Forwarded-Proto": request.scheme,
        })
        self._in_flight.inc()
        start = time.perf_counter()
        try:
            async with self.client.request(method, self.upstream_url + request.path_qs, headers=headers,
                                            data=body if body else None, allow_redirects=False) as upstream:
                response_body = await upstream.read()
                status, reason, upstream_headers = upstream.status, upstream.reason, upstream.headers
        except asyncio.TimeoutError:
            return self._failed(route.endpoint, method, prediction_id, 504, "timeout",
                                f"model server did not answer within {self.upstream_config.timeout_seconds:g}s")
        except aiohttp.ClientConnectorError as exc:
            return self._failed(route.endpoint, method, prediction_id, 502, "connection", str(exc))
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, ConnectionResetError) as exc:
            return self._failed(route.endpoint, method, prediction_id, 502, "reset", str(exc) or type(exc).__name__)
        except aiohttp.ClientError as exc:
            return self._failed(route.endpoint, method, prediction_id, 502, "protocol", str(exc) or type(exc).__name__)
        finally:
            self._in_flight.dec()
        latency = time.perf_counter() - start

        response = web.Response(status=status, reason=reason, body=response_body,
                                headers=forward_headers(upstream_headers, {PREDICTION_ID_HEADER: prediction_id}))
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
                        method, request.path_qs, headers, body, prediction_id, self.version, route.endpoint,
                        request.headers.get("Content-Type"), request.headers.get("Content-Encoding")))
        except Exception:  # noqa: BLE001
            log.exception("monitoring failed on the request path")
            self.metrics.monitoring_errors.labels(self.model, "proxy").inc()
        return response

    def _failed(self, endpoint: str, method: str, prediction_id: str, status: int, reason: str,
                detail: str) -> web.Response:
        try:
            self.metrics.upstream_errors.labels(self.model, self.version, reason).inc()
            self._count(endpoint, method, status)
        except Exception:  # noqa: BLE001
            self.metrics.monitoring_errors.labels(self.model, "proxy").inc()
        error = "upstream_timeout" if status == 504 else "upstream_unavailable"
        return error_response(status, error, detail, prediction_id)
