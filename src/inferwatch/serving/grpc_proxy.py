"""The gRPC port: every call forwarded to the model server's gRPC port, unchanged.

One generic handler serves every method as a bidirectional stream of raw bytes (no
serializers: a unary call is a stream of one message on the wire, so one path carries unary
and streaming calls alike). Method, metadata, deadline, messages, status, details and trailers
pass through as they came. The request path only counts and, for ``ModelInfer``, queues the two
messages' bytes as an ``Exchange``; the worker decodes them (``ingest/grpc_v2.py``).

grpcio's asyncio API runs on a loop of its own thread, so a long stream costs a coroutine, not
a thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from typing import Any, AsyncIterator

import grpc
from grpc import aio

from inferwatch.config import ModelConfig, ProxyConfig
from inferwatch.exposition.metrics import OTHER, Metrics
from inferwatch.ingest.grpc_v2 import CONTENT_TYPE, MODEL_INFER, UNARY_METHODS, V2_METHODS
from inferwatch.pipeline.items import Exchange
from inferwatch.pipeline.worker import Pipeline
from .failures import Throttle

log = logging.getLogger(__name__)

# Methods outside the v2 service get their own `endpoint` label up to this many, then `other`.
MAX_OTHER_METHODS = 32
# Request metadata grpcio sets itself on the next hop (forwarding them is refused or doubled).
NOT_FORWARDED = frozenset({"user-agent", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding", "te",
                           "content-type", ":authority"})
PREDICTION_ID_KEY = "x-prediction-id"
# The HTTP status an exchange carries into the worker (only OK becomes events); the names follow
# grpc's own mapping (doc/http-grpc-status-mapping.md, reversed).
HTTP_STATUS = {grpc.StatusCode.OK: 200, grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.NOT_FOUND: 404,
               grpc.StatusCode.UNAUTHENTICATED: 401, grpc.StatusCode.PERMISSION_DENIED: 403,
               grpc.StatusCode.RESOURCE_EXHAUSTED: 429, grpc.StatusCode.UNIMPLEMENTED: 501,
               grpc.StatusCode.UNAVAILABLE: 503, grpc.StatusCode.DEADLINE_EXCEEDED: 504}
# No answer from the model server, counted in inferwatch_upstream_errors_total like HTTP 502/504.
UPSTREAM_FAILURES = {grpc.StatusCode.UNAVAILABLE: "connection", grpc.StatusCode.DEADLINE_EXCEEDED: "timeout"}


class GrpcProxy:
    """The ``proxy`` section's gRPC port in front of ``proxy.grpc_upstream``."""

    def __init__(self, model: ModelConfig, config: ProxyConfig, metrics: Metrics, pipeline: Pipeline):
        self.config = config
        self.metrics = metrics
        self.pipeline = pipeline
        self.model = model.name
        self.version = metrics.version_label(model.version, model.version)
        self.max_bytes = config.grpc_max_message_bytes
        self.port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: aio.Server | None = None
        self._channel: aio.Channel | None = None
        self._thread: threading.Thread | None = None
        self._other_methods: set[str] = set()
        self._in_flight = metrics.requests_in_flight.labels(self.model, self.version)
        self._failure_log = Throttle()

    # --- lifecycle (from the sidecar's thread) ----------------------------------------------

    def start(self) -> int:
        """Listen on ``proxy.grpc_port`` (0 in tests: any free port); returns the bound port."""
        started = threading.Event()
        errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(started, errors), name="inferwatch-grpc", daemon=True)
        self._thread.start()
        started.wait(30)
        if errors:
            raise errors[0]
        assert self.port is not None
        return self.port

    def stop(self, grace: float = 5.0) -> None:
        """Stop listening; calls in flight get ``grace`` seconds to finish."""
        loop, server = self._loop, self._server
        if loop is None or server is None or self._thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._close(server, grace), loop).result(grace + 5)
        except Exception:  # noqa: BLE001 - a stop must go on
            log.exception("stopping the gRPC port failed")
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(grace + 5)
        self._thread = None

    async def _close(self, server: aio.Server, grace: float) -> None:
        await server.stop(grace)
        if self._channel is not None:
            await self._channel.close()

    def _run(self, started: threading.Event, errors: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            self.port = loop.run_until_complete(self._listen())
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            errors.append(exc)
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.close()

    async def _listen(self) -> int:
        # Past the maximum the handler refuses a message and counts it; past twice the maximum
        # grpcio refuses it itself, before any handler sees it (the same RESOURCE_EXHAUSTED, counted
        # only as a cancelled call), so no message of any size is held whole.
        options = [("grpc.max_receive_message_length", 2 * self.max_bytes),
                   ("grpc.max_send_message_length", -1)]
        self._channel = aio.insecure_channel(self.config.grpc_upstream, options=options)
        server = aio.server(handlers=[_Forwarder(self)], options=options)
        port = server.add_insecure_port(f"{self.config.listen_address}:{self.config.grpc_port}")
        if not port:
            raise OSError(f"cannot listen on {self.config.listen_address}:{self.config.grpc_port} (gRPC)")
        await server.start()
        self._server = server
        return port

    # --- the request path (on the gRPC loop) -------------------------------------------------

    def endpoint(self, method: str) -> str:
        """The `endpoint` label: the method's full name, bounded."""
        if method in V2_METHODS or method in self._other_methods:
            return method
        if len(self._other_methods) < MAX_OTHER_METHODS:
            self._other_methods.add(method)
            return method
        return OTHER

    async def forward_unary(self, method: str, request: bytes, context: aio.ServicerContext) -> bytes:
        """The v2 service's unary methods: the same forwarding as ``forward`` without the stream
        machinery (an async generator per call and per message), which cost far more CPU per call."""
        endpoint = self.endpoint(method)
        metadata = tuple((k, v) for k, v in context.invocation_metadata() or () if k not in NOT_FORWARDED)
        prediction_id = next((str(v) for k, v in metadata if k == PREDICTION_ID_KEY), "") or uuid.uuid4().hex
        infer = method == MODEL_INFER
        kept: dict[str, Any] = {"request": request if infer else None, "response": None, "sent": len(request),
                                "received": 0, "too_large": len(request) > self.max_bytes}
        assert self._channel is not None
        start = time.perf_counter()
        response, trailers = b"", None
        if kept["too_large"]:
            code, details = grpc.StatusCode.RESOURCE_EXHAUSTED, self._too_large_detail()
        else:
            call = self._channel.unary_unary(method)(request, metadata=metadata or None,
                                                     timeout=context.time_remaining())
            self._in_flight.inc()
            try:
                response = await call
                headers = await call.initial_metadata()
                if headers:
                    await context.send_initial_metadata(tuple(headers))
                code, details, trailers = await call.code(), await call.details(), await call.trailing_metadata()
                if len(response) > self.max_bytes:
                    kept["too_large"], response, trailers = True, b"", None
                    code, details = grpc.StatusCode.RESOURCE_EXHAUSTED, self._too_large_detail()
                else:
                    kept["received"], kept["response"] = len(response), response if infer else None
            except aio.AioRpcError as exc:
                code, details, trailers = exc.code(), self._client_details(exc), exc.trailing_metadata()
            except asyncio.CancelledError:  # the client went away or its deadline passed
                call.cancel()
                self._record(endpoint, self._cancel_code(context), start, kept, prediction_id, infer)
                raise
            finally:
                self._in_flight.dec()
        self._finish(context, endpoint, code, details, trailers, start, kept, prediction_id, infer)
        return response

    @staticmethod
    def _client_details(exc: aio.AioRpcError) -> str:
        details = exc.details() or ""
        if exc.code() == grpc.StatusCode.UNAVAILABLE and "failed to connect" in details.lower():
            # grpc core's words name the upstream's address: a fixed sentence, as for HTTP 502
            return "the model server's gRPC port is unreachable (source: inferwatch)"
        return details

    @staticmethod
    def _cancel_code(context: aio.ServicerContext) -> grpc.StatusCode:
        left = context.time_remaining()
        return grpc.StatusCode.DEADLINE_EXCEEDED if left is not None and left <= 0 else grpc.StatusCode.CANCELLED

    async def forward(self, method: str, requests: AsyncIterator[bytes], context: aio.ServicerContext
                      ) -> AsyncIterator[bytes]:
        endpoint = self.endpoint(method)
        metadata = tuple((k, v) for k, v in context.invocation_metadata() or () if k not in NOT_FORWARDED)
        prediction_id = next((str(v) for k, v in metadata if k == PREDICTION_ID_KEY), "") or uuid.uuid4().hex
        infer = method == MODEL_INFER
        kept: dict[str, Any] = {"request": None, "response": None, "sent": 0, "received": 0, "too_large": False}
        assert self._channel is not None

        async def upstream_requests() -> AsyncIterator[bytes]:
            async for message in requests:
                if len(message) > self.max_bytes:  # not forwarded; the call ends RESOURCE_EXHAUSTED
                    kept["too_large"] = True
                    call.cancel()
                    return
                kept["sent"] += len(message)
                if infer and kept["request"] is None:
                    kept["request"] = message  # a reference, not a copy: bytes do not change
                yield message

        timeout = context.time_remaining()
        call = self._channel.stream_stream(method)(upstream_requests(), metadata=metadata or None,
                                                   timeout=timeout)
        self._in_flight.inc()
        start = time.perf_counter()
        code, details, trailers = grpc.StatusCode.UNKNOWN, "", None
        try:
            headers = await call.initial_metadata()
            if headers:
                await context.send_initial_metadata(tuple(headers))
            async for message in call:
                if len(message) > self.max_bytes:
                    kept["too_large"] = True
                    call.cancel()
                    break
                kept["received"] += len(message)
                if infer and kept["response"] is None:
                    kept["response"] = message
                yield message
            if kept["too_large"]:
                code, details = grpc.StatusCode.RESOURCE_EXHAUSTED, self._too_large_detail()
            else:
                code, details, trailers = await call.code(), await call.details(), await call.trailing_metadata()
        except aio.AioRpcError as exc:
            code, details, trailers = exc.code(), self._client_details(exc), exc.trailing_metadata()
            if kept["too_large"]:
                code, details, trailers = grpc.StatusCode.RESOURCE_EXHAUSTED, self._too_large_detail(), None
        except asyncio.CancelledError:
            if kept["too_large"]:  # the upstream call we cancelled for an oversized request
                code, details, trailers = grpc.StatusCode.RESOURCE_EXHAUSTED, self._too_large_detail(), None
            else:  # the client went away or its deadline passed: the upstream call goes too
                call.cancel()
                self._record(endpoint, self._cancel_code(context), start, kept, prediction_id, infer)
                raise
        finally:
            self._in_flight.dec()
        self._finish(context, endpoint, code, details, trailers, start, kept, prediction_id, infer)

    def _finish(self, context, endpoint, code, details, trailers, start, kept, prediction_id, infer) -> None:
        """Count the call and give the client the upstream's status, details and trailers."""
        self._record(endpoint, code, start, kept, prediction_id, infer)
        if trailers:
            context.set_trailing_metadata(tuple(trailers))
        if code != grpc.StatusCode.OK:
            context.set_code(code)
            if details:
                context.set_details(details)

    def _too_large_detail(self) -> str:
        return f"message larger than proxy.grpc_max_message_bytes ({self.max_bytes})"

    def _record(self, endpoint: str, code: grpc.StatusCode, start: float, kept: dict[str, Any],
                prediction_id: str, infer: bool) -> None:
        """Count the call and queue a ModelInfer exchange; fail open (never changes the answer)."""
        try:
            latency = time.perf_counter() - start
            labels = (self.model, self.version, endpoint)
            self.metrics.requests.labels(*labels, "POST", code.name).inc()
            self.metrics.request_duration.labels(*labels).observe(latency)
            self.metrics.request_size.labels(*labels).observe(kept["sent"])
            self.metrics.response_size.labels(*labels).observe(kept["received"])
            reason = "message_too_large" if kept["too_large"] else UPSTREAM_FAILURES.get(code)
            if reason is not None:
                self.metrics.upstream_errors.labels(self.model, self.version, reason).inc()
                held = self._failure_log.allow(reason)
                if held is not None:
                    log.warning("gRPC call %s: %s (%s)", endpoint, code.name, reason)
            if infer and kept["request"] is not None:
                self.pipeline.submit_exchange(Exchange(
                    model_version=self.version, endpoint=endpoint, status=HTTP_STATUS.get(code, 500),
                    prediction_id=prediction_id, timestamp=time.time(), latency_seconds=latency,
                    request_body=kept["request"], response_body=kept["response"],
                    request_content_type=CONTENT_TYPE, response_content_type=CONTENT_TYPE, source="grpc"))
        except Exception:  # noqa: BLE001
            log.exception("monitoring failed on a gRPC call")
            self.metrics.monitoring_errors.labels(self.model, "proxy").inc()


class _Forwarder(grpc.GenericRpcHandler):
    """Every method, whatever its name: raw bytes both ways (no serializers)."""

    def __init__(self, proxy: GrpcProxy):
        self.proxy = proxy

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method
        if method in UNARY_METHODS:
            async def unary(request: bytes, context: aio.ServicerContext) -> bytes:
                return await self.proxy.forward_unary(method, request, context)

            return grpc.unary_unary_rpc_method_handler(unary)

        async def handle(requests: AsyncIterator[bytes], context: aio.ServicerContext) -> AsyncIterator[bytes]:
            async for message in self.proxy.forward(method, requests, context):
                yield message

        return grpc.stream_stream_rpc_method_handler(handle)
