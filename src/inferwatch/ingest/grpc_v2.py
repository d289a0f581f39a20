"""Open Inference Protocol v2 over gRPC: ``ModelInfer`` messages to an ``EventBatch``.

The messages are those of the public ``grpc_predict_v2.proto`` (KServe, Triton, MLServer;
shipped in ``proto/`` beside this module), read with ``protowire``. Tensors become columns
exactly as the HTTP v2 codec makes them (``codecs._tensors``: the first dimension is the row, the
rest flattened), whether their values come typed in ``contents`` or as ``raw_input_contents`` /
``raw_output_contents`` bytes (row-major, little-endian; BYTES elements each behind a 4-byte
length, the Triton convention). Runs in the worker, never on the request path.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .codecs import _tensors as tensors_to_columns  # one column layout for HTTP and gRPC v2
from .events import EventBatch, PayloadError
from .protowire import I32, I64, LEN, VARINT, WireError, fields, len_field, packed, packed_varints, signed64, text

SERVICE = "inference.GRPCInferenceService"
MODEL_INFER = f"/{SERVICE}/ModelInfer"
# The methods of the v2 service (grpc_predict_v2.proto): their names are label values as they are.
V2_METHODS = frozenset(f"/{SERVICE}/{m}" for m in (
    "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer",
    "RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload", "ModelStreamInfer"))
# Those known to be unary (all but the streaming extension): forwarded without stream machinery.
UNARY_METHODS = V2_METHODS - {f"/{SERVICE}/ModelStreamInfer"}
CONTENT_TYPE = "application/grpc"

# Raw tensor contents: numpy dtypes, little-endian, by v2 datatype.
RAW_DTYPES = {
    "BOOL": "?", "UINT8": "u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
    "INT8": "i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
    "FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
}
# InferTensorContents field numbers: (wire decoding, datatype family).
_BOOL, _INT, _INT64, _UINT, _UINT64, _FP32, _FP64, _BYTES = range(1, 9)


def is_grpc(content_type: str | None) -> bool:
    return bool(content_type) and content_type.split(";")[0].strip().lower().startswith(CONTENT_TYPE)  # type: ignore[union-attr]


@dataclass
class Tensor:
    name: str = ""
    datatype: str = ""
    shape: list[int] = field(default_factory=list)
    data: list[Any] | None = None  # from ``contents``; None: the raw contents hold it


@dataclass
class InferMessage:
    """The parts of a ModelInferRequest or ModelInferResponse that monitoring reads."""

    model_name: str = ""
    model_version: str = ""
    id: str = ""
    tensors: list[Tensor] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)


def _scalars(number: int, wire: int, value: int | bytes, out: list[Any]) -> None:
    """One record of InferTensorContents (packed or not) appended to ``out``."""
    if number == _BYTES:
        if not isinstance(value, bytes):
            raise WireError("bytes_contents must be length-delimited")
        out.append(value.decode("utf-8", "replace"))
        return
    if number in (_FP32, _FP64):
        fmt, size, expected = ("<f", 4, I32) if number == _FP32 else ("<d", 8, I64)
        if isinstance(value, bytes):
            if len(value) % size:
                raise WireError("packed floats of a wrong length")
            out.extend(np.frombuffer(value, fmt).tolist())
        elif wire == expected:
            out.append(struct.unpack(fmt, value.to_bytes(size, "little"))[0])
        else:
            raise WireError("a float field with a wrong wire type")
        return
    values = packed_varints(value) if isinstance(value, bytes) else [value]
    if wire not in (VARINT, LEN):
        raise WireError("an integer field with a wrong wire type")
    if number == _BOOL:
        out.extend(v != 0 for v in values)
    elif number in (_INT, _INT64):
        out.extend(signed64(v) for v in values)  # int32 is sign-extended to 64 bits on the wire
    else:
        out.extend(values)


def _tensor(payload: bytes) -> Tensor:
    tensor = Tensor()
    for number, wire, value in fields(payload):
        if number == 1:
            tensor.name = text(value)
        elif number == 2:
            tensor.datatype = text(value)
        elif number == 3:  # repeated int64 shape, packed (proto3's default) or not
            tensor.shape.extend(signed64(v) for v in (packed_varints(value) if isinstance(value, bytes) else [value]))
        elif number == 5 and isinstance(value, bytes):
            data: list[Any] = []
            for n, w, v in fields(value):
                if 1 <= n <= 8:
                    _scalars(n, w, v, data)
            tensor.data = data
    return tensor


def parse_infer(message: bytes, *, tensors_field: int, raw_field: int) -> InferMessage:
    """A ModelInferRequest (tensors 5, raw 7) or ModelInferResponse (tensors 5, raw 6)."""
    out = InferMessage()
    for number, _, value in fields(message):
        if number == 1:
            out.model_name = text(value)
        elif number == 2:
            out.model_version = text(value)
        elif number == 3:
            out.id = text(value)
        elif number == tensors_field and isinstance(value, bytes):
            out.tensors.append(_tensor(value))
        elif number == raw_field and isinstance(value, bytes):
            out.raw.append(value)
    return out


def _raw_values(tensor: Tensor, raw: bytes) -> list[Any]:
    if tensor.datatype == "BYTES":
        values, pos = [], 0
        while pos < len(raw):
            if pos + 4 > len(raw):
                raise PayloadError("shape_mismatch", f"tensor {tensor.name!r}: truncated BYTES element")
            size = int.from_bytes(raw[pos:pos + 4], "little")
            values.append(raw[pos + 4:pos + 4 + size].decode("utf-8", "replace"))
            pos += 4 + size
        return values
    dtype = RAW_DTYPES.get(tensor.datatype)
    if dtype is None:
        raise PayloadError("unknown_format", f"tensor {tensor.name!r}: raw datatype {tensor.datatype!r} is not supported")
    width = np.dtype(dtype).itemsize
    if len(raw) % width:
        raise PayloadError("shape_mismatch", f"tensor {tensor.name!r}: {len(raw)} raw bytes for {tensor.datatype}")
    return np.frombuffer(raw, dtype).tolist()


def columns(message: InferMessage, names: list[str] | None) -> tuple[int, dict[str, list[Any]]]:
    """``(rows, columns)`` of a message's tensors, as the HTTP v2 codec makes them."""
    if not message.tensors:
        raise PayloadError("missing_field", "no tensors")
    if message.raw and len(message.raw) != len(message.tensors):
        raise PayloadError("shape_mismatch", f"{len(message.raw)} raw contents for {len(message.tensors)} tensors")
    as_json = []
    for index, tensor in enumerate(message.tensors):
        data = _raw_values(tensor, message.raw[index]) if message.raw else (tensor.data or [])
        as_json.append({"name": tensor.name, "shape": tensor.shape, "data": data})
    return tensors_to_columns(as_json, names)


def decode_grpc_exchange(request: bytes, response: bytes | None, *, feature_names: list[str] | None = None,
                         max_bytes: int = 8 * 1024 * 1024) -> EventBatch:
    """A ModelInfer request (and its response) to N events, with the contract of
    ``codecs.decode_exchange``: an undecodable request raises ``PayloadError``; an undecodable
    response leaves the features with its reason in ``batch.errors``."""
    if len(request) > max_bytes:
        raise PayloadError("too_large", f"request of {len(request)} bytes")
    try:
        n, features = columns(parse_infer(request, tensors_field=5, raw_field=7), feature_names or None)
    except WireError as exc:
        raise PayloadError("unknown_format", f"not a ModelInferRequest: {exc}") from None
    batch = EventBatch(n=n, features=features)
    if response is None or n == 0:
        return batch
    try:
        if len(response) > max_bytes:
            raise PayloadError("too_large", f"response of {len(response)} bytes")
        try:
            answer = parse_infer(response, tensors_field=5, raw_field=6)
        except WireError as exc:
            raise PayloadError("unknown_format", f"not a ModelInferResponse: {exc}") from None
        rows, outputs = columns(answer, None)
        if rows != n:
            raise PayloadError("row_count_mismatch", f"{rows} output rows for {n} input rows")
        return EventBatch(n=n, features=features, outputs=outputs, model_version=answer.model_version or None)
    except PayloadError as exc:
        batch.errors.append(exc.reason)
        return batch


# --- building messages (tests, benchmarks, the example model server) -------------------------


def _contents(datatype: str, values: list[Any]) -> bytes:
    if datatype == "BYTES":
        return b"".join(len_field(_BYTES, v) for v in values)
    if datatype == "FP32":
        return packed(_FP32, values, "f")
    if datatype == "FP64":
        return packed(_FP64, values, "d")
    number = {"BOOL": _BOOL, "INT64": _INT64, "UINT64": _UINT64}.get(datatype)
    if number is None:
        number = _UINT if datatype.startswith("UINT") else _INT
    return packed(number, [int(v) for v in values])


def raw_contents(datatype: str, values: list[Any]) -> bytes:
    if datatype == "BYTES":
        items = [v.encode() if isinstance(v, str) else bytes(v) for v in values]
        return b"".join(len(i).to_bytes(4, "little") + i for i in items)
    return np.asarray(values, RAW_DTYPES[datatype]).tobytes()


def encode_infer(tensors: list[tuple[str, str, list[int], list[Any]]], *, response: bool = False, raw: bool = False,
                 model_name: str = "", model_version: str = "", id: str = "") -> bytes:
    """A ModelInferRequest (or, ``response=True``, a ModelInferResponse) from
    ``(name, datatype, shape, flat values)`` tensors, typed or raw."""
    out = b"".join(len_field(number, value) for number, value in ((1, model_name), (2, model_version), (3, id))
                   if value)
    for name, datatype, shape, values in tensors:
        body = len_field(1, name) + len_field(2, datatype) + packed(3, shape)
        if not raw:
            body += len_field(5, _contents(datatype, values))
        out += len_field(5, body)
    if raw:
        out += b"".join(len_field(6 if response else 7, raw_contents(datatype, values))
                        for _, datatype, _, values in tensors)
    return out
