"""A small gRPC model server for tests and benchmarks: ModelInfer answers one INT64 class per row
(the sign of the first feature), plus methods for the proxy's edge cases. Raw bytes, no protobuf."""

from __future__ import annotations

import time
from concurrent import futures

import grpc

from inferwatch.ingest.grpc_v2 import MODEL_INFER, columns, encode_infer, parse_infer


def infer_answer(request: bytes) -> bytes:
    message = parse_infer(request, tensors_field=5, raw_field=7)
    n, features = columns(message, None)
    first = next(iter(features.values()))
    return encode_infer([("predict", "INT64", [n], [int(v > 0) for v in first])], response=True,
                        model_name=message.model_name, model_version="v7", id=message.id)


def _infer(request: bytes, context) -> bytes:
    context.send_initial_metadata((("x-upstream-header", "h1"),))
    context.set_trailing_metadata((("x-upstream-trailer", "t1"),))
    return infer_answer(request)


def _slow(request: bytes, context) -> bytes:
    time.sleep(3)
    return request


def _fail(request: bytes, context) -> bytes:
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad tensor")


def _echo(request: bytes, context) -> bytes:
    return request + bytes(len(request))  # twice the request's size: for the response size limit


def _stream(requests, context):
    for message in requests:
        yield message.upper()


HANDLERS = {
    MODEL_INFER: grpc.unary_unary_rpc_method_handler(_infer),
    "/test.Edge/Slow": grpc.unary_unary_rpc_method_handler(_slow),
    "/test.Edge/Fail": grpc.unary_unary_rpc_method_handler(_fail),
    "/test.Edge/Double": grpc.unary_unary_rpc_method_handler(_echo),
    "/test.Edge/Upper": grpc.stream_stream_rpc_method_handler(_stream),
}


class _Handler(grpc.GenericRpcHandler):
    def service(self, handler_call_details):
        return HANDLERS.get(handler_call_details.method)


def start_upstream(workers: int = 8) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(workers), handlers=[_Handler()])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port
