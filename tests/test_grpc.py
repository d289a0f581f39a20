"""The gRPC port: transparent forwarding, faults, counting, and ModelInfer decoded in the worker.

Real sockets on loopback: a grpcio model server (tests/grpc_upstream.py) behind a whole sidecar.
"""

from __future__ import annotations

import socket

import grpc
import pytest

from conftest import sample, scrape, start_sidecar, wait_for
from grpc_upstream import infer_answer, start_upstream
from inferwatch.config import ConfigError, load_config
from inferwatch.ingest.events import PayloadError
from inferwatch.ingest.grpc_v2 import MODEL_INFER, decode_grpc_exchange, encode_infer

REQUEST = encode_infer([("x", "FP32", [2, 2], [1.5, -2.0, -3.0, 4.0]), ("city", "BYTES", [2], ["oslo", "lima"])],
                       model_name="m", id="req-1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def grpc_upstream():
    server, port = start_upstream()
    yield port
    server.stop(0)


@pytest.fixture
def grpc_sidecar(upstream, grpc_upstream):
    sidecar = start_sidecar(upstream.url, **{"proxy.grpc_port": free_port(),
                                             "proxy.grpc_upstream": f"127.0.0.1:{grpc_upstream}",
                                             "proxy.grpc_max_message_bytes": 4096})
    yield sidecar
    sidecar.stop()


def channel(port: int) -> grpc.Channel:
    return grpc.insecure_channel(f"127.0.0.1:{port}")


# --- the wire decoder, held equal to protobuf's own encoder ------------------------------------


def test_decoder_reads_what_protobuf_writes_typed_and_raw():
    pb = pytest.importorskip("mlserver.grpc.dataplane_pb2", reason="protobuf's generated v2 messages come with mlserver")
    tensor = pb.ModelInferRequest.InferInputTensor
    contents = pb.InferTensorContents
    typed = pb.ModelInferRequest(model_name="m", inputs=[
        tensor(name="a", datatype="INT32", shape=[3], contents=contents(int_contents=[-7, 0, 2**31 - 1])),
        tensor(name="b", datatype="FP64", shape=[3, 1], contents=contents(fp64_contents=[0.5, -1e300, 3.0])),
        tensor(name="c", datatype="BOOL", shape=[3], contents=contents(bool_contents=[True, False, True])),
        tensor(name="d", datatype="BYTES", shape=[3], contents=contents(bytes_contents=[b"x", b"", "é".encode()])),
        tensor(name="e", datatype="UINT64", shape=[3], contents=contents(uint64_contents=[0, 1, 2**64 - 1])),
        tensor(name="f", datatype="INT64", shape=[3], contents=contents(int64_contents=[-(2**63), 5, 6])),
    ])
    batch = decode_grpc_exchange(typed.SerializeToString(), None)
    assert batch.n == 3
    assert batch.features == {"a": [-7, 0, 2**31 - 1], "b": [0.5, -1e300, 3.0], "c": [True, False, True],
                              "d": ["x", "", "é"], "e": [0, 1, 2**64 - 1], "f": [-(2**63), 5, 6]}
    raw = pb.ModelInferRequest(
        inputs=[tensor(name="h", datatype="FP16", shape=[2, 2]), tensor(name="s", datatype="BYTES", shape=[2])],
        raw_input_contents=[b"\x00\x3c\x00\xc0\x00\x00\x00\x38", b"\x02\x00\x00\x00hi\x00\x00\x00\x00"])
    response = pb.ModelInferResponse(model_version="v3", outputs=[
        pb.ModelInferResponse.InferOutputTensor(name="p", datatype="INT8", shape=[2])],
        raw_output_contents=[b"\x01\xff"])
    batch = decode_grpc_exchange(raw.SerializeToString(), response.SerializeToString())
    assert batch.features == {"h_0": [1.0, 0.0], "h_1": [-2.0, 0.5], "s": ["hi", ""]}
    assert batch.outputs == {"p": [1, -1]} and batch.model_version == "v3" and batch.errors == []
    # our encoder writes what protobuf reads, so tests and benchmarks build valid messages
    parsed = pb.ModelInferRequest.FromString(REQUEST)
    assert parsed.inputs[0].contents.fp32_contents == [1.5, -2.0, -3.0, 4.0] and parsed.id == "req-1"


def test_undecodable_messages_are_payload_errors():
    with pytest.raises(PayloadError) as err:
        decode_grpc_exchange(b"\xff\xff\xff", None)
    assert err.value.reason == "unknown_format"
    batch = decode_grpc_exchange(REQUEST, b"\x0a\x05ab")  # a string field cut short
    assert batch.n == 2 and batch.outputs == {} and batch.errors == ["unknown_format"]
    mismatch = encode_infer([("p", "INT64", [3], [1, 2, 3])], response=True)
    assert decode_grpc_exchange(REQUEST, mismatch).errors == ["row_count_mismatch"]


# --- the port, end to end ---------------------------------------------------------------------


def test_calls_pass_unchanged_and_model_infer_is_monitored(grpc_sidecar, grpc_upstream):
    through, direct = channel(grpc_sidecar.grpc_port), channel(grpc_upstream)
    metadata = (("x-client", "c1"), ("x-prediction-id", "pid-1"))
    answer, call = through.unary_unary(MODEL_INFER).with_call(REQUEST, metadata=metadata, timeout=10)
    expected, direct_call = direct.unary_unary(MODEL_INFER).with_call(REQUEST, metadata=metadata, timeout=10)
    assert answer == expected == infer_answer(REQUEST)
    assert ("x-upstream-header", "h1") in tuple(call.initial_metadata())
    assert tuple(call.trailing_metadata()) == tuple(direct_call.trailing_metadata())
    # a streaming call, message by message
    upper = through.stream_stream("/test.Edge/Upper")(iter([b"ab", b"cd", b"ef"]), timeout=10)
    assert list(upper) == [b"AB", b"CD", b"EF"]
    # the upstream's own error status and details pass as they came
    with pytest.raises(grpc.RpcError) as err:
        through.unary_unary("/test.Edge/Fail")(b"x", timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details() == "bad tensor"
    # decoded in the worker into events, features and predictions on /metrics
    grpc_sidecar.pipeline.drain()
    text = scrape(grpc_sidecar)
    assert sample(text, "inferwatch_requests_total", endpoint=MODEL_INFER, code="OK") == 1
    assert sample(text, "inferwatch_requests_total", endpoint="/test.Edge/Upper", code="OK") == 1
    assert sample(text, "inferwatch_requests_total", endpoint="/test.Edge/Fail", code="INVALID_ARGUMENT") == 1
    assert sample(text, "inferwatch_events_total", source="grpc", model_version="v7") == 2
    window = grpc_sidecar.windows.get("v7")
    assert sorted(window.features.columns) == ["city", "x_0", "x_1"]
    assert sorted(window.outputs.columns) == ["predict"]


def test_unreachable_upstream_and_deadline_are_counted(upstream, grpc_upstream):
    down = start_sidecar(upstream.url, **{"proxy.grpc_port": free_port(), "proxy.grpc_upstream": f"127.0.0.1:{free_port()}"})
    slow = start_sidecar(upstream.url, **{"proxy.grpc_port": free_port(), "proxy.grpc_upstream": f"127.0.0.1:{grpc_upstream}"})
    try:
        with pytest.raises(grpc.RpcError) as err:
            channel(down.grpc_port).unary_unary(MODEL_INFER)(REQUEST, timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "127.0.0.1" not in err.value.details()  # nothing of the upstream's address
        with pytest.raises(grpc.RpcError) as err:
            channel(slow.grpc_port).unary_unary("/test.Edge/Slow")(b"x", timeout=0.5)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert wait_for(lambda: sample(scrape(slow), "inferwatch_upstream_errors_total", reason="timeout") == 1)
        text = scrape(down)
        assert sample(text, "inferwatch_upstream_errors_total", reason="connection") == 1
        assert sample(text, "inferwatch_requests_total", endpoint=MODEL_INFER, code="UNAVAILABLE") == 1
        assert sample(scrape(slow), "inferwatch_requests_total", endpoint="/test.Edge/Slow",
                      code="DEADLINE_EXCEEDED") == 1
    finally:
        down.stop()
        slow.stop()


def test_messages_over_the_maximum_are_refused_and_counted(grpc_sidecar):
    through = channel(grpc_sidecar.grpc_port)
    with pytest.raises(grpc.RpcError) as err:  # a request over the maximum
        through.unary_unary("/test.Edge/Double")(bytes(5000), timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as err:  # a response over it (6000 bytes for a 3000-byte request)
        through.unary_unary("/test.Edge/Double")(bytes(3000), timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert through.unary_unary("/test.Edge/Double")(bytes(100), timeout=10) == bytes(200)
    with pytest.raises(grpc.RpcError) as err:  # the v2 service's unary path refuses the same way
        through.unary_unary(MODEL_INFER)(bytes(5000), timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert sample(scrape(grpc_sidecar), "inferwatch_requests_total", endpoint=MODEL_INFER, code="RESOURCE_EXHAUSTED") == 1
    text = scrape(grpc_sidecar)
    assert sample(text, "inferwatch_requests_total", endpoint="/test.Edge/Double", code="RESOURCE_EXHAUSTED") == 2
    assert sample(text, "inferwatch_upstream_errors_total", reason="message_too_large") == 3


def test_an_undecodable_model_infer_is_a_payload_error_not_a_failed_call(grpc_sidecar, grpc_upstream):
    # the upstream answers anything decodable; this request is a valid message with no tensors
    garbage = encode_infer([], model_name="m")
    with pytest.raises(grpc.RpcError) as direct:
        channel(grpc_upstream).unary_unary(MODEL_INFER)(garbage, timeout=10)
    with pytest.raises(grpc.RpcError) as through:
        channel(grpc_sidecar.grpc_port).unary_unary(MODEL_INFER)(garbage, timeout=10)
    assert through.value.code() == direct.value.code()  # the upstream's failure, unchanged
    answer = channel(grpc_sidecar.grpc_port).unary_unary("/test.Edge/Double")(b"\xff\xff", timeout=10)
    assert answer == b"\xff\xff\x00\x00"
    grpc_sidecar.pipeline.drain()
    text = scrape(grpc_sidecar)
    assert sample(text, "inferwatch_payload_errors_total", reason="missing_field") == 1
    assert sample(text, "inferwatch_upstream_errors_total") == 0


def test_grpc_port_needs_an_upstream_address():
    with pytest.raises(ConfigError) as err:
        load_config(None, {"proxy.grpc_port": 9001})
    assert "proxy.grpc_upstream" in str(err.value)
    assert load_config(None, {}).proxy.grpc_port == 0  # off by default
