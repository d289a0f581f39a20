"""The protocol buffers wire format, read and written directly (no ``protobuf`` runtime).

The sidecar decodes one message family (Open Inference v2 ``ModelInfer``, ``grpc_v2.py``). The
wire format is four record kinds; a reader of ~100 lines avoids a generated ``_pb2`` module and
the protobuf runtime's version pins (a model server such as MLServer pins its own protobuf, and
generated code refuses an older runtime than its generator's). ``tests/test_grpc.py`` holds this
reader equal to protobuf's own encoder on the same messages.

Encoding: https://protobuf.dev/programming-guides/encoding/
"""

from __future__ import annotations

import struct
from typing import Iterator

VARINT, I64, LEN, I32 = 0, 1, 2, 5


class WireError(ValueError):
    """Bytes that are not a well-formed protobuf message."""


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it."""
    result = shift = 0
    end = len(data)
    while True:
        if pos >= end:
            raise WireError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise WireError("varint longer than 10 bytes")


def fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """``(field number, wire type, value)`` for each record: an int for VARINT, I64 and I32 (the
    raw little-endian bits), the payload bytes for LEN."""
    pos, end = 0, len(data)
    while pos < end:
        key, pos = read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        if wire == VARINT:
            value, pos = read_varint(data, pos)
            yield number, wire, value
        elif wire == LEN:
            size, pos = read_varint(data, pos)
            if pos + size > end:
                raise WireError(f"field {number}: length {size} past the end")
            yield number, wire, data[pos:pos + size]
            pos += size
        elif wire == I64:
            if pos + 8 > end:
                raise WireError(f"field {number}: truncated 64-bit value")
            yield number, wire, int.from_bytes(data[pos:pos + 8], "little")
            pos += 8
        elif wire == I32:
            if pos + 4 > end:
                raise WireError(f"field {number}: truncated 32-bit value")
            yield number, wire, int.from_bytes(data[pos:pos + 4], "little")
            pos += 4
        else:  # 3 and 4 are proto2 groups, absent from proto3; 6 and 7 do not exist
            raise WireError(f"field {number}: unsupported wire type {wire}")


def packed_varints(payload: bytes) -> list[int]:
    out = []
    pos, end = 0, len(payload)
    while pos < end:
        value, pos = read_varint(payload, pos)
        out.append(value)
    return out


def signed64(value: int) -> int:
    """An int64/int32 varint (two's complement over 64 bits) as a Python int."""
    return value - (1 << 64) if value >= 1 << 63 else value


def text(payload: int | bytes) -> str:
    if not isinstance(payload, bytes):
        raise WireError("expected a string field")
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        raise WireError("a string field is not UTF-8") from None


# --- writing (tests, benchmarks and the fallback model server build messages with these) ---


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64: ten bytes of two's complement, as protobuf writes it
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def len_field(number: int, payload: bytes | str) -> bytes:
    raw = payload.encode() if isinstance(payload, str) else payload
    return key(number, LEN) + varint(len(raw)) + raw


def packed(number: int, values: list[int] | list[float], fmt: str = "") -> bytes:
    """A packed repeated field: varints, or fixed-width values with ``struct`` format ``fmt``."""
    body = struct.pack(f"<{len(values)}{fmt}", *values) if fmt else b"".join(varint(int(v)) for v in values)
    return len_field(number, body)
